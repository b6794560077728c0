"""Schedules as pure math: frozen dataclasses mapping a step to a value.

Step convention (docs/design.md section 2): ``t`` counts the optimizer updates completed
so far, from 0, and ``schedule(t)`` is the value the next update uses. A negative
step is an error.

Every schedule here is a frozen dataclass, so it pickles, compares and prints;
``lrsched.adoption`` turns it into plain JSON-able data and back for a checkpoint.
Only the standard library is used: no torch.

A shape is one function of ``(schedule, t, T)`` giving the value for ``W <= t <= T``, and one row of
``SHAPE_TABLE`` (the function, the ``Schedule`` parameters only that shape reads, and their check);
``SHAPES`` and the strategies of ``lrsched.strategy`` are the table's keys.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

from lrsched.errors import ScheduleError as ScheduleError  # re-exported: raised by this module

Shape = str
"""A key of ``SHAPE_TABLE``."""
DecayType = Literal["cosine", "linear", "1-sqrt"]
DECAY_TYPES: tuple[DecayType, ...] = ("cosine", "linear", "1-sqrt")
DEFAULT_DECAY_RATIO = Fraction(1, 5)
"""``wsd`` decays over the last ``ceil(0.2 * T)`` steps unless told otherwise."""


def _require(ok: bool, name: str, value: object, rule: str) -> None:
    if not ok:
        raise ScheduleError(f"{name}={_shown(value)}: {rule}")


def _shown(value: object) -> str:
    """``repr(value)``, but an integer of 31 digits or more by its length (``10**400``): one short line."""
    if _integer(value) and abs(value) >= 10**30:  # type: ignore[arg-type]
        return f"an integer of {len(str(abs(value)))} digits"  # type: ignore[arg-type]
    return repr(value)


def _finite(x: object) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


def _integer(x: object) -> bool:
    """An integer, numpy's included (``numbers.Integral``), but not a bool."""
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


MAX_STEPS = 2**53
"""The largest ``warmup``, ``total`` or ``decay``: every step count up to it is exact in float64."""


def _count(x: object) -> bool:
    """A step count: an integer (not a bool) that float64 holds exactly, ``0 <= x <= MAX_STEPS``."""
    return _integer(x) and 0 <= x <= MAX_STEPS  # type: ignore[operator]


def step_index(t: object) -> int:
    """The step ``t`` as an exact ``int``: ``operator.index(t)``, so an ``int``, a numpy integer or a
    0-d integer tensor (duck-typed: no torch here) give their exact value. A bool, a float (``2.5``,
    ``nan``, even ``3.0``) or a float tensor is a ``ScheduleError``: steps count updates.
    """
    if type(t) is int:
        return t
    if isinstance(t, bool) or "bool" in str(getattr(t, "dtype", "")):
        raise ScheduleError(f"t={t!r}: a step must be an integer (optimizer updates done), not a bool")
    try:
        return operator.index(t)  # type: ignore[arg-type]
    except TypeError:
        raise ScheduleError(f"t={t!r}: a step must be an integer (optimizer updates done)") from None


def decay_steps(ratio: Fraction | str | int, total: int) -> int:
    """``D = ceil(ratio * T)``, exact for the decimal typed: ``decay_steps("0.07", 100) == 7``."""
    return math.ceil(Fraction(ratio) * total)


