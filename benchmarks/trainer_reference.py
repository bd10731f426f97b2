"""The reference side of the speed benchmarks: transformers' stock models and Trainer, driven the way
transformers' own example scripts (run_glue.py, run_ner.py, run_qa.py) drive them.

Each job encodes its training rows either as the scripts do by default (``padded=True``: GLUE
and QA pad every row to max_length; NER pads per batch) or with per-batch padding (the Trainer's
fastest setting), and scores the trained model with a plain fp32 loop that is independent of
both training stacks.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch

from shared_data import CONLL, SQUAD_EVAL, SST2, read_tsv, squad_rows


def trainer_speed(model: Any, dataset: Any, collator: Any, settings: dict[str, Any], out: str) -> float:
    """Train with the Trainer (1 process, CPU) and return its training samples/s."""
    from transformers import Trainer, TrainingArguments

    args = TrainingArguments(output_dir=out, use_cpu=True, eval_strategy="no", save_strategy="no", report_to=[],
                             logging_steps=1000, disable_tqdm=True, **settings)
    return Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator).train().metrics["train_samples_per_second"]


# ---- SST-2 (run_glue.py) ------------------------------------------------------------------------

def sst2_train_set(tokenizer: Any, rows: int, padded: bool) -> tuple[Any, Any]:
    import datasets
    from transformers import DataCollatorWithPadding, default_data_collator

    texts, labels = read_tsv(SST2 / "train.tsv", rows)
    enc = tokenizer(texts, truncation=True, max_length=128, padding="max_length" if padded else False)
    return datasets.Dataset.from_dict({**enc, "labels": labels}), default_data_collator if padded else DataCollatorWithPadding(tokenizer)


@torch.no_grad()
def sst2_accuracy(model: Any, tokenizer: Any) -> float:
    texts, labels = read_tsv(SST2 / "dev.tsv")
    model.eval()
    predictions = []
    for start in range(0, len(texts), 64):
        batch = tokenizer(texts[start : start + 64], truncation=True, max_length=128, padding=True, return_tensors="pt")
        predictions.extend(model(**batch).logits.argmax(-1).tolist())
    return float(np.mean(np.array(predictions) == np.array(labels)))


# ---- CoNLL-2003 (run_ner.py: first-piece labels, per-batch padding) -----------------------------

def conll_labels() -> list[str]:
    from bert_tasks.conll import read_conll

    train, _ = read_conll(CONLL / "train.txt")
    return sorted({t for tags in train["ner_tags"] for t in tags}, key=lambda t: (t != "O", t[2:], t))


def conll_encode(tokenizer: Any, file: str, rows: int | None, labels: list[str]) -> tuple[Any, Any, dict]:
    """(dataset with first-piece labels, the tokenizer's encoding, the words and tags read)."""
    import datasets
    from bert_tasks.conll import read_conll

    columns, _ = read_conll(CONLL / file)
    words, tags = columns["tokens"][:rows], columns["ner_tags"][:rows]
    ids = {t: i for i, t in enumerate(labels)}
    enc = tokenizer(words, is_split_into_words=True, truncation=True, max_length=256)
    aligned = []
    for i in range(len(words)):
        previous, row = None, []
        for word in enc.word_ids(i):
            row.append(-100 if word is None or word == previous else ids[tags[i][word]])
            previous = word
        aligned.append(row)
    return datasets.Dataset.from_dict({**enc, "labels": aligned}), enc, {"tokens": words, "ner_tags": tags}


def conll_train_set(tokenizer: Any, rows: int, padded: bool) -> tuple[Any, Any]:
    from transformers import DataCollatorForTokenClassification

    dataset, _, _ = conll_encode(tokenizer, "train.txt", rows, conll_labels())
    return dataset, DataCollatorForTokenClassification(tokenizer)  # run_ner.py pads per batch by default


@torch.no_grad()
def conll_f1(model: Any, tokenizer: Any) -> float:
    """Entity F1 (seqeval, conlleval rules) of first-piece predictions on every word of valid.txt."""
    from seqeval.metrics import f1_score

    labels = conll_labels()
    _, enc, valid = conll_encode(tokenizer, "valid.txt", None, labels)
    model.eval()
    predicted = []
    for start in range(0, len(valid["tokens"]), 64):
        batch = tokenizer.pad({"input_ids": enc["input_ids"][start : start + 64]}, return_tensors="pt")
        for offset, row in enumerate(model(**batch).logits.argmax(-1).numpy()):  # Shape: (pieces,)
            first: dict[int, str] = {}
            for position, word in enumerate(enc.word_ids(start + offset)):
                if word is not None and word not in first:
                    first[word] = labels[row[position]]
            predicted.append([first.get(w, "O") for w in range(len(valid["tokens"][start + offset]))])
    return float(f1_score(valid["ner_tags"], predicted))


# ---- SQuAD (run_qa.py: windows of 384 with stride 128) ------------------------------------------

def squad_train_set(tokenizer: Any, rows: int, padded: bool) -> tuple[Any, Any]:
    """Training windows labelled with the answer's first and last token (both 0, [CLS], when the
    answer is not inside the window), as run_qa.py's prepare_train_features does."""
    import datasets
    from transformers import DataCollatorWithPadding, default_data_collator

    questions, contexts, answers, starts = squad_rows(f"[:{rows}]")  # the first rows of the agreed training part
    enc = tokenizer(questions, contexts, truncation="only_second", max_length=384, stride=128, return_overflowing_tokens=True,
                    return_offsets_mapping=True, padding="max_length" if padded else False)
    start_positions, end_positions = [], []
    for window, offsets in enumerate(enc["offset_mapping"]):
        question = enc["overflow_to_sample_mapping"][window]
        first_char, last_char = starts[question][0], starts[question][0] + len(answers[question][0])
        in_context = [i for i, sequence in enumerate(enc.sequence_ids(window)) if sequence == 1]
        if not in_context or offsets[in_context[0]][0] > first_char or offsets[in_context[-1]][1] < last_char:
            start_positions.append(0)
            end_positions.append(0)
            continue
        start_positions.append(next(i for i in in_context if offsets[i][1] > first_char))
        end_positions.append(next(i for i in reversed(in_context) if offsets[i][0] < last_char))
    columns = {k: enc[k] for k in ("input_ids", "token_type_ids", "attention_mask")}
    dataset = datasets.Dataset.from_dict({**columns, "start_positions": start_positions, "end_positions": end_positions})
    return dataset, default_data_collator if padded else DataCollatorWithPadding(tokenizer)


def stock_qa_answers(model: Any, tokenizer: Any, questions: list[str], contexts: list[str], batch_size: int,
                     windows_out: Optional[list[tuple[int, np.ndarray, np.ndarray, list[int], list[tuple[int, int]]]]] = None) -> list[str]:
    """What run_qa.py does with a trained model: windows padded to 384 with stride 128, batched forward
    passes, then per question the best start + end logit sum over the 20 best starts and ends of every
    window (inside the context, end >= start, at most 30 tokens). ``windows_out``, when given, receives
    each window's (question, start logits, end logits, context token indices, offsets) for a second look."""
    windows = tokenizer(questions, contexts, truncation="only_second", max_length=384, stride=128, return_overflowing_tokens=True,
                        return_offsets_mapping=True, padding="max_length")
    best: dict[int, tuple[float, str]] = {}
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(windows["input_ids"]), batch_size):
            rows = range(start, min(start + batch_size, len(windows["input_ids"])))
            inputs = {name: torch.tensor([windows[name][i] for i in rows]) for name in ("input_ids", "attention_mask", "token_type_ids")}
            out = model(**inputs)
            for row, starts, ends in zip(rows, out.start_logits.numpy(), out.end_logits.numpy()):  # Shape: (384,) each
                question = windows["overflow_to_sample_mapping"][row]
                context_tokens = [i for i, sequence in enumerate(windows.sequence_ids(row)) if sequence == 1]
                context_set = set(context_tokens)
                offsets = windows["offset_mapping"][row]
                if windows_out is not None:
                    windows_out.append((question, starts, ends, context_tokens, offsets))
                for s in np.argsort(starts)[-20:]:
                    for e in np.argsort(ends)[-20:]:
                        if s in context_set and e in context_set and s <= e < s + 30:
                            score = float(starts[s] + ends[e])
                            if question not in best or score > best[question][0]:
                                best[question] = (score, contexts[question][offsets[s][0] : offsets[e][1]])
    return [best.get(i, (0.0, ""))[1] for i in range(len(questions))]


