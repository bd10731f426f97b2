"""Whole weights and optimiser state of a model sharded over processes (FSDP2 or DeepSpeed ZeRO through Accelerate).

Under FSDP each process holds a slice of every parameter and of its optimiser state, so nothing
can be saved from the main process alone. Every process takes part in one gather (torch's
distributed state-dict functions, full state, offloaded to the CPU); the main process then holds
the whole weights and writes them in the same files and layout as a one-process run. Loading is
the reverse: every process reads the whole file and keeps its own slice. Under DeepSpeed the
weights are gathered the same way (ZeRO-3: ``deepspeed.zero.GatheredParameters``; ZeRO-2 keeps
them whole on every process), and the optimiser's partitions are saved per process
(``zero_state``). Without sharding these functions are not used: the model and optimiser save
themselves as before.
"""
from __future__ import annotations

import contextlib
from typing import Any, ContextManager, Iterator, Optional

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType

from .backbone import encoder_layers
from .errors import BertTasksError, ConfigError


def sharding_kind(accelerator: Accelerator) -> Optional[str]:
    """"fsdp", "deepspeed", or None (every process holds the whole model)."""
    return {DistributedType.FSDP: "fsdp", DistributedType.DEEPSPEED: "deepspeed"}.get(accelerator.distributed_type)


def is_sharded(accelerator: Accelerator) -> bool:
    return sharding_kind(accelerator) is not None


def zero_stage(accelerator: Accelerator) -> int:
    return int(accelerator.state.deepspeed_plugin.zero_stage)


def models_built_whole(accelerator: Accelerator) -> ContextManager[None]:
    """Build models with every weight in place. Once Accelerate registers a ZeRO-3 config with transformers,
    ``from_pretrained`` builds partitioned models (``deepspeed.zero.Init``): empty parameters that the
    weights hash of a small save, the strategies' surgery and a main-process-only build of best/ for
    plots cannot use (the last would wait for the other processes forever). Built whole, the model is
    partitioned by ``prepare`` instead; the registration stays for the rest (transformers' generate
    keeps ZeRO-3 processes in step with it)."""
    registered = getattr(accelerator.state.deepspeed_plugin, "dschf", None) if sharding_kind(accelerator) == "deepspeed" else None
    return _unregistered(registered) if registered is not None else contextlib.nullcontext()


@contextlib.contextmanager
def _unregistered(registered: Any) -> Iterator[None]:
    from transformers.integrations.deepspeed import set_hf_deepspeed_config, unset_hf_deepspeed_config

    unset_hf_deepspeed_config()
    try:
        yield
    finally:
        set_hf_deepspeed_config(registered)


def configure_deepspeed(accelerator: Accelerator, batch_size: int, max_grad_norm: float) -> None:
    """The recipe decides what DeepSpeed's config would otherwise: the batch (``train.batch_size`` is
    the global batch, split over the processes) and gradient clipping, which DeepSpeed does inside its
    step. Called before ``prepare``."""
    config = accelerator.state.deepspeed_plugin.deepspeed_config
    steps = accelerator.gradient_accumulation_steps
    config["train_micro_batch_size_per_gpu"] = batch_size // accelerator.num_processes
    config["train_batch_size"] = batch_size // accelerator.num_processes * accelerator.num_processes * steps
    config["gradient_accumulation_steps"] = steps
    config["gradient_clipping"] = max_grad_norm


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
    model = accelerator.unwrap_model(model)
    if sharding_kind(accelerator) == "deepspeed":
        state = _deepspeed_weights(model, zero_stage(accelerator), accelerator.is_main_process)
    else:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    aliases = tied_aliases(model)
    return {name: value.contiguous() for name, value in state.items() if name not in aliases}


def _deepspeed_weights(model: torch.nn.Module, stage: int, main: bool) -> dict[str, torch.Tensor]:
    """The whole state dict on the main process. ZeRO-2 and below keep every weight whole on every
    process; ZeRO-3 partitions them, and every process takes part in gathering them back. With
    bf16/fp16 DeepSpeed keeps 16-bit weights in the module: they are widened to fp32, the dtype a
    one-process run saves and loads (the fp32 masters themselves are in the checkpoints)."""
    def whole() -> dict[str, torch.Tensor]:
        return {name: value.detach().to("cpu", torch.float32 if value.is_floating_point() else value.dtype, copy=True)
                for name, value in model.state_dict().items()} if main else {}

    if stage < 3:
        return whole()
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None):
        return whole()


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
    if sharding_kind(accelerator) == "deepspeed":
        if zero_stage(accelerator) < 3:  # whole on every process; ZeRO-3's partitions come back with the optimiser state
            model.load_state_dict(weights, strict=False)
        return
    set_model_state_dict(model, weights, options=StateDictOptions(full_state_dict=True, strict=False))


def load_whole_optimizer_state(accelerator: Accelerator, model: torch.nn.Module, optimizer: Any, state: dict[str, Any]) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(accelerator.unwrap_model(model), _inner(optimizer), optim_state_dict=state,
                             options=StateDictOptions(full_state_dict=True))


def _inner(optimizer: Any) -> torch.optim.Optimizer:
    """The torch optimiser inside Accelerate's wrapper."""
    return getattr(optimizer, "optimizer", optimizer)
