"""torchrun + DistributedDataParallel: gloo on CPU, NCCL/RCCL on GPUs; single process otherwise."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def init_world(device_type: str) -> World:
    """Join the process group that ``torchrun`` describes in the environment, if any."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World()
    world = World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))
    if device_type == "cuda":
        torch.cuda.set_device(world.local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return world


def close_world(world: World) -> None:
    """Leave the process group (the skeleton calls it on every path out of a run, in a ``finally``).

    While Python is whole: a gloo group left to the interpreter's teardown sometimes aborts the rank
    (SIGABRT, torch 2.13). Local, with no barrier: a rank that failed leaves at once, and the other
    ranks' pending collectives fail instead of waiting for it."""
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def mean_across(value: torch.Tensor, world: World) -> torch.Tensor:
    """The mean of ``value`` over all ranks (itself in a single process)."""
    if not world.distributed:
        return value
    value = value.detach().clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / world.size


def any_rank(flag: bool, world: World, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on any rank; a collective: every rank must call it.

    ``device`` is the training device (NCCL reduces only tensors on the GPU).
    """
    if not world.distributed:
        return flag
    value = torch.tensor(1.0 if flag else 0.0, device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def every_rank(value: Any, world: World) -> list[Any]:
    """Every rank's ``value`` (any picklable object) in rank order, on every rank; a collective.

    In a single process, ``[value]``."""
    if not world.distributed:
        return [value]
    gathered: list[Any] = [None] * world.size
    dist.all_gather_object(gathered, value)
    return gathered


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()
