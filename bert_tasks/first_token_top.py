"""The top encoder layer computed for the first token only, when that is all the head reads.

A [CLS]-pooled head (sentence classification through the pooler) reads one vector per row from the
top layer. Every other position of that layer still feeds nothing: its query, attention output and
feed-forward block are work thrown away. Here the top layer's keys and values are computed for every
token (the [CLS] query attends to all of them) and the rest for the first position only, so on a
6-layer encoder about 1/7 of the encoder's matmul work is skipped.

The [CLS] vector is the same computation as in the whole layer, term for term, so evaluation and
prediction give the same numbers (to float rounding) and gradients are the same. In training,
dropout draws masks only for the positions computed: the masks are drawn from the same distribution,
but the random stream (and so a seeded run's exact numbers) differs from running the whole layer.

Only transformers' layer classes that are BERT's layer (BERT, RoBERTa, XLM-R, CamemBERT, ELECTRA, ERNIE,
Data2VecText: ``BERT_LAYOUT_LAYERS``) are trimmed; other architectures, look-alikes with another
order of operations, decoders and feed-forward chunking run whole.
"""
from __future__ import annotations

from contextlib import contextmanager
from types import MethodType
from typing import Any, Iterator, Optional

import torch
from torch import nn
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.bert.modeling_bert import eager_attention_forward

from .backbone import encoder_layers
from .errors import CheckpointError


# transformers' layer classes whose forward is BertLayer's line for line (their attention, intermediate
# and output modules included; checked against the transformers 5 sources). Attribute names alone are
# not enough: pre-LayerNorm variants (RoBERTa-PreLayerNorm, XLM-RoBERTa-XL) and X-MOD have the same
# names but normalise before attention or route the feed-forward by language, so they run whole.
BERT_LAYOUT_LAYERS = frozenset({"BertLayer", "RobertaLayer", "XLMRobertaLayer", "CamembertLayer", "ElectraLayer", "ErnieLayer", "Data2VecTextLayer"})


def trimmable_top_layer(encoder: nn.Module) -> Optional[nn.Module]:
    """The encoder's top layer if it is BERT's layer and runs as a plain encoder layer, else None."""
    try:
        layer = encoder_layers(encoder)[-1]
    except CheckpointError:  # no layer stack we know: nothing to trim
        return None
    if type(layer).__name__ not in BERT_LAYOUT_LAYERS or not type(layer).__module__.startswith("transformers.models."):
        return None
    attention = getattr(layer, "attention", None)
    self_attention = getattr(attention, "self", None)
    if self_attention is None or getattr(attention, "output", None) is None:
        return None
    needed = ("query", "key", "value", "attention_head_size", "scaling", "config", "dropout")
    if not all(hasattr(self_attention, name) for name in needed) or not hasattr(layer, "feed_forward_chunk"):
        return None
    if getattr(layer, "is_decoder", False) or getattr(layer, "add_cross_attention", False) or getattr(layer, "chunk_size_feed_forward", 0):
        return None
    if getattr(self_attention, "is_causal", False):
        return None
    return layer


def _first_token_forward(layer: nn.Module, hidden_states: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                         *args: Any, **kwargs: Any) -> torch.Tensor:
    """BERT's layer for the first position: its query against every position's key and value.
    Shape: hidden_states [batch, seq, hidden], attention_mask [batch, 1, seq, seq] or None -> [batch, 1, hidden]"""
    self_attention = layer.attention.self
    batch, length = hidden_states.shape[:2]
    head_size = self_attention.attention_head_size
    first = hidden_states[:, :1]  # Shape: [batch, 1, hidden]
    query = self_attention.query(first).view(batch, 1, -1, head_size).transpose(1, 2)  # Shape: [batch, heads, 1, head]
    key = self_attention.key(hidden_states).view(batch, length, -1, head_size).transpose(1, 2)  # Shape: [batch, heads, seq, head]
    value = self_attention.value(hidden_states).view(batch, length, -1, head_size).transpose(1, 2)
    if attention_mask is not None and attention_mask.dim() == 4:
        attention_mask = attention_mask[:, :, :1]  # the first query's row. Shape: [batch, 1, 1, seq]
    attend = ALL_ATTENTION_FUNCTIONS.get_interface(self_attention.config._attn_implementation, eager_attention_forward)
    context, _ = attend(self_attention, query, key, value, attention_mask,
                        dropout=self_attention.dropout.p if self_attention.training else 0.0, scaling=self_attention.scaling)
    context = context.reshape(batch, 1, -1).contiguous()  # Shape: [batch, 1, hidden]
    attention_output = layer.attention.output(context, first)  # dense, dropout, LayerNorm(+ residual)
    return layer.feed_forward_chunk(attention_output)  # Shape: [batch, 1, hidden]


@contextmanager
def first_token_top(encoder: nn.Module) -> Iterator[bool]:
    """While inside, the encoder's top layer returns the first position only (``last_hidden_state`` is
    [batch, 1, hidden]); yields whether it does. Not under gradient checkpointing: the recomputation in
    backward runs after the context has closed and must see the same layer."""
    layer = trimmable_top_layer(encoder)
    if layer is None or getattr(layer, "gradient_checkpointing", False) or "forward" in vars(layer):
        yield False
        return
    layer.forward = MethodType(_first_token_forward, layer)
    try:
        yield True
    finally:
        del layer.forward
