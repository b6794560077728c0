"""Scheduled param-group fields in torch training: ``ScheduledField``, and ``ScheduledLR`` on it.

One rule for every field (docs/design.md section 6): at step ``t`` (optimizer updates done),
``group[field]`` is the schedule's value ``schedule(t)``. What the optimizer held before is not
read. Scaling per group is a mode the caller asks for, the same for ``lr`` and any other field:

- ``per_group="same"`` (default): every group gets ``schedule(t)``;
- ``per_group="<key>"`` (a param-group key such as ``"lr_mult"`` or ``"wd_mult"``): each group gets
  ``schedule(t) * group[key]``, the key read at every step (DINOv2's multipliers);
- ``per_group="ratio"``: each group gets ``start_i * schedule(t) / schedule.base``, ``start_i`` its
  own value when the scheduler was built (``group["initial_<field>"]``, torch's ``initial_lr`` for
  ``lr``): ratios set by whoever built the optimizer (LoRA+, HF's custom optimizers) survive. When
  no group starts at ``schedule.base``, ``BaseMismatchWarning`` says so, for every field alike.

Each group also carries a cut factor ``c_i`` (1 at the start): a value lowered from outside
(``ReduceLROnPlateau``) multiplies every later value; a rise from outside is undone with one
``OutsideChangeWarning``. ``ScheduledLR`` is the ``LRScheduler`` adapter HF Trainer, Lightning and
Accelerate need: its ``last_epoch`` is the field's step, nothing else is counted. Resuming adopts the
saved schedule by one rule, ``lrsched.adoption.adopt``.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from lrsched.adoption import OnMismatch, adopt, describe, from_description, replan_note
from lrsched.errors import ScheduleMismatch as ScheduleMismatch  # re-exported: raised by load_state_dict
from lrsched.errors import UsageError
from lrsched.schedules import AnySchedule

SAME, RATIO = "same", "ratio"
"""The two ``per_group`` modes that are not a param-group key."""


class ForeignState(UsageError):
    """A ``state_dict`` that this class did not write (e.g. torch's ``LambdaLR``)."""


class BaseMismatchWarning(UserWarning):
    """``per_group="ratio"``: no group starts at the schedule's base, so no group follows the schedule itself."""


class OutsideChangeWarning(UserWarning):
    """A group's value was raised (or set from 0) outside the scheduler; the schedule sets it back."""


def _check_state(owner: str, state: dict[str, Any]) -> None:
    if not isinstance(state, dict) or not {"step", "schedule"} <= set(state):
        keys = (
            ", ".join(sorted(k for k in map(str, state) if not k.startswith("_")))
            if isinstance(state, dict)
            else "none"
        )
        raise ForeignState(
            f"{owner}.load_state_dict: not a {owner} state (no 'step' and 'schedule'; it has {keys}), "
            "so another scheduler (such as torch's LambdaLR) wrote it and it cannot be resumed here"
        )


def _saved_groups(state: dict[str, Any]) -> list[Any] | None:
    """The saved per-group list (cuts, or the starts of states written before cuts were saved by every field)."""
    for key in ("cuts", "initial", "base_lrs"):
        if key in state:
            return list(state[key])
    return None


def _at_base(value: float | torch.Tensor, base: float) -> bool:
    """Whether a group's value is the schedule's base, compared in the value's own precision.

    A tensor holds ``base`` rounded to its dtype (float32: 1e-3 is 0.0010000000475), so ``base`` is
    rounded the same way before comparing; a float is compared with ``rel_tol=1e-9``.
    """
    if isinstance(value, torch.Tensor):
        return bool(value.detach().cpu() == torch.tensor(base, dtype=value.dtype))
    return math.isclose(value, base, rel_tol=1e-9)


def _warn_if_no_group_at_base(field: str, starts: list[float | torch.Tensor], base: float) -> None:
    if any(_at_base(value, base) for value in starts):
        return
    shown = ", ".join(f"{float(v):g}" for v in starts)
    warnings.warn(
        f'ScheduledField: per_group="ratio" and no param group starts at the schedule\'s base {base:g} '
        f"(group {field}s: {shown}); each group follows its {field} x schedule(t) / {base:g}, so the run's "
        f"{field} is at most {max(float(v) for v in starts):g} where the schedule says {base:g}. Build the "
        f'optimizer with {field}={base:g}, or leave per_group at "same" to take every value from the schedule',
        BaseMismatchWarning,
        stacklevel=4,
    )


class ScheduledField:
    """One param-group field in closed form from one step ``t``: ``group[field] = v_i(t) * c_i``.

    ``v_i(t)`` is ``schedule(t)`` (``per_group="same"``), ``schedule(t) * group[key]``
    (``per_group=key``) or ``start_i * schedule(t) / schedule.base`` (``per_group="ratio"``); see
    the module docstring. ``c_i`` is the group's cut factor. The values of step 0 are written at
    construction; ``step()`` moves to the next step, ``set_step(t)`` to step ``t`` (a program that
    holds its own step calls it, so the field never counts apart from it).

    ``state_dict()`` holds the step, the schedule followed and the one asked for (``schedule``,
    ``target``: they differ after a replan), ``per_group`` and the cuts (``per_group="ratio"`` adds
    the starts, ``initial``). ``load_state_dict`` adopts the saved schedule (``ScheduleMismatch``
    for another one unless built with ``on_mismatch="replan"``; ``replanned`` then says in words
    what the replan does) and writes the values of the saved step.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        schedule: AnySchedule,
        field: str = "lr",
        *,
        per_group: str = SAME,
        on_mismatch: OnMismatch = "error",
        check_base: bool = True,
    ) -> None:
        self._check_groups_have(optimizer, field, per_group)
        if per_group == RATIO and not schedule.base > 0:
            raise UsageError(f"schedule base={schedule.base}: must be > 0 to scale param groups by their ratio")
        self.optimizer, self.field, self.per_group = optimizer, field, per_group
        self.schedule = self.target = schedule
        self.on_mismatch: OnMismatch = on_mismatch
        self.replanned: str | None = None
        self.cuts = [1.0] * len(optimizer.param_groups)
        self.starts: list[Any] = []
        if per_group == RATIO:
            self.starts = [_copy(g.setdefault(f"initial_{field}", _copy(g[field]))) for g in optimizer.param_groups]
            if check_base:
                _warn_if_no_group_at_base(field, self.starts, schedule.base)
        self.t = 0
        self._written = self._write(self.values(0))
        self._warned_outside = False

    @staticmethod
    def _check_groups_have(optimizer: Optimizer, field: str, per_group: str) -> None:
        """Every group has ``field``; a multiplier key is in at least one group (a typo is not a silent 1)."""
        for i, group in enumerate(optimizer.param_groups):
            if field not in group:
                have = ", ".join(k for k in group if k != "params")
                raise UsageError(f"ScheduledField: param group {i} has no field {field!r} (it has {have})")
        keyed = per_group not in (SAME, RATIO)
        if keyed and not any(per_group in group for group in optimizer.param_groups):
            raise UsageError(
                f'ScheduledField: per_group={per_group!r}: no param group has that key; per_group is "same", '
                '"ratio" or the key of a multiplier that the groups carry (such as "lr_mult")'
            )

    def __repr__(self) -> str:
        mode = "" if self.per_group == SAME else f", per_group={self.per_group!r}"
        cuts = "" if all(c == 1.0 for c in self.cuts) else f", cuts={self.cuts}"
        return f"ScheduledField({self.schedule!r}, field={self.field!r}, step={self.t}{mode}{cuts})"

    def multipliers(self) -> list[Any]:
        """Each group's value at the schedule's base over that base: 1, ``group[key]`` or ``start_i / base``."""
        if self.per_group == SAME:
            return [1.0] * len(self.cuts)
        if self.per_group == RATIO:
            return [start / self.schedule.base for start in self.starts]
        return [group.get(self.per_group, 1.0) for group in self.optimizer.param_groups]

    def values(self, t: int) -> list[Any]:
        """``v_i(t) * c_i`` for each group ``i`` (the ratio mode as ``start_i * (schedule(t) / base)``)."""
        value = self.schedule(t)
        if self.per_group == SAME:
            return [value * cut for cut in self.cuts]
        if self.per_group == RATIO:
            scale = value / self.schedule.base
            return [start * scale * cut for start, cut in zip(self.starts, self.cuts)]
        return [
            value * group.get(self.per_group, 1.0) * cut for group, cut in zip(self.optimizer.param_groups, self.cuts)
        ]

    def step(self) -> None:
        """Move to the next step: ``set_step(t + 1)``."""
        self.set_step(self.t + 1)

    def set_step(self, t: int) -> None:
        """Write the values of step ``t``, after taking in any cut made from outside since the last write."""
        self._take_outside_cuts()
        self.t = t
        self._written = self._write(self.values(t))

    def _write(self, values: list[Any]) -> list[float]:
        """Put ``values`` in the groups (a tensor value is filled in place, as torch does); returns them as floats."""
        for group, value in zip(self.optimizer.param_groups, values):
            if isinstance(group[self.field], torch.Tensor):
                group[self.field].fill_(value)
            else:
                group[self.field] = value
        return [float(v) for v in values]

    def _take_outside_cuts(self) -> None:
        """``c_i *= now / written`` for each group lowered from outside; a rise is undone, warned once."""
        for i, (group, before) in enumerate(zip(self.optimizer.param_groups, self._written)):
            now = float(group[self.field])
            if now == before:
                continue
            if 0 <= now < before:
                self.cuts[i] *= now / before
            elif not self._warned_outside:
                self._warned_outside = True
                warnings.warn(
                    f"ScheduledField: param group {i}'s {self.field} was changed outside the scheduler from "
                    f"{before:g} to {now:g}; only a cut (a lower value, as ReduceLROnPlateau makes) is kept, "
                    "as a factor on the schedule: the schedule sets this one back",
                    OutsideChangeWarning,
                    stacklevel=4,
                )

    def state_dict(self) -> dict[str, Any]:
        state = {
            "step": self.t,
            "schedule": describe(self.schedule),
            "target": describe(self.target),
            "per_group": self.per_group,
            "cuts": list(self.cuts),
        }
        return {**state, "initial": [float(s) for s in self.starts]} if self.per_group == RATIO else state

    def load_state_dict(self, state_dict: dict[str, Any], owner: str = "ScheduledField") -> None:
        """Resume from ``state_dict``: refuses a foreign state (``ForeignState``), another number of param
        groups or another ``per_group`` (``UsageError``), or another schedule (``ScheduleMismatch``);
        nothing changes before every check passes."""
        state = state_dict
        _check_state(owner, state)
        self._check_same_groups(owner, state)
        adopted = adopt(self.target, state, self.on_mismatch)
        step = int(state["step"])
        if self.per_group == RATIO:
            saved = state.get("initial", state.get("base_lrs", self.starts))
            factor = adopted.base / from_description(state["schedule"]).base  # keep each group's ratio
            self.starts = [float(s) * factor for s in saved]
        self.schedule, self.replanned = adopted, replan_note(adopted, step)
        self.cuts = [float(c) for c in state.get("cuts", self.cuts)]
        self.t = step
        self._written = self._write(self.values(step))

    def _check_same_groups(self, owner: str, state: dict[str, Any]) -> None:
        saved, have = _saved_groups(state), len(self.optimizer.param_groups)
        if saved is not None and len(saved) != have:
            raise UsageError(
                f"{owner}.load_state_dict: the state was saved for {len(saved)} param group(s), "
                f"but the optimizer has {have}; build the optimizer with the same groups as the run that saved it"
            )
        mode = state.get("per_group", RATIO if ("initial" in state or "base_lrs" in state) else SAME)
        if "per_group" in state and mode != self.per_group:
            raise UsageError(
                f"{owner}.load_state_dict: the state was saved with per_group={mode!r}, this scheduler has "
                f"per_group={self.per_group!r}; build it as the run that saved it was built"
            )


def _copy(value: Any) -> Any:
    """A tensor value cloned (it is filled in place later), any other value as it is."""
    return value.clone() if isinstance(value, torch.Tensor) else value


class ScheduledLR(LRScheduler):
    """The ``LRScheduler`` adapter on ``ScheduledField(optimizer, schedule, "lr", ...)``: ``t = last_epoch``.

    Everything is the field's (``per_group``, cuts, resume); this layer gives what HF ``Trainer``,
    Lightning (``interval="step"``) and Accelerate read: ``last_epoch`` (the field's step, not a second
    counter), ``base_lrs`` (each group's lr at the schedule's base), ``get_last_lr()``,
    ``state_dict``/``load_state_dict``. ``scheduler.step()`` once per optimizer update.

    Under Accelerate with several processes, ``accelerator.prepare(..., scheduler)`` steps the
    scheduler ``num_processes`` times per update (it expects ``T`` counted on the unsharded data);
    either A: leave the scheduler out of ``prepare`` and call ``scheduler.step()`` yourself when
    ``accelerator.sync_gradients`` is true (``T`` = updates per rank), or B: prepare it and give
    ``warmup`` and ``total`` in per-rank updates times ``accelerator.num_processes``.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        schedule: AnySchedule,
        *,
        per_group: str = SAME,
        on_mismatch: OnMismatch = "error",
        last_epoch: int = -1,
    ) -> None:
        self._base_pending = per_group == RATIO and on_mismatch == "replan"  # a load may bring another base
        self.field = ScheduledField(
            optimizer, schedule, "lr", per_group=per_group, on_mismatch=on_mismatch, check_base=not self._base_pending
        )
        for group, multiplier in zip(optimizer.param_groups, self.field.multipliers()):
            group.setdefault("initial_lr", schedule.base * multiplier)
        super().__init__(optimizer, last_epoch)

    @property
    def last_epoch(self) -> int:
        return self.field.t

    @last_epoch.setter
    def last_epoch(self, value: int) -> None:
        self.field.t = value

    @property
    def schedule(self) -> AnySchedule:
        return self.field.schedule

    @property
    def target(self) -> AnySchedule:
        return self.field.target

    @property
    def replanned(self) -> str | None:
        return self.field.replanned

    @property
    def cuts(self) -> list[float]:
        return self.field.cuts

    def __repr__(self) -> str:
        mode = "" if self.field.per_group == SAME else f", per_group={self.field.per_group!r}"
        cuts = "" if all(c == 1.0 for c in self.cuts) else f", cuts={self.cuts}"
        return f"{type(self).__name__}({self.schedule!r}, step={self.last_epoch}{mode}{cuts})"

    def get_lr(self) -> list[float | torch.Tensor]:
        """The field's values at ``last_epoch``."""
        return self.field.values(self.last_epoch)

    def step(self, epoch: int | None = None) -> None:
        """Advance ``t`` by one update (or to ``epoch``), taking in any cut made from outside first."""
        if self._base_pending and hasattr(self, "_last_lr"):  # not the step torch's constructor takes
            self._base_pending = False
            _warn_if_no_group_at_base("lr", self.field.starts, self.schedule.base)
        self.field.set_step(self.field.t + 1 if epoch is None else epoch)
        self._step_count = getattr(self, "_step_count", 0) + 1
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {**self.field.state_dict(), "base_lrs": list(self.base_lrs)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume from ``state_dict`` (see ``ScheduledField.load_state_dict``)."""
        self.field.load_state_dict(state_dict, owner=type(self).__name__)
        self._base_pending = False
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]
