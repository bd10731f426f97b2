"""Device mistakes caught on a CPU machine: the loop, evaluation and prediction create no tensor
without naming its device (see device_audit.py for why that is the visible part of a GPU bug)."""
from __future__ import annotations

import pytest
from conftest import tiny_recipe
from device_audit import FactoryAudit

import bert_tasks
from bert_tasks.config import load_config
from bert_tasks.evaluation import evaluate_run


@pytest.mark.parametrize("strategy", [{"name": "full"}, {"name": "layer_mix", "encoder": "last_n", "n": 1}])
def test_training_evaluation_and_prediction_create_tensors_on_a_device(tmp_path, tiny_checkpoint, strategy):
    # layer_mix over the top layer: training and evaluation run on stored frozen states (train.cache_frozen)
    config = load_config(tiny_recipe(tiny_checkpoint, tmp_path, strategy=strategy, train={"epochs": 1, "eval_every": 2, "log_every": 1, "max_train_samples": 48,
                                                                                          "cache_dir": str(tmp_path / "cache")}))
    with FactoryAudit() as audit:
        bert_tasks.train(config)
        evaluate_run(tmp_path / "run", ("train.max_eval_samples=16",))
        bert_tasks.load(tmp_path / "run").predict(["The kettle is great.", "The train was late."])
    assert audit.calls > 0  # the mode saw the factories (collate's, at least)
    assert audit.found == []
