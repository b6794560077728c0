"""A plan counted in steps: warm-up to the peak, then a cosine (or warmup-stable-decay) to a floor at
``max_steps``, or, with no ``max_steps``, the peak held after the warm-up (docs/design.md section 5).

A plain function of keyword values (``None``: not given); the caller supplies its defaults
(``StepDefaults``) and how its command line names each keyword (``FlagNames``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from lrsched.errors import UsageError
from lrsched.schedules import DecayType, Schedule, Shape
from lrsched.strategy import FlagNames, Namer, Plan, check_floor, count, fmt_num, pct, wsd_decay


@dataclass(frozen=True)
class StepDefaults:
    """What ``resolve_steps`` uses for a value not given: each program states its own."""

    peak: float
    warmup_steps: int
    min_lr: float


def resolve_steps(
    *,
    defaults: StepDefaults,
    lr: float | None = None,
    warmup_steps: int | None = None,
    min_lr: float | None = None,
    max_steps: int | None = None,
    decay_ratio: Fraction | None = None,
    decay_type: DecayType | None = None,
    warmup_ratio: Fraction | None = None,
    names: FlagNames | None = None,
    shape_source: str = "warm-up + cosine",
) -> Plan:
    """A plan counted in steps: warm-up to the peak, then a cosine to ``min_lr`` at ``max_steps``, or
    without ``max_steps`` the peak held (open-ended). ``None`` means not given: ``defaults``' value.

    A decay ratio or type selects ``wsd`` instead: warm-up, the peak held, then a decay over the last
    ``ceil(decay_ratio * max_steps)`` steps. ``warmup_ratio R`` gives ``W = ceil(R * max_steps)``, exact
    for the decimal typed (7% of 100 is 7); it needs ``max_steps`` and excludes ``warmup_steps``.
    ``names`` spells the keywords as the caller's flags (``FlagNames``); ``shape_source`` is the cosine
    shape's source (the caller's reason for it).
    """
    flag = Namer(names or {})
    wsd = decay_ratio is not None or decay_type is not None
    sources: dict[str, str] = {
        "shape": f"{flag('decay_ratio')}/{flag('decay_type')}: warm-up, hold, decay (wsd)" if wsd else shape_source
    }

    def pick(key: str, keyword: str, value: Any, default: Any) -> Any:
        sources[key] = "default" if value is None else f"{flag(keyword)} {value:g}"
        return default if value is None else value

    peak = pick("peak", "lr", lr, defaults.peak)
    if warmup_ratio is None:
        warmup = pick("warmup", "warmup_steps", warmup_steps, defaults.warmup_steps)
    else:
        warmup = _ratio_warmup(warmup_ratio, warmup_steps, max_steps, flag)
        sources["warmup"] = f"{flag('warmup_ratio')} {fmt_num(warmup_ratio)}: {pct(warmup_ratio)} of {max_steps}"
    floor = pick("min_lr", "min_lr", min_lr, defaults.min_lr)
    check_floor(floor, peak, flag("min_lr"))
    notes = []
    if max_steps is None:
        sources["total"] = f"no {flag('max_steps')}: open-ended"
        notes.append(f"no {flag('max_steps')}: holding {peak:g} after warm-up")
    else:
        sources["total"] = f"{flag('max_steps')} {max_steps}"
        if warmup >= max_steps and warmup_ratio is None:
            raise UsageError(
                f"{flag('warmup_steps')} {warmup}{'' if warmup_steps is not None else ' (default)'}: must be less "
                f"than {flag('max_steps')} {max_steps}; or give the warm-up as a fraction of it, "
                f"{flag('warmup_ratio')} R (e.g. 0.1: {count(math.ceil(Fraction(1, 10) * max_steps), 'step')})"
            )
    sources["cycles"] = "n/a"
    shape: Shape = "wsd" if wsd else "cosine"
    decay, kind = wsd_decay(shape, decay_ratio, decay_type, max_steps, warmup, flag, sources, notes)
    schedule = Schedule(shape, base=peak, final=floor, warmup=warmup, total=max_steps, decay=decay, decay_type=kind)
    return Plan(schedule, tuple(sources.items()), tuple(notes))


def _ratio_warmup(ratio: Fraction, warmup_steps: int | None, max_steps: int | None, flag: Namer) -> int:
    """``W = ceil(R * T)`` with ``T = max_steps``, exact; refused beside ``warmup_steps`` or without ``T``."""
    named = f"{flag('warmup_ratio')} {fmt_num(ratio)}"
    if warmup_steps is not None:
        raise UsageError(f"{named}: give it or {flag('warmup_steps')} {warmup_steps}, not both")
    if max_steps is None:
        raise UsageError(
            f"{named}: needs {flag('max_steps')} (it is a fraction of the total; an open-ended run has none): "
            f"give {flag('max_steps')}, or {flag('warmup_steps')}"
        )
    warmup = math.ceil(ratio * max_steps)
    if warmup >= max_steps:
        raise UsageError(
            f"{named}: gives {count(warmup, 'warm-up step')}, must be fewer than {flag('max_steps')} {max_steps}"
        )
    return warmup
