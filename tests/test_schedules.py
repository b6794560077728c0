"""Tests for lrsched.schedules and lrsched.adoption: boundary values, independent oracles, properties,
round-trips, and the one adoption rule."""

from __future__ import annotations

import itertools
import json
import math
import pickle
import random
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from lrsched.adoption import adopt, describe, differences, from_description
from lrsched.errors import ScheduleError, ScheduleMismatch
from lrsched.schedules import (
    DECAY_TYPES,
    SHAPES,
    AnySchedule,
    Replanned,
    Schedule,
    replan,
)

PROPS = settings(max_examples=200)
CLASSIC = tuple(s for s in SHAPES if s != "wsd")  # the shapes the oracle and HF's four functions know


def approx(x: float) -> object:
    return pytest.approx(x, rel=1e-12, abs=1e-15)


# --- an oracle written from docs/design.md section 3 / note 000, independent of the implementation ---


def oracle(shape: str, base: float, floor: float, warmup: int, total: int | None, cycles: float, t: int) -> float:
    """Note 000's warm-up + decay, docs/design.md's shapes, hold after T, base for ever when open-ended."""
    if t < warmup:
        return base * t / warmup
    if total is None:
        return base
    step = total if t > total else t
    frac = (step - warmup) / (total - warmup)
    if shape == "constant":
        return base
    if shape == "linear":
        return floor + (base - floor) * (1 - frac)
    if shape == "cosine":
        return floor + 0.5 * (base - floor) * (1 + math.cos(math.pi * frac))
    assert shape == "cosine_restarts"
    if frac >= 1:
        return floor
    phase = cycles * frac - math.floor(cycles * frac)
    return floor + 0.5 * (base - floor) * (1 + math.cos(math.pi * phase))


# --- boundary values of every shape ---

BASE, FLOOR, W, T = 1.0, 0.1, 4, 14  # decay spans 10 steps: p(T-1) = 0.9


def cos_at(phase: float) -> float:
    return FLOOR + 0.5 * (BASE - FLOOR) * (1 + math.cos(math.pi * phase))


@pytest.mark.parametrize(
    ("shape", "cycles", "at_t_minus_1", "at_t"),
    [
        ("constant", 1.0, BASE, BASE),
        ("linear", 1.0, FLOOR + 0.1 * (BASE - FLOOR), FLOOR),
        ("cosine", 1.0, cos_at(0.9), FLOOR),
        ("cosine_restarts", 1.0, cos_at(0.9), FLOOR),
        ("cosine_restarts", 2.0, cos_at(0.8), FLOOR),
    ],
)
def test_boundary_values(shape: str, cycles: float, at_t_minus_1: float, at_t: float) -> None:
    s = Schedule(shape, base=BASE, final=FLOOR, warmup=W, total=T, cycles=cycles)
    assert s(0) == 0.0
    assert s(W - 1) == approx(BASE * (W - 1) / W)
    assert s(W) == approx(BASE)
    assert s(T - 1) == approx(at_t_minus_1)
    assert s(T) == approx(at_t)
    for past in (T + 1, T + 7, 10 * T, 10**9):
        assert s(past) == s(T), f"not held at t={past}"
    assert s.end_value == s(T)


@pytest.mark.parametrize("shape", SHAPES)
def test_zero_warmup_starts_at_peak(shape: str) -> None:
    s = Schedule(shape, base=2e-4, final=1e-6, warmup=0, total=50, cycles=2.0 if shape == "cosine_restarts" else 1.0)
    assert s(0) == approx(2e-4)
    assert s(1) <= s(0)


@pytest.mark.parametrize("shape", SHAPES)
def test_open_ended_holds_base_after_warmup(shape: str) -> None:
    s = Schedule(shape, base=5e-4, final=1e-6, warmup=25, total=None, cycles=2.0 if shape == "cosine_restarts" else 1.0)
    assert s.total is None
    assert s(0) == 0.0
    assert [s(t) for t in range(25)] == [approx(5e-4 * t / 25) for t in range(25)]
    for t in (25, 26, 1000, 10**7):
        assert s(t) == 5e-4
    assert s.end_value == 5e-4


@pytest.mark.parametrize("shape", ["linear", "cosine", "cosine_restarts", "wsd"])
def test_floor_is_reached_and_never_undercut(shape: str) -> None:
    s = Schedule(shape, base=1e-3, final=2e-4, warmup=10, total=110, cycles=3.0 if shape == "cosine_restarts" else 1.0)
    values = [s(t) for t in range(10, 200)]
    assert min(values) >= 2e-4 - 1e-18
    assert s(110) == approx(2e-4)


def test_half_cycle_falls_to_halfway_and_never_rises_before_t() -> None:
    base, floor, w, total = 1.0, 0.2, 5, 105
    s = Schedule("cosine_restarts", base=base, final=floor, warmup=w, total=total, cycles=0.5)
    decay = [s(t) for t in range(w, total)]
    assert all(b <= a for a, b in itertools.pairwise(decay)), "rose before T"
    halfway = floor + 0.5 * (base - floor)
    assert decay[0] == approx(base)
    assert min(decay) > halfway  # approaches halfway, never below it before T
    assert decay[-1] == pytest.approx(halfway, abs=0.02)
    assert s(total) == approx(floor)  # p = 1: the floor, then held
    assert s(total + 50) == approx(floor)


