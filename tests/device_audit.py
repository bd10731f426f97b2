"""A CPU-only check for GPU device mistakes: record every tensor that our own code creates
without saying where it lives.

On a CPU machine a tensor made with ``torch.zeros(())`` and one made on the accelerator's device
are both CPU tensors, so a device mix-up (``cpu_tensor += cuda_tensor``) cannot fail here. What
can be seen is the cause: a factory call (``torch.zeros``, ``torch.tensor``, ...) in a bert_tasks
file with no ``device=``. ``FactoryAudit`` is a ``TorchFunctionMode`` that sees every such call,
looks at the Python frame that made it and records those made by bert_tasks code, except while a
DataLoader builds a batch (collate makes CPU tensors on purpose; the loader moves them) and in
``__init__`` of modules (parameters are made on the CPU and moved by ``accelerator.prepare``).
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode

import bert_tasks

PACKAGE_DIR = Path(bert_tasks.__file__).resolve().parent
TORCH_DIR = str(Path(torch.__file__).resolve().parent)
DATA_LOADING_DIR = str(Path(torch.__file__).resolve().parent / "utils" / "data")
FACTORIES = {
    torch.zeros, torch.ones, torch.full, torch.empty, torch.tensor, torch.as_tensor, torch.arange, torch.range,
    torch.rand, torch.randn, torch.randint, torch.randperm, torch.eye, torch.linspace, torch.logspace,
    torch.scalar_tensor, torch.empty_strided, torch.sparse_coo_tensor,
}


class FactoryAudit(TorchFunctionMode):
    """``with FactoryAudit() as audit: ...``; then ``audit.found`` lists 'file:line torch.name' of each
    tensor bert_tasks made with no device (once per place)."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self.calls = 0  # every factory call seen (so a test can tell the mode was active)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in FACTORIES:
            self.calls += 1
            if kwargs.get("device") is None:
                place = self._our_caller()
                entry = f"{place} torch.{func.__name__}"
                if place and entry not in self.found:
                    self.found.append(entry)
        return func(*args, **kwargs)

    @staticmethod
    def _our_caller() -> str | None:
        frame = sys._getframe(2)
        while frame is not None and frame.f_code.co_filename.startswith(TORCH_DIR):
            if frame.f_code.co_filename.startswith(DATA_LOADING_DIR):  # the DataLoader's own seed draws
                return None
            frame = frame.f_back
        if frame is None or not Path(frame.f_code.co_filename).resolve().is_relative_to(PACKAGE_DIR):
            return None
        caller = frame
        if caller.f_code.co_name == "__init__":  # building a module: prepare() moves its parameters
            return None
        while frame is not None:  # inside a DataLoader building a batch: CPU on purpose
            if frame.f_code.co_filename.startswith(DATA_LOADING_DIR):
                return None
            frame = frame.f_back
        return f"{Path(caller.f_code.co_filename).resolve().relative_to(PACKAGE_DIR.parent)}:{caller.f_lineno}"
