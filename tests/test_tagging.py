"""Token tagging: readers, subword label alignment, windows over long sentences, entity metrics, prediction."""
from __future__ import annotations

import json
import random

import datasets
import numpy as np
import pytest
import torch
from conftest import (
    ner_recipe_sections,
    ner_sentences,
    outputs_beside_transformers,
    tiny_recipe,
    write_conll_file,
)
from transformers import AutoModelForTokenClassification, AutoTokenizer

import bert_tasks
from bert_tasks.assembly import build_task
from bert_tasks.batching import IGNORE_INDEX
from bert_tasks.config import load_config
from bert_tasks.conll import read_conll, write_conll
from bert_tasks.data import Split, read_file
from bert_tasks.errors import DataError
from bert_tasks.metrics import entity_scores
from bert_tasks.tasks.word_windows import plan_windows


def _task(tiny_checkpoint, tmp_path, ner, **task_options):
    config = load_config(tiny_recipe(tiny_checkpoint, tmp_path, **ner_recipe_sections(ner, **task_options)))
    task = build_task(config, AutoTokenizer.from_pretrained(str(tiny_checkpoint)))
    task.fit(read_file("train", ner["train"]))
    return task


# -- readers ------------------------------------------------------------------------
def test_conll_reader_skips_docstart_and_names_columns(tmp_path):
    path = tmp_path / "a.conll"
    path.write_text("-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\n\nPeter NNP B-NP B-PER\nBlackburn NNP I-NP I-PER\n")
    columns, lines = read_conll(path)
    assert columns == {
        "tokens": [["EU", "rejects"], ["Peter", "Blackburn"]],
        "pos_tags": [["NNP", "VBZ"], ["NNP", "NNP"]],
        "chunk_tags": [["B-NP", "B-VP"], ["B-NP", "I-NP"]],
        "ner_tags": [["B-ORG", "O"], ["B-PER", "I-PER"]],
    }
    assert lines == [3, 7]
    named, _ = read_conll(path, ["word", "pos", "chunk", "entity"])
    assert named["entity"] == columns["ner_tags"]
    two = tmp_path / "b.txt"
    two.write_text("Paris\tB-LOC\nis\tO\n")
    assert read_conll(two)[0] == {"tokens": [["Paris", "is"]], "tags": [["B-LOC", "O"]]}


def test_conll_column_count_error_names_the_line(tmp_path):
    path = tmp_path / "a.conll"
    path.write_text("EU NNP B-NP B-ORG\nrejects VBZ O\n")
    with pytest.raises(DataError, match=r"a\.conll, line 2: 3 columns, expected 4 like line 1"):
        read_conll(path)
    with pytest.raises(DataError, match="line 1: 4 columns, but data.conll_columns names 2"):
        read_conll(tmp_path / "a.conll", ["tokens", "tags"])


def test_write_conll_appends_a_column_and_keeps_the_layout(tmp_path):
    source = tmp_path / "in.conll"
    source.write_text("-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\nPeter\tNNP\tB-NP\tB-PER\n")
    out = tmp_path / "out.conll"
    write_conll(source, [["B-ORG", "O"], ["B-PER"]], out)
    assert out.read_text() == "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG B-ORG\nrejects VBZ B-VP O O\n\nPeter\tNNP\tB-NP\tB-PER\tB-PER\n"


def test_hub_style_classlabel_ids_and_jsonl_lists(tmp_path, tiny_checkpoint, ner_data):
    names = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    features = datasets.Features({"tokens": datasets.List(datasets.Value("string")), "ner_tags": datasets.List(datasets.ClassLabel(names=names))})
    hub = datasets.Dataset.from_dict({"tokens": [["alice", "is", "in", "new", "york"]], "ner_tags": [[1, 0, 0, 3, 4]]}, features=features)
    config = load_config(tiny_recipe(tiny_checkpoint, tmp_path, **ner_recipe_sections(ner_data)))
    task = build_task(config, AutoTokenizer.from_pretrained(str(tiny_checkpoint)))
    task.fit(Split("train", hub, "hub conll [train]"))
    assert task.labels == names  # the ClassLabel order, not sorted
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text(json.dumps({"tokens": ["bob", "likes", "oslo"], "ner_tags": ["B-PER", "O", "B-LOC"]}) + "\n")
    data = task.encode(read_file("validation", jsonl))
    assert data.meta["tags"] == [[1, 0, 3]]


# -- label alignment ---------------------------------------------------------------
def _pieces_and_labels(task, data, row=0):
    tokens = task.tokenizer.convert_ids_to_tokens(data.columns["input_ids"][row])
    labels = [task.labels[i] if i != IGNORE_INDEX else None for i in data.columns["labels"][row]]
    return list(zip(tokens, labels))


def test_first_piece_alignment(tmp_path, tiny_checkpoint, ner_data):
    task = _task(tiny_checkpoint, tmp_path, ner_data)
    path = write_conll_file(tmp_path / "one.txt", [[("alice", "B-PER"), ("is", "O"), ("great", "O")]])
    data = task.encode(read_file("validation", path))
    assert _pieces_and_labels(task, data) == [
        ("[CLS]", None), ("a", "B-PER"), ("##l", None), ("##i", None), ("##c", None), ("##e", None), ("is", "O"), ("great", "O"), ("[SEP]", None),
    ]


