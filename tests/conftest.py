"""Shared fixtures: a tiny BERT and WordPiece tokenizer built in code, saved as a local checkpoint."""
from __future__ import annotations

import atexit
import csv
import json
import os
import random
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertModel, BertTokenizerFast

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
DEMO_DATA = ROOT / "bert_tasks" / "demo_data"

# Frozen-part stores of the tests' runs (and their subprocesses) go to a folder of this session, not ~/.cache.
FROZEN_CACHE = Path(tempfile.mkdtemp(prefix="bert-tasks-test-cache-"))
os.environ["BERT_TASKS_CACHE"] = str(FROZEN_CACHE)
atexit.register(shutil.rmtree, FROZEN_CACHE, True)


def tiny_vocab() -> list[str]:
    """Special tokens, the letters (so any word splits into pieces) and the demo set's words."""
    words = set()
    for name in ("train.csv", "validation.csv"):
        with (DEMO_DATA / name).open() as handle:
            for row in csv.DictReader(handle):
                words.update(w.strip(".,!?;:'\"()").lower() for w in row["text"].split())
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789.,!?;:'\"()-")
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *letters, *[f"##{c}" for c in letters], *sorted(w for w in words if w and w not in letters)]


def make_tiny_checkpoint(path: Path, dropout: float = 0.1, seed: int = 0) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    vocab = tiny_vocab()
    tokenizer = BertTokenizerFast(vocab={token: i for i, token in enumerate(vocab)}, do_lower_case=True)
    tokenizer.save_pretrained(str(path))
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=37,
        max_position_embeddings=128, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
    )
    BertModel(config).save_pretrained(str(path))
    return path


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_checkpoint_no_dropout(tmp_path_factory) -> Path:
    """Dropout off: runs on 1 and 2 processes draw no random numbers, so they can agree exactly."""
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny-bert-nodrop"), dropout=0.0)


