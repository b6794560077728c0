"""Schedules as pure math: frozen dataclasses mapping a step to a value.

Step convention (DESIGN section 2): ``t`` counts the optimizer updates completed
so far, from 0, and ``schedule(t)`` is the value the next update uses.

Every schedule here is a frozen dataclass, so it pickles, compares and prints,
and ``describe``/``from_description`` turn it into plain JSON-able data and back.
Only the standard library is used: no torch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

Shape = Literal["constant", "linear", "cosine", "cosine_restarts"]
SHAPES: tuple[Shape, ...] = ("constant", "linear", "cosine", "cosine_restarts")


class ScheduleError(ValueError):
    """A parameter that breaks a rule; the message names it, its value and the rule."""


def _require(ok: bool, name: str, value: object, rule: str) -> None:
    if not ok:
        raise ScheduleError(f"{name}={value!r}: {rule}")


def _finite(x: float) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@dataclass(frozen=True)
class Schedule:
    """Linear warm-up, then a decay shape from ``base`` to ``final`` over ``[W, T]``.

    With ``W = warmup``, ``T = total`` and ``p = (t - W) / (T - W)``:

    - warm-up, ``t < W``: ``start + (base - start) * t / W``
      (``start = 0`` gives seed 000's ``base * t / W``);
    - ``constant``: ``base``;
    - ``linear``: ``final + (base - final) * (1 - p)``;
    - ``cosine``: ``final + 0.5 * (base - final) * (1 + cos(pi * p))``;
    - ``cosine_restarts`` with ``c = cycles`` (SGDR hard restarts, fractional
      ``c`` allowed): ``final + 0.5 * (base - final) * (1 + cos(pi * ((c * p) mod 1)))``
      for ``p < 1``, and ``final`` at ``p = 1``;
    - after ``T``: the value at ``T`` is held;
    - open-ended (``total=None``): warm-up, then ``base`` for ever, whatever the shape.

    For a learning rate, ``base`` is the peak and ``final`` the floor ``min_lr``.
    Other fields use the same class: DINO's weight decay rises with ``cosine``
    from ``base=0.04`` to ``final=0.4``.
    """

    shape: Shape
    base: float
    final: float = 0.0
    warmup: int = 0
    total: int | None = None
    cycles: float = 1.0
    start: float = 0.0

    def __post_init__(self) -> None:
        _require(self.shape in SHAPES, "shape", self.shape, f"must be one of {', '.join(SHAPES)}")
        for name in ("base", "final", "start"):
            _require(_finite(getattr(self, name)), name, getattr(self, name), "must be a finite number")
        _require(isinstance(self.warmup, int) and self.warmup >= 0, "warmup", self.warmup, "must be an integer >= 0")
        if self.total is not None:
            _require(isinstance(self.total, int), "total", self.total, "must be an integer or None")
            _require(
                self.total > self.warmup,
                "total",
                self.total,
                f"must be greater than warmup={self.warmup}",
            )
        _require(_finite(self.cycles) and self.cycles > 0, "cycles", self.cycles, "must be a finite number > 0")

    @property
    def open_ended(self) -> bool:
        return self.total is None

    def __call__(self, t: int) -> float:
        if t < self.warmup:
            return self.start + (self.base - self.start) * t / self.warmup
        if self.total is None or self.shape == "constant":
            return self.base
        t = min(t, self.total)
        return self._decay((t - self.warmup) / (self.total - self.warmup))

    def _decay(self, p: float) -> float:
        span = self.base - self.final
        if self.shape == "linear":
            return self.final + span * (1.0 - p)
        if self.shape == "cosine":
            return self.final + 0.5 * span * (1.0 + math.cos(math.pi * p))
        if p >= 1.0:
            return self.final
        return self.final + 0.5 * span * (1.0 + math.cos(math.pi * ((self.cycles * p) % 1.0)))

    @property
    def end_value(self) -> float:
        """The value held after the end (``base`` for open-ended or constant schedules)."""
        return self(self.total) if self.total is not None else self.base


@dataclass(frozen=True)
class Replanned:
    """``before`` up to step ``t0``, then a cosine from ``before(t0)`` to ``final`` at ``total``.

    For ``t0 <= t <= T``, with ``v0 = before(t0)`` (DESIGN section 5):
    ``final + 0.5 * (v0 - final) * (1 + cos(pi * (t - t0) / (T - t0)))``;
    the value at ``T`` is held after it. With ``total=None`` the value ``v0`` is held
    from ``t0`` on. The horizon changes, the value at ``t0`` does not: no jump.
    """

    before: AnySchedule
    t0: int
    total: int | None
    final: float

    def __post_init__(self) -> None:
        _require(isinstance(self.t0, int) and self.t0 >= 0, "t0", self.t0, "must be an integer >= 0")
        if self.total is not None:
            _require(self.total > self.t0, "total", self.total, f"must be greater than the current step {self.t0}")
        _require(_finite(self.final), "final", self.final, "must be a finite number")

    @property
    def base(self) -> float:
        return self.before.base

    @property
    def warmup(self) -> int:
        return self.before.warmup

    @property
    def open_ended(self) -> bool:
        return self.total is None

    @property
    def end_value(self) -> float:
        return self(self.total) if self.total is not None else self.before(self.t0)

    def __call__(self, t: int) -> float:
        if t < self.t0:
            return self.before(t)
        v0 = self.before(self.t0)
        if self.total is None:
            return v0
        p = (min(t, self.total) - self.t0) / (self.total - self.t0)
        return self.final + 0.5 * (v0 - self.final) * (1.0 + math.cos(math.pi * p))


AnySchedule = Schedule | Replanned


def replan(current: AnySchedule, t0: int, target: Schedule) -> AnySchedule:
    """The schedule to follow from step ``t0`` when the horizon changes to ``target.total``.

    Still in warm-up (``t0 <= target.warmup``) on the same line (``target(t0) == current(t0)``):
    ``target`` itself. Otherwise: ``current`` up to ``t0``, then a cosine from ``current(t0)``
    to the value ``target`` ends on (``target.final``, or ``target.base`` for a constant shape),
    so the value at ``t0`` never jumps.
    """
    if t0 <= target.warmup and math.isclose(target(t0), current(t0), rel_tol=1e-12, abs_tol=0.0):
        return target
    if target.total is not None and target.total <= t0:
        raise ScheduleError(f"total={target.total}: must be greater than the current step {t0}")
    final = target.base if target.shape == "constant" or target.total is None else target.final
    return Replanned(before=current, t0=t0, total=target.total, final=final)


def describe(schedule: AnySchedule) -> dict[str, Any]:
    """Plain, JSON-able data that ``from_description`` turns back into an equal schedule."""
    if isinstance(schedule, Replanned):
        return {
            "type": "Replanned",
            "before": describe(schedule.before),
            "t0": schedule.t0,
            "total": schedule.total,
            "final": schedule.final,
        }
    return {"type": "Schedule", **asdict(schedule)}


def from_description(data: dict[str, Any]) -> AnySchedule:
    """Inverse of ``describe``; raises ``ScheduleError`` on anything else."""
    kind = data.get("type") if isinstance(data, dict) else None
    try:
        if kind == "Replanned":
            return Replanned(
                before=from_description(data["before"]), t0=data["t0"], total=data["total"], final=data["final"]
            )
        if kind == "Schedule":
            names = {f.name for f in fields(Schedule)}
            return Schedule(**{k: v for k, v in data.items() if k in names})
    except (KeyError, TypeError) as err:
        raise ScheduleError(f"description={data!r}: not a schedule description ({err})") from None
    raise ScheduleError(f"description={data!r}: not a schedule description")


def differences(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """Human-readable differences between two descriptions, e.g. ``total: 1000 -> 2000``."""
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += differences(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key}: {va!r} -> {vb!r}")
    return out
