"""`python tests/fsdp_on_cpu.py <bert-tasks arguments>` under torchrun: bert_tasks with Accelerate's FSDP2
integration on CPU processes over gloo.

Accelerate turns an FSDP launch into FSDP only for GPU-like process groups; with CPU processes it
becomes plain data parallel. torch's FSDP2 itself runs on CPU, so this driver makes Accelerate take
its FSDP branch there: after bert_tasks creates the Accelerator it sets the distributed type to FSDP
with a plugin built from the bundled `fsdp_full_shard` launch config. From then on everything is
the real path: Accelerate's own FSDP2 preparation (every BertLayer a shard unit), bert_tasks'
training loop, gathers, checkpoints and resume.
"""
from __future__ import annotations

import sys
from importlib import resources

import yaml
from accelerate import FullyShardedDataParallelPlugin
from accelerate.state import PartialState
from accelerate.utils import DistributedType

import bert_tasks.training as training
from bert_tasks.cli import main


def bundled_plugin() -> FullyShardedDataParallelPlugin:
    """The FSDP plugin Accelerate would build from the bundled launch config."""
    text = resources.files("bert_tasks.launch_configs").joinpath("fsdp_full_shard.yaml").read_text()
    fsdp = yaml.safe_load(text)["fsdp_config"]
    return FullyShardedDataParallelPlugin(
        fsdp_version=fsdp["fsdp_version"], auto_wrap_policy=fsdp["fsdp_auto_wrap_policy"].lower(),
        transformer_cls_names_to_wrap=fsdp["fsdp_transformer_layer_cls_to_wrap"].split(","),
        reshard_after_forward=fsdp["fsdp_reshard_after_forward"], state_dict_type=fsdp["fsdp_state_dict_type"],
        cpu_ram_efficient_loading=fsdp["fsdp_cpu_ram_efficient_loading"], cpu_offload=fsdp["fsdp_offload_params"],
    )


def _sharded_accelerator(*args, **kwargs):
    accelerator = original(*args, **kwargs)
    accelerator.state.distributed_type = DistributedType.FSDP
    accelerator.state.fsdp_plugin = bundled_plugin()
    PartialState().distributed_type = DistributedType.FSDP  # AcceleratorState() copies it from here when re-created
    return accelerator


original = training.make_accelerator
training.make_accelerator = _sharded_accelerator

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