def write_csv(path: Path, rows: list[dict], delimiter: str = ",") -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture()
def pair_data(tmp_path) -> dict[str, Path]:
    """Sentence pairs from the demo sentences: label 'same' when both have the same sentiment; score for regression."""
    with (DEMO_DATA / "train.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    rng = random.Random(0)
    out = []
    for _ in range(64):
        a, b = rng.sample(rows, 2)
        same = a["label"] == b["label"]
        out.append({"first": a["text"], "second": b["text"], "relation": "same" if same else "different", "score": 4.0 if same else 1.0})
    return {"train": write_csv(tmp_path / "pairs_train.csv", out[:48]), "validation": write_csv(tmp_path / "pairs_dev.csv", out[48:])}


PEOPLE = ["alice", "bob smith", "carol", "dave jones", "erin"]
PLACES = ["paris", "new york", "oslo", "cairo"]
COMPANIES = ["acme corp", "globex"]


def ner_sentences(count: int, seed: int = 0, long_every: int = 0) -> list[list[tuple[str, str]]]:
    """Demo review words with people, places and companies put in (IOB2 tags); names are not in the
    tiny vocabulary, so they split into letter pieces. ``long_every``: every N-th sentence is 3 joined."""
    with (DEMO_DATA / "train.csv").open() as handle:
        texts = [row["text"].lower().split() for row in csv.DictReader(handle)]
    rng = random.Random(seed)
    out = []
    for number in range(count):
        sentence: list[tuple[str, str]] = []
        for _ in range(3 if long_every and number % long_every == 0 else 1):
            words = [(w, "O") for w in rng.choice(texts)[:12]]
            for kind, names in (("PER", PEOPLE), ("LOC", PLACES), ("ORG", COMPANIES)):
                if rng.random() < 0.6:
                    parts = rng.choice(names).split()
                    at = rng.randrange(len(words) + 1)
                    words[at:at] = [(p, ("B-" if i == 0 else "I-") + kind) for i, p in enumerate(parts)]
            sentence += words
        out.append(sentence)
    return out


def write_conll_file(path: Path, sentences: list[list[tuple[str, str]]], documents: int = 2) -> Path:
    """4-column CoNLL-2003 layout (token POS chunk NER) with -DOCSTART- lines."""
    lines = []
    for number, sentence in enumerate(sentences):
        if number % max(1, len(sentences) // documents) == 0:
            lines += ["-DOCSTART- -X- -X- O", ""]
        lines += [f"{word} NN I-NP {tag}" for word, tag in sentence] + [""]
    path.write_text("\n".join(lines) + "\n")
    return path


def make_ner_files(directory: Path) -> dict[str, Path]:
    """160 training and 40 validation sentences (every 5th validation sentence long enough for windows)."""
    return {
        "train": write_conll_file(directory / "ner_train.txt", ner_sentences(160, seed=0)),
        "validation": write_conll_file(directory / "ner_valid.txt", ner_sentences(40, seed=1, long_every=5)),
    }


@pytest.fixture()
def ner_data(tmp_path) -> dict[str, Path]:
    return make_ner_files(tmp_path)


def ner_recipe_sections(ner: dict[str, Path], **task) -> dict:
    """Recipe sections for tagging on ``ner_data`` files."""
    return {
        "task": {"name": "tagging", "max_length": 32, "stride": 8, **task},
        "data": {"dataset": None, "train": str(ner["train"]), "validation": str(ner["validation"]), "text_column": "tokens", "label_column": "ner_tags"},
    }


def qa_examples(count: int, seed: int = 0, unanswerable: float = 0.0) -> list[dict]:
    """Flat QA rows: a demo review with a person and a place put in; the question asks for the
    place (or, with probability ``unanswerable``, for a person who is not there: no answer)."""
    with (DEMO_DATA / "train.csv").open() as handle:
        texts = [row["text"].lower() for row in csv.DictReader(handle)]
    rng = random.Random(seed)
    rows = []
    for number in range(count):
        person, place = rng.choice(PEOPLE), rng.choice(PLACES)
        lead = f"{rng.choice(texts)} {rng.choice(texts)} " * rng.randint(1, 3)
        context = f"{lead}{person} bought it in {place} . {rng.choice(texts)}"
        if rng.random() < unanswerable:
            other = rng.choice([p for p in PEOPLE if p != person])
            answers = {"text": [], "answer_start": []}
            question = f"where did {other} buy it ?"
        else:
            answers = {"text": [place], "answer_start": [context.index(f" in {place} .") + 4]}
            question = f"where did {person} buy it ?"
        rows.append({"id": f"q{number}", "question": question, "context": context, "answers": answers})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def make_qa_files(directory: Path, unanswerable: float = 0.0) -> dict[str, Path]:
    return {
        "train": write_jsonl(directory / "qa_train.jsonl", qa_examples(120, seed=0, unanswerable=unanswerable)),
        "validation": write_jsonl(directory / "qa_valid.jsonl", qa_examples(30, seed=1, unanswerable=unanswerable)),
    }


def qa_recipe_sections(files: dict[str, Path], **task) -> dict:
    return {
        "task": {"name": "span_qa", "max_length": 64, "doc_stride": 16, "max_question_length": 16, "max_answer_length": 8, **task},
        "data": {"dataset": None, "train": str(files["train"]), "validation": str(files["validation"]),
                 "text_column": "question", "text_pair_column": "context", "label_column": "answers"},
    }


def outputs_beside_transformers(checkpoint: Path, run_root: Path, sections: dict, reference_class: type, **reference_options):
    """Our model (full tuning) and a stock transformers model holding the same weights, run on
    8 validation rows: (our outputs, the reference's outputs object, the attention mask)."""
    from bert_tasks.assembly import assemble
    from bert_tasks.config import load_config

    assembly, splits = assemble(load_config(tiny_recipe(checkpoint, run_root, **sections)))
    reference = reference_class.from_pretrained(str(checkpoint), **reference_options)
    state = {f"bert.{k[len('backbone.'):]}" if k.startswith("backbone.") else k.replace("head.", ""): v for k, v in assembly.model.state_dict().items()}
    missing, unexpected = reference.load_state_dict(state, strict=False)
    assert not unexpected and all("pooler" in name for name in missing)
    data = assembly.task.encode(splits["validation"])
    batch = assembly.task.collate([data[i] for i in range(8)])
    assembly.model.eval(), reference.eval()
    with torch.no_grad():
        return assembly.model(**batch["inputs"]), reference(**batch["inputs"]), batch["inputs"]["attention_mask"].bool()


def tiny_recipe(checkpoint: Path, run_root: Path, **sections) -> dict:
    """A recipe mapping for the tiny model on the demo data, with section overrides."""
    recipe = {
        "model": {"checkpoint": str(checkpoint)},
        "task": {"name": "classification", "max_length": 32},
        "strategy": {"name": "full"},
        "data": {"dataset": "demo", "text_column": "text", "label_column": "label"},
        # fp32 on every machine (the default, auto, picks bf16 where the CPU runs it natively): exact comparisons hold
        "train": {"epochs": 1, "batch_size": 16, "learning_rate": 1e-3, "max_train_samples": 96, "max_eval_samples": 40, "mixed_precision": "no"},
        "output": {"dir": str(run_root), "name": "run"},
    }
    for section, values in sections.items():
        if section == "task" and values.get("name", "classification") != "classification":
            recipe["task"] = {}  # another task: the classification defaults do not apply
        recipe.setdefault(section, {}).update(values)
    return recipe


def make_tiny_seq2seq_checkpoint(path: Path, family: str) -> Path:
    """A tiny native encoder-decoder (t5 or bart) beside the tiny WordPiece tokenizer ([SEP] ends, [PAD] pads)."""
    from transformers import BartConfig, BartForConditionalGeneration, T5Config, T5ForConditionalGeneration

    path.mkdir(parents=True, exist_ok=True)
    vocab = tiny_vocab()
    BertTokenizerFast(vocab={token: i for i, token in enumerate(vocab)}, do_lower_case=True).save_pretrained(str(path))
    torch.manual_seed(0)
    if family == "t5":
        config = T5Config(vocab_size=len(vocab), d_model=32, d_kv=8, d_ff=37, num_layers=2, num_decoder_layers=2, num_heads=4,
                          pad_token_id=0, eos_token_id=3, decoder_start_token_id=0)
        T5ForConditionalGeneration(config).save_pretrained(str(path))
    else:
        config = BartConfig(vocab_size=len(vocab), d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                            decoder_attention_heads=4, encoder_ffn_dim=37, decoder_ffn_dim=37, max_position_embeddings=128,
                            pad_token_id=0, bos_token_id=2, eos_token_id=3, decoder_start_token_id=3, forced_eos_token_id=None)
        BartForConditionalGeneration(config).save_pretrained(str(path))
    return path


def make_seq2seq_files(directory: Path, train: int = 96, validation: int = 24) -> dict[str, Path]:
    """Demo reviews as sources; the target says the review's sentiment in words of two lengths (a tiny
    model learns it in seconds). Training rows are csv, validation rows jsonl: both readers feed the task."""
    with (DEMO_DATA / "train.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    phrases = {"positive": "a positive review", "negative": "negative"}
    examples = [{"dialogue": row["text"].lower(), "summary": phrases[row["label"]]} for row in rows]
    return {
        "train": write_csv(directory / "s2s_train.csv", examples[:train]),
        "validation": write_jsonl(directory / "s2s_valid.jsonl", examples[train : train + validation]),
    }


def seq2seq_recipe_sections(files: dict[str, Path], **task) -> dict:
    return {
        "task": {"name": "seq2seq", "max_source_length": 32, "max_target_length": 24, "max_new_tokens": 24, **task},
        "data": {"dataset": None, "train": str(files["train"]), "validation": str(files["validation"]), "text_column": "dialogue", "label_column": "summary"},
    }


WALL_CLOCK_FIELDS = ("train_seconds",)


def metric_records(run_dir: Path) -> list[dict]:
    """metrics.jsonl without its wall-clock fields: what two runs that computed the same thing share."""
    from bert_tasks.rundir import read_metrics

    return [{k: v for k, v in record.items() if k not in WALL_CLOCK_FIELDS} for record in read_metrics(run_dir)]