def test_one_cycle_is_plain_cosine() -> None:
    a = Schedule("cosine_restarts", base=1.0, final=0.0, warmup=3, total=40, cycles=1.0)
    b = Schedule("cosine", base=1.0, final=0.0, warmup=3, total=40)
    assert [a(t) for t in range(45)] == [approx(b(t)) for t in range(45)]


def test_two_cycles_decay_restart_decay() -> None:
    s = Schedule("cosine_restarts", base=1.0, final=0.0, warmup=0, total=100, cycles=2.0)
    first, second = [s(t) for t in range(0, 50)], [s(t) for t in range(50, 100)]
    assert all(b <= a for a, b in itertools.pairwise(first))
    assert all(b <= a for a, b in itertools.pairwise(second))
    assert first[-1] < 0.01
    assert s(50) == approx(1.0)  # the restart: back at the peak
    assert second[-1] < 0.01
    assert s(100) == 0.0


@pytest.mark.parametrize("cycles", [0.5, 1.0, 1.5, 2.0, 3.0, 0.3])
def test_cosine_restarts_is_floor_at_p_one(cycles: float) -> None:
    s = Schedule("cosine_restarts", base=3.0, final=0.5, warmup=7, total=57, cycles=cycles)
    assert s(57) == 0.5
    assert s(58) == 0.5


# --- oracles over many random (W, T, cycles) ---


def _random_cases(n: int, seed: int) -> list[tuple[int, int, float]]:
    rng = random.Random(seed)
    cases = []
    for _ in range(n):
        w = rng.choice([0, 1, 2, rng.randint(0, 50), rng.randint(0, 500)])
        total = w + rng.choice([1, 2, 3, rng.randint(1, 100), rng.randint(1, 2000)])
        cycles = rng.choice([0.5, 1.0, 2.0, 3.0, round(rng.uniform(0.1, 5.0), 3)])
        cases.append((w, total, cycles))
    return cases


@pytest.mark.parametrize("shape", CLASSIC)
def test_matches_independent_formula_step_by_step(shape: str) -> None:
    rng = random.Random(hash(shape) % 1000)
    for w, total, cycles in _random_cases(60, seed=len(shape)):
        base = rng.uniform(1e-6, 1e-2)
        floor = rng.choice([0.0, base * rng.uniform(0, 1)])
        cycles = cycles if shape == "cosine_restarts" else 1.0
        s = Schedule(shape, base=base, final=floor, warmup=w, total=total, cycles=cycles)
        for t in range(total + 3):
            want = oracle(shape, base, floor, w, total, cycles, t)
            assert s(t) == pytest.approx(want, rel=1e-9, abs=base * 1e-12), (w, total, cycles, t)


def test_seed_000_open_ended_formula() -> None:
    s = Schedule("cosine", base=5e-4, final=1e-6, warmup=2500, total=None)
    for t in [0, 1, 1249, 2499, 2500, 2501, 10**6]:
        assert s(t) == approx(oracle("cosine", 5e-4, 1e-6, 2500, None, 1.0, t))


def _hf_lambdas():  # type: ignore[no-untyped-def]
    transformers_optimization = pytest.importorskip("transformers.optimization")
    torch = pytest.importorskip("torch")
    return transformers_optimization, torch


@pytest.mark.parametrize("shape", CLASSIC)
def test_matches_hf_transformers_schedules(shape: str) -> None:
    hf, torch = _hf_lambdas()
    base = 3e-4
    param = torch.nn.Parameter(torch.zeros(1))
    for w, total, cycles in _random_cases(40, seed=7 + len(shape)):
        opt = torch.optim.SGD([param], lr=base)
        if shape == "constant":
            ref = hf.get_constant_schedule_with_warmup(opt, num_warmup_steps=w)
        elif shape == "linear":
            ref = hf.get_linear_schedule_with_warmup(opt, num_warmup_steps=w, num_training_steps=total)
        elif shape == "cosine":
            ref = hf.get_cosine_schedule_with_warmup(opt, num_warmup_steps=w, num_training_steps=total)
        else:
            ref = hf.get_cosine_with_hard_restarts_schedule_with_warmup(
                opt, num_warmup_steps=w, num_training_steps=total, num_cycles=cycles
            )
        factor = ref.lr_lambdas[0]
        cycles = cycles if shape == "cosine_restarts" else 1.0
        ours = Schedule(shape, base=base, final=0.0, warmup=w, total=total, cycles=cycles)
        for t in range(total + 1):  # HF differs after T; ours holds
            assert ours(t) == pytest.approx(base * factor(t), rel=1e-9, abs=1e-18), (shape, w, total, cycles, t)


