"""phase5's records: ``Schedules`` and ``Settings`` (what ``validate.settle`` resolves from the flags) and
``State``, what the loop changes. The run has one step, ``State.t``; every scheduled value is computed
from it: the lr and weight decay of each param group (``ScheduledField``, set to the step by
``State.follow_step``), the teacher momentum and temperature (``schedule(t)``) and the last layer's
freeze (``t < freeze_last_layer``). A checkpoint saves the step once and one description per schedule,
all resumed by one rule (``lrsched.adoption.adopt``).
"""

from __future__ import annotations

import argparse
from collections import deque
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lrsched.recipes.common.distributed import World
from lrsched.recipes.common.runlog import RunLog
from lrsched.recipes.dino.augment import Geometry, Photometric
from lrsched.recipes.dino.data import Dataset, Sampler
from lrsched.recipes.dino.head import DINONet
from lrsched.recipes.dino.loss import DINOLoss
from lrsched.recipes.dino.vit import Preset
from lrsched.schedules import AnySchedule, Schedule
from lrsched.strategy import Plan
from lrsched.torch_sched import ScheduledField

TIMING_WINDOW = 1000
"""Steps whose durations are kept for the median: a run of any length holds the same amount."""

# --- what main resolves ------------------------------------------------------------------------


@dataclass(frozen=True)
class Schedules:
    """The four targets the flags ask for, and where each value came from."""

    lr: Plan
    weight_decay: Schedule
    momentum: Schedule
    teacher_temp: Schedule
    freeze_last_layer: int
    sources: dict[str, str]

    def targets(self) -> dict[str, Schedule]:
        return {
            "lr": self.lr.schedule,
            "weight_decay": self.weight_decay,
            "momentum": self.momentum,
            "teacher_temp": self.teacher_temp,
        }


@dataclass(frozen=True)
class Settings:
    """Parsed flags resolved and checked: the model size, the schedules, data, resume point."""

    args: argparse.Namespace
    preset: Preset
    schedules: Schedules
    data: Dataset
    output_dir: Path
    resume: dict[str, Any] | None
    resume_path: Path | None

    @property
    def overwrite(self) -> bool:
        """phase5 has no flag that replaces a run in its folder."""
        return False


# --- the state of a run ----------------------------------------------------------------------


@dataclass
class State:
    """What the loop changes (a ``run`` variable is one); ``t`` (updates done) is the single source of truth."""

    settings: Settings
    world: World
    device: torch.device
    student: DINONet
    teacher: DINONet
    ddp: nn.Module
    optimizer: torch.optim.AdamW
    lr: ScheduledField
    weight_decay: ScheduledField
    momentum: AnySchedule
    """The teacher momentum schedule followed (its target, or a replan of the checkpoint's)."""
    teacher_temp: AnySchedule
    loss: DINOLoss
    geometry: Geometry
    photometric: Photometric
    sampler: Sampler
    t: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    recent_seconds: deque[float] = field(default_factory=partial(deque, maxlen=TIMING_WINDOW))
    seconds: float = 0.0
    waiting: float = 0.0
    run_id: str | None = None
    saved_step: int | None = None
    """The step of the last checkpoint this process wrote: a step is never saved twice."""
    lr_hash: str = ""
    """``h(t+1) = sha256(h(t) || lr(t))`` over the steps this process ran: equal on every rank."""
    replanned_at: int | None = None
    log: RunLog | None = None
    """Rank 0's log.csv, open from the start of training."""
    mid_step: bool = False
    """True while a step changes the state (loss centre, weights, schedulers): not a state to save."""

    def follow_step(self) -> None:
        """Set every param group's lr and weight decay to their values at step ``t``."""
        self.lr.set_step(self.t)
        self.weight_decay.set_step(self.t)

    def followed(self) -> dict[str, AnySchedule]:
        """The four schedules the run follows, by name (each its target, or a replan of the checkpoint's)."""
        return {
            "lr": self.lr.schedule,
            "weight_decay": self.weight_decay.schedule,
            "momentum": self.momentum,
            "teacher_temp": self.teacher_temp,
        }