@dataclass(frozen=True)
class Schedule:
    """Linear warm-up, then a decay shape from ``base`` to ``final`` over ``[W, T]``.

    With ``W = warmup`` and ``T = total``:

    - warm-up, ``t < W``: ``start + (base - start) * t / W``
      (``start = 0`` gives docs/design.md section 3's ``base * t / W``);
    - ``W <= t <= T``: the shape's function in ``SHAPE_TABLE`` (``constant``, ``linear``, ``cosine``,
      ``cosine_restarts``, ``wsd``: each function's docstring has its formula);
    - after ``T``: the value at ``T`` is held;
    - open-ended (``total=None``): warm-up, then ``base`` for ever, whatever the shape.

    ``cycles`` is only for ``cosine_restarts``; ``decay`` and ``decay_type`` only for
    ``wsd``, where ``decay=None`` means ``ceil(0.2 * T)`` (``1 <= D <= T - W``).
    ``warmup``, ``total`` and ``decay`` accept any integer type (numpy's too) up to ``MAX_STEPS = 2**53``,
    never a bool. The step ``t`` must be an integer too (``step_index``): ``S(2.5)``, ``S(True)`` and
    ``S(nan)`` raise ``ScheduleError``; a 0-d integer tensor gives the same float64 value as its ``int``.

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
    decay: int | None = None
    decay_type: DecayType = "cosine"

    def __post_init__(self) -> None:
        _require(self.shape in SHAPE_TABLE, "shape", self.shape, f"must be one of {', '.join(SHAPE_TABLE)}")
        for name in ("base", "final", "start", "cycles"):
            _require(_finite(getattr(self, name)), name, getattr(self, name), "must be a finite number")
            object.__setattr__(self, name, float(getattr(self, name)))
        _require(_count(self.warmup), "warmup", self.warmup, f"must be an integer in [0, 2**53 = {MAX_STEPS}]")
        object.__setattr__(self, "warmup", int(self.warmup))
        if self.total is not None:
            _require(_count(self.total), "total", self.total, f"must be None or an integer <= 2**53 = {MAX_STEPS}")
            object.__setattr__(self, "total", int(self.total))
            _require(self.total > self.warmup, "total", self.total, f"must be greater than warmup={self.warmup}")
        row = SHAPE_TABLE[self.shape]
        for name, default in SHAPE_PARAMETERS.items():
            if name not in row.parameters:
                users = " or ".join(k for k, r in SHAPE_TABLE.items() if name in r.parameters)
                _require(
                    getattr(self, name) == default, name, getattr(self, name), f"only for {users}, not {self.shape}"
                )
        if row.check is not None:
            row.check(self)

    def __call__(self, t: int) -> float:
        t = step_index(t)
        if t < self.warmup:
            _require(t >= 0, "t", t, "a step must be >= 0")
            return self.start + (self.base - self.start) * t / self.warmup
        if self.total is None:
            return self.base
        return SHAPE_TABLE[self.shape].value(self, min(t, self.total), self.total)

    @property
    def end_value(self) -> float:
        """The value held after the end (``base`` for open-ended or constant schedules)."""
        return self(self.total) if self.total is not None else self.base


# --- the shapes: each one function of (schedule, t, T) for W <= t <= T, and one row of SHAPE_TABLE ---


def constant(s: Schedule, t: int, total: int) -> float:
    """``base``."""
    return s.base


def linear(s: Schedule, t: int, total: int) -> float:
    """``final + (base - final) * (T - t) / (T - W)`` (HF's form, exact at ``T - 1``)."""
    return s.final + (s.base - s.final) * ((total - t) / (total - s.warmup))


def cosine(s: Schedule, t: int, total: int) -> float:
    """``final + 0.5 * (base - final) * (1 + cos(pi * p))``, ``p = (t - W) / (T - W)`` (docs/design.md section 3)."""
    p = (t - s.warmup) / (total - s.warmup)
    return s.final + 0.5 * (s.base - s.final) * (1.0 + math.cos(math.pi * p))


def cosine_restarts(s: Schedule, t: int, total: int) -> float:
    """SGDR hard restarts, ``c = cycles``: ``final + 0.5 * (base - final) * (1 + cos(pi * ((c * p) mod 1)))``
    for ``p < 1``, ``final`` at ``p = 1``."""
    p = (t - s.warmup) / (total - s.warmup)
    if p >= 1.0:
        return s.final
    return s.final + 0.5 * (s.base - s.final) * (1.0 + math.cos(math.pi * ((s.cycles * p) % 1.0)))


def wsd(s: Schedule, t: int, total: int) -> float:
    """Warmup-stable-decay, ``D = decay``, ``q = (t - (T - D)) / D``: ``base`` for ``t < T - D``, then by
    ``decay_type``: ``cosine`` ``final + 0.5 * (base - final) * (1 + cos(pi * q))``, ``linear``
    ``final + (base - final) * (T - t) / D``, ``1-sqrt`` ``final + (base - final) * (1 - sqrt(q))``."""
    d = s.decay
    assert d is not None  # set by _check_wsd whenever total is
    if t < total - d:
        return s.base
    span = s.base - s.final
    if s.decay_type == "linear":
        return s.final + span * ((total - t) / d)
    q = (t - (total - d)) / d
    if s.decay_type == "cosine":
        return s.final + 0.5 * span * (1.0 + math.cos(math.pi * q))
    return s.final + span * (1.0 - math.sqrt(q))


def _check_cosine_restarts(s: Schedule) -> None:
    _require(s.cycles > 0, "cycles", s.cycles, "must be a finite number > 0")


def _check_wsd(s: Schedule) -> None:
    """``decay_type`` one of ``DECAY_TYPES``; ``decay`` ``ceil(0.2 * T)`` when not given, ``1 <= D <= T - W``."""
    _require(s.decay_type in DECAY_TYPES, "decay_type", s.decay_type, f"must be one of {DECAY_TYPES}")
    if s.decay is None and s.total is not None:
        object.__setattr__(s, "decay", decay_steps(DEFAULT_DECAY_RATIO, s.total))
    if s.decay is not None:
        _require(_count(s.decay) and s.decay >= 1, "decay", s.decay, "must be an integer >= 1 (at most 2**53)")
        object.__setattr__(s, "decay", int(s.decay))
    if s.decay is not None and s.total is not None:
        room = s.total - s.warmup
        _require(s.decay <= room, "decay", s.decay, f"must be at most total - warmup = {room}")


@dataclass(frozen=True)
class ShapeRow:
    """One shape: ``value(schedule, t, T)`` for ``W <= t <= T``, the ``Schedule`` parameters only it reads
    (every other shape must leave them at their defaults, ``SHAPE_PARAMETERS``), and their check."""

    value: Callable[[Schedule, int, int], float]
    parameters: tuple[str, ...] = ()
    check: Callable[[Schedule], None] | None = None


SHAPE_PARAMETERS: dict[str, object] = {"cycles": 1.0, "decay": None, "decay_type": "cosine"}
"""The ``Schedule`` fields that belong to one shape each, with the default every other shape keeps."""

SHAPE_TABLE: dict[str, ShapeRow] = {
    "constant": ShapeRow(constant),
    "linear": ShapeRow(linear),
    "cosine": ShapeRow(cosine),
    "cosine_restarts": ShapeRow(cosine_restarts, ("cycles",), _check_cosine_restarts),
    "wsd": ShapeRow(wsd, ("decay", "decay_type"), _check_wsd),
}
"""Every shape, by name: adding one is a function above, a row here, and its tests (which read this table)."""

SHAPES: tuple[Shape, ...] = tuple(SHAPE_TABLE)


@dataclass(frozen=True)
class Replanned:
    """``before`` up to step ``t0``, then ``after`` shifted to start at ``t0``: ``after(t - t0)``.

    ``after(0)`` must equal ``before(t0)``: the value never jumps at ``t0``. ``replan``
    builds the two kinds of ``after``:

    - a decay from ``v0 = before(t0)``: docs/design.md section 5's
      ``final + 0.5 * (v0 - final) * (1 + cos(pi * (t - t0) / (T - t0)))`` (a ``cosine``
      with ``base=v0``, no warm-up), or for a ``wsd`` target ``v0`` held then its decay
      over the last ``D`` steps; ``v0`` held for ever when open-ended;
    - a re-warm: linear from ``v0`` at ``t0`` to the new peak at ``t1``, then the target's
      shape to its floor at ``T`` (``after`` has ``start=v0``, ``warmup=t1 - t0``).

    ``base`` and ``warmup`` are ``before``'s (param groups scale by ``base``); ``total`` is
    ``t0 + after.total``.
    """

    before: AnySchedule
    t0: int
    after: Schedule

    def __post_init__(self) -> None:
        _require(_count(self.t0), "t0", self.t0, "must be an integer in [0, 2**53]")
        object.__setattr__(self, "t0", int(self.t0))
        v0, a = self.before(self.t0), self.after
        scale = max(abs(v0), abs(a.base), abs(a.final))
        _require(
            math.isclose(a(0), v0, rel_tol=1e-9, abs_tol=1e-12 * scale),
            "after",
            self.after,
            f"must start at before({self.t0}) = {v0!r} (no jump)",
        )

    @property
    def base(self) -> float:
        return self.before.base

    @property
    def warmup(self) -> int:
        return self.before.warmup

    @property
    def total(self) -> int | None:
        return None if self.after.total is None else self.t0 + self.after.total

    @property
    def final(self) -> float:
        return self.after.final

    @property
    def end_value(self) -> float:
        return self.after.end_value

    def __call__(self, t: int) -> float:
        t = step_index(t)
        return self.before(t) if t < self.t0 else self.after(t - self.t0)

    def summary(self) -> str:
        """What the replan does, in words, e.g. ``from step 400: 0.0004 -> 0.002 linearly by step 900, ...``."""
        a, t0 = self.after, self.t0
        v0, end = a(0), "for ever" if a.total is None else f"by step {t0 + a.total}, held after"
        if a.warmup > 0:
            rest = "then held" if a.total is None or a.shape == "constant" else f"then {_form(a)} to {a.final:.4g}"
            return f"from step {t0}: {v0:.4g} -> {a.base:.4g} linearly by step {t0 + a.warmup}, {rest} {end}"
        if a.total is None:
            return f"from step {t0}: {v0:.4g} held for ever"
        if _same(v0, a.final):
            return f"from step {t0}: {v0:.4g} held"
        if a.shape == "wsd" and a.decay is not None and a.decay < a.total:
            start = t0 + a.total - a.decay
            return f"from step {t0}: {v0:.4g} held until step {start}, then {a.decay_type} to {a.final:.4g} {end}"
        return f"from step {t0}: {_form(a)} from {v0:.4g} to {a.final:.4g} {end}"


def _form(s: Schedule) -> str:
    return f"wsd ({s.decay_type} over the last {s.decay} steps)" if s.shape == "wsd" else s.shape


AnySchedule = Schedule | Replanned


def _peak(s: AnySchedule) -> float:
    """The peak a schedule climbs to: ``base``, or a replan's new peak after a re-warm."""
    if isinstance(s, Schedule):
        return s.base
    return s.after.base if s.after.warmup > 0 else _peak(s.before)


def _warming(s: AnySchedule, t: int) -> bool:
    """Whether step ``t`` is in a warm-up (or a replan's re-warm): the peak is still ahead."""
    if isinstance(s, Schedule):
        return t < s.warmup
    return _warming(s.before, t) if t < s.t0 else t - s.t0 < s.after.warmup


def _same(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-12, abs_tol=0.0)


def replan(current: AnySchedule, t0: int, target: Schedule) -> AnySchedule:
    """The schedule to follow from step ``t0`` when the plan changes to ``target``; never a jump at ``t0``.

    With ``v0 = current(t0)``:

    1. ``target(t0) == v0`` (e.g. the same warm-up line, or a ``wsd`` plateau): ``target`` itself.
    2. A re-warm when ``target`` asks for a peak the run will not otherwise reach: a new peak
       (``target.base`` differs from ``current``'s), a finished run (``t0 >= current.total``,
       at its end value) whose value warms up (``current`` or ``target`` has a warm-up), or a run
       still in warm-up. A finished value without a warm-up (a weight decay rising from ``base``
       to ``final``) has no peak to return to: it continues by 3. Linear from ``v0`` at ``t0`` to
       ``target.base`` at ``t1 = target.warmup`` if ``t0`` is before it, else at
       ``t1 = t0 + target.warmup``; then ``target``'s shape from the peak to its floor at
       ``target.total`` (a ``wsd`` decay shortened to the steps after ``t1`` if longer).
       Refused (``ScheduleError``) when that needs a jump (``t1 == t0``) or does not fit
       before ``target.total``.
    3. Otherwise, a decay from ``v0``: cosine to the value ``target`` ends on (``target.final``,
       ``target.base`` for a constant shape) at ``target.total`` (docs/design.md section 5); for a
       ``wsd`` target ``v0`` held, then its decay over its last ``D`` steps (or the steps
       left); ``v0`` held for ever when ``target`` is open-ended.

    ``Replanned.summary()`` says which in words.
    """
    _require(_count(t0), "t0", t0, "must be an integer in [0, 2**53]")
    v0 = current(t0)
    if _same(target(t0), v0):
        return target
    if target.total is not None and target.total <= t0:
        raise ScheduleError(f"total={target.total}: must be greater than the current step {t0}")
    finished = current.total is not None and t0 >= current.total and not _same(v0, _peak(current))
    finished = finished and (current.warmup > 0 or target.warmup > 0)
    if finished or _warming(current, t0) or not _same(target.base, _peak(current)):
        return Replanned(current, t0, _rewarm(v0, t0, target))
    return Replanned(current, t0, _decay_from(v0, t0, target))


def _rewarm(v0: float, t0: int, target: Schedule) -> Schedule:
    """``v0`` at ``t0`` linearly to ``target.base`` at ``t1``, then ``target``'s shape (relative to ``t0``)."""
    t1 = target.warmup if t0 < target.warmup else t0 + target.warmup
    _require(
        t1 > t0,
        "warmup",
        target.warmup,
        f"re-warming from {v0:.4g} at step {t0} to the peak {target.base:.4g} needs warm-up steps > 0",
    )
    total = None if target.total is None else target.total - t0
    decay = None
    if target.total is not None:
        _require(target.total > t1, "total", target.total, f"must be after the re-warm's end at step {t1}")
        decay = None if target.decay is None else min(target.decay, target.total - t1)
    return Schedule(
        target.shape,
        base=target.base,
        final=target.final,
        warmup=t1 - t0,
        total=total,
        cycles=target.cycles,
        start=v0,
        decay=decay,
        decay_type=target.decay_type,
    )


def _decay_from(v0: float, t0: int, target: Schedule) -> Schedule:
    """From ``v0`` at ``t0`` (relative step 0) to ``target``'s end value at ``target.total``."""
    if target.total is None:
        return Schedule("constant", base=v0)
    left, end = target.total - t0, target.end_value
    if target.shape == "wsd" and target.decay is not None:
        return Schedule(
            "wsd", base=v0, final=end, total=left, decay=min(target.decay, left), decay_type=target.decay_type
        )
    return Schedule("cosine", base=v0, final=end, total=left)
