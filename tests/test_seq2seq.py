"""Seq2seq: BERT2BERT warm start (special tokens, cross-attention, shared weights, frozen encoder),
native T5 / BART checkpoints built in code, batched generation options, training end to end."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import make_seq2seq_files, make_tiny_seq2seq_checkpoint, seq2seq_recipe_sections, tiny_recipe, write_csv

import bert_tasks
from bert_tasks.assembly import assemble
from bert_tasks.batching import IGNORE_INDEX
from bert_tasks.config import load_config
from bert_tasks.errors import BertTasksError
from bert_tasks.evaluation import evaluate, eval_loader
from bert_tasks.rundir import BEST_DIR, load_trained, save_weights, write_run_files
from bert_tasks.runtime import make_accelerator
from bert_tasks.config import TrainConfig


@pytest.fixture(scope="module")
def s2s_files(tmp_path_factory):
    return make_seq2seq_files(tmp_path_factory.mktemp("s2s-data"))


@pytest.fixture(scope="module", params=["t5", "bart"])
def native_checkpoint(request, tmp_path_factory):
    return make_tiny_seq2seq_checkpoint(tmp_path_factory.mktemp(f"tiny-{request.param}"), request.param)


def _assemble(checkpoint, tmp_path, files, strategy=None, **task):
    sections = seq2seq_recipe_sections(files, **task)
    config = load_config(tiny_recipe(checkpoint, tmp_path, strategy=strategy or {"name": "full"}, **sections))
    return config, *assemble(config)


def _batch(assembly, split, rows=8):
    data = assembly.task.encode(split)
    return data, assembly.task.collate([data[i] for i in range(rows)])


def test_warm_start_special_tokens_and_new_cross_attention(tmp_path, tiny_checkpoint, s2s_files):
    _, assembly, splits = _assemble(tiny_checkpoint, tmp_path, s2s_files)
    tokenizer, network = assembly.tokenizer, assembly.model.backbone
    for config in (network.config, network.generation_config):  # the '[CLS] forever' pitfall
        assert (config.decoder_start_token_id, config.eos_token_id, config.pad_token_id) == (
            tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id)
    # the decoder is causal and has cross-attention; the encoder is neither
    assert network.decoder.config.is_decoder and network.decoder.config.add_cross_attention
    assert network.decoder.bert.encoder.layer[0].attention.self.is_causal
    assert not network.encoder.encoder.layer[0].attention.self.is_causal
    # the new parts are known (they train under every strategy) and are random, not copies
    fresh = set(assembly.model.new_parameters)
    assert any(".crossattention." in name for name in fresh)
    assert not any(".attention.self." in name and ".crossattention." not in name for name in fresh)
    # targets: y_1 .. y_n [SEP], no [CLS]; padding is ignored by the loss
    data, batch = _batch(assembly, splits["train"])
    for ids in data.columns["labels"]:
        assert ids[-1] == tokenizer.sep_token_id and tokenizer.cls_token_id not in ids
    labels = batch["labels"]
    assert (labels == IGNORE_INDEX).any() and ((labels == IGNORE_INDEX) == (batch["inputs"]["target_mask"] == 0)).all()
    logits = assembly.model(**batch["inputs"])
    assert logits.shape[:2] == labels.shape and logits.shape[2] == len(tokenizer)


def test_padding_does_not_change_the_loss(tmp_path, tiny_checkpoint_no_dropout, s2s_files):
    """A row's loss is the same alone or batched beside a longer target."""
    _, assembly, splits = _assemble(tiny_checkpoint_no_dropout, tmp_path, s2s_files)
    data = assembly.task.encode(splits["train"])
    lengths = [len(t) for t in data.columns["labels"]]
    short, long = lengths.index(min(lengths)), lengths.index(max(lengths))
    assert lengths[short] < lengths[long]
    task, model = assembly.task, assembly.model.eval()
    with torch.no_grad():
        alone = task.collate([data[short]])
        pair = task.collate([data[short], data[long]])
        loss_alone = task.loss(model(**alone["inputs"]), alone["labels"])
        summed, count = task.loss_sum(model(**pair["inputs"])[:1], pair["labels"][:1])
    torch.testing.assert_close(summed / count, loss_alone, rtol=1e-5, atol=1e-5)


