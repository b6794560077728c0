"""train.py's two records, named as phase5's: ``Settings``, the resolved and checked inputs, and
``State``, what the loop changes and a checkpoint holds (a ``run`` variable is one)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lrsched.recipes.common.checkpoint import Identity
from lrsched.recipes.common.distributed import World
from lrsched.recipes.common.runlog import RunLog
from lrsched.recipes.finetune import batches as B
from lrsched.recipes.finetune import data as D
from lrsched.strategy import Plan
from lrsched.torch_sched import ScheduledField


@dataclass(frozen=True)
class Settings:
    """The flags resolved and checked: data, tokenizer, run size, plan, checkpoint; nothing written yet."""

    args: argparse.Namespace
    splits: D.Splits
    model_dir: Path
    tokenizer: Any
    batches: int
    updates_per_epoch: int
    plan: Plan
    output_dir: Path
    resume: dict[str, Any] | None
    resume_path: Path | None

    @property
    def overwrite(self) -> bool:
        """``--overwrite_output_dir``: a run already in the output folder may be replaced."""
        return bool(self.args.overwrite_output_dir)


@dataclass
class State:
    """What the loop changes; ``t`` (updates done) is the single source of truth: the lr is computed from it
    (``follow_step``), as in phase5's ``State``."""

    settings: Settings
    world: World
    device: torch.device
    model: nn.Module
    net: nn.Module
    """``model``, or its DistributedDataParallel wrapper under torchrun."""
    optimizer: torch.optim.Optimizer
    lr: ScheduledField
    """Every param group's lr, the plan's value at step ``t``."""
    identity: Identity
    """What a resumed run must share with its checkpoint besides the plan (``checkpoint.identity``)."""
    tokens: B.TokenCache
    """The training texts' token ids, tokenized once; batches are padded from them."""
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None
    t: int = 0
    saved_step: int | None = None
    """The step whose checkpoint is on disk in this run's folder (not written twice)."""
    order: tuple[int, list[list[int]]] | None = None
    """The batches of the epoch in progress, ``(epoch, batches)``: computed once per epoch."""
    eval_tokens: dict[str, B.TokenCache] = field(default_factory=dict)
    test: dict[str, Any] | None = None
    """The best model's result on the test split, once the run has finished."""
    log: RunLog | None = None
    """Rank 0's log.csv, open from the start of training."""
    run_id: str | None = None
    mid_step: bool = False
    """True while an update changes the weights, optimizer and step: not a state to save."""

    def follow_step(self) -> None:
        """Set every param group's lr to its value at step ``t``."""
        self.lr.set_step(self.t)
