"""train.py's two records, named as phase5's: ``Settings``, the validated inputs, and ``State``,
what the loop changes."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lrsched.recipes.common.distributed import World
from lrsched.recipes.finetune import batches as B
from lrsched.recipes.finetune import data as D
from lrsched.strategy import Plan
from lrsched.torch_sched import ScheduledLR


@dataclass
class Settings:
    """Everything a validated run needs: nothing in it has touched the output directory."""

    args: argparse.Namespace
    world: World
    device: torch.device
    splits: D.Splits
    model_dir: Path
    tokenizer: Any
    model: torch.nn.Module
    batches: int
    updates_per_epoch: int
    plan: Plan
    output_dir: Path
    resume: dict[str, Any] | None
    resume_path: Path | None
    identity: dict[str, Any]
    run_id: str | None = None


@dataclass
class State:
    """The loop's mutable state: the modules and the evaluation history."""

    model: nn.Module
    net: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: ScheduledLR
    tokens: B.TokenCache
    """The training texts' token ids, tokenized once; batches are padded from them."""
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None
    saved_step: int | None = None
    """The step whose checkpoint is on disk in this run's folder (not written twice)."""
    order: tuple[int, list[list[int]]] | None = None
    """The batches of the epoch in progress, ``(epoch, batches)``: computed once per epoch."""
    eval_tokens: dict[str, B.TokenCache] = field(default_factory=dict)

    @property
    def step(self) -> int:
        return int(self.scheduler.last_epoch)