def test_shared_weights_stay_shared_through_training_and_reload(tmp_path, tiny_checkpoint, s2s_files):
    config, assembly, splits = _assemble(tiny_checkpoint, tmp_path, s2s_files, share_weights=True)
    network = assembly.model.backbone
    encoder, decoder = network.encoder, network.decoder
    assert decoder.bert.embeddings.word_embeddings.weight is encoder.embeddings.word_embeddings.weight
    assert decoder.get_output_embeddings().weight is encoder.embeddings.word_embeddings.weight  # the tied LM head too
    assert decoder.bert.encoder.layer[1].attention.self.query.weight is encoder.encoder.layer[1].attention.self.query.weight
    assert decoder.bert.encoder.layer[1].crossattention.self.query.weight is not encoder.encoder.layer[1].attention.self.query.weight
    _, separate, _ = _assemble(tiny_checkpoint, tmp_path / "separate", s2s_files)
    count = lambda model: sum(p.numel() for p in model.parameters())  # noqa: E731
    assert count(assembly.model) < 0.7 * count(separate.model)
    # train a step, save, reload: still shared, same logits
    data, batch = _batch(assembly, splits["train"])
    optimizer = torch.optim.AdamW(assembly.model.parameters(), lr=1e-3)
    assembly.task.loss(assembly.model(**batch["inputs"]), batch["labels"]).backward()
    optimizer.step()
    assert decoder.bert.encoder.layer[1].attention.self.query.weight is encoder.encoder.layer[1].attention.self.query.weight
    run_dir = tmp_path / "saved"
    write_run_files(run_dir, config, assembly.task.state_dict())
    save_weights(run_dir / BEST_DIR, assembly, assembly.model)
    _, loaded = load_trained(run_dir)
    reloaded = loaded.model.backbone
    assert reloaded.decoder.bert.encoder.layer[1].attention.self.query.weight is reloaded.encoder.encoder.layer[1].attention.self.query.weight
    assembly.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(**batch["inputs"]), assembly.model(**batch["inputs"]), rtol=0, atol=0)


@pytest.mark.parametrize("strategy", [{"name": "full"}, {"name": "last_n", "n": 1}, {"name": "bottleneck", "reduction_factor": 4}, {"name": "lora", "r": 2}])
def test_frozen_encoder_under_every_strategy(tmp_path, tiny_checkpoint, s2s_files, strategy):
    """freeze_encoder keeps the pretrained encoder fixed whatever the strategy; the decoder side learns."""
    _, assembly, _ = _assemble(tiny_checkpoint, tmp_path, s2s_files, strategy=strategy, freeze_encoder=True)
    trains = {name for name, p in assembly.model.named_parameters() if p.requires_grad}
    assert not any(name.startswith("backbone.encoder.") for name in trains)
    assert set(assembly.model.new_parameters) <= trains
    assert any(name.startswith("backbone.decoder.") and "crossattention" not in name for name in trains) or strategy["name"] == "bottleneck"
    if strategy["name"] == "bottleneck":
        assert trains & {n for n in trains if n.startswith("adapters.decoder_layer")}
        assert not any(n.startswith("adapters.layer") for n in trains)


def test_generation_options_are_applied_and_batched(tmp_path, tiny_checkpoint, s2s_files):
    _, assembly, splits = _assemble(tiny_checkpoint, tmp_path, s2s_files, max_new_tokens=6, no_repeat_ngram_size=1, num_beams=3, length_penalty=0.5)
    task, model = assembly.task, assembly.model.eval()
    options = task.generation_options
    assert options["num_beams"] == 3 and options["length_penalty"] == 0.5 and options["no_repeat_ngram_size"] == 1
    data, batch = _batch(assembly, splits["validation"], rows=6)
    with torch.no_grad():
        rows = task.predict_step(model, batch).numpy()
        alone = task.predict_step(model, task.collate([data[0]])).numpy()
    generated = [[int(v) for v in row[2:] if v >= 0 and int(v) not in (0, task.end_id)] for row in rows]
    assert all(len(ids) <= 6 for ids in generated)
    assert all(len(ids) == len(set(ids)) for ids in generated)  # no repeated 1-gram
    # a row generates the same text alone as inside a padded batch
    texts, _ = task._generated(list(rows))
    assert task._generated(list(alone))[0][0] == texts[0]


def test_train_end_to_end_then_predict(tmp_path, tiny_checkpoint, s2s_files):
    """Sentiment in words: the loss falls, ROUGE rises far above the first evaluation, predictions are text."""
    sections = seq2seq_recipe_sections(s2s_files)
    recipe = tiny_recipe(tiny_checkpoint, tmp_path, **sections)
    recipe["train"].update({"epochs": 20, "learning_rate": 3e-3, "max_train_samples": None, "warmup_ratio": 0.1, "eval_every": 48})
    summary = bert_tasks.train(load_config(recipe))
    events = [json.loads(line) for line in (Path(summary.run_dir) / "metrics.jsonl").read_text().splitlines()]
    train_losses = [e["loss"] for e in events if e["event"] == "train"]
    evals = [e for e in events if e["event"] == "eval"]
    assert train_losses[-1] < 0.5 * train_losses[0]
    assert evals[-1]["loss"] < 0.7 * evals[0]["loss"]
    assert {"rougeL", "rouge1", "rouge2", "rougeLsum", "bleu", "gen_len"} <= set(evals[-1])
    assert summary.best_value == max(e["rougeL"] for e in evals) and summary.best_value > evals[0]["rougeL"] + 30
    predictor = bert_tasks.load(summary.run_dir)
    out = predictor.predict(["the dental clinic never returned any of my calls.", {"dialogue": "great food and friendly staff."}])
    assert len(out) == 2 and all(isinstance(row["generated_text"], str) and row["generated_text"] for row in out)


