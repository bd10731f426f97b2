"""Packing sentences into segments within documents, and NSP / SOP pairs, measured on a large corpus."""
from __future__ import annotations

import math
import random

import pytest

from bert_tasks.errors import DataError
from bert_tasks.tasks.pretraining_corpus import IN_ORDER, IS_NEXT, NOT_NEXT, SWAPPED, pack_segments, read_documents, sentence_pairs


def _corpus(documents: int = 300, seed: int = 0) -> list[list[list[int]]]:
    """Token ids encode (document, sentence, position), so a test can tell where every token came from."""
    rng = random.Random(seed)
    return [[[d * 100_000 + s * 100 + p for p in range(rng.randint(3, 20))] for s in range(rng.randint(2, 12))] for d in range(documents)]


def _document_of(token: int) -> int:
    return token // 100_000


def test_segments_stay_within_documents_and_the_length_budget():
    segments = pack_segments(_corpus(), max_tokens=30, short_share=0.1, rng=random.Random(1))
    assert all(len(s.ids) <= 30 for s in segments)
    assert all({_document_of(t) for t in s.ids} == {s.document} for s in segments)
    ids = [t for s in segments for t in s.ids]
    assert ids == [t for d in _corpus() for s in d for t in s]  # every token once, in order


def test_a_share_of_segments_get_a_short_target():
    long_docs = [[[d * 100_000 + s * 100 + p for p in range(10)] for s in range(60)] for d in range(50)]
    segments = pack_segments(long_docs, max_tokens=64, short_share=0.1, rng=random.Random(2))
    inner = [s for s, nxt in zip(segments, segments[1:]) if nxt.document == s.document]  # not a document's last
    short = sum(len(s.ids) < 64 for s in inner)
    # a short target of exactly 64 is drawn 1 time in 63, so short segments are 0.1 * 62/63 of the inner ones
    share = 0.1 * 62 / 63
    assert abs(short - len(inner) * share) <= 5 * math.sqrt(len(inner) * share * (1 - share))


def _half_labelled(objective: str, label: int, seed: int):
    """Pairs for `objective`; asserts `label` is on half of them (5 binomial sigmas)."""
    segments = pack_segments(_corpus(), max_tokens=20, short_share=0.0, rng=random.Random(seed))
    pairs = sentence_pairs(segments, objective, random.Random(seed + 1), "corpus.txt")
    labelled = sum(p.label == label for p in pairs)
    assert abs(labelled - len(pairs) / 2) <= 5 * math.sqrt(len(pairs) / 4)
    return pairs


def test_nsp_is_half_real_next_half_from_another_document():
    pairs = _half_labelled("nsp", NOT_NEXT, seed=3)
    for pair in pairs:
        same = _document_of(pair.first[0]) == _document_of(pair.second[0])
        assert same == (pair.label == IS_NEXT)
        if pair.label == IS_NEXT:
            assert pair.first[-1] < pair.second[0]  # the real continuation


def test_sop_keeps_both_segments_in_one_document_and_swaps_half():
    pairs = _half_labelled("sop", SWAPPED, seed=5)
    for pair in pairs:
        assert _document_of(pair.first[0]) == _document_of(pair.second[0])
        assert (pair.first[-1] < pair.second[0]) == (pair.label == IN_ORDER)


def test_read_documents_in_bert_layout_and_its_errors(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("First sentence.\nSecond one.\n\n\nAnother document.\n\n")
    assert read_documents(path) == [["First sentence.", "Second one."], ["Another document."]]
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(DataError, match="empty.txt: no text"):
        read_documents(empty)
    one_segment_each = pack_segments([[[1, 2]], [[3, 4]]], max_tokens=8, short_share=0.0, rng=random.Random(0))
    with pytest.raises(DataError, match="corpus.txt: no document has two segments"):
        sentence_pairs(one_segment_each, "sop", random.Random(0), "corpus.txt")
    with pytest.raises(DataError, match="at least 2 documents"):
        sentence_pairs(pack_segments([[[1, 2], [3, 4]]], 2, 0.0, random.Random(0)), "nsp", random.Random(0), "corpus.txt")
