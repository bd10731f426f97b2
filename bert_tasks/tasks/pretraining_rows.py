"""Continued-pretraining rows from raw text: documents -> tokens -> segments (or segment pairs) -> model rows.

A row is ``[CLS] A [SEP]`` (or ``[CLS] A [SEP] B [SEP]`` for NSP / SOP) with, per token, the
word it belongs to (``word_ids``: -1 for special tokens), which is what masking needs: only
tokens with a word are maskable, and whole-word / span masking choose words. The special
tokens and token types come from the tokenizer itself (probed once), so any family works
(RoBERTa's ``<s> A </s></s> B </s>`` as well as BERT's).
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Optional

from transformers import PreTrainedTokenizerBase

from ..batching import IGNORE_INDEX
from ..data import Split
from ..errors import ConfigError, DataError
from .pretraining_corpus import pack_segments, sentence_pairs


@dataclass(frozen=True)
class RowTemplate:
    """Where the tokenizer puts its special tokens around one segment or a pair, and the token types."""

    single: tuple[list[int], list[int]]  # (before A, after A)
    pair: tuple[list[int], list[int], list[int]]  # (before A, between, after B)
    second_type: int  # token type id of B's part

    @classmethod
    def probe(cls, tokenizer: PreTrainedTokenizerBase) -> "RowTemplate":
        a = tokenizer("a", add_special_tokens=False)["input_ids"]
        b = tokenizer("b", add_special_tokens=False)["input_ids"]
        single = tokenizer("a")["input_ids"]
        pair = tokenizer("a", "b")
        ids = pair["input_ids"]
        start = _find(single, a)
        first = _find(ids, a)
        second = _find(ids, b, first + len(a))
        types = pair.get("token_type_ids") or [0] * len(ids)
        return cls(
            single=(single[:start], single[start + len(a):]),
            pair=(ids[:first], ids[first + len(a): second], ids[second + len(b):]),
            second_type=int(types[second]),
        )

    def row(self, first: list[int], first_words: list[int], second: Optional[list[int]] = None, second_words: Optional[list[int]] = None) -> dict[str, list[int]]:
        if second is None:
            before, after = self.single
            ids = before + first + after
            words = [-1] * len(before) + first_words + [-1] * len(after)
            types = [0] * len(ids)
        else:
            before, between, after = self.pair
            ids = before + first + between + second + after
            words = [-1] * len(before) + first_words + [-1] * len(between) + second_words + [-1] * len(after)
            types = [0] * (len(before) + len(first) + len(between)) + [self.second_type] * (len(second) + len(after))
        return {"input_ids": ids, "token_type_ids": types, "attention_mask": [1] * len(ids), "word_ids": words}

    @property
    def single_specials(self) -> int:
        return sum(len(part) for part in self.single)

    @property
    def pair_specials(self) -> int:
        return sum(len(part) for part in self.pair)


def _find(ids: list[int], part: list[int], start: int = 0) -> int:
    for i in range(start, len(ids) - len(part) + 1):
        if ids[i : i + len(part)] == part:
            return i
    raise ConfigError("model.checkpoint: cannot tell where its tokenizer puts special tokens around a text")


def documents_of(split: Split, column: str, rows_per_document: int) -> list[tuple[int, list[str]]]:
    """(first row, sentences) per document: a row's lines are its sentences (a .txt document, or a
    table cell); ``rows_per_document`` consecutive rows of a table make one document."""
    texts = split.texts(column)
    documents = []
    for start in range(0, len(texts), rows_per_document):
        sentences = [line.strip() for text in texts[start : start + rows_per_document] for line in text.splitlines() if line.strip()]
        if sentences:
            documents.append((start, sentences))
    if not documents:
        raise DataError(f"{split.origin}: no text in field {column!r} (every row is empty)")
    return documents


@dataclass
class Corpus:
    """Every token of every document in one flat list (so a position names a token anywhere), with its
    word number (unique across the corpus) and each document's sentences as position ranges."""

    ids: list[int]
    words: list[int]
    documents: list[list[list[int]]]  # per document, per sentence, its positions in ``ids``
    first_rows: list[int]  # per document, the split row it starts at (for error messages)


def tokenize_documents(tokenizer: PreTrainedTokenizerBase, documents: list[tuple[int, list[str]]]) -> Corpus:
    flat = [sentence for _, sentences in documents for sentence in sentences]
    encoded = tokenizer(flat, add_special_tokens=False)
    has_words = getattr(encoded, "is_fast", False) or tokenizer.is_fast
    specials = set(tokenizer.all_special_ids)
    corpus = Corpus([], [], [], [row for row, _ in documents])
    number, next_word = 0, 0
    for _, sentences in documents:
        positions_per_sentence = []
        for _ in sentences:
            ids = encoded["input_ids"][number]
            local = encoded.word_ids(number) if has_words else list(range(len(ids)))
            start = len(corpus.ids)
            corpus.ids.extend(ids)
            # a special token written in the text ("[SEP]" in a line) is never predicted: no word
            corpus.words.extend(-1 if w is None or i in specials else next_word + w for i, w in zip(ids, local))
            next_word += (max((w for w in local if w is not None), default=-1) + 1)
            positions_per_sentence.append(list(range(start, start + len(ids))))
            number += 1
        corpus.documents.append(positions_per_sentence)
    return corpus


def build_rows(corpus: Corpus, template: RowTemplate, max_length: int, objective: str, short_share: float, seed: int, source: str) -> dict[str, list]:
    """Columns of model rows: input_ids, token_type_ids, attention_mask, word_ids (renumbered from 0 per
    row, -1 for special tokens) and labels (the sentence label; IGNORE_INDEX without a sentence objective)."""
    rng = random.Random(seed)
    if not corpus.ids:
        raise DataError(f"{source}: the text gives no tokens to mask")
    columns: dict[str, list] = {"input_ids": [], "token_type_ids": [], "attention_mask": [], "word_ids": [], "labels": []}

    def add(row: dict[str, list[int]], label: int) -> None:
        for name, values in row.items():
            columns[name].append(values)
        columns["labels"].append(label)

    if objective == "none":
        budget = max_length - template.single_specials
        for segment in pack_segments(corpus.documents, budget, short_share, rng):
            add(template.row(*_tokens(corpus, segment.ids)), IGNORE_INDEX)
    else:
        budget = (max_length - template.pair_specials) // 2  # each half of a pair
        segments = pack_segments(corpus.documents, budget, short_share, rng)
        for pair in sentence_pairs(segments, objective, rng, source):
            first, first_words = _tokens(corpus, pair.first)
            second, second_words = _tokens(corpus, pair.second)
            offset = max(first_words, default=-1) + 1
            add(template.row(first, first_words, second, [w + offset if w >= 0 else w for w in second_words]), pair.label)
    return columns


def _tokens(corpus: Corpus, positions: tuple[int, ...]) -> tuple[list[int], list[int]]:
    """Token ids of some positions and their words renumbered from 0 (-1 stays: not maskable)."""
    ids = [corpus.ids[p] for p in positions]
    renumber: dict[int, int] = {}
    words = [-1 if corpus.words[p] < 0 else renumber.setdefault(corpus.words[p], len(renumber)) for p in positions]
    return ids, words