def test_hf_scheduler_stepping_agrees_with_lambda() -> None:
    """The LambdaLR values read after each step are what the lambda gives (so the oracle above is HF's LR)."""
    hf, torch = _hf_lambdas()
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    ref = hf.get_cosine_schedule_with_warmup(opt, num_warmup_steps=3, num_training_steps=20)
    ours = Schedule("cosine", base=1.0, warmup=3, total=20)
    for t in range(20):
        assert opt.param_groups[0]["lr"] == pytest.approx(ours(t), rel=1e-9, abs=1e-15)
        opt.step()
        ref.step()


# --- hypothesis properties ---

shapes = st.sampled_from(SHAPES)
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


@PROPS
@given(schedules(rising=True), st.data())
def test_values_stay_between_base_and_final(s: Schedule, data: st.DataObject) -> None:
    assert s.total is not None
    lo, hi = min(s.base, s.final), max(s.base, s.final)
    tol = 1e-12 * hi
    for t in [*data.draw(st.lists(st.integers(0, s.total + 100), min_size=1, max_size=30)), s.warmup, s.total]:
        v = s(t)
        if t < s.warmup:
            assert 0.0 <= v <= s.base
        else:
            assert lo - tol <= v <= hi + tol, t


@PROPS
@given(schedules())
def test_continuous_at_end_of_warmup(s: Schedule) -> None:
    assume(s.warmup >= 1)
    assert abs(s(s.warmup) - s(s.warmup - 1)) <= s.base / s.warmup * (1 + 1e-12)
    assert s(s.warmup) == approx(s.base)


@PROPS
@given(schedules(rising=True))
def test_warmup_is_non_decreasing(s: Schedule) -> None:
    values = [s(t) for t in range(s.warmup + 1)]
    assert all(b >= a for a, b in itertools.pairwise(values))
    # lr(W) = final + (base - final) * 1: exact up to the rounding of the larger of base and final
    assert values[0] == (0.0 if s.warmup else pytest.approx(s.base, rel=1e-12, abs=1e-13 * max(s.base, s.final)))


def _restart_between(s: Schedule, t: int) -> bool:
    """Whether an integer number of cycles is completed in (t, t+1], computed exactly."""
    assert s.total is not None
    span = s.total - s.warmup
    c = Fraction(s.cycles)
    return math.floor(c * Fraction(t + 1 - s.warmup, span)) > math.floor(c * Fraction(t - s.warmup, span))


@PROPS
@given(schedules())
def test_decay_is_non_increasing_between_restarts(s: Schedule) -> None:
    assert s.total is not None
    for t in range(s.warmup, s.total + 3):
        if s.shape == "cosine_restarts" and t + 1 < s.total and _restart_between(s, t):
            continue
        assert s(t + 1) <= s(t) * (1 + 1e-12) + 1e-300, t


@PROPS
@given(schedules(rising=True), st.integers(1, 10**9))
def test_held_after_total(s: Schedule, k: int) -> None:
    assert s.total is not None
    assert s(s.total + k) == s(s.total) == s.end_value


@PROPS
@given(schedules(open_ended=True), st.integers(0, 10**9))
def test_open_ended_is_base_after_warmup(s: Schedule, k: int) -> None:
    assert s(s.warmup + k) == s.base


@st.composite
def any_schedules(draw: st.DrawFn) -> Schedule | Replanned:
    s = draw(schedules(open_ended=draw(st.booleans())))
    if not draw(st.booleans()):
        return s
    t0 = s.warmup + draw(st.integers(1, 100))
    assume(s.total is None or t0 < s.total)
    new_total = t0 + draw(st.integers(1, 500))
    return replan(s, t0, _longer(s, new_total))


@PROPS
@given(any_schedules())
def test_pickle_compare_describe_round_trip(s: Schedule | Replanned) -> None:
    assert pickle.loads(pickle.dumps(s)) == s
    assert hash(pickle.loads(pickle.dumps(s))) == hash(s)
    data = describe(s)
    assert json.loads(json.dumps(data)) == data
    back = from_description(json.loads(json.dumps(data)))
    assert back == s
    assert type(back) is type(s)
    assert [back(t) for t in range(0, 900, 37)] == [s(t) for t in range(0, 900, 37)]
    assert differences(describe(back), data) == []
    assert repr(s).startswith(type(s).__name__)


def _check_replan(r: Schedule | Replanned, current: Schedule | Replanned, t0: int, target: Schedule) -> None:
    """No jump at t0, the past unchanged, the target's end value at its T, held (never rising) after."""
    assert r(t0) == pytest.approx(current(t0), rel=1e-9, abs=1e-12 * max(current(t0), target.base))
    if isinstance(r, Replanned):
        assert [r(t) for t in range(max(0, t0 - 20), t0)] == [current(t) for t in range(max(0, t0 - 20), t0)]
    if target.total is None:
        return
    end = target.end_value
    assert r(target.total) == pytest.approx(end, rel=1e-9, abs=1e-12 * target.base)
    for k in (1, 2, 17, 10**6):
        assert r(target.total + k) == r(target.total)


def _lr_schedules(shape_names: tuple[str, ...] = ("linear", "cosine", "wsd", "cosine_restarts")) -> st.SearchStrategy:
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


