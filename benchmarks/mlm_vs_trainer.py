"""Masked-LM training speed of bert_tasks against transformers' Trainer + BertForMaskedLM + DataCollatorForLanguageModeling.

Both continue pretraining the default checkpoint (all-MiniLM-L6-v2, which has no MLM head: both get
the same new head with the decoder tied to the word embeddings) on the first 8,192 SST-2 train
sentences, one row per sentence (bert_tasks: task.short_segment_share=0, so rows match), for 1
epoch: batch 32, lr 5e-5, linear decay, no warmup, weight decay 0.01, max length 128, 15% masked
with 80/10/10, the same precision. The Trainer runs at its fastest setting for this job: dynamic
padding, train_sampling_strategy="group_by_length", fused AdamW (its default). Samples/s counts
training only. Masked-token accuracy of both is scored on the 872 SST-2 dev sentences with the
same fixed masks (bert_tasks' evaluation rows), by one plain evaluation loop.

    python benchmarks/mlm_vs_trainer.py [--rows 8192] [--repeats 3] [--precision bf16] [--mode side-by-side|in-turn]

Prints both samples/s, the ratio bert_tasks / Trainer, both accuracies and the machine.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from cached_strategies import machine  # noqa: E402
from side_by_side import benchmark_main, pair_arguments  # noqa: E402
from shared_data import SST2, read_tsv  # noqa: E402
from train_speed_vs_trainer import resolve_default  # noqa: E402


def recipe_overrides(rows: int, precision: str, seed: int, out: str) -> list[str]:
    return [
        "data.dataset=null", f"data.train={SST2 / 'train.tsv'}", f"data.validation={SST2 / 'dev.tsv'}", "data.text_column=sentence",
        f"train.max_train_samples={rows}", "task.short_segment_share=0", "task.max_length=128",
        "train.epochs=1", "train.batch_size=32", "train.learning_rate=5e-5", "train.warmup_ratio=0", "train.weight_decay=0.01",
        f"train.mixed_precision={precision}", f"train.seed={seed}", f"output.dir={out}", "output.overwrite=true",
    ]


def dev_rows(precision: str, seed: int, out: str):
    """The dev sentences masked exactly as bert_tasks evaluates them (fixed seed per row)."""
    import bert_tasks
    from bert_tasks.assembly import prepare_task

    task, splits = prepare_task(bert_tasks.load_config("mlm", recipe_overrides(8, precision, seed, out)))
    return task.encode(splits["validation"])


@torch.no_grad()
def masked_accuracy(model, data, pad_id: int) -> float:
    """Plain fp32 loop over fixed masked rows: share of masked tokens predicted right (dense logits)."""
    from bert_tasks.batching import IGNORE_INDEX, pad_sequences

    model.eval()
    correct = total = 0
    for start in range(0, len(data), 64):
        rows = [data[i] for i in range(start, min(start + 64, len(data)))]
        ids = pad_sequences([r["input_ids"] for r in rows], pad_id)
        mask = pad_sequences([r["attention_mask"] for r in rows], 0)
        labels = pad_sequences([r["mlm_labels"] for r in rows], IGNORE_INDEX)
        logits = model(input_ids=ids, attention_mask=mask).logits  # Shape: (batch, seq, vocab)
        chosen = labels != IGNORE_INDEX
        correct += int((logits.argmax(-1)[chosen] == labels[chosen]).sum())
        total += int(chosen.sum())
    return correct / max(total, 1)


def run_trainer(model_path: str, rows: int, precision: str, seed: int, out: str) -> tuple[float, float]:
    import datasets
    from transformers import AutoModelForMaskedLM, AutoTokenizer, DataCollatorForLanguageModeling, Trainer, TrainingArguments

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    texts, _ = read_tsv(SST2 / "train.tsv", rows)
    encoded = tokenizer(texts, truncation=True, max_length=128, return_special_tokens_mask=True)
    torch.manual_seed(seed)
    model = AutoModelForMaskedLM.from_pretrained(model_path)
    collator = DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=0.15)  # 80/10/10 by default
    with tempfile.TemporaryDirectory() as folder:
        args = TrainingArguments(
            output_dir=folder, per_device_train_batch_size=32, learning_rate=5e-5, num_train_epochs=1, weight_decay=0.01,
            warmup_steps=0, bf16=precision == "bf16", use_cpu=True, train_sampling_strategy="group_by_length",
            eval_strategy="no", save_strategy="no", report_to=[], seed=seed, logging_steps=1000, disable_tqdm=True,
        )
        trainer = Trainer(model=model, args=args, train_dataset=datasets.Dataset.from_dict(dict(encoded)), data_collator=collator)
        result = trainer.train()
    return result.metrics["train_samples_per_second"], masked_accuracy(trainer.model, dev_rows(precision, seed, out), tokenizer.pad_token_id)


def run_bert_tasks(rows: int, precision: str, seed: int, out: str) -> tuple[float, float]:
    import bert_tasks
    from transformers import AutoModelForMaskedLM

    summary = bert_tasks.train(bert_tasks.load_config("mlm", recipe_overrides(rows, precision, seed, out)))
    published = Path(out) / "published"
    bert_tasks.publish(Path(summary.run_dir), published)  # the same scoring loop for both: a stock BertForMaskedLM
    return summary.train_samples_per_second, masked_accuracy(AutoModelForMaskedLM.from_pretrained(str(published)), dev_rows(precision, seed, out), 0)


SIDES = {
    "trainer": lambda args, out: run_trainer(resolve_default(), args.rows, args.precision, args.seed, out),
    "bert_tasks": lambda args, out: run_bert_tasks(args.rows, args.precision, args.seed, out),
}


def main() -> int:
    # bf16 where the CPU has it natively, else fp32 (emulated bf16 is a 2x loss)
    args = pair_arguments(__doc__.splitlines()[0], rows=8192, precision="bf16" if "native bf16" in machine() else "no").parse_args()
    return benchmark_main(__file__, args, SIDES, SST2 / "train.tsv", f"Masked LM, SST-2 {args.rows} train sentences", "masked acc (dev)", torch.get_num_threads(), machine())


if __name__ == "__main__":
    raise SystemExit(main())
