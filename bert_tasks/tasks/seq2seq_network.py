"""Seq2seq networks: an encoder-decoder warm-started from encoder checkpoints, or a native one.

Warm start (Rothe et al. 2020, "Leveraging Pre-trained Checkpoints for Sequence Generation"):
the encoder is the pretrained checkpoint; the decoder is the same (or another) checkpoint
loaded as a causal LM with ``is_decoder`` (a causal self-attention mask) and
``add_cross_attention`` (new, randomly initialised cross-attention in every layer).
With ``share_weights`` the decoder reuses the encoder's parameters wherever both have one
(BERT2BERT-share: about half the parameters). Native seq2seq checkpoints (T5, BART, ...)
load as ``AutoModelForSeq2SeqLM``.

The decoder's special tokens are the pitfall: a warm-started BERT decoder starts from
``[CLS]``, ends with ``[SEP]`` and pads with ``[PAD]``; if generation is not told all three
it emits ``[CLS]`` forever or never stops.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import nn
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    EncoderDecoderConfig,
    EncoderDecoderModel,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.modeling_outputs import BaseModelOutput

from ..backbone import load_backbone_config, quiet_loading, resolve_checkpoint, run_folder, take_pooler
from ..errors import CheckpointError, ConfigError


@dataclass(frozen=True)
class SpecialTokens:
    """Token ids the decoder needs: where generation starts, what pads, what ends a sequence."""

    start: int
    pad: int
    end: int


def is_native_seq2seq(config: PretrainedConfig) -> bool:
    """True for T5 / BART-style checkpoints (an encoder-decoder in one); False for an encoder."""
    return bool(getattr(config, "is_encoder_decoder", False)) and config.model_type != "encoder-decoder"


def load_network(
    checkpoint: str,
    revision: Optional[str],
    dropout: Optional[float],
    decoder_checkpoint: Optional[str] = None,
) -> tuple[PreTrainedModel, list[str]]:
    """The pretrained seq2seq network and the names of its freshly initialised parameters."""
    if run_folder(checkpoint) is not None:
        raise ConfigError(f"model.checkpoint={checkpoint!r}: a seq2seq model starts from a run only once published (bert-tasks publish RUN OUT; model.checkpoint=OUT)")
    config = load_backbone_config(checkpoint, revision, dropout)
    if is_native_seq2seq(config):
        if decoder_checkpoint:
            raise ConfigError(f"task.decoder_checkpoint: {checkpoint!r} is already an encoder-decoder ({config.model_type}); leave it unset")
        with quiet_loading():
            network, info = AutoModelForSeq2SeqLM.from_pretrained(resolve_checkpoint(checkpoint), config=config, revision=revision, output_loading_info=True)
        return network, sorted(info["missing_keys"])
    with quiet_loading():
        encoder = AutoModel.from_pretrained(resolve_checkpoint(checkpoint), config=config, revision=revision)
        take_pooler(encoder)  # the decoder reads token vectors; an unused pooler would only break DDP
        decoder_name = decoder_checkpoint or checkpoint
        decoder_config = load_backbone_config(decoder_name, revision if decoder_checkpoint is None else None, dropout)
        decoder_config.is_decoder = True
        decoder_config.add_cross_attention = True
        try:
            decoder, info = AutoModelForCausalLM.from_pretrained(resolve_checkpoint(decoder_name), config=decoder_config, output_loading_info=True)
        except ValueError as error:
            raise CheckpointError(
                f"task.decoder_checkpoint={decoder_name!r}: a {decoder_config.model_type} checkpoint cannot be loaded as a decoder "
                f"({str(error).splitlines()[0][:120]}); use a BERT/RoBERTa-style checkpoint or a native seq2seq one (T5, BART)"
            ) from None
    if decoder.config.vocab_size != encoder.config.vocab_size:
        raise ConfigError(
            f"task.decoder_checkpoint={decoder_name!r}: vocabulary of {decoder.config.vocab_size} tokens, but the encoder's tokenizer has "
            f"{encoder.config.vocab_size}; encoder and decoder must share one vocabulary"
        )
    network = EncoderDecoderModel(encoder=encoder, decoder=decoder)
    fresh = [f"decoder.{name}" for name in info["missing_keys"]]
    fresh += [name for name, _ in network.named_parameters() if name.startswith("enc_to_dec_proj.")]
    return network, sorted(fresh)


def network_from_config(config: PretrainedConfig) -> PreTrainedModel:
    """An empty network of a saved configuration (trained weights are loaded next)."""
    if isinstance(config, EncoderDecoderConfig):
        network = EncoderDecoderModel(config=config)
        take_pooler(network.encoder)
        return network
    return AutoModelForSeq2SeqLM.from_config(config)


def share_encoder_weights(network: EncoderDecoderModel) -> int:
    """Make the decoder use the encoder's parameter wherever both have one of the same name and shape
    (embeddings, self-attention, feed-forward); cross-attention and the LM head stay the decoder's own.
    Returns how many parameter tensors are now shared."""
    encoder_params = dict(network.encoder.named_parameters())
    prefix = network.decoder.base_model_prefix + "."
    replacement: dict[int, nn.Parameter] = {}
    for name, parameter in network.decoder.named_parameters():
        source = encoder_params.get(name.removeprefix(prefix))
        if source is not None and source.shape == parameter.shape:
            replacement[id(parameter)] = source
    # Swap every reference (a tied LM head points at the word embeddings too), not just the first.
    for module in network.decoder.modules():
        for key, parameter in list(module._parameters.items()):
            if parameter is not None and id(parameter) in replacement:
                module._parameters[key] = replacement[id(parameter)]
    return len(replacement)


def set_special_tokens(network: PreTrainedModel, tokens: SpecialTokens) -> None:
    """Tell the model config and the generation config the same start, pad and end ids."""
    for config in (network.config, network.generation_config):
        config.decoder_start_token_id = tokens.start
        config.pad_token_id = tokens.pad
        config.eos_token_id = tokens.end
    if isinstance(network, EncoderDecoderModel):
        network.config.decoder.pad_token_id = tokens.pad


def decoder_stack(network: PreTrainedModel) -> nn.Module:
    """The decoder's pretrained stack as a strategy sees it (a warm-started decoder with its LM head)."""
    return network.get_decoder()


