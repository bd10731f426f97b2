"""The masked-LM task end to end on a tiny BERT: raw .txt documents in, masks fresh per epoch and fixed for
evaluation, NSP / SOP, fill-mask parity with transformers' pipeline, fine-tuning from the result, bad input."""
from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import DEMO_DATA, ROOT, tiny_recipe
from transformers import BertTokenizerFast, pipeline

import bert_tasks
from bert_tasks.assembly import assemble
from bert_tasks.batching import IGNORE_INDEX
from bert_tasks.cli import main
from bert_tasks.config import load_config
from bert_tasks.errors import BertTasksError
from bert_tasks.publishing import publish
from bert_tasks.rundir import load_trained, read_metrics
from bert_tasks.training import train


def _sentences() -> list[str]:
    with (DEMO_DATA / "train.csv").open() as handle:
        return [row["text"] for row in csv.DictReader(handle)]


def write_corpus(path: Path, sentences: list[str], per_document: int) -> Path:
    """BERT's layout: one sentence per line, a blank line between documents."""
    documents = [sentences[i : i + per_document] for i in range(0, len(sentences), per_document)]
    path.write_text("\n\n".join("\n".join(document) for document in documents) + "\n")
    return path


@pytest.fixture()
def corpus(tmp_path) -> dict[str, Path]:
    sentences = _sentences()
    return {"train": write_corpus(tmp_path / "corpus.txt", sentences[:160], 4), "validation": write_corpus(tmp_path / "heldout.txt", sentences[160:240], 4)}


def _recipe(checkpoint, tmp_path, corpus, name="mlm", train_options=None, **task):
    return tiny_recipe(
        checkpoint, tmp_path / "runs",
        task={"name": "mlm", "max_length": 32, **task},
        data={"dataset": None, "train": str(corpus["train"]), "validation": str(corpus["validation"]), "label_column": "label"},
        train={"epochs": 2, "batch_size": 8, "eval_every": 5, "learning_rate": 1e-3, "max_train_samples": None, "max_eval_samples": None, **(train_options or {})},
        output={"name": name},
    )


def _assemble(checkpoint, tmp_path, corpus, **task):
    assembly, splits = assemble(load_config(_recipe(checkpoint, tmp_path, corpus, **task)))
    return assembly, splits


# -- masks --------------------------------------------------------------------------------------
@pytest.mark.parametrize("masking, objective", [("token", "none"), ("whole_word", "sop"), ("span", "nsp")])
def test_evaluation_masks_are_fixed_and_never_touch_special_tokens(tmp_path, tiny_checkpoint, corpus, masking, objective):
    # special tokens written in the text are not words either: never predicted
    corpus["validation"].write_text(corpus["validation"].read_text() + "\nthe [SEP] was [MASK] good\n[CLS] fine [PAD] food\n")
    assembly, splits = _assemble(tiny_checkpoint, tmp_path, corpus, masking=masking, sentence_objective=objective)
    special = set(assembly.task.tokenizer.all_special_ids) - {assembly.task.tokenizer.unk_token_id}
    first, again = (assembly.task.encode(splits["validation"]).columns for _ in range(2))
    assert first["input_ids"] == again["input_ids"] and first["mlm_labels"] == again["mlm_labels"]
    chosen = total = 0
    for ids, labels, words in zip(first["input_ids"], first["mlm_labels"], first["word_ids"]):
        for label, word in zip(labels, words):
            assert word >= 0 or label == IGNORE_INDEX  # [CLS] / [SEP] are never predicted
            assert label not in special
        chosen_words = {w for label, w in zip(labels, words) if label != IGNORE_INDEX}
        if masking != "token":  # every piece of a chosen word is predicted, none of another word
            assert all((label != IGNORE_INDEX) == (w in chosen_words) for label, w in zip(labels, words) if w >= 0)
        chosen += len(chosen_words) if masking != "token" else sum(label != IGNORE_INDEX for label in labels)
        total += len({w for w in words if w >= 0}) if masking != "token" else sum(w >= 0 for w in words)
    assert 0.10 < chosen / total < 0.20


def _fingerprint(checkpoint: Path, tmp_path: Path, corpus: dict[str, Path]) -> str:
    assembly, splits = _assemble(checkpoint, tmp_path, corpus, sentence_objective="nsp")
    columns = assembly.task.encode(splits["validation"]).columns
    return hashlib.sha256(json.dumps([columns[k] for k in ("input_ids", "mlm_labels", "token_type_ids", "labels")]).encode()).hexdigest()


