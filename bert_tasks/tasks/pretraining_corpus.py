"""Raw text for continued pretraining: documents of sentences, packed into segments, paired for NSP / SOP.

BERT's recipe: sentences are accumulated into a segment until it reaches the target length,
never across a document boundary; a small share of segments (`short_share`, BERT: 0.1) get a
shorter random target so the model also sees short inputs. Pairs for the sentence objectives
are two consecutive segments of one document: NSP keeps the real next one or, half the time,
takes a segment of another document; SOP keeps the order or, half the time, swaps the two.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError
from ..text_files import read_text

IS_NEXT, NOT_NEXT = 0, 1  # NSP labels, as BertForPreTraining's
IN_ORDER, SWAPPED = 0, 1  # SOP labels, as ALBERT's


@dataclass(frozen=True)
class Segment:
    document: int
    ids: tuple[int, ...]


@dataclass(frozen=True)
class SentencePair:
    first: tuple[int, ...]
    second: tuple[int, ...]
    label: int


def read_documents(path: Path) -> list[list[str]]:
    """BERT's layout: one sentence per line, a blank line between documents."""
    return read_documents_with_lines(path)[0]


def read_documents_with_lines(path: Path) -> tuple[list[list[str]], list[int]]:
    """The documents and the file line each starts on (for error messages)."""
    documents: list[list[str]] = []
    starts: list[int] = []
    current: list[str] = []
    for number, line in enumerate(read_text(Path(path)).splitlines(), start=1):
        sentence = line.strip()
        if sentence:
            if not current:
                starts.append(number)
            current.append(sentence)
        elif current:
            documents.append(current)
            current = []
    if current:
        documents.append(current)
    if not documents:
        raise DataError(f"{path}: no text (expected one sentence per line, a blank line between documents)")
    return documents, starts


def pack_segments(documents: list[list[list[int]]], max_tokens: int, short_share: float, rng: random.Random) -> list[Segment]:
    """documents: per document, per sentence, its token ids (no special tokens). A segment ends where it
    reaches its target; what overflows starts the next one of the same document (no token is lost,
    none crosses a document boundary)."""
    if max_tokens < 2:
        raise DataError(f"task.max_length leaves {max_tokens} tokens per segment; expected at least 2")
    segments: list[Segment] = []
    for number, sentences in enumerate(documents):
        target = _target(max_tokens, short_share, rng)
        current: list[int] = []
        for sentence in sentences:
            current.extend(sentence)
            while len(current) >= target:  # the overflow starts the next segment: no token is dropped
                segments.append(Segment(number, tuple(current[:target])))
                current, target = current[target:], _target(max_tokens, short_share, rng)
        if current:
            segments.append(Segment(number, tuple(current)))
    return segments


def _target(max_tokens: int, short_share: float, rng: random.Random) -> int:
    return rng.randint(2, max_tokens) if rng.random() < short_share else max_tokens


def sentence_pairs(segments: list[Segment], objective: str, rng: random.Random, source: str) -> list[SentencePair]:
    """One pair per segment that has a next segment in its document, labelled for `objective` (nsp | sop)."""
    if objective not in ("nsp", "sop"):
        raise ValueError(f"unknown sentence objective {objective!r}")
    documents = {s.document for s in segments}
    if objective == "nsp" and len(documents) < 2:
        raise DataError(f"{source}: next-sentence prediction needs at least 2 documents for its negatives; found {len(documents)}")
    pairs = []
    for segment, following in zip(segments, segments[1:]):
        if segment.document != following.document:
            continue
        if rng.random() >= 0.5:
            pairs.append(SentencePair(segment.ids, following.ids, IS_NEXT if objective == "nsp" else IN_ORDER))
        elif objective == "sop":
            pairs.append(SentencePair(following.ids, segment.ids, SWAPPED))
        else:
            pairs.append(SentencePair(segment.ids, _other_document(segments, segment.document, rng).ids, NOT_NEXT))
    if not pairs:
        raise DataError(f"{source}: no document has two segments, so no sentence pair can be made (documents too short for {objective})")
    return pairs


def _other_document(segments: list[Segment], document: int, rng: random.Random) -> Segment:
    while True:  # at least two documents exist (checked), so this ends
        candidate = segments[rng.randrange(len(segments))]
        if candidate.document != document:
            return candidate