def shift_right(target_ids: torch.Tensor, target_mask: torch.Tensor, start: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher forcing: the decoder reads ``start, y_1 .. y_{n-1}`` to predict ``y_1 .. y_n``.
    Shape: target_ids, target_mask [batch, tgt] -> decoder_input_ids, decoder_attention_mask [batch, tgt]"""
    column = torch.full_like(target_ids[:, :1], start)
    decoder_input_ids = torch.cat([column, target_ids[:, :-1]], dim=1)
    decoder_attention_mask = torch.cat([torch.ones_like(target_mask[:, :1]), target_mask[:, :-1]], dim=1)
    return decoder_input_ids, decoder_attention_mask


class Seq2SeqHead(nn.Module):
    """The decoder side, called as a head on the encoder's token vectors.

    It holds the seq2seq network by reference only (the network is the TaskModel's
    backbone, registered there once), so every parameter has one name.
    """

    input_names = ("target_ids", "target_mask")

    def __init__(self, network: PreTrainedModel) -> None:
        super().__init__()
        object.__setattr__(self, "network", network)  # deliberately not a registered submodule

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor, target_ids: torch.Tensor, target_mask: torch.Tensor) -> torch.Tensor:
        # Shape: hidden [batch, src, hidden], attention_mask [batch, src], target_* [batch, tgt] -> logits [batch, tgt, vocab]
        decoder_input_ids, decoder_attention_mask = shift_right(target_ids, target_mask, self.network.config.decoder_start_token_id)
        outputs = self.network(
            encoder_outputs=BaseModelOutput(last_hidden_state=hidden),
            attention_mask=attention_mask,
            decoder_input_ids=decoder_input_ids,
            decoder_attention_mask=decoder_attention_mask,
            return_dict=True,
        )
        return outputs.logits

    def generate(self, hidden: torch.Tensor, attention_mask: torch.Tensor, **options: Any) -> torch.Tensor:
        """Greedy or beam search from the encoder's vectors. Shape: -> [batch, 1 + generated] (starts with the start token)"""
        return self.network.generate(encoder_outputs=BaseModelOutput(last_hidden_state=hidden), attention_mask=attention_mask, do_sample=False, **options)