def test_evaluation_masks_and_pairs_are_the_same_in_another_process(tmp_path, tiny_checkpoint, corpus):
    script = (
        "import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]);"
        "from test_masked_lm import _fingerprint;"
        "print(_fingerprint(Path(sys.argv[2]), Path(sys.argv[3]), {'train': Path(sys.argv[4]), 'validation': Path(sys.argv[5])}))"
    )
    done = subprocess.run([sys.executable, "-c", script, str(ROOT / "tests"), str(tiny_checkpoint), str(tmp_path), str(corpus["train"]), str(corpus["validation"])],
                          capture_output=True, text=True, timeout=300, env={"PYTHONHASHSEED": "7", "HF_HUB_OFFLINE": "1", "PATH": ""})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == _fingerprint(tiny_checkpoint, tmp_path, corpus)


def test_training_masks_are_fresh_each_epoch_and_the_same_for_a_row_in_any_batch(tmp_path, tiny_checkpoint, corpus):
    assembly, splits = _assemble(tiny_checkpoint, tmp_path, corpus)
    task, data = assembly.task, assembly.task.encode(splits["train"])
    rows = [data[i] for i in range(12)]
    task.start_epoch(0, seed=3)
    epoch0 = task.collate(rows)["inputs"]
    reversed_rows = task.collate(rows[::-1])["inputs"]
    alone = task.collate(rows[5:6])["inputs"]
    width = int(alone["attention_mask"].sum())
    assert torch.equal(alone["mlm_labels"][0, :width], epoch0["mlm_labels"][5, :width])
    assert torch.equal(reversed_rows["mlm_labels"].flip(0), epoch0["mlm_labels"])
    task.start_epoch(1, seed=3)
    epoch1 = task.collate(rows)["inputs"]
    assert not torch.equal(epoch1["mlm_labels"], epoch0["mlm_labels"])
    task.start_epoch(0, seed=4)
    assert not torch.equal(task.collate(rows)["inputs"]["mlm_labels"], epoch0["mlm_labels"])
    assert data.columns["input_ids"][5] == rows[5]["input_ids"]  # the stored row stays clean


# -- training, prediction, publishing, fine-tuning from the result --------------------------------
@pytest.fixture(scope="module")
def mlm_runs(tmp_path_factory, tiny_checkpoint) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("mlm-runs")
    sentences = _sentences()
    corpus = {"train": write_corpus(folder / "corpus.txt", sentences[:160], 4), "validation": write_corpus(folder / "heldout.txt", sentences[160:240], 4)}
    runs = {}
    for objective in ("none", "sop"):
        summary = train(load_config(_recipe(tiny_checkpoint, folder, corpus, name=f"mlm-{objective}", sentence_objective=objective, masking="whole_word")))
        runs[objective] = Path(summary.run_dir)
    return runs


def test_training_on_txt_documents_reports_the_pretraining_metrics(mlm_runs):
    for objective, run in mlm_runs.items():
        evals = [e for e in read_metrics(run) if e["event"] == "eval"]
        assert len(evals) >= 3
        names = {"perplexity", "accuracy", "mlm_loss", "predicted_tokens"} | ({"sop_accuracy", "sentence_loss"} if objective == "sop" else set())
        assert names <= set(evals[0])
        assert len({e["predicted_tokens"] for e in evals}) == 1  # the same masks at every evaluation
        assert evals[-1]["perplexity"] < evals[0]["perplexity"]
        summary = json.loads((run / "summary.json").read_text())
        assert summary["best_metric"] == "perplexity" and summary["best_value"] == min(e["perplexity"] for e in evals)


def test_fill_mask_pipeline_gives_the_same_top_5_as_predict(mlm_runs, tmp_path):
    texts = ["the staff were [MASK] and quick", "[MASK] broke after two days , [MASK] again"]
    for objective, run in mlm_runs.items():
        out = tmp_path / objective
        export = publish(run, out)
        assert export.format == "transformers", export.reason
        ours = bert_tasks.load(run).predict(texts)
        fill = pipeline("fill-mask", model=str(out), top_k=5)
        for text, mine in zip(texts, ours):
            theirs = fill(text)
            theirs = [theirs] if isinstance(theirs[0], dict) else theirs  # one [MASK]: a flat list
            assert len(mine["masks"]) == len(theirs) == text.count("[MASK]")
            for candidates, stock in zip(mine["masks"], theirs):
                assert [c["token"] for c in candidates] == [s["token"] for s in stock]
                assert [c["score"] for c in candidates] == pytest.approx([s["score"] for s in stock], abs=1e-5)