def _longer(s: Schedule, total: int, **changes: object) -> Schedule:
    decay = None if s.shape != "wsd" else min(s.decay or 1, total - int(changes.get("warmup", s.warmup)))
    kw = dict(shape=s.shape, base=s.base, final=s.final, warmup=s.warmup, total=total, cycles=s.cycles)
    kw.update(decay=decay, decay_type=s.decay_type)
    kw.update(changes)
    return Schedule(**kw)  # type: ignore[arg-type]


@PROPS
@given(schedules(open_ended=True) | schedules(), st.integers(1, 500), st.integers(1, 1000))
def test_replan_past_warmup_decays_from_the_current_value(current: Schedule, after_warmup: int, length: int) -> None:
    """docs/design.md section 5: same peak, not finished, past warm-up: cosine from lr(t0) to the floor at the new T."""
    t0 = current.warmup + after_warmup
    assume(current.total is None or t0 < current.total)
    new_total = t0 + length
    target = Schedule("cosine", base=current.base, final=current.final, warmup=current.warmup, total=new_total)
    r = replan(current, t0, target)
    _check_replan(r, current, t0, target)
    values = [r(t) for t in range(t0, new_total + 1)]
    if current(t0) >= current.final:
        assert all(b <= a * (1 + 1e-12) for a, b in itertools.pairwise(values))


@PROPS
@given(_lr_schedules(), st.integers(0, 300), st.integers(1, 200), st.integers(1, 800))
def test_extending_a_finished_run_rewarms_to_the_peak(
    current: Schedule, after_end: int, warmup: int, length: int
) -> None:
    """A run at its end value (floor 0: LR 0) re-warms over the warm-up to the peak, then decays to the floor."""
    assert current.total is not None
    assume(current.end_value != current.base)
    t0 = current.total + after_end
    target = _longer(current, t0 + warmup + length, warmup=warmup)
    r = replan(current, t0, target)
    assert isinstance(r, Replanned)
    _check_replan(r, current, t0, target)
    t1 = warmup if t0 < warmup else t0 + warmup  # the re-warm ends where the new plan's warm-up does, or W after t0
    assert r(t1) == pytest.approx(target.base, rel=1e-12)  # reaches the peak
    assert max(r(t) for t in range(t0, target.total + 1)) <= target.base * (1 + 1e-12)
    assert "linearly" in r.summary()


@PROPS
@given(_lr_schedules(), st.integers(1, 200), st.integers(1, 800), st.data())
def test_a_longer_warmup_asked_during_warmup_reaches_the_peak(
    current: Schedule, extra: int, length: int, data: st.DataObject
) -> None:
    assume(current.warmup >= 2)
    t0 = data.draw(st.integers(1, current.warmup - 1))
    new_warmup = current.warmup + extra
    target = _longer(current, new_warmup + length, warmup=new_warmup)
    r = replan(current, t0, target)
    _check_replan(r, current, t0, target)
    assert r(new_warmup) == pytest.approx(target.base, rel=1e-12)  # the peak, at the new warm-up's end
    rising = [r(t) for t in range(t0, new_warmup + 1)]
    assert all(b >= a for a, b in itertools.pairwise(rising))


@PROPS
@given(_lr_schedules(), st.floats(0.1, 10.0), st.integers(1, 200), st.integers(1, 800), st.data())
def test_a_new_peak_is_reached(current: Schedule, factor: float, warmup: int, length: int, data: st.DataObject) -> None:
    assume(abs(factor - 1.0) > 1e-6)
    assert current.total is not None
    t0 = data.draw(st.integers(0, current.total + 50))
    target = _longer(current, max(t0, current.warmup) + warmup + length, warmup=warmup, base=current.base * factor)
    r = replan(current, t0, target)
    _check_replan(r, current, t0, target)
    values = [r(t) for t in range(t0, target.total + 1)]
    assert max(values) == pytest.approx(
        max(target.base, target.final, current(t0)), rel=1e-12
    )  # the new peak, not the old one
    assert values[-1] == pytest.approx(target.final, rel=1e-9, abs=1e-15)


def test_replan_that_needs_a_jump_is_refused() -> None:
    current = Schedule("cosine", base=1.0, final=0.0, warmup=10, total=100)
    with pytest.raises(ScheduleError, match=r"^warmup=0: re-warming"):
        replan(current, 100, Schedule("cosine", base=1.0, warmup=0, total=200))  # finished, no warm-up to re-warm
    with pytest.raises(ScheduleError, match=r"^warmup=0: re-warming"):
        replan(current, 50, Schedule("cosine", base=2.0, warmup=0, total=200))  # new peak, no warm-up
    with pytest.raises(ScheduleError, match=r"^total=150: must be after the re-warm's end at step 150"):
        replan(current, 100, Schedule("cosine", base=1.0, warmup=50, total=150))


