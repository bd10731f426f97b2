"""Extractive QA: SQuAD reading, window labels, vectorised n-best decoding, official scoring, v2.0 thresholds."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import (
    SHARED_DATA,
    make_qa_files,
    outputs_beside_transformers,
    qa_examples,
    qa_recipe_sections,
    tiny_recipe,
    write_jsonl,
)
from transformers import AutoModelForQuestionAnswering, AutoTokenizer

import bert_tasks
from bert_tasks import squad_scoring
from bert_tasks.assembly import build_task
from bert_tasks.config import load_config
from bert_tasks.data import load_split, read_file
from bert_tasks.errors import DataError
from bert_tasks.tasks.span_decoding import (
    best_spans,
    window_spans,
    window_spans_by_pairs,
)

SHARED_SQUAD = SHARED_DATA / "squad_v1.1" / "dev-v1.1.json"


def _task(checkpoint, tmp_path, files, **options):
    config = load_config(tiny_recipe(checkpoint, tmp_path, **qa_recipe_sections(files, **options)))
    return build_task(config, AutoTokenizer.from_pretrained(str(checkpoint)))


# -- scoring (hand-computed) ----------------------------------------------------------
def test_normalisation_and_scores_by_hand():
    assert squad_scoring.normalize_answer("The  Denver Broncos!") == "denver broncos"
    assert squad_scoring.normalize_answer("an apple, a pear") == "apple pear"
    assert squad_scoring.exact_match("the Broncos", "Broncos.") == 1.0
    # predicted "denver broncos team" vs gold "broncos": 1 common token, P = 1/3, R = 1, F1 = 0.5
    assert squad_scoring.token_f1("Denver Broncos team", "Broncos") == pytest.approx(0.5)
    assert squad_scoring.best_over_gold("Broncos", ["Denver", "the Broncos"]) == (1.0, 1.0)
    v1 = squad_scoring.squad_v1(["Broncos", "Carolina"], [["Denver Broncos"], ["Panthers"]])
    assert v1["exact_match"] == 0.0 and v1["f1"] == pytest.approx(100 * (2 / 3) / 2)  # P 1, R 1/2 -> F1 2/3; second 0


def test_v2_breakdown_and_threshold_search_by_hand():
    golds = [["Paris"], [], ["Oslo"], []]
    spans = ["Paris", "Rome", "Bergen", "Cairo"]  # best non-empty span per question
    null_diffs = [-2.0, 3.0, 1.0, -1.0]  # null score minus span score
    # at threshold 0: answers are span, "", "", span
    scores = squad_scoring.squad_v2(["Paris", "", "", "Cairo"], golds, null_diffs, spans)
    assert scores["exact"] == 50.0 and scores["HasAns_exact"] == 50.0 and scores["NoAns_exact"] == 50.0
    assert scores["HasAns_total"] == 2 and scores["NoAns_total"] == 2
    # all "" scores 2/4; switching in null_diff order: q0 +1 (3/4), q3 -1, q2 +0, q1 -1: best 75% at threshold -2.0
    assert scores["best_exact"] == 75.0 and scores["best_exact_thresh"] == -2.0
    assert scores["best_f1"] == 75.0


# -- reading -------------------------------------------------------------------------
def test_squad_json_v1_and_v2_flatten_with_row_ranges(tmp_path):
    document = {"version": "v2.0", "data": [{"title": "T", "paragraphs": [{"context": "Paris is in France.", "qas": [
        {"id": "a", "question": "Where is Paris?", "answers": [{"text": "France", "answer_start": 12}]},
        {"id": "b", "question": "Where is Rome?", "answers": [], "is_impossible": True, "plausible_answers": [{"text": "France", "answer_start": 12}]},
        {"id": "c", "question": "What is in France?", "answers": [{"text": "Paris", "answer_start": 0}]},
    ]}]}]}
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(document))
    split = read_file("train", path)
    assert split.format == "squad" and split.dataset.column_names == ["id", "title", "context", "question", "answers"]
    assert split.dataset[1]["answers"] == {"text": [], "answer_start": []}
    tail = load_split("validation", f"{path}[1:]")
    assert list(tail.dataset["id"]) == ["b", "c"] and tail.where(0) == f"{path}, row 2"


def test_squad_files_split_by_article(tmp_path):
    document = {"data": [{"title": f"T{a}", "paragraphs": [{"context": "Paris is in France.", "qas": [
        {"id": f"{a}-{p}-{q}", "question": "Where is Paris?", "answers": [{"text": "France", "answer_start": 12}]} for q in range(a + 1)]} for p in range(2)]}
        for a in range(3)]}  # article a: 2 paragraphs of a + 1 questions
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(document))
    head, tail = load_split("train", f"{path}[articles=:2]"), load_split("validation", f"{path}[articles=2:]")
    assert list(head.dataset["id"]) == ["0-0-0", "0-1-0", "1-0-0", "1-0-1", "1-1-0", "1-1-1"]
    assert set(tail.dataset["title"]) == {"T2"} and len(tail) == 6 and tail.where(0) == f"{path}, row 7"
    assert list(load_split("validation", f"{path}[articles=1:2]").dataset["title"]) == ["T1"] * 4
    for source, words in ((f"{path}[articles=5:]", "selects no questions (the file has 3 articles)"),
                          (f"{tmp_path / 'rows.jsonl'}[articles=0:1]", "is not a SQuAD JSON file")):
        (tmp_path / "rows.jsonl").write_text(json.dumps({"question": "q", "context": "c", "answers": {"text": [], "answer_start": []}}) + "\n")
        with pytest.raises(DataError) as error:
            load_split("validation", source)
        assert words in str(error.value)


@pytest.mark.skipif(not SHARED_SQUAD.is_file(), reason="shared SQuAD data not present")
def test_the_agreed_squad_split_is_articles_0_to_37():
    assert len(load_split("train", f"{SHARED_SQUAD}[articles=:38]")) == 8582
    assert len(load_split("validation", f"{SHARED_SQUAD}[articles=38:]")) == 10570 - 8582


# -- windows and labels --------------------------------------------------------------
def test_every_window_label_points_at_the_answer_or_cls(tmp_path, tiny_checkpoint):
    files = make_qa_files(tmp_path)
    task = _task(tiny_checkpoint, tmp_path, files)
    split = read_file("train", files["train"])
    data = task.encode(split)
    assert len(data) > len(split)  # long contexts became several windows
    assert max(data.lengths) <= 64
    answered = set()
    for row, (start, end) in enumerate(data.columns["labels"]):
        example = data.meta["row_example"][row]
        if (start, end) == (0, 0):
            continue
        offsets = data.meta["row_offsets"][row]
        assert start <= end and offsets[start, 0] >= 0 and offsets[end, 0] >= 0  # inside the context
        context = data.meta["contexts"][example]
        assert context[offsets[start, 0] : offsets[end, 1]] == data.meta["golds"][example][0]
        answered.add(example)
    assert len(answered) == len(split)  # every question has a window that holds its answer


def test_mismatched_answer_start_is_an_error_naming_the_row(tmp_path, tiny_checkpoint):
    rows = qa_examples(6)
    rows[2]["answers"]["answer_start"] = [0]
    files = {"train": write_jsonl(tmp_path / "t.jsonl", rows), "validation": write_jsonl(tmp_path / "v.jsonl", rows)}
    task = _task(tiny_checkpoint, tmp_path, files)
    for name in ("train", "validation"):
        with pytest.raises(DataError, match=r"\.jsonl, line 3: answer '.*' is not in field 'context' at answer_start=0"):
            task.encode(read_file(name, files[name]))


def test_bad_answers_field_and_unanswerable_in_v1(tmp_path, tiny_checkpoint):
    files = make_qa_files(tmp_path)
    task = _task(tiny_checkpoint, tmp_path, files)
    bad = write_jsonl(tmp_path / "b.jsonl", [{"question": "q ?", "context": "c", "answers": {"text": ["c"], "answer_start": []}}])
    with pytest.raises(DataError, match=r"b\.jsonl, line 1: field 'answers' must be \{'text'"):
        task.encode(read_file("train", bad))
    empty = write_jsonl(tmp_path / "e.jsonl", [{"question": "q ?", "context": "c", "answers": {"text": [], "answer_start": []}}])
    with pytest.raises(DataError, match=r"e\.jsonl, line 1: no answer; unanswerable questions need task.version_2=true"):
        task.encode(read_file("train", empty))


def test_repeated_question_ids_are_refused(tmp_path, tiny_checkpoint):
    """Predictions are {id: answer}: a repeated id used to keep one answer of the two, silently."""
    files = make_qa_files(tmp_path)
    task = _task(tiny_checkpoint, tmp_path, files)
    rows = qa_examples(3)
    for i, row in enumerate(rows):
        row["id"] = "same" if i != 1 else "other"
    with pytest.raises(DataError, match=r"d\.jsonl, line 3: id 'same' is already used at .*d\.jsonl, line 1; question ids must be unique"):
        task.encode(read_file("train", write_jsonl(tmp_path / "d.jsonl", rows)))
    qa = [{"id": "q1", "question": "q ?", "answers": [{"text": "c", "answer_start": 0}]}] * 2
    squad = tmp_path / "d.json"
    squad.write_text(json.dumps({"data": [{"title": "t", "paragraphs": [{"context": "c d", "qas": qa}]}]}))
    with pytest.raises(DataError, match=r"d\.json: article 0, paragraph 0, question 1: id 'q1' is already used at article 0, paragraph 0, question 0"):
        read_file("train", squad)


# -- decoding ----------------------------------------------------------------------------
def test_vectorised_decoding_equals_the_pairwise_loop():
    rng = np.random.default_rng(0)
    for _ in range(50):
        length = int(rng.integers(20, 80))
        logits = rng.normal(size=(length, 2)).astype(np.float32)
        offsets = np.full((length, 2), -1)
        context_start = int(rng.integers(3, 10))
        offsets[context_start:-1] = np.stack([np.arange(length - context_start - 1) * 5, np.arange(length - context_start - 1) * 5 + 4], 1)
        fast = window_spans(logits, offsets, n_best=5, max_answer_length=7)
        slow = window_spans_by_pairs(logits, offsets, n_best=5, max_answer_length=7)
        assert [(s.start, s.end) for s in fast] == [(s.start, s.end) for s in slow]  # the exact n-best, in order
        assert [s.score for s in fast] == pytest.approx([s.score for s in slow])
        assert all(0 <= (s.end - s.start) < 7 * 5 for s in fast)


def test_spans_across_windows_and_null_score():
    offsets = np.array([[-1, -1], [0, 4], [5, 9], [-1, -1]])
    first = np.array([[1.0, 1.0], [3.0, 0.0], [0.0, 2.0], [0, 0]])  # best span (0, 9) scores 5
    second = np.array([[-1.0, 0.0], [0.0, 0.0], [4.0, 4.5], [0, 0]])  # best span (5, 9) scores 8.5
    spans, null = best_spans([(first, offsets), (second, offsets)], n_best=3, max_answer_length=5)
    assert (spans[0].start, spans[0].end, spans[0].score) == (5, 9, 8.5)
    assert null == -1.0  # the lowest [CLS] score over windows


# -- model ------------------------------------------------------------------------------
def test_full_head_matches_transformers_question_answering(tmp_path, tiny_checkpoint):
    sections = qa_recipe_sections(make_qa_files(tmp_path))
    ours, theirs, real = outputs_beside_transformers(tiny_checkpoint, tmp_path, sections, AutoModelForQuestionAnswering)
    torch.testing.assert_close(ours[..., 0][real], theirs.start_logits[real], rtol=0, atol=1e-6)  # padding is masked in ours
    torch.testing.assert_close(ours[..., 1][real], theirs.end_logits[real], rtol=0, atol=1e-6)


def test_train_v2_tunes_the_threshold_and_predicts_official_format(tmp_path, tiny_checkpoint):
    files = make_qa_files(tmp_path, unanswerable=0.3)
    config = load_config(tiny_recipe(tiny_checkpoint, tmp_path, **qa_recipe_sections(files, version_2=True)), [
        "train.epochs=8", "train.learning_rate=3e-3", "train.max_train_samples=null", "train.max_eval_samples=null", "train.batch_size=16",
    ])
    summary = bert_tasks.train(config)
    assert {"best_f1", "best_f1_thresh", "HasAns_f1", "NoAns_f1", "exact", "f1"} <= set(summary.eval)
    assert summary.eval["best_f1"] >= summary.eval["f1"] - 1e-9
    saved = json.loads((tmp_path / "run" / "task.json").read_text())
    assert saved["null_threshold"] == summary.eval["best_f1_thresh"]  # adopted for prediction
    predictor = bert_tasks.load(summary.run_dir)
    assert predictor.task.null_threshold == summary.eval["best_f1_thresh"]
    rows = qa_examples(3, seed=5)
    answers = predictor.predict([(r["question"], r["context"]) for r in rows])
    assert all(set(a) >= {"id", "answer", "nbest", "null_diff"} for a in answers)
    assert all(a["answer"] == "" or a["answer"] in r["context"] for a, r in zip(answers, rows))
    document = {"data": [{"title": "t", "paragraphs": [{"context": r["context"], "qas": [{"id": r["id"], "question": r["question"], "answers": []}]} for r in rows]}]}
    source = tmp_path / "input.json"
    source.write_text(json.dumps(document))
    predictor.predict_file_to(source, tmp_path / "predictions.json")
    official = json.loads((tmp_path / "predictions.json").read_text())
    assert set(official) == {r["id"] for r in rows} and all(isinstance(v, str) for v in official.values())
    nbest = json.loads((tmp_path / "predictions.nbest.json").read_text())
    assert all(len(v) <= 20 and {"text", "probability", "start", "end"} <= set(v[0]) for v in nbest.values())