def test_all_pieces_alignment_turns_b_into_i(tmp_path, tiny_checkpoint, ner_data):
    task = _task(tiny_checkpoint, tmp_path, ner_data, label_pieces="all")
    path = write_conll_file(tmp_path / "one.txt", [[("bob", "B-PER"), ("smith", "I-PER"), ("great", "O")]])
    data = task.encode(read_file("validation", path))
    assert _pieces_and_labels(task, data) == [
        ("[CLS]", None), ("b", "B-PER"), ("##o", "I-PER"), ("##b", "I-PER"), ("s", "I-PER"), ("##m", "I-PER"), ("##i", "I-PER"),
        ("##t", "I-PER"), ("##h", "I-PER"), ("great", "O"), ("[SEP]", None),
    ]


# -- windows ------------------------------------------------------------------------
def test_window_plans_cover_every_word_within_budget():
    rng = random.Random(0)
    for _ in range(300):
        counts = [rng.randint(1, 6) for _ in range(rng.randint(1, 60))]
        budget = rng.randint(6, 30)
        stride = rng.randint(0, budget // 2)
        windows = plan_windows(counts, budget, stride)
        assert windows[0][0] == 0 and windows[-1][1] == len(counts)
        for (start, end), (next_start, next_end) in zip(windows, windows[1:]):
            assert start < next_start <= end < next_end  # progress, no gap
            assert sum(counts[next_start:end]) <= stride  # overlap within the stride
        assert all(sum(counts[s:e]) <= budget for s, e in windows)


def test_long_sentences_become_windows_and_every_word_gets_one_tag(tmp_path, tiny_checkpoint, ner_data):
    task = _task(tiny_checkpoint, tmp_path, ner_data)  # max_length 32, stride 8
    sentences = ner_sentences(6, seed=3, long_every=2)
    data = task.encode(read_file("validation", write_conll_file(tmp_path / "long.txt", sentences)))
    assert len(data) > len(sentences) and max(data.lengths) <= 32
    # every word's first piece appears in some window; outputs = one-hot of the word's gold tag
    outputs = []
    for row, ids in enumerate(data.columns["input_ids"]):
        example = data.meta["row_example"][row]
        logits = np.zeros((len(ids), len(task.labels)), dtype=np.float32)
        for position, word in enumerate(data.meta["row_words"][row]):
            if word >= 0:
                logits[position, data.meta["tags"][example][word]] = 5.0
        outputs.append(logits)
    predictions = task.format_predictions(outputs, data)
    assert [p["tags"] for p in predictions] == [[tag for _, tag in s] for s in sentences]
    assert task.compute_metrics(outputs, data)["f1"] == 1.0


def test_each_word_is_read_from_its_most_central_window(tmp_path, tiny_checkpoint, ner_data):
    task = _task(tiny_checkpoint, tmp_path, ner_data, max_length=12, stride=4)
    words = [("great", "O")] * 30
    data = task.encode(read_file("validation", write_conll_file(tmp_path / "w.txt", [words])))
    windows = data.meta["row_window"]
    assert len(windows) >= 3
    # row r votes for tag index r % labels: each word must take the vote of the row where it is most central
    outputs = [np.eye(len(task.labels), dtype=np.float32)[np.full(len(ids), r % len(task.labels))] for r, ids in enumerate(data.columns["input_ids"])]
    chosen = task.word_scores(outputs, data)[0].argmax(-1)
    for word, tag in enumerate(chosen):
        rooms = {r: min(word - s, e - 1 - word) for r, (s, e) in enumerate(windows) if s <= word < e}
        assert rooms[next(r for r in rooms if r % len(task.labels) == tag)] == max(rooms.values())


# -- metrics ------------------------------------------------------------------------
def test_entity_scores_by_hand():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    predicted = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O"]]
    scores = entity_scores(gold, predicted, "IOB2", strict=False)
    # 3 gold entities, 3 predicted, 2 right
    assert scores["precision"] == pytest.approx(2 / 3) and scores["recall"] == pytest.approx(2 / 3) and scores["f1"] == pytest.approx(2 / 3)
    assert scores["PER/f1"] == 1.0 and scores["LOC/recall"] == 0.0 and scores["ORG/precision"] == pytest.approx(0.5)
    assert scores["ORG/support"] == 1.0 and scores["LOC/support"] == 1.0


def test_strict_mode_rejects_invalid_entities():
    gold, predicted = [["B-PER", "I-PER", "O"]], [["I-PER", "I-PER", "O"]]
    assert entity_scores(gold, predicted, "IOB2", strict=False)["f1"] == 1.0  # conlleval: I- after O starts an entity
    assert entity_scores(gold, predicted, "IOB2", strict=True)["f1"] == 0.0
    gold, predicted = [["S-PER", "O", "B-LOC", "E-LOC"]], [["B-PER", "O", "B-LOC", "E-LOC"]]
    assert entity_scores(gold, predicted, "IOBES", strict=True)["f1"] == pytest.approx(2 / 3)  # B- alone is not an IOBES entity
    assert entity_scores(gold, predicted, "IOBES", strict=False)["f1"] == 1.0


# -- bad input ------------------------------------------------------------------------
BAD_INPUTS = [
    ("u.txt", "-DOCSTART- -X- -X- O\n\nalice NN I-NP B-PER\nis NN I-NP O\n\nbob NN I-NP B-PER\nin NN I-NP O\noslo NN I-NP B-TOWN\n",
     r"u\.txt, line 8: tag 'B-TOWN' is not one of the \d+ tags"),
    ("c.jsonl", '{"tokens": ["a", "b"], "ner_tags": ["O", "O"]}\n\n{"tokens": ["a", "b"], "ner_tags": ["O"]}\n',
     r"c\.jsonl, line 3: 2 tokens in 'tokens' but 1 tags in 'ner_tags'"),
    ("e.jsonl", '{"tokens": [], "ner_tags": []}\n', r"e\.jsonl, line 1: empty sentence"),
    ("m.jsonl", '{"tokens": ["a"], "tags": ["O"]}\n', r"m\.jsonl: missing column 'ner_tags' \(set by data.label_column\); the columns are tokens, tags"),
]


@pytest.mark.parametrize("name, content, message", BAD_INPUTS, ids=[case[0] for case in BAD_INPUTS])
def test_bad_tagging_input_names_file_and_line(tmp_path, tiny_checkpoint, ner_data, name, content, message):
    task = _task(tiny_checkpoint, tmp_path, ner_data)
    (tmp_path / name).write_text(content)
    with pytest.raises(DataError, match=message):
        task.encode(read_file("validation", tmp_path / name))


# -- model -----------------------------------------------------------------------------
def test_full_head_matches_transformers_token_classification(tmp_path, tiny_checkpoint, ner_data):
    labels = len(_task(tiny_checkpoint, tmp_path, ner_data).labels)
    ours, theirs, _ = outputs_beside_transformers(tiny_checkpoint, tmp_path, ner_recipe_sections(ner_data), AutoModelForTokenClassification, num_labels=labels)
    torch.testing.assert_close(ours, theirs.logits, rtol=0, atol=1e-6)


def test_train_evaluate_and_predict_in_the_input_format(tmp_path, tiny_checkpoint, ner_data):
    config = load_config(tiny_recipe(tiny_checkpoint, tmp_path, **ner_recipe_sections(ner_data)), [
        "train.epochs=6", "train.learning_rate=3e-3", "train.max_train_samples=null", "train.max_eval_samples=null", "train.batch_size=16",
    ])
    summary = bert_tasks.train(config)
    assert summary.eval["f1"] > 0.5, summary.eval  # names are the only letter-split words: easy to learn
    assert {"PER/f1", "LOC/f1", "ORG/f1", "accuracy"} <= set(summary.eval)
    predictor = bert_tasks.load(summary.run_dir)
    answers = predictor.predict(["alice liked oslo", ["bob", "smith", "was", "here"]])
    assert [len(a["tags"]) for a in answers] == [3, 4] and answers[0]["tokens"] == ["alice", "liked", "oslo"]
    out = tmp_path / "predicted.conll"
    count = predictor.predict_file_to(ner_data["validation"], out)
    source = ner_data["validation"].read_text().splitlines()
    written = out.read_text().splitlines()
    assert count == 40 and len(written) == len(source)
    for before, after in zip(source, written):
        if before and not before.startswith("-DOCSTART-"):
            assert after.startswith(before + " ") and after.split()[-1] in predictor.task.labels
        else:
            assert after == before
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text(json.dumps({"tokens": ["carol", "went", "to", "cairo"]}) + "\n")
    predictor.predict_file_to(jsonl, tmp_path / "out.jsonl")
    row = json.loads((tmp_path / "out.jsonl").read_text())
    assert row["tokens"] == ["carol", "went", "to", "cairo"] and len(row["tags"]) == 4 and len(row["confidence"]) == 4


def test_pos_tags_without_entity_scheme_report_accuracy(tmp_path, tiny_checkpoint):
    sentences = [[(w, "X" if len(w) > 4 else "Y") for w, _ in s] for s in ner_sentences(40)]
    ner = {"train": write_conll_file(tmp_path / "t.txt", sentences), "validation": write_conll_file(tmp_path / "v.txt", sentences[:8])}
    config = load_config(tiny_recipe(tiny_checkpoint, tmp_path, **ner_recipe_sections(ner)))
    summary = bert_tasks.train(config)
    assert set(summary.eval) == {"accuracy", "loss"}


def test_uncovered_words_still_get_a_tag(tmp_path, tiny_checkpoint, ner_data):
    task = _task(tiny_checkpoint, tmp_path, ner_data)
    data = task.encode(task.examples_to_split([["alice", "\u200b", "is", "here"]]), with_labels=False)
    assert (data.meta["row_words"][0] >= 0).sum() == 4  # the zero-width word became an unknown piece