def test_issue_11_cases() -> None:
    """The three silent replans of issue 11, now honoured."""
    finished = Schedule("cosine", base=1e-3, final=0.0, warmup=100, total=1000)
    r = replan(finished, 1000, Schedule("cosine", base=1e-3, final=0.0, warmup=100, total=2000))
    assert r(1000) == 0.0 and r(1100) == 1e-3 and r(2000) == 0.0 and max(r(t) for t in range(1000, 2001)) == 1e-3
    assert r.summary() == "from step 1000: 0 -> 0.001 linearly by step 1100, then cosine to 0 by step 2000, held after"
    warming = Schedule("cosine", base=1e-3, final=0.0, warmup=100, total=1000)
    r = replan(warming, 50, Schedule("cosine", base=1e-3, final=0.0, warmup=200, total=1000))
    assert r(50) == 5e-4 and r(200) == 1e-3
    mid = Schedule("cosine", base=5e-4, final=1e-6, warmup=100, total=1000)
    r = replan(mid, 500, Schedule("cosine", base=2e-3, final=1e-6, warmup=100, total=2000))
    assert r(500) == mid(500) and r(600) == 2e-3 and max(r(t) for t in range(500, 2001)) == 2e-3


def test_replan_during_warmup_on_the_same_line_is_the_target() -> None:
    current = Schedule("cosine", base=1.0, final=0.0, warmup=100, total=None)
    target = Schedule("cosine", base=1.0, final=0.0, warmup=100, total=1000)
    assert replan(current, 50, target) is target


def test_open_ended_wsd_gets_its_cooldown_without_a_replan_curve() -> None:
    """Seed 000's open-ended run, ended with a WSD cool-down: the plateau is the target's own."""
    current = Schedule("cosine", base=5e-4, final=1e-6, warmup=100, total=None)
    target = Schedule("wsd", base=5e-4, final=1e-6, warmup=100, total=10_000, decay=2000, decay_type="1-sqrt")
    assert replan(current, 5000, target) is target
    late = replan(current, 9000, target)  # already inside the decay window: decay over the steps left
    assert isinstance(late, Replanned)
    assert late(9000) == 5e-4 and late(10_000) == pytest.approx(1e-6) and late.after.decay == 1000
    assert (
        late.summary()
        == "from step 9000: wsd (1-sqrt over the last 1000 steps) from 0.0005 to 1e-06 by step 10000, held after"
    )


def test_replan_formula_from_design() -> None:
    current = Schedule("cosine", base=5e-4, final=1e-6, warmup=100, total=None)  # open-ended
    t0, total, floor = 400, 1400, 1e-6
    r = replan(current, t0, Schedule("cosine", base=5e-4, final=floor, warmup=100, total=total))
    assert isinstance(r, Replanned)
    v0 = current(t0)
    for t in range(t0, total + 1, 17):
        want = floor + 0.5 * (v0 - floor) * (1 + math.cos(math.pi * (t - t0) / (total - t0)))
        assert r(t) == approx(want)
    assert r.base == 5e-4 and r.warmup == 100 and r.total is not None
    assert r.summary() == "from step 400: cosine from 0.0005 to 1e-06 by step 1400, held after"


def test_replan_of_a_decaying_run_keeps_its_current_value() -> None:
    current = Schedule("linear", base=1.0, final=0.0, warmup=10, total=110)
    r = replan(current, 60, Schedule("linear", base=1.0, final=0.0, warmup=10, total=1010))
    assert r(60) == current(60) == approx(0.5)
    assert r(1010) == 0.0


def test_replan_to_open_ended_holds_current_value() -> None:
    current = Schedule("cosine", base=1.0, final=0.0, warmup=10, total=110)
    r = replan(current, 60, Schedule("cosine", base=1.0, final=0.0, warmup=10, total=None))
    assert r.total is None
    assert r(60) == r(10**6) == current(60)
    assert r.end_value == current(60)
    assert isinstance(r, Replanned) and r.summary() == f"from step 60: {current(60):.4g} held for ever"


def test_replan_total_must_be_after_t0() -> None:
    current = Schedule("cosine", base=1.0, warmup=10, total=None)
    with pytest.raises(ScheduleError, match="total"):
        replan(current, 60, Schedule("cosine", base=1.0, warmup=10, total=60))
    with pytest.raises(ScheduleError, match=r"^after="):
        Replanned(before=current, t0=60, after=Schedule("cosine", base=0.5, total=10))  # would jump


def test_old_replanned_descriptions_still_load() -> None:
    """Checkpoints written before re-warms existed: ``total`` and ``final`` instead of ``after``."""
    before = Schedule("cosine", base=5e-4, final=1e-6, warmup=100, total=None)
    old = {"type": "Replanned", "before": describe(before), "t0": 400, "total": 1400, "final": 1e-6}
    r = from_description(old)
    v0 = before(400)
    for t in range(400, 1500, 13):
        p = (min(t, 1400) - 400) / 1000
        assert r(t) == 1e-6 + 0.5 * (v0 - 1e-6) * (1 + math.cos(math.pi * p))
    held = from_description({**old, "total": None})
    assert held(10**6) == v0