def test_native_t5_and_bart(tmp_path, native_checkpoint, s2s_files):
    """T5 and BART load as themselves (their own start token), train, generate and reload exactly."""
    config, assembly, splits = _assemble(native_checkpoint, tmp_path, s2s_files, num_beams=2)
    network = assembly.model.backbone
    expected_start = 0 if network.config.model_type == "t5" else 3
    assert network.generation_config.decoder_start_token_id == expected_start and network.generation_config.eos_token_id == 3
    assert not assembly.model.new_parameters
    data, batch = _batch(assembly, splits["train"])
    optimizer = torch.optim.AdamW(assembly.model.parameters(), lr=1e-2)
    losses = []
    for _ in range(5):
        loss = assembly.task.loss(assembly.model(**batch["inputs"]), batch["labels"])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(loss))
    assert losses[-1] < losses[0]
    run_dir = tmp_path / "saved"
    write_run_files(run_dir, config, assembly.task.state_dict())
    save_weights(run_dir / BEST_DIR, assembly, assembly.model)
    _, loaded = load_trained(run_dir)
    assembly.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(**batch["inputs"]), assembly.model(**batch["inputs"]), rtol=0, atol=0)
        first, second = (a.task.predict_step(a.model, batch) for a in (assembly, loaded))
    torch.testing.assert_close(first, second)
    accelerator = make_accelerator(TrainConfig())
    results = evaluate(accelerator, loaded.model, eval_loader(data, loaded.task, 16), loaded.task, data)
    assert results["loss"] > 0 and 0 <= results["rougeL"] <= 100


def test_bad_seq2seq_input_is_one_clear_line(tmp_path, tiny_checkpoint, s2s_files):
    bad = write_csv(tmp_path / "bad.csv", [{"dialogue": "hello there", "summary": "hi"}, {"dialogue": "second one", "summary": ""}])
    sections = seq2seq_recipe_sections({"train": bad, "validation": s2s_files["validation"]})
    config = load_config(tiny_recipe(tiny_checkpoint, tmp_path, **sections))
    task, splits = bert_tasks.assembly.prepare_task(config)
    with pytest.raises(BertTasksError, match=r"bad\.csv, line 3: field 'summary' must be non-empty text"):
        task.encode(splits["train"])
    with pytest.raises(BertTasksError, match="share_weights and task.freeze_encoder"):
        load_config(tiny_recipe(tiny_checkpoint, tmp_path, **seq2seq_recipe_sections(s2s_files, share_weights=True, freeze_encoder=True)))


def test_greedy_generation_agrees_with_teacher_forcing(tmp_path, tiny_checkpoint_no_dropout, s2s_files):
    """Generation and training see the decoder the same way: it starts from [CLS], and each greedy token is
    the argmax of the teacher-forced logits given the tokens before it (a shift or start-token mismatch breaks this)."""
    _, assembly, splits = _assemble(tiny_checkpoint_no_dropout, tmp_path, s2s_files, max_new_tokens=8)
    model, task = assembly.model.eval(), assembly.task
    _, batch = _batch(assembly, splits["validation"], rows=5)
    inputs = batch["inputs"]
    with torch.no_grad():
        hidden = model.encode(inputs["input_ids"], inputs["attention_mask"])
        generated = model.head.generate(hidden, inputs["attention_mask"], num_beams=1, max_new_tokens=8)
        assert (generated[:, 0] == assembly.tokenizer.cls_token_id).all()
        targets = generated[:, 1:]
        logits = model.head(hidden, inputs["attention_mask"], targets, torch.ones_like(targets))
    for row in range(targets.shape[0]):
        ids = targets[row].tolist()
        stop = ids.index(task.end_id) + 1 if task.end_id in ids else len(ids)
        assert logits[row, :stop].argmax(-1).tolist() == ids[:stop]


def test_encoder_learning_rate_scale(tmp_path, tiny_checkpoint, s2s_files):
    """task.encoder_lr_scale gives the pretrained encoder its own (lower) rate; the decoder keeps train.learning_rate."""
    from bert_tasks.optim import make_optimizer

    config, assembly, _ = _assemble(tiny_checkpoint, tmp_path, s2s_files, encoder_lr_scale=0.1)
    optimizer = make_optimizer(assembly.model, config.train)
    rate = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    network = assembly.model.backbone
    assert all(rate[id(p)] == pytest.approx(0.1 * config.train.learning_rate) for p in network.encoder.parameters())
    assert all(rate[id(p)] == pytest.approx(config.train.learning_rate) for p in network.decoder.parameters())
    assert len(rate) == sum(1 for p in assembly.model.parameters() if p.requires_grad)
