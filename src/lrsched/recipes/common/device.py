"""Device and precision: CUDA (ROCm shows as CUDA), MPS or CPU; bf16 autocast everywhere."""

from __future__ import annotations

import argparse
import contextlib
import functools
import warnings
from pathlib import Path

import torch

from lrsched.flags import add_flag


def add_device_flags(group: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--device`` and ``--bf16``, defined once for both programs."""
    add_flag(
        group,
        "device",
        default="auto",
        metavar="DEV",
        help="auto (CUDA/ROCm, MPS, CPU), cpu, cuda, cuda:1, mps (default auto)",
    )
    add_flag(group, "bf16", action="store_true", help="bf16 autocast (slow on CPUs without native bf16)")


def pick_device(requested: str = "auto") -> torch.device:
    """``auto``: CUDA/ROCm when present, then Apple MPS, then CPU; an unknown or absent device is a RuntimeError."""
    if requested != "auto":
        try:
            device = torch.device(requested)
        except RuntimeError:
            raise RuntimeError("not a device (auto, cpu, cuda, cuda:N, mps)") from None
        if device.type == "cuda" and not (
            torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count()
        ):
            raise RuntimeError(f"no such device here ({torch.cuda.device_count()} CUDA/ROCm device(s))")
        if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise RuntimeError("MPS is not available here")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX); otherwise it is emulated."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager[object]:
    """bf16 autocast on ``device`` when asked; warns once on a CPU without native bf16."""
    if not bf16:
        return contextlib.nullcontext()
    if device.type == "cpu" and not cpu_has_native_bf16():
        _warn_slow_bf16()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


@functools.cache
def _warn_slow_bf16() -> None:
    warnings.warn(
        "--bf16 on a CPU without native bf16: it works, but runs several times slower than fp32",
        stacklevel=3,
    )


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        flavour = "ROCm" if torch.version.hip else "CUDA"
        return f"{flavour} {torch.cuda.get_device_name(device)}"
    return device.type.upper()


def device_memory(device: torch.device) -> int | None:
    """Bytes of memory ``device`` has in all: the GPU's total, or the machine's MemTotal for the CPU;
    None when unknown (MPS, no /proc). A run that needs more can never fit; what is free at the
    moment depends on other processes, so it is not used to refuse a run."""
    if device.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(device)[1])
        except (RuntimeError, AssertionError):
            return None
    if device.type == "cpu":
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            return None
    return None
