"""Device and precision: CUDA (ROCm shows as CUDA), MPS or CPU; bf16 autocast where the device runs it natively."""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
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
    add_flag(
        group,
        "bf16",
        action="store_true",
        help="bf16 autocast where the device runs bf16 natively (CUDA/ROCm that supports it, MPS, a CPU with "
        "AVX512-BF16/AMX); elsewhere fp32, said in the plan (LRSCHED_FORCE_BF16=1 forces it)",
    )


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


FORCE_BF16 = "LRSCHED_FORCE_BF16"
"""Environment variable: set to 1, ``--bf16`` runs bf16 autocast even where it is emulated (slow)."""


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX, from ``/proc/cpuinfo``; where
    there is none, torch's own answer); otherwise bf16 is emulated."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return "avx512_bf16" in flags or "amx_bf16" in flags


def runs_bf16_natively(device: torch.device) -> bool:
    """The one seam for "does this device run bf16 natively": a CPU by its instruction set
    (``cpu_has_native_bf16``), CUDA/ROCm by ``torch.cuda.is_bf16_supported()``, MPS by whether torch
    can make a bf16 tensor there (macOS 14 and later)."""
    if device.type == "cpu":
        return cpu_has_native_bf16()
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "mps":
        try:
            torch.zeros(1, dtype=torch.bfloat16, device=device)
        except (RuntimeError, TypeError):
            return False
        return True
    return False


def bf16_forced() -> bool:
    return os.environ.get(FORCE_BF16, "") not in ("", "0")


def uses_bf16(device: torch.device, requested: bool) -> bool:
    """Whether the run computes in bf16: ``--bf16`` on a device that runs it natively, or forced
    (``LRSCHED_FORCE_BF16=1``); ``--bf16`` elsewhere runs fp32 (a CPU emulating bf16 was measured
    about 15x slower than fp32 for train.py: docs/train.md)."""
    return requested and (runs_bf16_natively(device) or bf16_forced())


def precision_text(device: torch.device, requested: bool) -> str:
    """What the plan prints about precision: what the run uses, whether this device runs bf16
    natively and what ``--bf16`` does (or did) here."""
    native = runs_bf16_natively(device)
    kind = "this CPU" if device.type == "cpu" else "this device"
    lacks = "no native bf16 (AVX512-BF16/AMX)" if device.type == "cpu" else "no native bf16"
    if native:
        return "bf16 autocast (native here)" if requested else f"fp32 ({kind} runs bf16 natively: --bf16 would use it)"
    if not requested:
        return f"fp32 ({kind} has {lacks}: --bf16 would run fp32)"
    if bf16_forced():
        return f"bf16 autocast, forced by {FORCE_BF16}=1 ({kind} has {lacks}: emulated, slow)"
    return f"fp32: --bf16 ignored, {kind} has {lacks} (set {FORCE_BF16}=1 to force it; slow)"


def autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager[object]:
    """bf16 autocast on ``device`` when ``bf16`` is asked and ``uses_bf16`` allows it; else nothing."""
    if not uses_bf16(device, bf16):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


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
