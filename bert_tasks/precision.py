"""Which arithmetic precision to run in: ``auto`` picks per device, never emulated bf16.

Measured on 2-core CPUs: with native bf16 (AMX or AVX512-BF16) bf16 training ran about 1.1x
faster than fp32 on SST-2 batches; without it bf16 is emulated and ran about 2x slower. So a
fixed default is wrong on one kind of machine or the other; ``auto`` asks the hardware:

- a CUDA device that supports bf16 (Ampere and newer): bf16;
- an older CUDA device: fp16 (Accelerate scales the loss);
- a CPU with native bf16: bf16;
- anything else (CPUs without it, MPS, ...): fp32.

Prediction (``bert-tasks predict --precision``, ``load(run, precision=...)``) defaults to fp32 so
its answers are exact; ``auto`` there means the same as here. The capability queries below are the only place that asks the hardware, so a test can stand in
for any machine by replacing them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PRECISIONS = ("auto", "no", "bf16", "fp16")
NATIVE_BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


@dataclass(frozen=True)
class PrecisionChoice:
    precision: str  # what runs: no | bf16 | fp16
    reason: str  # one line for the log, the summary and the model card

    @property
    def label(self) -> str:
        return "fp32" if self.precision == "no" else self.precision


def cpu_native_bf16_flags() -> tuple[str, ...]:
    """The CPU's bf16 instruction-set flags (Linux /proc/cpuinfo); empty when it has none or cannot tell."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return tuple(flag for flag in NATIVE_BF16_CPU_FLAGS if flag in flags)
    except OSError:
        pass
    return ()


def cuda_supports_bf16() -> bool:
    import torch  # here, so the command line can read PRECISIONS without loading torch

    # including_emulation=False: a T4 / V100 can make bf16 tensors but has no bf16 tensor cores (fp16 it has)
    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False))


def choose_precision(requested: str, device_type: str) -> PrecisionChoice:
    """``requested`` as set (no | bf16 | fp16), or for ``auto`` the best the device runs natively."""
    if requested != "auto":
        return PrecisionChoice(requested, f"train.mixed_precision={requested} as set")
    if device_type == "cuda":
        if cuda_supports_bf16():
            return PrecisionChoice("bf16", "auto: the CUDA device supports bf16")
        return PrecisionChoice("fp16", "auto: the CUDA device has no bf16, so fp16 with loss scaling")
    if device_type == "cpu":
        flags = cpu_native_bf16_flags()
        if flags:
            return PrecisionChoice("bf16", f"auto: the CPU runs bf16 natively ({', '.join(flags)})")
        return PrecisionChoice("no", "auto: the CPU has no native bf16 (emulated bf16 is about 2x slower), so fp32")
    return PrecisionChoice("no", f"auto: fp32 on {device_type}")
