"""Hypothesis strategies and random cases for schedules, shared by the schedule tests."""

from __future__ import annotations

import random

from hypothesis import assume, settings
from hypothesis import strategies as st

from lrsched.schedules import DECAY_TYPES, SHAPES, Replanned, Schedule, replan

PROPS = settings(max_examples=200)
shapes = st.sampled_from(SHAPES)
"""Every shape of the table."""
quarter_cycles = st.integers(1, 32).map(lambda k: k / 4)  # exact in binary: restart points are exact


@st.composite
def schedules(draw: st.DrawFn, open_ended: bool = False, rising: bool = False) -> Schedule:
    base = draw(st.floats(1e-8, 10.0))
    final = draw(st.floats(0.0, 100.0)) if rising else base * draw(st.floats(0.0, 1.0))
    warmup = draw(st.integers(0, 300))
    total = None if open_ended else warmup + draw(st.integers(1, 600))
    shape = draw(shapes)
    cycles = draw(quarter_cycles) if shape == "cosine_restarts" else 1.0
    decay = None
    if shape == "wsd" and total is not None:
        decay = draw(st.integers(1, total - warmup))
    decay_type = draw(st.sampled_from(DECAY_TYPES)) if shape == "wsd" else "cosine"
    return Schedule(
        shape, base=base, final=final, warmup=warmup, total=total, cycles=cycles, decay=decay, decay_type=decay_type
    )


@st.composite
def any_schedules(draw: st.DrawFn) -> Schedule | Replanned:
    s = draw(schedules(open_ended=draw(st.booleans())))
    if not draw(st.booleans()):
        return s
    t0 = s.warmup + draw(st.integers(1, 100))
    assume(s.total is None or t0 < s.total)
    new_total = t0 + draw(st.integers(1, 500))
    return replan(s, t0, longer(s, new_total))


def lr_schedules(shape_names: tuple[str, ...] = ("linear", "cosine", "wsd", "cosine_restarts")) -> st.SearchStrategy:
    @st.composite
    def build(draw: st.DrawFn) -> Schedule:
        base = draw(st.floats(1e-6, 1.0))
        final = base * draw(st.sampled_from([0.0, 0.0, 0.01, 0.5]))
        warmup = draw(st.integers(0, 200))
        total = warmup + draw(st.integers(1, 400))
        shape = draw(st.sampled_from(shape_names))
        cycles = draw(quarter_cycles) if shape == "cosine_restarts" else 1.0
        decay = draw(st.integers(1, total - warmup)) if shape == "wsd" else None
        kind = draw(st.sampled_from(DECAY_TYPES)) if shape == "wsd" else "cosine"
        return Schedule(
            shape, base=base, final=final, warmup=warmup, total=total, cycles=cycles, decay=decay, decay_type=kind
        )

    return build()


def longer(s: Schedule, total: int, **changes: object) -> Schedule:
    decay = None if s.shape != "wsd" else min(s.decay or 1, total - int(changes.get("warmup", s.warmup)))
    kw = dict(shape=s.shape, base=s.base, final=s.final, warmup=s.warmup, total=total, cycles=s.cycles)
    kw.update(decay=decay, decay_type=s.decay_type)
    kw.update(changes)
    return Schedule(**kw)  # type: ignore[arg-type]


def random_cases(n: int, seed: int) -> list[tuple[int, int]]:
    """``n`` random (warm-up, total) pairs, small and large, with ``total > warm-up``."""
    rng = random.Random(seed)
    cases = []
    for _ in range(n):
        w = rng.choice([0, 1, 2, rng.randint(0, 50), rng.randint(0, 500)])
        cases.append((w, w + rng.choice([1, 2, 3, rng.randint(1, 100), rng.randint(1, 2000)])))
    return cases
