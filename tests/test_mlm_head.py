"""The sparse pretraining head: the loss of a stock BertForMaskedLM scoring every position, and the decoder tied to the embeddings."""
from __future__ import annotations

import pytest
import torch
from conftest import tiny_recipe
from transformers import BertConfig, BertForMaskedLM

from bert_tasks.assembly import assemble
from bert_tasks.batching import IGNORE_INDEX
from bert_tasks.config import load_config
from bert_tasks.publishing import publish
from bert_tasks.rundir import BEST_DIR, load_trained, save_weights, write_run_files
from bert_tasks.summary import RunSummary
from bert_tasks.tasks.mlm_head import dense_loss, tie_check


def _mlm(tmp_path, checkpoint, **task):
    config = load_config(tiny_recipe(checkpoint, tmp_path, task={"name": "mlm", "max_length": 32, **task}, train={"max_eval_samples": 64}))
    assembly, splits = assemble(config)
    return config, assembly, assembly.task.encode(splits["validation"])


def _embeddings(model):
    return model.backbone.embeddings.word_embeddings


def test_sparse_loss_and_gradients_equal_a_stock_masked_lm_scoring_every_position(tmp_path, tiny_checkpoint):
    _, assembly, data = _mlm(tmp_path, tiny_checkpoint)
    model, task = assembly.model.float().eval(), assembly.task
    batch = task.collate([data[i] for i in range(16)])
    inputs = batch["inputs"]
    labels = inputs["mlm_labels"]
    assert int((labels != IGNORE_INDEX).sum()) > 10

    sparse = task.loss(model(**inputs), batch["labels"])
    sparse_grads = torch.autograd.grad(sparse, [_embeddings(model).weight, model.head.cls.predictions.transform.dense.weight])
    hidden = model.encode(**model.encoder_inputs(inputs))
    dense = dense_loss(model.head, hidden, labels)
    dense_grads = torch.autograd.grad(dense, [_embeddings(model).weight, model.head.cls.predictions.transform.dense.weight])
    assert abs(sparse.item() - dense.item()) <= 1e-6
    for ours, theirs in zip(sparse_grads, dense_grads):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)

    # the same weights in transformers' own class: its loss is ours
    stock = BertForMaskedLM(BertConfig.from_pretrained(str(tiny_checkpoint))).eval()
    state = {name.replace("backbone.", "bert.", 1).replace("head.", "", 1): value for name, value in model.state_dict().items()}
    missing, unexpected = stock.load_state_dict({k: v for k, v in state.items() if "pooler" not in k}, strict=False)
    assert not missing and not unexpected
    with torch.no_grad():
        reference = stock(**{k: v for k, v in inputs.items() if k != "mlm_labels"}, labels=labels).loss
    assert abs(sparse.item() - reference.item()) <= 1e-6


def test_a_batch_without_predicted_tokens_has_zero_loss_and_a_graph(tmp_path, tiny_checkpoint):
    _, assembly, data = _mlm(tmp_path, tiny_checkpoint)
    batch = assembly.task.collate([data[i] for i in range(4)])
    batch["inputs"]["mlm_labels"].fill_(IGNORE_INDEX)
    outputs = assembly.model(**batch["inputs"])  # Shape: (4, 3)
    assert torch.equal(outputs, torch.zeros_like(outputs))
    loss = assembly.task.loss(outputs, batch["labels"])
    assert loss.item() == 0.0
    loss.backward()  # nothing to learn, but the step still runs (e.g. on one process of several)


@pytest.mark.parametrize("objective", ["none", "sop"])
def test_the_decoder_stays_tied_after_training_steps_save_load_and_publish(tmp_path, tiny_checkpoint, objective):
    config, assembly, data = _mlm(tmp_path, tiny_checkpoint, sentence_objective=objective, rows_per_document=4)
    model = assembly.model
    assert tie_check(model.head, _embeddings(model)) is None
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    batch = assembly.task.collate([data[i] for i in range(8)])
    for _ in range(2):
        assembly.task.loss(model(**batch["inputs"]), batch["labels"]).backward()
        optimizer.step()
        optimizer.zero_grad()
    assert tie_check(model.head, _embeddings(model)) is None

    run_dir = tmp_path / "run"
    write_run_files(run_dir, config, assembly.task.state_dict())
    save_weights(run_dir / BEST_DIR, assembly, model)
    RunSummary(str(run_dir), "mlm", "full", "perplexity", 10.0, 1, eval={"perplexity": 10.0}).save(run_dir)
    _, loaded = load_trained(run_dir)
    assert tie_check(loaded.model.head, _embeddings(loaded.model)) is None
    torch.testing.assert_close(_embeddings(loaded.model).weight, _embeddings(model).weight, rtol=0, atol=0)

    out = tmp_path / "published"
    export = publish(run_dir, out)
    assert export.format == "transformers", export.reason
    stock_class = "BertForPreTraining" if objective == "sop" else "BertForMaskedLM"
    from transformers import AutoModelForMaskedLM, AutoModelForPreTraining

    stock = (AutoModelForPreTraining if objective == "sop" else AutoModelForMaskedLM).from_pretrained(str(out))
    assert type(stock).__name__ == stock_class
    assert stock.get_output_embeddings().weight.data_ptr() == stock.get_input_embeddings().weight.data_ptr()
    torch.testing.assert_close(stock.get_input_embeddings().weight, _embeddings(model).weight, rtol=0, atol=0)


def test_a_checkpoint_with_a_masked_lm_head_keeps_it(tmp_path, tiny_checkpoint):
    """A BertForMaskedLM checkpoint's transform and bias are trained weights: they load, they are not re-initialised."""
    source = BertForMaskedLM.from_pretrained(str(tiny_checkpoint))
    with torch.no_grad():
        source.cls.predictions.bias.fill_(0.25)
        source.cls.predictions.transform.dense.weight.mul_(3.0)
    folder = tmp_path / "with-head"
    source.save_pretrained(str(folder))
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (tiny_checkpoint / name).exists():
            (folder / name).write_bytes((tiny_checkpoint / name).read_bytes())
    _, assembly, _ = _mlm(tmp_path, folder)
    head = assembly.model.head.cls.predictions
    torch.testing.assert_close(head.bias, source.cls.predictions.bias, rtol=0, atol=0)
    torch.testing.assert_close(head.transform.dense.weight, source.cls.predictions.transform.dense.weight, rtol=0, atol=0)
