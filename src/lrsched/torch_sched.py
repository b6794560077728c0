"""Schedules driving torch optimizers: ``ScheduledLR`` and ``ScheduledField``.

Both are closed form in the step ``t``: each param group's value is
``initial * schedule(t) / schedule.base``, so the ratios between groups (``lr_mult``,
``wd_mult``, layer-wise decay) survive, and resuming needs only ``t``. Their
``state_dict`` holds ``t`` and the schedule's description; loading a different
schedule is refused (``ScheduleMismatch``) unless the scheduler was built with
``on_mismatch="replan"``, which then follows ``replan`` from the saved step.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from lrsched.schedules import AnySchedule, Schedule, describe, differences, from_description, replan
from lrsched.strategy import UsageError

OnMismatch = Literal["error", "replan"]


class ScheduleMismatch(UsageError):
    """A saved schedule differs from the one asked for, and replanning was not requested."""


def _adopt(target: AnySchedule, state: dict[str, Any], on_mismatch: OnMismatch) -> AnySchedule:
    """The schedule to follow after loading ``state``, when the flags now ask for ``target``.

    The same target as saved: the saved schedule (which may be an earlier replan). Another
    target: an error listing the differences, or with ``on_mismatch="replan"`` the saved
    schedule up to the saved step, then ``replan`` towards ``target``.
    """
    saved_target = state.get("target", state["schedule"])
    if saved_target == describe(target):
        return from_description(state["schedule"])
    if on_mismatch != "replan" or not isinstance(target, Schedule):
        changes = "; ".join(differences(saved_target, describe(target)))
        raise ScheduleMismatch(f"the checkpoint's schedule differs ({changes}); pass --replan to accept it")
    return replan(from_description(state["schedule"]), int(state["step"]), target)


def _rescaled(initial: list[float], state: dict[str, Any], adopted: AnySchedule) -> list[float]:
    """Saved per-group initial values, re-expressed against the adopted schedule's base.

    A group's value is ``initial * schedule(t) / schedule.base``; when a replan adopts a
    schedule with another base, ``initial`` scales with it so each group keeps its multiplier.
    """
    factor = adopted.base / from_description(state["schedule"]).base
    return [value * factor for value in initial]


class ScheduledLR(LRScheduler):
    """An ``LRScheduler`` following ``schedule`` in closed form.

    ``group["lr"] = group["initial_lr"] * schedule(t) / schedule.base`` with ``t = last_epoch``.
    Works wherever an ``LRScheduler`` does (plain loops, HF ``Trainer``, Lightning, Accelerate).
    """

    def __init__(
        self,
        optimizer: Optimizer,
        schedule: AnySchedule,
        *,
        on_mismatch: OnMismatch = "error",
        last_epoch: int = -1,
    ) -> None:
        if not schedule.base > 0:
            raise UsageError(f"schedule base={schedule.base}: must be > 0 to scale param groups")
        self.schedule = self.target = schedule
        self.on_mismatch = on_mismatch
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float | torch.Tensor]:
        scale = self.schedule(self.last_epoch) / self.schedule.base
        return [base_lr * scale for base_lr in self.base_lrs]

    def _get_closed_form_lr(self) -> list[float | torch.Tensor]:
        return self.get_lr()

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.last_epoch,
            "schedule": describe(self.schedule),
            "target": describe(self.target),
            "base_lrs": list(self.base_lrs),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.schedule = _adopt(self.target, state_dict, self.on_mismatch)
        self.last_epoch = int(state_dict["step"])
        saved = list(state_dict.get("base_lrs", self.base_lrs))
        self.base_lrs = [*_rescaled(saved, state_dict, self.schedule)]
        for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]


class ScheduledField:
    """The same closed form for any other param-group field (``weight_decay``, ``momentum``...).

    ``group[field] = group["initial_" + field] * schedule(t) / schedule.base``; a group whose
    initial value is 0 (no weight decay on biases) stays at 0.
    """

    def __init__(
        self, optimizer: Optimizer, schedule: AnySchedule, field: str, *, on_mismatch: OnMismatch = "error"
    ) -> None:
        if not schedule.base > 0:
            raise UsageError(f"schedule base={schedule.base}: must be > 0 to scale param groups")
        self.optimizer, self.field, self.on_mismatch = optimizer, field, on_mismatch
        self.schedule = self.target = schedule
        self.initial = [group.setdefault(f"initial_{field}", group[field]) for group in optimizer.param_groups]
        self.last_epoch = 0
        self._apply()

    def _apply(self) -> None:
        scale = self.schedule(self.last_epoch) / self.schedule.base
        for group, initial in zip(self.optimizer.param_groups, self.initial):
            group[self.field] = initial * scale

    def step(self) -> None:
        self.last_epoch += 1
        self._apply()

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.last_epoch,
            "schedule": describe(self.schedule),
            "target": describe(self.target),
            "initial": list(self.initial),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.schedule = _adopt(self.target, state_dict, self.on_mismatch)
        self.last_epoch = int(state_dict["step"])
        self.initial = _rescaled(list(state_dict.get("initial", self.initial)), state_dict, self.schedule)
        self._apply()
