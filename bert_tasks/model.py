"""TaskModel = encoder (backbone) + what the head sees (features) + the task's head."""
from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Callable, Optional

import torch
from torch import nn

from .first_token_top import first_token_top


class LastHiddenState(nn.Module):
    """Default features: the top layer's token vectors. Strategies may swap in another
    module (e.g. a learned mix of all layers) that reads ``hidden_states``."""

    needs_all_layers = False

    def forward(self, encoder_outputs: Any) -> torch.Tensor:
        return encoder_outputs.last_hidden_state  # Shape: [batch, seq, hidden]


def _no_group(name: str) -> Optional[str]:
    return None


class TaskModel(nn.Module):
    """The one model class every task and strategy share.

    ``backbone`` is the pretrained network: an ``AutoModel`` encoder (its pooler, if any,
    now lives in the head), or for seq2seq the whole encoder-decoder. ``features`` maps
    encoder outputs to per-token vectors, and ``head`` maps those to task outputs
    (logits). A head may take extra inputs (``head.input_names``, e.g. the target
    tokens of a seq2seq model).

    Strategies tune ``tunable_stacks()`` (the pretrained transformer stacks: the encoder,
    and a decoder if there is one) and leave ``train_new_parts()`` to make sure what the
    task added (head, new cross-attention, ...) always trains.
    """

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module,
        features: Optional[nn.Module] = None,
        decoder: Optional[nn.Module] = None,
        new_parameters: tuple[str, ...] = (),
        encoder_trains: bool = True,
        encoder_lr_scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.features = features if features is not None else LastHiddenState()
        self.head = head
        # not registered again: these are parts of ``backbone``
        self._decoder = [decoder] if decoder is not None else []
        # Freshly initialised parameters, kept by identity: a strategy may move them (peft wraps a
        # layer as ``base_layer``), which changes their names but not the tensors.
        named = dict(self.named_parameters())
        self._fresh = {id(named[name]) for name in new_parameters}
        self.encoder_trains = encoder_trains
        self.encoder_lr_scale = encoder_lr_scale  # the optimiser gives the encoder this multiple of the learning rate
        # parameter name -> report group of what a strategy added (set by the assembly from the strategy)
        self.added_group: Callable[[str], Optional[str]] = _no_group
        # Where stored frozen states enter (a ``frozen.cut.FrozenCut``), set by the training loop when
        # ``train.cache_frozen`` feeds the model from a store; batches then carry ``frozen_states``.
        self.frozen_cut: Optional[Any] = None

    @property
    def new_parameters(self) -> tuple[str, ...]:
        """Current names of the parameters the task initialised fresh (e.g. new cross-attention)."""
        return tuple(name for name, parameter in self.named_parameters() if id(parameter) in self._fresh)

    @property
    def encoder(self) -> nn.Module:
        """The encoder stack: the backbone itself, or the encoder half of an encoder-decoder."""
        if getattr(self.backbone.config, "is_encoder_decoder", False):
            return self.backbone.get_encoder()
        return self.backbone

    def tunable_stacks(self) -> list[tuple[str, nn.Module]]:
        """(name, module) of each pretrained transformer stack a strategy may tune: the encoder
        (unless the task keeps it frozen) and the decoder of a seq2seq model."""
        stacks = [("encoder", self.encoder)] if self.encoder_trains else []
        return stacks + [("decoder", decoder) for decoder in self._decoder]

    def train_new_parts(self) -> None:
        """After a strategy froze what it does not tune: the head, the features and every
        freshly initialised parameter train; a frozen encoder stays frozen."""
        # a head weight tied to an encoder weight (a masked-LM decoder is the word embeddings) is the
        # encoder's: it trains when the strategy trains that encoder weight, not because the head trains
        encoder_decides = {id(p): p.requires_grad for p in self.backbone.parameters()}
        self.features.requires_grad_(True)
        self.head.requires_grad_(True)
        for parameter in self.head.parameters():
            if id(parameter) in encoder_decides:
                parameter.requires_grad_(encoder_decides[id(parameter)])
        for module in getattr(self.head, "frozen_modules", list)():  # parts the head carries unchanged
            module.requires_grad_(False)
        if not self.encoder_trains:
            self.encoder.requires_grad_(False)
        for parameter in self.parameters():
            if id(parameter) in self._fresh:
                parameter.requires_grad_(True)

    def encoder_inputs(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A batch's inputs without those only the head reads (e.g. a seq2seq model's targets)."""
        head_names = getattr(self.head, "input_names", ())
        return {name: value for name, value in inputs.items() if name not in head_names}

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, frozen_states: Optional[torch.Tensor] = None, **inputs: torch.Tensor) -> torch.Tensor:
        """What the head sees. With ``frozen_states`` (the stored output of the frozen lower part) only
        the layers above the cut run. Shape: input_ids, attention_mask, token_type_ids [batch, seq],
        frozen_states [batch, seq, states, hidden] -> [batch, seq, hidden]"""
        all_layers = getattr(self.features, "needs_all_layers", False)
        with first_token_top(self.encoder) if self.reads_first_token_only() else nullcontext():
            if frozen_states is not None:
                from .frozen.cut import run_upper

                return self.features(run_upper(self.encoder, self.frozen_cut, frozen_states, {"input_ids": input_ids, "attention_mask": attention_mask, **inputs}))
            outputs = self.encoder(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=all_layers, return_dict=True, **inputs)
        return self.features(outputs)

    def reads_first_token_only(self) -> bool:
        """The head reads only the top layer's first vector (a [CLS]-pooled head over the plain top
        layer), so that layer may skip every other position (``first_token_top``)."""
        return bool(getattr(self.head, "reads_first_token_only", False)) and type(self.features) is LastHiddenState

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **inputs: torch.Tensor) -> torch.Tensor:
        head_names = getattr(self.head, "input_names", ())
        head_inputs = {name: inputs.pop(name) for name in list(inputs) if name in head_names}
        hidden = self.encode(input_ids, attention_mask, **inputs)  # Shape: [batch, seq, hidden]
        return self.head(hidden, attention_mask, **head_inputs)