def exhaustive_answers(windows: list[tuple[int, np.ndarray, np.ndarray, list[int], list[tuple[int, int]]]], contexts: list[str]) -> list[str]:
    """The same decoding over every allowed (start, end) pair instead of the 20 best of each: the whole
    start x end score matrix of a window, masked to the context, end >= start and at most 30 tokens."""
    best: dict[int, tuple[float, str]] = {}
    for question, starts, ends, context_tokens, offsets in windows:
        inside = np.zeros(len(starts), dtype=bool)
        inside[context_tokens] = True
        position = np.arange(len(starts))
        allowed = inside[:, None] & inside[None, :] & (position[None, :] >= position[:, None]) & (position[None, :] < position[:, None] + 30)  # Shape: [seq, seq]
        scores = np.where(allowed, starts[:, None].astype(np.float64) + ends[None, :], -np.inf)  # Shape: [seq, seq]
        s, e = np.unravel_index(int(np.argmax(scores)), scores.shape)
        if np.isfinite(scores[s, e]) and (question not in best or scores[s, e] > best[question][0]):
            best[question] = (float(scores[s, e]), contexts[question][offsets[s][0] : offsets[e][1]])
    return [best.get(i, (0.0, ""))[1] for i in range(len(contexts))]


def squad_f1(model: Any, tokenizer: Any, selection: str = SQUAD_EVAL) -> float:
    """F1 (percent, official v1.1 scoring) of the stock decoding on the questions of ``selection``."""
    from bert_tasks.squad_scoring import squad_v1

    questions, contexts, answers, _ = squad_rows(selection)
    return squad_v1(stock_qa_answers(model, tokenizer, questions, contexts, 64), answers)["f1"]  # percent, as bert_tasks reports it
