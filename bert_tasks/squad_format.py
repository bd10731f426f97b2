"""SQuAD JSON files (v1.1 and v2.0): articles -> paragraphs -> questions, flattened to one row
per question with the Hub ``squad`` data set's columns: id, title, context, question,
answers = {text: [...], answer_start: [...]} (empty lists: unanswerable, as in ``squad_v2``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import DataError


def is_squad(rows: list[Any]) -> bool:
    """A JSON document's rows are SQuAD articles when any of them has 'paragraphs'."""
    return any(isinstance(row, dict) and "paragraphs" in row for row in rows)


def is_offset(value: Any) -> bool:
    """An answer_start must be a whole number of characters (not text, not 3.5, not true)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def squad_article_numbers(payload: Any) -> list[int]:
    """The article number of each question, in flatten_squad's row order."""
    articles = payload["data"] if isinstance(payload, dict) else payload
    return [a for a, article in enumerate(articles) for paragraph in article.get("paragraphs", []) for _ in paragraph.get("qas", [])]


def flatten_squad(payload: dict[str, Any], path: Path) -> list[dict[str, Any]]:
    """One row per question, in file order; ``is_impossible`` questions get no answers."""
    rows = []
    seen: dict[str, str] = {}  # id -> where it first appeared: predictions are keyed by id
    for a, article in enumerate(payload["data"]):
        paragraphs = article.get("paragraphs")
        if not isinstance(paragraphs, list):
            raise DataError(f"{path}: article {a} ({str(article.get('title', ''))[:40]!r}): expected 'paragraphs' (a list), got {str(paragraphs)[:40]!r}")
        for p, paragraph in enumerate(paragraphs):
            where = f"{path}: article {a}, paragraph {p}"
            if not isinstance(paragraph, dict) or not isinstance(paragraph.get("context"), str) or not isinstance(paragraph.get("qas"), list):
                raise DataError(f"{where}: expected 'context' (text) and 'qas' (a list of questions)")
            context = paragraph["context"]
            for q, qa in enumerate(paragraph["qas"]):
                if not isinstance(qa, dict) or not isinstance(qa.get("question"), str):
                    raise DataError(f"{where}, question {q}: expected an object with 'question' (text), 'id' and 'answers'")
                answers = [] if qa.get("is_impossible") is True else qa.get("answers", [])
                place = f"{where}, question {qa.get('id', q)}"
                if not isinstance(answers, list) or not all(isinstance(x, dict) and "text" in x and "answer_start" in x for x in answers):
                    raise DataError(f"{place}: 'answers' must be a list of {{'text', 'answer_start'}}")
                for x in answers:
                    if not isinstance(x["text"], str) or not is_offset(x["answer_start"]):
                        raise DataError(f"{place}: an answer needs 'text' (text) and 'answer_start' (a whole number >= 0), got {str(x)[:80]!r}")
                question_id = str(qa.get("id", f"{a}-{p}-{q}"))
                if question_id in seen:
                    raise DataError(f"{where}, question {q}: id {question_id!r} is already used at {seen[question_id]}; question ids must be unique")
                seen[question_id] = f"article {a}, paragraph {p}, question {q}"
                rows.append({
                    "id": question_id,
                    "title": str(article.get("title", "")),
                    "context": context,
                    "question": qa["question"],
                    "answers": {"text": [x["text"] for x in answers], "answer_start": [x["answer_start"] for x in answers]},
                })
    if not rows:
        raise DataError(f"{path}: the SQuAD file has no questions")
    return rows
