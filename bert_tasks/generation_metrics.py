"""Metrics of generated text, offline: ROUGE (rouge-score, as the summarisation papers report it)
and sacreBLEU, on a 0-100 scale."""
from __future__ import annotations

import re
from typing import Sequence

import sacrebleu
from rouge_score import rouge_scorer

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
GENERATION_METRICS = (*ROUGE_TYPES, "bleu", "gen_len")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


def sentences_per_line(text: str) -> str:
    """rougeLsum scores summary-level LCS over sentences, which it reads one per line."""
    return "\n".join(part.strip() for part in SENTENCE_END.split(text.strip()) if part.strip())


def rouge(predictions: Sequence[str], references: Sequence[str], use_stemmer: bool = True) -> dict[str, float]:
    """Mean F-measure over examples of ROUGE-1 / 2 / L / Lsum, x 100 (Porter stemming, as in Lin 2004's ROUGE-1.5.5 -m)."""
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=use_stemmer)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for prediction, reference in zip(predictions, references, strict=True):
        scores = scorer.score(sentences_per_line(reference), sentences_per_line(prediction))
        for name in ROUGE_TYPES:
            totals[name] += scores[name].fmeasure
    count = max(len(predictions), 1)
    return {name: 100.0 * total / count for name, total in totals.items()}


def bleu(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU with sacreBLEU's standard 13a tokenisation, one reference per example."""
    return float(sacrebleu.corpus_bleu(list(predictions), [list(references)]).score)


def generation_scores(predictions: Sequence[str], references: Sequence[str], lengths: Sequence[int], names: Sequence[str]) -> dict[str, float]:
    """The requested metrics; ``gen_len`` is the mean number of generated tokens (no special tokens)."""
    results: dict[str, float] = {}
    if any(name in ROUGE_TYPES for name in names):
        results.update({name: value for name, value in rouge(predictions, references).items() if name in names})
    if "bleu" in names:
        results["bleu"] = bleu(predictions, references)
    if "gen_len" in names:
        results["gen_len"] = float(sum(lengths) / max(len(lengths), 1))
    return {name: results[name] for name in names}
