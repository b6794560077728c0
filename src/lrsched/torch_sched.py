"""Scheduled values in torch training: ``ScheduledLR``, ``ScheduledField`` and ``ScheduledValue``.

All are closed form in the step ``t``: each param group's value is
``initial * schedule(t) / schedule.base``, so the ratios between groups (``lr_mult``,
``wd_mult``, layer-wise decay) survive, and resuming needs only ``t``. ``ScheduledValue``
is a value outside the optimizer (DINO's teacher momentum and temperature). All three save
the same state (``step``, the ``schedule`` followed, the ``target`` asked for) and resume by
one rule, ``lrsched.adoption.adopt``: another schedule is refused (``ScheduleMismatch``)
unless built with ``on_mismatch="replan"``, which then follows ``replan`` from the saved step.

One field scheduler (``_FieldScheduler``, timm's one class for any group field) holds the
``base > 0`` guard, the per-group closed form and the resume path; ``ScheduledLR`` is its
``"lr"`` case (an ``LRScheduler``, plus cut factors, ``group_lr`` and the peak check) and
``ScheduledField`` any other field.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Literal

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from lrsched.adoption import OnMismatch, adopt, describe, from_description, replan_note
from lrsched.errors import ScheduleMismatch as ScheduleMismatch  # re-exported: raised by load_state_dict
from lrsched.errors import UsageError
from lrsched.schedules import AnySchedule

GroupLR = Literal["relative", "lr_mult"]


class ForeignState(UsageError):
    """A ``state_dict`` that this class did not write (e.g. torch's ``LambdaLR``)."""


class PeakMismatchWarning(UserWarning):
    """No param group's lr equals the schedule's base, so the peak the run trains at is not the schedule's."""


class OutsideChangeWarning(UserWarning):
    """A param group's lr was raised (or set from 0) outside the scheduler; the schedule sets it back."""


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


def _rescaled(initial: list[float], state: dict[str, Any], adopted: AnySchedule) -> list[float]:
    """Saved per-group initial values, re-expressed against the adopted schedule's base.

    A group's value is ``initial * schedule(t) / schedule.base``; when a replan adopts a
    schedule with another base, ``initial`` scales with it so each group keeps its multiplier.
    """
    factor = adopted.base / from_description(state["schedule"]).base
    return [value * factor for value in initial]


def _check_groups(owner: str, optimizer: Optimizer, saved: list[Any]) -> None:
    """Refuse a state saved for another number of param groups, in one sentence."""
    have = len(optimizer.param_groups)
    if len(saved) != have:
        raise UsageError(
            f"{owner}.load_state_dict: the state was saved for {len(saved)} param group(s), "
            f"but the optimizer has {have}; build the optimizer with the same groups as the run that saved it"
        )


def _at_base(lr: float | torch.Tensor, base: float) -> bool:
    """Whether a group's lr is the schedule's base, compared in the lr's own precision.

    A tensor lr holds ``base`` rounded to its dtype (float32: 1e-3 is 0.0010000000475), so ``base`` is
    rounded the same way before comparing; a float lr is compared with ``rel_tol=1e-9``.
    """
    if isinstance(lr, torch.Tensor):
        return bool(lr.detach().cpu() == torch.tensor(base, dtype=lr.dtype))
    return math.isclose(lr, base, rel_tol=1e-9)


def _warn_if_no_group_at_base(group_lrs: list[float | torch.Tensor], base: float) -> None:
    if any(_at_base(lr, base) for lr in group_lrs):
        return
    base_lrs = [float(lr) for lr in group_lrs]
    shown = ", ".join(f"{lr:g}" for lr in base_lrs)
    warnings.warn(
        f"ScheduledLR: no param group has lr equal to the schedule's base {base:g} (group lrs: {shown}); "
        f"each group follows its lr x schedule(t) / {base:g}, so the run peaks at {max(base_lrs):g}, "
        f'not {base:g}. Build the optimizer with lr={base:g}, or pass group_lr="lr_mult" to take the LR '
        "from the schedule and only a multiplier from each group",
        PeakMismatchWarning,
        stacklevel=3,
    )


def _require_positive_base(schedule: AnySchedule) -> None:
    """The one guard of every param-group scheduler: values scale by ``schedule(t) / base``, so ``base > 0``."""
    if not schedule.base > 0:
        raise UsageError(f"schedule base={schedule.base}: must be > 0 to scale param groups")


class _Followed:
    """What every scheduler here holds and how it resumes: one path, ``_adopt``.

    ``schedule`` is the schedule followed, ``target`` the one asked for at construction (they differ
    after a replan), ``replanned`` the replan in words (``None`` when there was none).
    """

    schedule: AnySchedule
    target: AnySchedule
    on_mismatch: OnMismatch
    replanned: str | None

    def _follow(self, schedule: AnySchedule, on_mismatch: OnMismatch) -> None:
        self.schedule = self.target = schedule
        self.on_mismatch = on_mismatch
        self.replanned = None

    def _saved(self) -> dict[str, Any]:
        """The state every scheduler here saves: the step and both schedules' descriptions."""
        return {"step": self._step_now(), "schedule": describe(self.schedule), "target": describe(self.target)}

    def _step_now(self) -> int:
        raise NotImplementedError

    def _adopt(self, state: dict[str, Any], groups: tuple[Optimizer, str] | None = None) -> int:
        """Check ``state`` (foreign, or saved for other param groups: ``groups`` names the optimizer and the
        key of the saved per-group list), adopt its schedule by ``lrsched.adoption.adopt`` and return its step.

        Raises ``ForeignState``, ``UsageError`` or ``ScheduleMismatch``; nothing changes before all checks pass.
        """
        owner = type(self).__name__
        _check_state(owner, state)
        if groups is not None:
            optimizer, key = groups
            _check_groups(owner, optimizer, list(state.get(key, [])))
        self.schedule = adopt(self.target, state, self.on_mismatch)
        step = int(state["step"])
        self.replanned = replan_note(self.schedule, step)
        return step


class _FieldScheduler(_Followed):
    """One param-group field in closed form: ``group[field] = initial_i * schedule(t) / schedule.base * c_i``.

    The one field scheduler, as timm's ``Scheduler(param_group_field=...)``: ``ScheduledLR`` is its
    ``"lr"`` case (an ``LRScheduler``, with its extras), ``ScheduledField`` any other field. ``initial_i``
    is each group's value at the schedule's base; ``c_i`` its cut factor (1 but for ``ScheduledLR``).
    The saved per-group list of initial values is ``state[SAVED]``, re-expressed on resume against the
    adopted schedule's base so each group keeps its multiplier through a replan.
    """

    SAVED = "initial"
    optimizer: Optimizer
    field: str
    cuts: list[float]

    def _start_field(self, optimizer: Optimizer, schedule: AnySchedule, field: str) -> None:
        """The one guard (``base > 0``), then the optimizer and field to write and a cut factor of 1 per group."""
        _require_positive_base(schedule)
        self.optimizer, self.field = optimizer, field
        self.cuts = [1.0] * len(optimizer.param_groups)

    def _initials(self) -> list[Any]:
        """Each group's value at the schedule's base (``initial_i``)."""
        raise NotImplementedError

    def _set_initials(self, values: list[float]) -> None:
        raise NotImplementedError

    def _values(self, t: int) -> list[Any]:
        """``initial_i * schedule(t) / schedule.base * c_i`` for each group ``i``."""
        scale = self.schedule(t) / self.schedule.base
        return [initial * scale * cut for initial, cut in zip(self._initials(), self.cuts)]

    def _write(self, values: list[Any]) -> None:
        for group, value in zip(self.optimizer.param_groups, values):
            group[self.field] = value

    def _resume(self, state: dict[str, Any]) -> int:
        """The one resume path of a field: adopt the schedule, take the saved initial values (rescaled)
        and cuts, write the field at the saved step, and return that step."""
        step = self._adopt(state, (self.optimizer, self.SAVED))
        self._set_initials(_rescaled(list(state[self.SAVED]), state, self.schedule))
        self.cuts = [float(c) for c in state.get("cuts", self.cuts)]
        self._write(self._values(step))
        return step


class ScheduledLR(_FieldScheduler, LRScheduler):
    """An ``LRScheduler`` following ``schedule`` in closed form, ``t = last_epoch``: the ``"lr"`` case of
    the field scheduler (``ScheduledField`` is any other field).

    How a group's lr is computed, ``group_lr``, with ``c`` the group's cut factor (below):

    - ``"relative"`` (default, torch's ``LambdaLR`` convention):
      ``group["lr"] = group["initial_lr"] * schedule(t) / schedule.base * c``. Build the
      optimizer with ``lr=schedule.base`` for the groups that should follow the schedule
      exactly; other groups keep their ratio to it. If no group's lr equals
      ``schedule.base`` (compared in the lr's own precision: a float32 tensor lr holds 1e-3
      as 0.0010000000475), a ``PeakMismatchWarning`` is raised once, at construction:
      ``AdamW(params)`` (lr 1e-3) with a ``base=5e-4`` schedule would train at a 1e-3 peak.
      With ``on_mismatch="replan"`` the check waits for the first ``step()``, and a
      ``load_state_dict`` before it (which brings the peak of the resumed run) cancels it.
    - ``"lr_mult"`` (DINOv2's convention): ``group["lr"] = schedule(t) * group.get("lr_mult", 1) * c``,
      ``lr_mult`` read at every step (a change takes effect at the next ``step()``);
      the optimizer's own lr is ignored and the schedule carries the LR.

    Cuts from outside (``ReduceLROnPlateau`` and friends) compose with the schedule: each group
    has a cut factor ``c``, 1 at the start. At each ``step()``, a group whose lr is lower than the
    value this scheduler last set was cut from outside, and ``c *= lr_now / lr_set``; the cut then
    scales every later step and is saved in ``state_dict`` (``"cuts"``). A rise from outside (or a
    change from 0) is not a cut: the schedule sets the lr back, with one ``OutsideChangeWarning``.

    ``scheduler.step()`` once per optimizer update. Works wherever an ``LRScheduler`` does
    (plain loops, HF ``Trainer``, Lightning with ``interval="step"``, Accelerate). Under
    Accelerate with several processes, ``accelerator.prepare(..., scheduler)`` steps the
    scheduler ``num_processes`` times per update (it expects ``T`` counted on the unsharded
    data); either

    - A: leave the scheduler out of ``prepare`` and call ``scheduler.step()`` yourself after
      each update, when ``accelerator.sync_gradients`` is true (``T`` = updates per rank), or
    - B: prepare it and size the schedule Accelerate's way: ``warmup`` and ``total`` in
      per-rank updates times ``accelerator.num_processes``; the LR of update ``k`` is then
      ``schedule(k * num_processes)``.

    After ``load_state_dict`` replanned (``on_mismatch="replan"``), ``replanned`` says what
    the replan does, in words; otherwise it is ``None``. A state saved for another number of
    param groups is refused there (``UsageError``).
    """

    SAVED = "base_lrs"

    def __init__(
        self,
        optimizer: Optimizer,
        schedule: AnySchedule,
        *,
        on_mismatch: OnMismatch = "error",
        group_lr: GroupLR = "relative",
        last_epoch: int = -1,
    ) -> None:
        self._start_field(optimizer, schedule, "lr")
        if group_lr not in ("relative", "lr_mult"):
            raise UsageError(f'group_lr={group_lr!r}: must be "relative" or "lr_mult"')
        self._follow(schedule, on_mismatch)
        self.group_lr = group_lr
        self._peak_pending = False
        self._warned_outside = False
        if group_lr == "lr_mult":
            for group in optimizer.param_groups:
                group["initial_lr"] = schedule.base * group.get("lr_mult", 1.0)
        super().__init__(optimizer, last_epoch)
        if group_lr == "relative" and on_mismatch == "replan":
            self._peak_pending = True  # a load_state_dict may bring another peak: check at the first step
        elif group_lr == "relative":
            _warn_if_no_group_at_base(list(self.base_lrs), schedule.base)

    def __repr__(self) -> str:
        cuts = "" if all(c == 1.0 for c in self.cuts) else f", cuts={self.cuts}"
        mode = "" if self.group_lr == "relative" else f", group_lr={self.group_lr!r}"
        return f"{type(self).__name__}({self.schedule!r}, step={self.last_epoch}{mode}{cuts})"

    def _initials(self) -> list[Any]:
        """Each group's lr at the schedule's base: ``initial_lr``, or ``base * lr_mult`` read now."""
        if self.group_lr == "relative":
            return list(self.base_lrs)
        return [self.schedule.base * group.get("lr_mult", 1.0) for group in self.optimizer.param_groups]

    def _set_initials(self, values: list[float]) -> None:
        self.base_lrs = [*values]

    def _step_now(self) -> int:
        return self.last_epoch

    def get_lr(self) -> list[float | torch.Tensor]:
        """``base_i * schedule(t) / schedule.base * c_i`` for each group ``i``."""
        return self._values(self.last_epoch)

    def _get_closed_form_lr(self) -> list[float | torch.Tensor]:
        return self.get_lr()

    def step(self, epoch: int | None = None) -> None:
        """Advance ``t`` by one update; first take in any cut made from outside since the last step."""
        if hasattr(self, "_last_lr"):  # not the step torch's constructor takes
            self._take_outside_cuts()
        if self._peak_pending:
            self._peak_pending = False
            _warn_if_no_group_at_base(list(self.base_lrs), self.schedule.base)
        super().step(epoch)

    def _take_outside_cuts(self) -> None:
        """``c_i *= lr_now / lr_set`` for each group lowered from outside; a rise is undone, warned once."""
        for i, (group, last) in enumerate(zip(self.optimizer.param_groups, self._last_lr)):
            now, before = float(group["lr"]), float(last)
            if now == before:
                continue
            if 0 <= now < before:
                self.cuts[i] *= now / before
            elif not self._warned_outside:
                self._warned_outside = True
                warnings.warn(
                    f"ScheduledLR: param group {i}'s lr was changed outside the scheduler from {before:g} to "
                    f"{now:g}; only a cut (a lower lr, as ReduceLROnPlateau makes) is kept, as a factor on the "
                    "schedule: the schedule sets this one back",
                    OutsideChangeWarning,
                    stacklevel=3,
                )

    def state_dict(self) -> dict[str, Any]:
        return {**self._saved(), "base_lrs": list(self.base_lrs), "cuts": list(self.cuts)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume from ``state_dict``; refuses a foreign state (``ForeignState``), another number of
        param groups (``UsageError``) or another schedule (``ScheduleMismatch``)."""
        self.last_epoch = self._resume(state_dict)
        self._peak_pending = False
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]


class ScheduledValue(_Followed):
    """A value that follows ``schedule`` in the step ``t``: ``value`` is ``schedule(t)``, ``step()`` adds one.

    For values outside the optimizer (DINO's teacher momentum and temperature), and the base of
    ``ScheduledField``. ``state_dict`` is the form every scheduler here saves (``step``, ``schedule``,
    ``target``); ``load_state_dict`` adopts it by ``adopt``, and ``replanned`` then says in words what
    a replan at the saved step does (``None`` otherwise).
    """

    def __init__(self, schedule: AnySchedule, *, on_mismatch: OnMismatch = "error") -> None:
        self._follow(schedule, on_mismatch)
        self.t = 0
        """The step: optimizer updates done."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.schedule!r}, step={self.t})"

    @property
    def value(self) -> float:
        return self.schedule(self.t)

    def step(self) -> None:
        self.t += 1
        self._apply()

    def _apply(self) -> None:
        """Put the value where it acts (``ScheduledField``: the param groups); here nothing to do."""

    def _step_now(self) -> int:
        return self.t

    def state_dict(self) -> dict[str, Any]:
        return self._saved()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume from ``state_dict``; refuses a foreign state (``ForeignState``) or another schedule
        (``ScheduleMismatch``)."""
        self.t = self._adopt(state_dict)


class ScheduledField(_FieldScheduler, ScheduledValue):
    """The same closed form for any other param-group field (``weight_decay``, ``momentum``...).

    ``group[field] = group["initial_" + field] * schedule(t) / schedule.base``; a group whose
    initial value is 0 (no weight decay on biases) stays at 0. A ``field`` that a param group
    lacks (``momentum`` on Adam) is a ``UsageError`` naming it.
    """

    def __init__(
        self, optimizer: Optimizer, schedule: AnySchedule, field: str, *, on_mismatch: OnMismatch = "error"
    ) -> None:
        self._start_field(optimizer, schedule, field)
        for i, group in enumerate(optimizer.param_groups):
            if field not in group:
                have = ", ".join(k for k in group if k != "params")
                raise UsageError(f"ScheduledField: param group {i} has no field {field!r} (it has {have})")
        ScheduledValue.__init__(self, schedule, on_mismatch=on_mismatch)
        self.initial = [group.setdefault(f"initial_{field}", group[field]) for group in optimizer.param_groups]
        self._apply()

    def __repr__(self) -> str:
        return f"ScheduledField({self.schedule!r}, field={self.field!r}, step={self.t})"

    def _initials(self) -> list[Any]:
        return self.initial

    def _set_initials(self, values: list[float]) -> None:
        self.initial = values

    def _apply(self) -> None:
        self._write(self._values(self.t))

    def state_dict(self) -> dict[str, Any]:
        return {**self._saved(), "initial": list(self.initial)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume from ``state_dict``; refuses a foreign state (``ForeignState``), another number of
        param groups (``UsageError``) or another schedule (``ScheduleMismatch``)."""
        self.t = self._resume(state_dict)
