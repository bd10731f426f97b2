"""Where the frozen lower part of an encoder ends, and running the encoder in two halves.

A cut at ``layers = k`` means: the embeddings and encoder layers 0..k-1 are frozen and untouched,
so hidden state ``h_k`` (the input of layer k) depends only on the row's tokens. The lower half
runs once (``run_lower``, in eval mode); the upper half (``run_upper``) runs layers k..L-1 on the
stored ``h_k`` every step. Both halves are the encoder's own ``forward`` with a shorter layer list
in place for the call, so masks, position handling and every architecture detail stay the
model's own; ``check_split_is_exact`` proves the two halves equal the whole on real rows before
a run trusts them.
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Iterator, Optional

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutput

from ..backbone import embeddings, encoder_layers, layer_list_owner


@dataclass(frozen=True)
class FrozenCut:
    """``layers``: frozen bottom layers (with the embeddings); ``total``: the encoder's layers;
    ``all_states``: the features read every hidden state (a layer mix), so h_0..h_k are kept."""

    layers: int
    total: int
    all_states: bool

    @property
    def whole_encoder(self) -> bool:
        return self.layers == self.total

    @property
    def states(self) -> int:
        """Hidden-state tensors kept per token."""
        return self.layers + 1 if self.all_states else 1

    def describe(self) -> str:
        where = "the whole encoder" if self.whole_encoder else f"the embeddings and layers 0-{self.layers - 1}" if self.layers else "the embeddings"
        kept = f"hidden states 0-{self.layers}" if self.all_states else f"hidden state {self.layers}"
        return f"{where} frozen ({kept} stored)"


def frozen_modules(encoder: nn.Module, cut: FrozenCut) -> list[nn.Module]:
    """The modules below the cut: they run in eval mode (no dropout) whenever the cut is used."""
    if cut.whole_encoder:
        return [encoder]
    return [embeddings(encoder), *list(encoder_layers(encoder))[: cut.layers]]


def touched_below(encoder: nn.Module, cut: FrozenCut) -> Optional[str]:
    """Why the part below the cut is not frozen and untouched (a trainable weight, a hook a strategy
    put there), or None when it is."""
    for module in frozen_modules(encoder, cut):
        for name, parameter in module.named_parameters():
            if parameter.requires_grad:
                return f"{type(module).__name__}.{name} trains"
        for name, sub in module.named_modules():
            if sub._forward_hooks or sub._forward_pre_hooks:
                return f"a module below the cut ({name or type(sub).__name__}) has a hook that changes its output"
    return None


@contextmanager
def layers_in_place(encoder: nn.Module, keep: slice) -> Iterator[None]:
    """For the duration of one call, the encoder's layer list holds only ``keep``."""
    owner, attribute = layer_list_owner(encoder)
    full = owner._modules[attribute]
    owner._modules[attribute] = nn.ModuleList(list(full)[keep])
    try:
        yield
    finally:
        owner._modules[attribute] = full


@contextmanager
def first_layer_reads(layer: nn.Module, hidden: torch.Tensor) -> Iterator[None]:
    """``layer`` takes ``hidden`` as its input hidden states instead of what the encoder passes it."""

    def replace(_module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if args:
            return (hidden, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": hidden}

    handle = layer.register_forward_pre_hook(replace, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def run_lower(encoder: nn.Module, cut: FrozenCut, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """The frozen part's output for a batch. Shape: input_ids [batch, seq] -> [batch, seq, states, hidden]"""
    shortened = nullcontext() if cut.whole_encoder else layers_in_place(encoder, slice(0, cut.layers))
    with shortened:
        outputs = encoder(**inputs, output_hidden_states=cut.all_states, return_dict=True)
    if cut.all_states:
        return torch.stack(tuple(outputs.hidden_states), dim=2)  # Shape: [batch, seq, layers + 1, hidden]
    return outputs.last_hidden_state.unsqueeze(2)  # Shape: [batch, seq, 1, hidden]


def run_upper(encoder: nn.Module, cut: FrozenCut, states: torch.Tensor, inputs: dict[str, torch.Tensor]) -> Any:
    """The encoder's outputs (``last_hidden_state``, and ``hidden_states`` when all are read) from the
    stored states of the cut. Shape: states [batch, seq, states, hidden]"""
    stored = tuple(states.unbind(2))  # each Shape: [batch, seq, hidden]
    if cut.whole_encoder:
        return BaseModelOutput(last_hidden_state=stored[-1], hidden_states=stored if cut.all_states else None)
    first = encoder_layers(encoder)[cut.layers]  # before the list is shortened
    with layers_in_place(encoder, slice(cut.layers, None)), first_layer_reads(first, stored[-1]):
        outputs = encoder(**inputs, output_hidden_states=cut.all_states, return_dict=True)
    hidden_states = stored + tuple(outputs.hidden_states[1:]) if cut.all_states else None
    return BaseModelOutput(last_hidden_state=outputs.last_hidden_state, hidden_states=hidden_states)


def zero_padding(states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Padded positions as the store gives them back (it keeps real tokens only).
    Shape: states [batch, seq, states, hidden], attention_mask [batch, seq] -> same as states"""
    return states.masked_fill(attention_mask[:, :, None, None] == 0, 0)


@torch.no_grad()
def split_difference(encoder: nn.Module, features: nn.Module, cut: FrozenCut, inputs: dict[str, torch.Tensor]) -> float:
    """Largest difference, over real tokens, between the features of the whole encoder and of the two
    halves (eval mode): 0 where the split reproduces the encoder, large where the architecture
    carries something across layers that the cut loses (e.g. T5's position bias from layer 0)."""
    mask = inputs["attention_mask"]
    whole = features(encoder(**inputs, output_hidden_states=cut.all_states, return_dict=True))  # Shape: [batch, seq, hidden]
    halves = features(run_upper(encoder, cut, zero_padding(run_lower(encoder, cut, inputs), mask), inputs))
    real = mask.bool()
    return float((whole[real].float() - halves[real].float()).abs().max()) if real.any() else 0.0
