"""Tests for lrsched.schedules: boundary values, independent oracles, properties, round-trips."""

from __future__ import annotations

import itertools
import json
import math
import pickle
import random
from fractions import Fraction

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from lrsched.schedules import (
    SHAPES,
    Replanned,
    Schedule,
    ScheduleError,
    describe,
    differences,
    from_description,
    replan,
)

PROPS = settings(max_examples=200)


def approx(x: float) -> object:
    return pytest.approx(x, rel=1e-12, abs=1e-15)


# --- an oracle written from DESIGN section 3 / seed 000, independent of the implementation ---


def oracle(shape: str, base: float, floor: float, warmup: int, total: int | None, cycles: float, t: int) -> float:
    """Seed 000's warm-up + decay, the DESIGN's shapes, hold after T, base for ever when open-ended."""
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
    s = Schedule(shape, base=2e-4, final=1e-6, warmup=0, total=50, cycles=2.0)
    assert s(0) == approx(2e-4)
    assert s(1) <= s(0)


@pytest.mark.parametrize("shape", SHAPES)
def test_open_ended_holds_base_after_warmup(shape: str) -> None:
    s = Schedule(shape, base=5e-4, final=1e-6, warmup=25, total=None, cycles=2.0)
    assert s.open_ended
    assert s(0) == 0.0
    assert [s(t) for t in range(25)] == [approx(5e-4 * t / 25) for t in range(25)]
    for t in (25, 26, 1000, 10**7):
        assert s(t) == 5e-4
    assert s.end_value == 5e-4


@pytest.mark.parametrize("shape", ["linear", "cosine", "cosine_restarts"])
def test_floor_is_reached_and_never_undercut(shape: str) -> None:
    s = Schedule(shape, base=1e-3, final=2e-4, warmup=10, total=110, cycles=3.0)
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


@pytest.mark.parametrize("shape", SHAPES)
def test_matches_independent_formula_step_by_step(shape: str) -> None:
    rng = random.Random(hash(shape) % 1000)
    for w, total, cycles in _random_cases(60, seed=len(shape)):
        base = rng.uniform(1e-6, 1e-2)
        floor = rng.choice([0.0, base * rng.uniform(0, 1)])
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


@pytest.mark.parametrize("shape", SHAPES)
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
    return Schedule(draw(shapes), base=base, final=final, warmup=warmup, total=total, cycles=draw(quarter_cycles))


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
    new_total = t0 + draw(st.integers(1, 500))
    target = Schedule(s.shape, base=s.base, final=s.final, warmup=s.warmup, total=new_total, cycles=s.cycles)
    return replan(s, t0, target)


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


@PROPS
@given(schedules(open_ended=True) | schedules(), st.integers(1, 500), st.integers(1, 1000), st.data())
def test_replan_has_no_jump_and_reaches_final(
    current: Schedule, after_warmup: int, length: int, data: st.DataObject
) -> None:
    t0 = current.warmup + after_warmup
    new_total = t0 + length
    target = Schedule("cosine", base=current.base, final=current.final, warmup=current.warmup, total=new_total)
    r = replan(current, t0, target)
    assert r(t0) == approx(current(t0))  # no jump (up to rounding: the DESIGN formula at t0)
    for t in data.draw(st.lists(st.integers(0, t0 - 1), max_size=10)):
        assert r(t) == current(t)  # the past is unchanged
    assert r(new_total) == approx(current.final)  # reaches final at T
    assert r(new_total + 123) == r(new_total)  # and holds it
    values = [r(t) for t in range(t0, new_total + 1)]
    if current(t0) >= current.final:
        assert all(b <= a * (1 + 1e-12) for a, b in itertools.pairwise(values))


@PROPS
@given(schedules(open_ended=True), st.integers(0, 300), st.integers(1, 1000))
def test_replan_during_warmup_follows_the_same_line(current: Schedule, t0: int, length: int) -> None:
    assume(t0 <= current.warmup)
    target = Schedule(
        "cosine", base=current.base, final=current.final, warmup=current.warmup, total=current.warmup + length
    )
    r = replan(current, t0, target)
    assert r(t0) == approx(current(t0))
    assert r(target.total) == approx(target.final)


def test_replan_during_warmup_with_a_changed_warmup_does_not_jump() -> None:
    current = Schedule("cosine", base=1.0, final=0.0, warmup=100, total=None)
    target = Schedule("cosine", base=1.0, final=0.0, warmup=200, total=1000)
    r = replan(current, 50, target)
    assert r(50) == current(50) == 0.5


# --- replan follows DESIGN section 5's formula ---


def test_replan_formula_from_design() -> None:
    current = Schedule("cosine", base=5e-4, final=1e-6, warmup=100, total=None)  # open-ended
    t0, total, floor = 400, 1400, 1e-6
    r = replan(current, t0, Schedule("cosine", base=5e-4, final=floor, warmup=100, total=total))
    assert isinstance(r, Replanned)
    v0 = current(t0)
    for t in range(t0, total + 1, 17):
        want = floor + 0.5 * (v0 - floor) * (1 + math.cos(math.pi * (t - t0) / (total - t0)))
        assert r(t) == approx(want)
    assert r.base == 5e-4 and r.warmup == 100 and not r.open_ended


def test_replan_of_a_decaying_run_keeps_its_current_value() -> None:
    current = Schedule("linear", base=1.0, final=0.0, warmup=10, total=110)
    r = replan(current, 60, Schedule("linear", base=1.0, final=0.0, warmup=10, total=1010))
    assert r(60) == current(60) == approx(0.5)
    assert r(1010) == 0.0


def test_replan_to_open_ended_holds_current_value() -> None:
    current = Schedule("cosine", base=1.0, final=0.0, warmup=10, total=110)
    r = replan(current, 60, Schedule("cosine", base=1.0, final=0.0, warmup=10, total=None))
    assert r.open_ended
    assert r(60) == r(10**6) == current(60)
    assert r.end_value == current(60)


def test_replan_total_must_be_after_t0() -> None:
    current = Schedule("cosine", base=1.0, warmup=10, total=None)
    with pytest.raises(ScheduleError, match="total"):
        replan(current, 60, Schedule("cosine", base=1.0, warmup=10, total=60))
    with pytest.raises(ScheduleError):
        Replanned(before=current, t0=60, total=50, final=0.0)


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

    code = "import sys, lrsched.schedules, lrsched.strategy, lrsched.args; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