# --- validation, descriptions and differences ---


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        (dict(shape="cosin", base=1.0), "shape"),
        (dict(shape="cosine", base=float("nan")), "base"),
        (dict(shape="cosine", base=float("inf")), "base"),
        (dict(shape="cosine", base=1.0, final=float("nan")), "final"),
        (dict(shape="cosine", base=1.0, warmup=-1), "warmup"),
        (dict(shape="cosine", base=1.0, warmup=2.5), "warmup"),
        (dict(shape="cosine", base=1.0, warmup=10, total=10), "total"),
        (dict(shape="cosine", base=1.0, warmup=10, total=5), "total"),
        (dict(shape="cosine", base=1.0, total=10.5), "total"),
        (dict(shape="cosine_restarts", base=1.0, total=10, cycles=0), "cycles"),
        (dict(shape="cosine_restarts", base=1.0, total=10, cycles=-1.0), "cycles"),
        (dict(shape="cosine_restarts", base=1.0, total=10, cycles=float("nan")), "cycles"),
    ],
)
def test_bad_parameters_are_errors_naming_the_parameter(kwargs: dict, name: str) -> None:
    with pytest.raises(ScheduleError, match=f"^{name}="):
        Schedule(**kwargs)


@pytest.mark.parametrize(
    "data",
    [
        {},
        [],
        {"type": "Other"},
        {"type": "Schedule"},
        {"type": "Schedule", "shape": "cosine"},
        {"type": "Replanned"},
        {"type": "Replanned", "before": {"type": "Schedule", "shape": "cosine", "base": 1.0}, "t0": 3},
        {"type": "Schedule", "shape": "cosine", "base": "1e-3"},
    ],
)
def test_from_description_rejects_anything_else(data: object) -> None:
    with pytest.raises(ScheduleError):
        from_description(data)


def test_differences_lists_each_change() -> None:
    a = Schedule("cosine", base=5e-4, final=1e-6, warmup=2500, total=10000)
    b = Schedule("cosine", base=5e-4, final=1e-6, warmup=2500, total=20000)
    assert differences(describe(a), describe(b)) == ["total: 10000 -> 20000"]
    c = Schedule("linear", base=1e-3, final=1e-6, warmup=2500, total=None)
    assert set(differences(describe(a), describe(c))) == {
        "shape: 'cosine' -> 'linear'",
        "base: 0.0005 -> 0.001",
        "total: 10000 -> None",
    }
    r = replan(a, 5000, b)
    diffs = differences(describe(a), describe(r))
    assert any(d.startswith("type:") for d in diffs)
    assert differences(describe(r), describe(r)) == []


def test_schedules_compare_by_value() -> None:
    a = Schedule("cosine", base=1.0, warmup=3, total=10)
    assert a == Schedule("cosine", base=1.0, warmup=3, total=10)
    assert a != Schedule("cosine", base=1.0, warmup=3, total=11)
    assert len({a, Schedule("cosine", base=1.0, warmup=3, total=10)}) == 1
    with pytest.raises(AttributeError):
        a.total = 20


def test_start_value_for_other_fields() -> None:
    # DINO's teacher temperature: linear warm-up 0.04 -> 0.07, then constant.
    s = Schedule("constant", base=0.07, warmup=30, total=None, start=0.04)
    assert s(0) == 0.04
    assert s(15) == approx(0.055)
    assert s(30) == s(10**6) == 0.07
    # weight decay rising with cosine 0.04 -> 0.4
    wd = Schedule("cosine", base=0.04, final=0.4, total=100)
    assert wd(0) == approx(0.04) and wd(100) == approx(0.4) and wd(50) == approx(0.22)


def test_pure_math_does_not_import_torch() -> None:
    import subprocess
    import sys

    pure = "lrsched.schedules, lrsched.adoption, lrsched.strategy, lrsched.flags"
    code = f"import sys, {pure}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- issue 11: exactness at scale and in corners, integers of any kind ---


def test_linear_is_exact_at_t_minus_1_of_a_billion_steps() -> None:
    T = 10**9
    s = Schedule("linear", base=1.0, warmup=10, total=T)
    assert s(T - 1) == 1 / (T - 10)  # (T - t) / (T - W), as HF computes it
    assert s(T - 1) == float(Fraction(1, T - 10))


@pytest.mark.parametrize("shape", ["constant", "linear", "cosine", "wsd"])
def test_cycles_are_refused_outside_cosine_restarts(shape: str) -> None:
    with pytest.raises(ScheduleError, match=f"^cycles=2.0: only for cosine_restarts, not {shape}"):
        Schedule(shape, base=1.0, total=10, cycles=2)


@pytest.mark.parametrize("shape", ["constant", "linear", "cosine", "cosine_restarts"])
def test_decay_is_refused_outside_wsd(shape: str) -> None:
    with pytest.raises(ScheduleError, match=r"^decay=3: only for wsd"):
        Schedule(shape, base=1.0, total=10, decay=3)
    with pytest.raises(ScheduleError, match=r"^decay_type='linear': only for wsd"):
        Schedule(shape, base=1.0, total=10, decay_type="linear")


