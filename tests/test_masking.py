"""BERT's masking rule measured on a large sample: rates within binomial tolerances, specials never chosen."""
from __future__ import annotations

import math

import pytest
import torch

from bert_tasks.batching import IGNORE_INDEX
from bert_tasks.errors import ConfigError
from bert_tasks.tasks.masking import MaskingRule, choose_positions, corrupt

MASK, VOCAB = 3, 1000


def _within(observed: int, trials: int, share: float, sigmas: float = 5.0) -> bool:
    """observed / trials is share up to `sigmas` binomial standard deviations."""
    spread = sigmas * math.sqrt(trials * share * (1 - share))
    return abs(observed - trials * share) <= spread


def _batch(rows: int = 400, length: int = 128):
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(10, VOCAB, (rows, length), generator=generator)
    maskable = torch.ones(rows, length, dtype=torch.bool)
    maskable[:, 0] = maskable[:, -1] = False  # [CLS] ... [SEP]
    maskable[: rows // 2, length // 2 :] = False  # padding in half the rows
    return ids, maskable


def test_token_masking_rates_and_80_10_10():
    ids, maskable = _batch()
    rule = MaskingRule()
    generator = torch.Generator().manual_seed(7)
    chosen = choose_positions(maskable, None, rule, generator)
    assert not (chosen & ~maskable).any()  # specials and padding never chosen
    assert _within(int(chosen.sum()), int(maskable.sum()), 0.15)
    corrupted, labels = corrupt(ids, chosen, rule, MASK, VOCAB, generator)
    assert torch.equal(labels != IGNORE_INDEX, chosen) and torch.equal(labels[chosen], ids[chosen])
    assert torch.equal(corrupted[~chosen], ids[~chosen])
    n = int(chosen.sum())
    masked = int((corrupted[chosen] == MASK).sum())
    kept = int((corrupted[chosen] == ids[chosen]).sum())
    assert _within(masked, n, 0.8)
    # a random replacement can draw the original token (1/VOCAB): 0.1 + 0.1/VOCAB keep their token
    assert _within(kept, n, 0.1 + 0.1 / VOCAB)
    assert _within(n - masked - kept, n, 0.1 - 0.1 / VOCAB)


def test_whole_word_masking_chooses_every_piece_of_a_word_and_counts_words():
    rows, length = 300, 96
    ids, maskable = _batch(rows, length)
    word_ids = torch.full((rows, length), -1)
    word_ids[:, 1:-1] = torch.arange(length - 2).div(3, rounding_mode="floor")  # 3 pieces per word
    maskable &= word_ids >= 0
    chosen = choose_positions(maskable, word_ids, MaskingRule(whole_word=True), torch.Generator().manual_seed(3))
    assert not (chosen & ~maskable).any()
    for row in range(rows):
        for word in range(int(word_ids[row].max()) + 1):
            pieces = chosen[row][(word_ids[row] == word) & maskable[row]]
            assert pieces.all() or not pieces.any()  # all pieces of a word, or none
    words_seen = sum(len(set(word_ids[r][maskable[r]].tolist())) for r in range(rows))
    words_chosen = sum(len(set(word_ids[r][chosen[r]].tolist())) for r in range(rows))
    assert _within(words_chosen, words_seen, 0.15)


def test_a_seeded_generator_repeats_the_masks():
    ids, maskable = _batch(20, 32)
    rule = MaskingRule()
    outcomes = []
    for _ in range(2):
        generator = torch.Generator().manual_seed(11)
        chosen = choose_positions(maskable, None, rule, generator)
        outcomes.append(corrupt(ids, chosen, rule, MASK, VOCAB, generator))
    assert all(torch.equal(a, b) for a, b in zip(*outcomes))


@pytest.mark.parametrize("options", [{"probability": 0.0}, {"probability": 1.2}, {"replace_mask": 0.9, "replace_random": 0.2}, {"replace_random": -0.1}])
def test_bad_masking_shares_are_config_errors(options):
    with pytest.raises(ConfigError, match="task\\."):
        MaskingRule(**options)


def test_span_masking_chooses_contiguous_whole_words_at_the_word_rate():
    rows, length, pieces = 200, 122, 2
    word_ids = torch.full((rows, length), -1)
    word_ids[:, 1:-1] = torch.arange(length - 2).div(pieces, rounding_mode="floor")  # 60 words of 2 pieces
    maskable = word_ids >= 0
    rule = MaskingRule(whole_word=True, span=True, span_p=0.2, span_max_words=10)
    chosen = choose_positions(maskable, word_ids, rule, torch.Generator().manual_seed(5))
    assert not (chosen & ~maskable).any()
    runs, chosen_words = [], 0
    for row in range(rows):
        words = torch.zeros(60, dtype=torch.bool)
        for word in range(60):
            piece_choice = chosen[row][word_ids[row] == word]
            assert piece_choice.all() or not piece_choice.any()  # whole words only
            words[word] = bool(piece_choice.all())
        chosen_words += int(words.sum())
        assert int(words.sum()) == round(0.15 * 60)  # the budget is exact per row
        length_now = 0
        for flag in words.tolist() + [False]:
            if flag:
                length_now += 1
            elif length_now:
                runs.append(length_now)
                length_now = 0
    assert chosen_words == rows * 9
    # geometric lengths (mean ~ 1 / p before clipping at 10 and at the row's budget of 9): spans, not single words
    assert sum(runs) / len(runs) > 2.0 and max(runs) > 4
