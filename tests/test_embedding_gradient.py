"""The word-embedding gradient built in a kept buffer (embedding_gradient.py): bit-for-bit PyTorch's, really reused."""
from __future__ import annotations

import copy

import pytest
import torch
from conftest import tiny_recipe
from torch import nn

import bert_tasks
from bert_tasks import embedding_gradient
from bert_tasks.config import load_config
from bert_tasks.embedding_gradient import KeptGradientEmbedding, reuse_embedding_gradients

VOCABULARY, HIDDEN = 3000, 24


def _pair(padding_idx=0, tied=False) -> tuple[nn.Module, nn.Module]:
    """The same small model twice: stock embeddings, and kept-gradient ones."""
    torch.manual_seed(0)
    embedding = nn.Embedding(VOCABULARY, HIDDEN, padding_idx=padding_idx)
    out = nn.Linear(HIDDEN, VOCABULARY, bias=False)
    if tied:
        out.weight = embedding.weight
    stock = nn.Sequential(embedding, nn.Tanh(), out)
    kept = copy.deepcopy(stock)
    assert reuse_embedding_gradients(kept, min_bytes=0) == 1
    return stock, kept


@pytest.mark.parametrize("tokens", [40, 4000])  # PyTorch's CPU kernel takes another path above 3,000 indices
@pytest.mark.parametrize("padding_idx", [None, 0])
def test_training_steps_match_pytorch_bit_for_bit_and_reuse_one_buffer(tokens, padding_idx):
    stock, kept = _pair(padding_idx)
    optimizers = [torch.optim.AdamW(m.parameters(), lr=1e-2, fused=True) for m in (stock, kept)]
    buffers = set()
    for step in range(4):
        ids = torch.randint(0, 300, (tokens // 20, 20))  # Shape: [rows, 20], many repeated ids
        ids[:, -3:] = 0  # padding
        for model, optimizer in zip((stock, kept), optimizers):
            model(ids).square().mean().backward()
            nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        assert torch.equal(stock[0].weight.grad, kept[0].weight.grad)
        buffers.add(kept[0].weight.grad.data_ptr())
        assert kept[0].weight.grad.data_ptr() == kept[0]._kept_gradient.data_ptr()  # taken as .grad uncopied
        for optimizer in optimizers:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    assert len(buffers) == 1
    assert all(torch.equal(a, b) for a, b in zip(stock.parameters(), kept.parameters()))


def test_accumulated_and_tied_gradients_match_pytorch():
    """A second backward before zero_grad (gradient accumulation), and an output layer sharing the weight."""
    stock, kept = _pair(tied=True)
    for _ in range(3):
        ids = torch.randint(0, 300, (6, 9))  # Shape: [6, 9]
        for model in (stock, kept):
            model(ids).logsumexp(-1).sum().backward()
        assert torch.equal(stock[0].weight.grad, kept[0].weight.grad)


def test_frozen_evaluating_or_unusual_embeddings_run_pytorchs_own():
    _, kept = _pair()
    ids = torch.randint(0, 300, (2, 5))
    with torch.no_grad():
        assert kept(ids).grad_fn is None
    kept[0].weight.requires_grad_(False)
    kept(ids).sum().backward()
    assert kept[0]._kept_gradient is None and kept[0].weight.grad is None
    scaled = nn.Sequential(nn.Embedding(VOCABULARY, HIDDEN, scale_grad_by_freq=True))
    assert reuse_embedding_gradients(scaled, min_bytes=0) == 0
    small = nn.Sequential(nn.Embedding(VOCABULARY, HIDDEN))  # 288 KB: glibc keeps such blocks already
    assert reuse_embedding_gradients(small) == 0


def test_a_copy_or_saved_state_carries_no_buffer_and_the_same_parameters():
    stock, kept = _pair()
    kept(torch.randint(0, 300, (2, 5))).sum().backward()
    assert kept[0]._kept_gradient is not None
    twin = copy.deepcopy(kept)
    assert type(twin[0]) is KeptGradientEmbedding and "_kept_gradient" not in twin[0].__dict__
    assert kept.state_dict().keys() == stock.state_dict().keys()


def test_a_training_run_with_kept_gradients_matches_a_stock_one(tmp_path, tiny_checkpoint, monkeypatch):
    """The tiny model's embedding is far below 32 MB: the threshold is lowered so the run uses the buffer."""
    monkeypatch.setattr(embedding_gradient, "MMAP_THRESHOLD_BYTES", 0)
    made = []
    original = embedding_gradient.reuse_embedding_gradients
    monkeypatch.setattr("bert_tasks.training.reuse_embedding_gradients", lambda model: made.append(original(model)) or made[-1])
    sections = {"train": {"max_train_samples": 48}}
    kept = bert_tasks.train(load_config(tiny_recipe(tiny_checkpoint, tmp_path / "kept", **sections)))
    stock = bert_tasks.train(load_config(tiny_recipe(tiny_checkpoint, tmp_path / "stock", train={"max_train_samples": 48, "reuse_host_memory": False})))
    assert made == [3]  # words, positions and token types, all trainable under full fine-tuning
    assert kept.eval["loss"] == stock.eval["loss"]


def _data_parallel_gradients(rank: int, port: int, results) -> None:
    """One of two gloo processes: stock and kept embeddings under DistributedDataParallel, 3 steps each."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        stock, kept = (DistributedDataParallel(m) for m in _pair())
        for step in range(3):
            torch.manual_seed(100 * step + rank)  # each process its own batch
            ids = torch.randint(0, 300, (4, 6))  # Shape: [4, 6]
            for model in (stock, kept):
                model.zero_grad(set_to_none=True)
                model(ids).square().mean().backward()
            same = torch.equal(stock.module[0].weight.grad, kept.module[0].weight.grad)
            reused = kept.module[0].weight.grad.data_ptr() == kept.module[0]._kept_gradient.data_ptr()
            results.put((rank, step, same, reused))
    finally:
        dist.destroy_process_group()


def test_data_parallel_all_reduces_the_kept_gradient_like_pytorchs():
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    context = mp.get_context("spawn")
    results = context.Queue()
    workers = [context.Process(target=_data_parallel_gradients, args=(rank, port, results)) for rank in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [worker.exitcode for worker in workers] == [0, 0]
    found = [results.get(timeout=5) for _ in range(6)]
    assert all(same and reused for _, _, same, reused in found), found
