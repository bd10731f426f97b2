"""train.mixed_precision=auto: each precision for the right capability (only the hardware queries are stood in
for), what ran recorded in the summary and the start record; --precision for prediction."""
from __future__ import annotations

import pytest
import torch
from conftest import tiny_recipe

import bert_tasks
from bert_tasks import precision as precision_module
from bert_tasks.config import load_config
from bert_tasks.errors import ConfigError
from bert_tasks.precision import choose_precision
from bert_tasks.rundir import read_metrics


@pytest.fixture()
def machine(monkeypatch):
    """Make this machine look like another: its CPU's bf16 flags and whether its CUDA device has bf16."""
    def pretend(cpu_flags: tuple[str, ...] = (), cuda_bf16: bool = False) -> None:
        monkeypatch.setattr(precision_module, "cpu_native_bf16_flags", lambda: cpu_flags)
        monkeypatch.setattr(precision_module, "cuda_supports_bf16", lambda: cuda_bf16)
    return pretend


@pytest.mark.parametrize("device, cpu_flags, cuda_bf16, expected, why", [
    ("cpu", ("amx_bf16",), False, "bf16", "amx_bf16"),
    ("cpu", ("avx512_bf16",), False, "bf16", "avx512_bf16"),
    ("cpu", (), False, "no", "emulated"),
    ("cuda", (), True, "bf16", "supports bf16"),
    ("cuda", ("avx512_bf16",), False, "fp16", "loss scaling"),
    ("mps", ("avx512_bf16",), True, "no", "mps"),
])
def test_auto_picks_the_precision_the_device_runs_natively(machine, device, cpu_flags, cuda_bf16, expected, why):
    machine(cpu_flags, cuda_bf16)
    choice = choose_precision("auto", device)
    assert choice.precision == expected and why in choice.reason


@pytest.mark.parametrize("given", ["no", "bf16", "fp16"])
def test_an_explicit_precision_is_kept_whatever_the_machine(machine, given):
    machine(("amx_bf16",), True)
    assert choose_precision(given, "cpu").precision == choose_precision(given, "cuda").precision == given


def test_auto_is_the_default():
    assert load_config("demo").train.mixed_precision == "auto"


@pytest.mark.parametrize("cpu_flags, expected", [((), "no"), (("avx512_bf16",), "bf16")])
def test_a_run_records_what_ran(tmp_path, tiny_checkpoint, machine, cpu_flags, expected):
    machine(cpu_flags)
    config = load_config(tiny_recipe(tiny_checkpoint, tmp_path, train={"mixed_precision": "auto", "max_train_samples": 32, "max_eval_samples": 16}))
    summary = bert_tasks.train(config)
    assert summary.precision == expected and summary.precision_reason.startswith("auto: the CPU")
    start = next(e for e in read_metrics(tmp_path / "run") if e["event"] == "start")
    assert start["precision"] == expected and start["precision_reason"] == summary.precision_reason
    assert bert_tasks.RunSummary.load(tmp_path / "run").precision == expected


def test_prediction_runs_in_the_precision_asked_for(tmp_path, tiny_checkpoint, machine):
    bert_tasks.train(load_config(tiny_recipe(tiny_checkpoint, tmp_path, train={"max_train_samples": 32, "max_eval_samples": 16})))
    texts = ["the staff were friendly and quick", "it broke after two days"]
    exact = bert_tasks.load(tmp_path / "run", device="cpu").predict(texts)
    assert bert_tasks.load(tmp_path / "run", device="cpu").precision.precision == "no"
    seen = []
    predictor = bert_tasks.load(tmp_path / "run", device="cpu", precision="bf16")
    # a matmul's output (LayerNorm runs in fp32 under autocast either way)
    predictor.model.backbone.encoder.layer[0].intermediate.dense.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    halved = predictor.predict(texts)
    assert seen and set(seen) == {torch.bfloat16}
    assert [p["label"] for p in halved] == [p["label"] for p in exact]
    for a, b in zip(halved, exact):
        assert a["scores"] == pytest.approx(b["scores"], abs=0.05)
    machine(())
    assert bert_tasks.load(tmp_path / "run", device="cpu", precision="auto").precision.precision == "no"
    with pytest.raises(ConfigError, match="--precision=fp8"):
        bert_tasks.load(tmp_path / "run", device="cpu", precision="fp8")


def test_cli_evaluate_and_predict_take_a_precision(tmp_path, tiny_checkpoint, capsys):
    from bert_tasks.cli import main

    bert_tasks.train(load_config(tiny_recipe(tiny_checkpoint, tmp_path, train={"max_train_samples": 32, "max_eval_samples": 16})))
    run = tmp_path / "run"
    assert main(["evaluate", str(run), "train.max_eval_samples=8", "--precision", "bf16", "--device", "cpu"]) == 0
    inputs = tmp_path / "in.jsonl"
    inputs.write_text('{"text": "lovely quiet hotel"}\n')
    assert main(["predict", str(run), "--input", str(inputs), "--output", str(tmp_path / "out.jsonl"), "--precision", "bf16", "--device", "cpu"]) == 0
    assert (tmp_path / "out.jsonl").read_text().count("\n") == 1
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["predict", str(run), "--input", str(inputs), "--output", str(tmp_path / "o2.jsonl"), "--precision", "fp8"])
    assert "fp8" in capsys.readouterr().err


def test_a_gpu_that_only_emulates_bf16_gets_fp16(monkeypatch):
    """torch says a T4 / V100 "supports" bf16 when emulation counts; auto must not pick it there."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert not precision_module.cuda_supports_bf16()
    assert choose_precision("auto", "cuda").precision == "fp16"


def test_a_half_precision_checkpoint_trains_fp32_weights(tmp_path, tiny_checkpoint):
    """transformers 5 would load a bf16-saved checkpoint as bf16: the weights must still train in fp32."""
    from transformers import AutoModel, AutoTokenizer

    half = tmp_path / "bf16-checkpoint"
    AutoModel.from_pretrained(str(tiny_checkpoint)).to(torch.bfloat16).save_pretrained(str(half))
    AutoTokenizer.from_pretrained(str(tiny_checkpoint)).save_pretrained(str(half))
    config = load_config(tiny_recipe(half, tmp_path, train={"mixed_precision": "no", "max_train_samples": 32}))
    summary = bert_tasks.train(config)
    model = bert_tasks.load(summary.run_dir, device="cpu")
    assert {p.dtype for p in model.model.parameters()} == {torch.float32}
    assert summary.eval["loss"] == summary.eval["loss"]  # trained and evaluated: a number, not NaN
