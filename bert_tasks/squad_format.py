"""SQuAD JSON files (v1.1 and v2.0): articles -> paragraphs -> questions, flattened to one row
per question with the Hub ``squad`` data set's columns: id, title, context, question,
answers = {text: [...], answer_start: [...]} (empty lists: unanswerable, as in ``squad_v2``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import DataError


def flatten_squad(payload: dict[str, Any], path: Path) -> list[dict[str, Any]]:
    """One row per question, in file order; ``is_impossible`` questions get no answers."""
    rows = []
    for a, article in enumerate(payload["data"]):
        for p, paragraph in enumerate(article.get("paragraphs", [])):
            where = f"{path}: article {a}, paragraph {p}"
            context = paragraph.get("context")
            if not isinstance(context, str) or not isinstance(paragraph.get("qas"), list):
                raise DataError(f"{where}: expected 'context' (text) and 'qas' (a list of questions)")
            for q, qa in enumerate(paragraph["qas"]):
                if not isinstance(qa, dict) or not isinstance(qa.get("question"), str):
                    raise DataError(f"{where}, question {q}: expected an object with 'question' (text), 'id' and 'answers'")
                answers = [] if qa.get("is_impossible") else qa.get("answers", [])
                if not isinstance(answers, list) or not all(isinstance(x, dict) and "text" in x and "answer_start" in x for x in answers):
                    raise DataError(f"{where}, question {qa.get('id', q)}: 'answers' must be a list of {{'text', 'answer_start'}}")
                rows.append({
                    "id": str(qa.get("id", f"{a}-{p}-{q}")),
                    "title": str(article.get("title", "")),
                    "context": context,
                    "question": qa["question"],
                    "answers": {"text": [str(x["text"]) for x in answers], "answer_start": [int(x["answer_start"]) for x in answers]},
                })
    if not rows:
        raise DataError(f"{path}: the SQuAD file has no questions")
    return rows
