"""BERT's masked-LM corruption: which positions are predicted and what the model sees there.

Of the maskable positions (never special tokens or padding) each is chosen with
`probability`; a chosen one becomes [MASK] with `replace_mask`, a random vocabulary token
with `replace_random`, and keeps its token otherwise (BERT: 0.15 and 0.8 / 0.1 / 0.1).
With whole-word masking the draw is per word and every piece of a chosen word is chosen,
so the rate counts words (as BERT-wwm does). The generator is the caller's: a fresh one per
training epoch, a fixed seed for evaluation, so evaluation masks repeat exactly.
Span masking (SpanBERT) chooses contiguous runs of whole words, each of a geometric length
(`span_p`, clipped at `span_max_words`), until the share of words is reached.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ..batching import IGNORE_INDEX
from ..errors import ConfigError


@dataclass(frozen=True)
class MaskingRule:
    probability: float = 0.15
    replace_mask: float = 0.8
    replace_random: float = 0.1
    whole_word: bool = False
    span: bool = False  # contiguous spans of whole words (implies whole_word)
    span_p: float = 0.2  # SpanBERT's geometric parameter: mean span length about 1 / p words before clipping
    span_max_words: int = 10

    def __post_init__(self) -> None:
        if not 0.0 < self.probability < 1.0:
            raise ConfigError(f"task.mask_probability: expected a share between 0 and 1 (exclusive), got {self.probability}")
        if self.replace_mask < 0 or self.replace_random < 0 or self.replace_mask + self.replace_random > 1.0 + 1e-9:
            raise ConfigError(
                f"task.replace_mask ({self.replace_mask}) and task.replace_random ({self.replace_random}): "
                "expected non-negative shares summing to at most 1 (the rest keep their token)"
            )
        if self.span and not (0.0 < self.span_p <= 1.0 and self.span_max_words >= 1):
            raise ConfigError(f"task.span_p ({self.span_p}) and task.span_max_words ({self.span_max_words}): expected 0 < p <= 1 and at least 1 word")


def choose_positions(maskable: torch.Tensor, word_ids: Optional[torch.Tensor], rule: MaskingRule, generator: torch.Generator) -> torch.Tensor:
    """Which positions are predicted. maskable: bool (batch, seq); word_ids: long (batch, seq), the
    word each piece belongs to (-1 where none), needed for whole-word masking."""
    # Shape: maskable (batch, seq) -> chosen (batch, seq) bool
    if rule.span:
        if word_ids is None:
            raise ConfigError("task.masking=span: the tokenizer gives no word index per token (a fast tokenizer is needed)")
        return torch.stack([_row_spans(row, rule, generator) for row in word_ids]).to(maskable.device) & maskable
    if not rule.whole_word:
        draws = torch.rand(maskable.shape, generator=generator, device=generator.device)
        return (draws < rule.probability).to(maskable.device) & maskable
    if word_ids is None:
        raise ConfigError("task.masking=whole_word: the tokenizer gives no word index per token (a fast tokenizer is needed)")
    words = int(word_ids.max().item()) + 1 if word_ids.numel() else 0
    # Shape: word_draws (batch, words); one draw per word, broadcast to its pieces
    word_draws = torch.rand((maskable.shape[0], max(words, 1)), generator=generator, device=generator.device).to(maskable.device)
    chosen_words = word_draws < rule.probability
    index = word_ids.clamp(min=0)
    # Shape: chosen (batch, seq): a piece is chosen when its word is
    chosen = torch.gather(chosen_words, 1, index) & (word_ids >= 0)
    return chosen & maskable


def corrupt(
    input_ids: torch.Tensor,
    chosen: torch.Tensor,
    rule: MaskingRule,
    mask_token_id: int,
    vocab_size: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Model inputs and labels: labels hold the original token at chosen positions, IGNORE_INDEX elsewhere."""
    # Shape: input_ids, chosen (batch, seq) -> corrupted (batch, seq), labels (batch, seq)
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    draws = torch.rand(input_ids.shape, generator=generator, device=generator.device).to(input_ids.device)
    to_mask = chosen & (draws < rule.replace_mask)
    to_random = chosen & (draws >= rule.replace_mask) & (draws < rule.replace_mask + rule.replace_random)
    random_tokens = torch.randint(vocab_size, input_ids.shape, generator=generator, device=generator.device).to(input_ids.device)
    corrupted = torch.where(to_mask, torch.full_like(input_ids, mask_token_id), input_ids)
    corrupted = torch.where(to_random, random_tokens, corrupted)
    return corrupted, labels


def _row_spans(word_ids: torch.Tensor, rule: MaskingRule, generator: torch.Generator) -> torch.Tensor:
    """One row's span choice: spans of consecutive words until round(probability x words) are chosen.
    Shape: word_ids (seq,) -> chosen (seq,) bool"""
    words = int(word_ids.max().item()) + 1 if word_ids.numel() and int(word_ids.max().item()) >= 0 else 0
    chosen_words = torch.zeros(max(words, 1), dtype=torch.bool)
    budget = round(rule.probability * words)
    while int(chosen_words.sum()) < budget:
        # geometric length by inversion: P(length = k) = p (1 - p)^(k - 1), clipped at span_max_words
        draw = float(torch.rand((), generator=generator, device=generator.device))
        length = 1 if rule.span_p >= 1.0 else 1 + int(torch.log(torch.tensor(1.0 - draw)) / torch.log(torch.tensor(1.0 - rule.span_p)))
        length = min(length, rule.span_max_words, budget - int(chosen_words.sum()))
        start = int(torch.randint(words - length + 1, (), generator=generator, device=generator.device))
        chosen_words[start : start + length] = True
    ids = word_ids.cpu()
    return torch.gather(chosen_words, 0, ids.clamp(min=0)) & (ids >= 0)