@pytest.mark.parametrize("warmup", [0, 5])
def test_negative_steps_are_refused(warmup: int) -> None:
    s = Schedule("cosine", base=1.0, warmup=warmup, total=10)
    with pytest.raises(ScheduleError, match=r"^t=-1: a step must be >= 0"):
        s(-1)
    r = replan(s, 7, Schedule("cosine", base=1.0, warmup=warmup, total=20))
    with pytest.raises(ScheduleError, match=r"^t=-3"):
        r(-3)


def test_numpy_integers_are_integers_and_bools_are_not() -> None:
    np = pytest.importorskip("numpy")
    s = Schedule("cosine", base=np.float64(1.0), warmup=np.int64(10), total=np.int32(100))
    assert s == Schedule("cosine", base=1.0, warmup=10, total=100)
    assert type(s.warmup) is int and type(s.total) is int  # describe() stays plain JSON
    assert json.dumps(describe(s))
    w = Schedule("wsd", base=1.0, warmup=np.int64(10), total=np.int64(100), decay=np.int64(20))
    assert type(w.decay) is int
    r = replan(s, np.int64(50), Schedule("cosine", base=1.0, warmup=10, total=200))
    assert isinstance(r, Replanned) and type(r.t0) is int
    for bad in (dict(warmup=True), dict(total=True), dict(base=True)):
        with pytest.raises(ScheduleError):
            Schedule("cosine", **{"base": 1.0, "total": 10, **bad})  # type: ignore[arg-type]


# --- wsd: warmup-stable-decay ---


@pytest.mark.parametrize(
    ("kind", "at"),
    [
        ("cosine", lambda q: 0.1 + 0.5 * 0.9 * (1 + math.cos(math.pi * q))),
        ("linear", lambda q: 0.1 + 0.9 * (1 - q)),
        ("1-sqrt", lambda q: 0.1 + 0.9 * (1 - math.sqrt(q))),
    ],
)
def test_wsd_warms_holds_then_decays_over_the_last_d_steps(kind: str, at: object) -> None:
    s = Schedule("wsd", base=1.0, final=0.1, warmup=10, total=100, decay=20, decay_type=kind)  # type: ignore[arg-type]
    assert [s(t) for t in range(10)] == [t / 10 for t in range(10)]
    assert all(s(t) == 1.0 for t in range(10, 81))  # the plateau: W .. T - D
    for t in range(80, 101):
        assert s(t) == pytest.approx(at((t - 80) / 20), rel=1e-12)  # type: ignore[operator]
    assert s(100) == pytest.approx(0.1) and s(10**9) == s(100)


def test_wsd_default_decay_is_a_fifth_rounded_up_exactly() -> None:
    assert Schedule("wsd", base=1.0, total=101).decay == 21  # ceil(0.2 * 101)
    assert Schedule("wsd", base=1.0, total=100).decay == 20
    from lrsched.schedules import decay_steps

    assert decay_steps("0.07", 100) == 7  # 0.07 * 100 in floating point is 7.000000000000001
    assert decay_steps(Fraction(1, 3), 10) == 4


def test_wsd_refuses_a_decay_longer_than_after_warmup() -> None:
    with pytest.raises(ScheduleError, match=r"^decay=91: must be at most total - warmup = 90"):
        Schedule("wsd", base=1.0, warmup=10, total=100, decay=91)
    with pytest.raises(ScheduleError, match=r"^decay=0: must be an integer >= 1"):
        Schedule("wsd", base=1.0, total=100, decay=0)
    with pytest.raises(ScheduleError, match=r"^decay_type='sqrt'"):
        Schedule("wsd", base=1.0, total=100, decay_type="sqrt")  # type: ignore[arg-type]


def test_open_ended_wsd_is_warmup_then_peak() -> None:
    s = Schedule("wsd", base=2.0, warmup=4, total=None)
    assert s.decay is None and [s(t) for t in (0, 2, 4, 10**9)] == [0.0, 1.0, 2.0, 2.0]


@pytest.mark.parametrize("kind", DECAY_TYPES)
@pytest.mark.parametrize("ratio", [0.0, 0.1, 0.5])
def test_wsd_matches_hf_get_wsd_schedule(kind: str, ratio: float) -> None:
    """HF's warm-up starts at ``min_lr_ratio * lr`` (ours at ``start``), so with a floor they agree when
    ``start = final``, and from ``W`` on whatever the start; at ``T`` and after both hold the floor."""
    hf, torch = _hf_lambdas()
    base = 3e-4
    param = torch.nn.Parameter(torch.zeros(1))
    for w, total, _ in _random_cases(40, seed=11 + len(kind)):
        decay = 1 + (total - w - 1) // 3
        opt = torch.optim.SGD([param], lr=base)
        ref = hf.get_wsd_schedule(
            opt,
            num_warmup_steps=w,
            num_decay_steps=decay,
            num_training_steps=total,
            decay_type=kind,
            min_lr_ratio=ratio,
        )
        factor = ref.lr_lambdas[0]
        floor = base * ratio
        same_start = Schedule(
            "wsd", base=base, final=floor, start=floor, warmup=w, total=total, decay=decay, decay_type=kind
        )
        zero_start = Schedule("wsd", base=base, final=floor, warmup=w, total=total, decay=decay, decay_type=kind)
        for t in range(total + 5):
            want = base * factor(t)
            assert same_start(t) == pytest.approx(want, rel=1e-12, abs=1e-18), (w, total, decay, t)
            if t >= w:
                assert zero_start(t) == pytest.approx(want, rel=1e-12, abs=1e-18), (w, total, decay, t)


