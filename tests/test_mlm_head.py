"""The sparse masked-LM head: same loss and gradients as scoring every position; tied to the embeddings."""
from __future__ import annotations

import torch
from torch import nn
from transformers import BertConfig

from bert_tasks.batching import IGNORE_INDEX
from bert_tasks.tasks.mlm_head import MaskedLMHead, dense_loss, tie_check


def _head(seed: int = 0):
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=120, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
    return MaskedLMHead(config, embeddings), embeddings


def test_sparse_loss_and_gradients_equal_the_dense_head():
    head, embeddings = _head()
    hidden = torch.randn(4, 10, 16, dtype=torch.float32)
    labels = torch.full((4, 10), IGNORE_INDEX)
    labels[torch.rand(4, 10, generator=torch.Generator().manual_seed(1)) < 0.15] = 7
    labels[0, 3], labels[2, 9] = 11, 42
    sparse, logits, targets = head(hidden, labels)
    assert logits.shape == (int((labels != IGNORE_INDEX).sum()), 120) and torch.equal(targets, labels[labels != IGNORE_INDEX])
    sparse_grads = torch.autograd.grad(sparse, [head.dense.weight, embeddings.weight, head.bias])
    dense = dense_loss(head, hidden, labels)
    dense_grads = torch.autograd.grad(dense, [head.dense.weight, embeddings.weight, head.bias])
    assert abs(sparse.item() - dense.item()) <= 1e-6
    for a, b in zip(sparse_grads, dense_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_the_decoder_is_the_embedding_and_a_batch_without_masks_gives_zero():
    head, embeddings = _head()
    assert head.decoder.weight is embeddings.weight and tie_check(head, embeddings) is None
    loss, logits, _ = head(torch.randn(2, 5, 16), torch.full((2, 5), IGNORE_INDEX))
    assert loss.item() == 0.0 and logits.shape == (0, 120)
    loss.backward()  # the graph holds
    head.decoder.weight = nn.Parameter(embeddings.weight.detach().clone())
    assert "no longer tied" in tie_check(head, embeddings)
