"""Whole weights and optimiser state of a model sharded over processes (FSDP2 through Accelerate).

Under FSDP each process holds a slice of every parameter and of its optimiser state, so nothing
can be saved from the main process alone. Every process takes part in one gather (torch's
distributed state-dict functions, full state, offloaded to the CPU); the main process then holds
the whole weights and writes them in the same files and layout as a one-process run. Loading is
the reverse: every process reads the whole file and keeps its own slice. Without sharding these
functions are not used: the model and optimiser save themselves as before.
"""
from __future__ import annotations

from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType

from .backbone import encoder_layers
from .errors import BertTasksError, ConfigError


def is_sharded(accelerator: Accelerator) -> bool:
    return accelerator.distributed_type == DistributedType.FSDP


def fit_wrap_classes(accelerator: Accelerator, model: torch.nn.Module) -> None:
    """Keep the FSDP plugin's layer classes to those this model has. The bundled launch config names
    the layer classes of several families (BertLayer, RobertaLayer...), and Accelerate refuses a name
    the model lacks; a model with none of them is refused here, naming its own layer class."""
    plugin = accelerator.state.fsdp_plugin
    names = list(plugin.transformer_cls_names_to_wrap or [])
    if not names:
        return
    present = {type(module).__name__ for module in model.modules()}
    kept = [name for name in names if name in present]
    if not kept:
        encoder = getattr(model, "encoder", None)
        hint = f" (this model's layers are {type(encoder_layers(encoder)[0]).__name__})" if encoder is not None else ""
        raise ConfigError(f"FSDP: none of the layer classes to wrap ({', '.join(names)}) is in this model{hint}; "
                          "add it to fsdp_transformer_layer_cls_to_wrap in the Accelerate config")
    plugin.transformer_cls_names_to_wrap = kept


def tied_aliases(model: torch.nn.Module) -> set[str]:
    """Names under which an already-named parameter appears again (a tied decoder, say): a
    one-process save stores each shared tensor once, and so does a gathered one."""
    every = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    return every - {name for name, _ in model.named_parameters()}


def gathered_weights(accelerator: Accelerator, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The whole state dict on the main process (CPU tensors, tied aliases left out), {} on the others.
    Collective: every process must call it at the same point."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    model = accelerator.unwrap_model(model)
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    aliases = tied_aliases(model)
    return {name: value.contiguous() for name, value in state.items() if name not in aliases}


def gathered_optimizer_state(accelerator: Accelerator, model: torch.nn.Module, optimizer: Any) -> dict[str, Any]:
    """The whole optimiser state, keyed by parameter name, on the main process ({} elsewhere). Collective."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(accelerator.unwrap_model(model), _inner(optimizer),
                                    options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_whole_weights(accelerator: Accelerator, model: torch.nn.Module, weights: dict[str, torch.Tensor], source: str) -> None:
    """Each process keeps its slice of ``weights`` (a whole state dict as ``gathered_weights`` gives)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    model = accelerator.unwrap_model(model)
    expected = set(model.state_dict()) - tied_aliases(model)
    missing, unexpected = sorted(expected - set(weights)), sorted(set(weights) - expected)
    if missing or unexpected:
        raise BertTasksError(f"{source}: does not fit this run's model (missing {missing[:3]}, unexpected {unexpected[:3]})")
    set_model_state_dict(model, weights, options=StateDictOptions(full_state_dict=True, strict=False))


def load_whole_optimizer_state(accelerator: Accelerator, model: torch.nn.Module, optimizer: Any, state: dict[str, Any]) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(accelerator.unwrap_model(model), _inner(optimizer), optim_state_dict=state,
                             options=StateDictOptions(full_state_dict=True))


def _inner(optimizer: Any) -> torch.optim.Optimizer:
    """The torch optimiser inside Accelerate's wrapper."""
    return getattr(optimizer, "optimizer", optimizer)