# --- adopt: the one rule for resuming any scheduled value ---


def _saved(schedule: AnySchedule, target: Schedule, step: int) -> dict[str, Any]:
    return {"step": step, "schedule": describe(schedule), "target": describe(target)}


def test_adopt_same_target_returns_the_saved_schedule_even_an_earlier_replan() -> None:
    target = Schedule("cosine", base=1e-3, final=0.0, warmup=10, total=100)
    assert adopt(target, _saved(target, target, 40)) == target
    earlier = replan(Schedule("cosine", base=1e-3, final=0.0, warmup=10, total=None), 30, target)
    assert adopt(target, _saved(earlier, target, 40)) == earlier  # no second replan, no jump


def test_adopt_another_target_is_refused_listing_the_differences() -> None:
    saved = Schedule("cosine", base=1e-3, final=0.0, warmup=10, total=100)
    wanted = Schedule("cosine", base=1e-3, final=0.0, warmup=10, total=200)
    with pytest.raises(ScheduleMismatch) as err:
        adopt(wanted, _saved(saved, saved, 40))
    assert err.value.changes == ["total: 100 -> 200"]


@pytest.mark.parametrize("step", [0, 9, 10, 40, 99])
def test_adopt_with_replan_continues_from_the_saved_value_without_a_jump(step: int) -> None:
    saved = Schedule("cosine", base=1e-3, final=0.0, warmup=10, total=100)
    wanted = Schedule("cosine", base=1e-3, final=0.0, warmup=10, total=200)
    adopted = adopt(wanted, _saved(saved, saved, step), "replan")
    assert adopted(step) == pytest.approx(saved(step), rel=1e-12, abs=1e-15)
    assert adopted(200) == pytest.approx(0.0, abs=1e-15)


def test_adopt_reads_a_state_saved_before_targets_were_recorded() -> None:
    s = Schedule("linear", base=0.996, final=1.0, warmup=0, total=50)
    assert adopt(s, {"step": 3, "schedule": describe(s)}) == s


# --- steps are integers or refused (issue 23, item 3) ---

STEP_SCHED = Schedule("cosine", base=1e-3, final=1e-5, warmup=10, total=1000)


@pytest.mark.parametrize("bad", [2.5, 3.0, True, False, float("nan"), float("inf"), "3", None])
def test_a_step_that_is_not_an_integer_is_refused(bad: object) -> None:
    with pytest.raises(ScheduleError, match=r"^t=.*: a step must be an integer"):
        STEP_SCHED(bad)  # type: ignore[arg-type]


def test_a_replanned_schedule_refuses_a_non_integer_step_too() -> None:
    after = replan(STEP_SCHED, 500, Schedule("cosine", base=1e-3, final=1e-5, warmup=10, total=2000))
    with pytest.raises(ScheduleError, match="a step must be an integer"):
        after(600.5)  # type: ignore[arg-type]


def test_integer_tensors_and_numpy_integers_give_the_exact_float64_value() -> None:
    torch = pytest.importorskip("torch")
    np = pytest.importorskip("numpy")
    for t in (0, 9, 10, 333, 999, 1000, 5000):
        exact = STEP_SCHED(t)
        assert STEP_SCHED(torch.tensor(t)) == exact  # was float32-rounded: 0.00059095581 for 0.00059095585
        assert STEP_SCHED(torch.tensor(t, dtype=torch.int32)) == exact
        assert STEP_SCHED(np.int64(t)) == exact
    for bad in (torch.tensor(3.0), torch.tensor(True), np.bool_(True), np.float64(3.0)):
        with pytest.raises(ScheduleError, match="a step must be an integer"):
            STEP_SCHED(bad)


@pytest.mark.parametrize("field", ["warmup", "total", "decay"])
def test_a_step_count_past_2_53_is_a_schedule_error_not_an_overflow(field: str) -> None:
    kwargs: dict[str, Any] = {"warmup": 0, "total": 100}
    kwargs[field] = 10**400
    shape = "wsd" if field == "decay" else "cosine"
    with pytest.raises(ScheduleError, match=rf"^{field}=an integer of 401 digits: must be"):
        Schedule(shape, base=1.0, **kwargs)
    kwargs[field] = 2**53 + 1
    with pytest.raises(ScheduleError, match=rf"^{field}=9007199254740993: must be"):
        Schedule(shape, base=1.0, **kwargs)


def test_the_largest_warmup_works() -> None:
    s = Schedule("cosine", base=1.0, warmup=2**53 - 1, total=2**53)
    assert s(2**52) == pytest.approx(0.5) and s(2**53) == 0.0