def test_prediction_text_without_a_mask_token_is_a_one_line_error(mlm_runs):
    with pytest.raises(BertTasksError) as error:
        bert_tasks.load(mlm_runs["none"]).predict(["[MASK] is fine", "nothing to fill in"])
    assert "\n" not in str(error.value) and "row 2" in str(error.value) and "[MASK]" in str(error.value)


def test_fine_tuning_starts_from_the_adapted_encoder(mlm_runs, tmp_path):
    for objective, run in mlm_runs.items():
        _, trained = load_trained(run)
        config = load_config(tiny_recipe(run, tmp_path / objective, train={"max_train_samples": 16, "max_eval_samples": 8}))
        assembly, _ = assemble(config)
        adapted = trained.model.backbone.state_dict()
        for name, value in assembly.model.backbone.state_dict().items():
            if name.startswith("pooler."):
                torch.testing.assert_close(value, trained.model.head.pooler.state_dict()[name[len("pooler."):]], rtol=0, atol=0)
            else:
                torch.testing.assert_close(value, adapted[name], rtol=0, atol=0, msg=name)
        assert train(config).best_value is not None


def test_head_only_pretraining_without_a_sentence_objective_keeps_the_pooler_frozen(tmp_path, tiny_checkpoint, corpus):
    config = load_config({**_recipe(tiny_checkpoint, tmp_path, corpus), "strategy": {"name": "last_n", "n": 0}})
    assembly, _ = assemble(config)
    trains = {name for name, p in assembly.model.named_parameters() if p.requires_grad}
    assert trains and all(name.startswith("head.cls.predictions.") for name in trains)
    assert not any(p.requires_grad for p in assembly.model.head.pooler.parameters())


# -- bad input ---------------------------------------------------------------------------------------
def _error(checkpoint, tmp_path, corpus, **task) -> str:
    with pytest.raises(BertTasksError) as error:
        train(load_config(_recipe(checkpoint, tmp_path, corpus, **task)))
    message = str(error.value)
    assert "\n" not in message, message
    return message


def test_an_empty_corpus_names_its_file(tmp_path, tiny_checkpoint, corpus):
    corpus["train"].write_text("\n\n   \n")
    assert str(corpus["train"]) in _error(tiny_checkpoint, tmp_path, corpus)


@pytest.mark.parametrize("objective", ["nsp", "sop"])
def test_documents_too_short_for_a_pair_objective(tmp_path, tiny_checkpoint, corpus, objective):
    short = [" ".join(sentence.split()[:2]) for sentence in _sentences()[:40]]
    write_corpus(corpus["train"], short, 1)  # one short sentence per document: no second segment
    message = _error(tiny_checkpoint, tmp_path, corpus, sentence_objective=objective)
    assert str(corpus["train"]) in message and objective in message.lower()


def test_a_file_without_maskable_tokens(tmp_path, tiny_checkpoint, corpus):
    corpus["validation"].write_text("[SEP]\n[CLS] [SEP]\n")
    message = _error(tiny_checkpoint, tmp_path, corpus)
    assert str(corpus["validation"]) in message and "no maskable token" in message


def test_a_tokenizer_without_a_mask_token(tmp_path, tiny_checkpoint, corpus):
    folder = tmp_path / "no-mask"
    folder.mkdir()
    for path in tiny_checkpoint.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    settings = json.loads((folder / "tokenizer_config.json").read_text())
    settings["mask_token"] = None
    (folder / "tokenizer_config.json").write_text(json.dumps(settings))
    assert BertTokenizerFast.from_pretrained(str(folder)).mask_token_id is None
    assert "no mask token" in _error(folder, tmp_path, corpus)


def test_cli_errors_are_one_line(tmp_path, tiny_checkpoint, corpus, capsys):
    corpus["train"].write_text("")
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps(_recipe(tiny_checkpoint, tmp_path, corpus)))
    capsys.readouterr()
    assert main(["train", str(recipe)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bert-tasks: error: ") and "\n" not in err and str(corpus["train"]) in err


def test_the_bundled_recipe_runs_on_the_embedded_demo_text(tmp_path, tiny_checkpoint):
    config = load_config("mlm", [f"model.checkpoint={tiny_checkpoint}", "train.epochs=1", "train.max_train_samples=64",
                                 "train.max_eval_samples=32", f"output.dir={tmp_path}"])
    summary = train(config)
    assert summary.task == "mlm" and summary.best_metric == "perplexity" and summary.eval["predicted_tokens"] > 0
