"""Tests for lrsched.schedules' shapes: every shape is read from SHAPE_TABLE, with boundary values,
independent oracles (design.md's formulas and HF transformers') and properties.

Replans are in test_replan.py, descriptions and adoption in test_adoption.py, refused input in
test_schedule_inputs.py."""

from __future__ import annotations

import itertools
import math
import random
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from schedule_strategies import PROPS, random_cases, schedules

from lrsched.adoption import describe, from_description
from lrsched.errors import ScheduleError
from lrsched.schedules import DECAY_TYPES, SHAPE_TABLE, SHAPES, Schedule, ShapeRow, replan
from lrsched.strategy import STRATEGIES


def approx(x: float) -> object:
    return pytest.approx(x, rel=1e-12, abs=1e-15)


# --- oracles written from docs/design.md section 3 / note 000, independent of the implementation ---
# One per shape of SHAPE_TABLE (test_every_shape_of_the_table_has_its_oracles): adding a shape adds one here.


def _p(t: int, warmup: int, total: int) -> float:
    return (t - warmup) / (total - warmup)


def constant_oracle(base: float, floor: float, warmup: int, total: int, params: dict[str, Any], t: int) -> float:
    return base


def linear_oracle(base: float, floor: float, warmup: int, total: int, params: dict[str, Any], t: int) -> float:
    return floor + (base - floor) * (1 - _p(t, warmup, total))


def cosine_oracle(base: float, floor: float, warmup: int, total: int, params: dict[str, Any], t: int) -> float:
    return floor + 0.5 * (base - floor) * (1 + math.cos(math.pi * _p(t, warmup, total)))


def cosine_restarts_oracle(base: float, floor: float, warmup: int, total: int, params: dict[str, Any], t: int) -> float:
    frac = _p(t, warmup, total)
    if frac >= 1:
        return floor
    phase = params["cycles"] * frac - math.floor(params["cycles"] * frac)
    return floor + 0.5 * (base - floor) * (1 + math.cos(math.pi * phase))


def wsd_oracle(base: float, floor: float, warmup: int, total: int, params: dict[str, Any], t: int) -> float:
    decay, kind = params["decay"], params["decay_type"]
    if t <= total - decay:
        return base
    left = (total - t) / decay  # 1 at the start of the decay, 0 at T
    if kind == "linear":
        return floor + (base - floor) * left
    if kind == "cosine":
        return floor + 0.5 * (base - floor) * (1 + math.cos(math.pi * (1 - left)))
    return floor + (base - floor) * (1 - math.sqrt(1 - left))


ORACLES = {
    "constant": constant_oracle,
    "linear": linear_oracle,
    "cosine": cosine_oracle,
    "cosine_restarts": cosine_restarts_oracle,
    "wsd": wsd_oracle,
}


def oracle(
    shape: str, base: float, floor: float, warmup: int, total: int | None, params: dict[str, Any], t: int
) -> float:
    """Note 000's warm-up, the shape's formula, the value at T held after it, base for ever when open-ended."""
    if t < warmup:
        return base * t / warmup
    if total is None:
        return base
    return ORACLES[shape](base, floor, warmup, total, params, min(t, total))


def random_parameters(shape: str, rng: random.Random, warmup: int, total: int) -> dict[str, Any]:
    """Random values of the parameters only ``shape`` reads (its SHAPE_TABLE row names them)."""
    out: dict[str, Any] = {}
    for name in SHAPE_TABLE[shape].parameters:
        if name == "cycles":
            out[name] = rng.choice([0.5, 1.0, 2.0, 3.0, round(rng.uniform(0.1, 5.0), 3)])
        elif name == "decay":
            out[name] = rng.randint(1, total - warmup)
        else:
            assert name == "decay_type", f"a new shape parameter {name!r}: give it random values here"
            out[name] = rng.choice(DECAY_TYPES)
    return out


def test_every_shape_of_the_table_has_its_oracles_and_is_a_strategy() -> None:
    assert set(ORACLES) == set(HF_REFERENCES) == set(SHAPE_TABLE) and tuple(SHAPE_TABLE) == SHAPES
    assert ("auto", *SHAPE_TABLE) == STRATEGIES


def step_shape(s: Schedule, t: int, total: int) -> float:
    """A shape a user adds: ``base`` in the first half of the decay, ``final`` after."""
    return s.base if 2 * (t - s.warmup) < total - s.warmup else s.final


def test_a_new_shape_is_one_function_and_one_row(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(SHAPE_TABLE, "step", ShapeRow(step_shape))
    s = Schedule("step", base=1.0, final=0.25, warmup=2, total=10)
    assert [s(t) for t in range(13)] == [0.0, 0.5, 1.0, 1.0, 1.0, 1.0, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25]
    assert Schedule("step", base=1.0, warmup=2)(10**6) == 1.0  # open-ended: base for ever
    assert from_description(describe(s)) == s
    after = replan(s, 4, Schedule("step", base=1.0, final=0.25, warmup=2, total=20))
    assert after(4) == s(4)
    with pytest.raises(ScheduleError, match=r"^cycles=2.0: only for cosine_restarts, not step"):
        Schedule("step", base=1.0, total=10, cycles=2)


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


# --- oracles over many random (W, T) and shape parameters ---


@pytest.mark.parametrize("shape", SHAPES)
def test_matches_independent_formula_step_by_step(shape: str) -> None:
    rng = random.Random(len(shape))
    for w, total in random_cases(60, seed=len(shape)):
        base = rng.uniform(1e-6, 1e-2)
        floor = rng.choice([0.0, base * rng.uniform(0, 1)])
        params = random_parameters(shape, rng, w, total)
        s = Schedule(shape, base=base, final=floor, warmup=w, total=total, **params)
        for t in range(total + 3):
            want = oracle(shape, base, floor, w, total, params, t)
            assert s(t) == pytest.approx(want, rel=1e-9, abs=base * 1e-12), (w, total, params, t)


def test_seed_000_open_ended_formula() -> None:
    s = Schedule("cosine", base=5e-4, final=1e-6, warmup=2500, total=None)
    for t in [0, 1, 1249, 2499, 2500, 2501, 10**6]:
        assert s(t) == approx(oracle("cosine", 5e-4, 1e-6, 2500, None, {}, t))


def _hf_lambdas():  # type: ignore[no-untyped-def]
    transformers_optimization = pytest.importorskip("transformers.optimization")
    torch = pytest.importorskip("torch")
    return transformers_optimization, torch


def _hf_wsd(hf: Any, opt: Any, s: Schedule) -> Any:
    return hf.get_wsd_schedule(
        opt, num_warmup_steps=s.warmup, num_decay_steps=s.decay, num_training_steps=s.total, decay_type=s.decay_type
    )


HF_REFERENCES = {  # HF transformers' function for each shape of the table, with min_lr = 0
    "constant": lambda hf, opt, s: hf.get_constant_schedule_with_warmup(opt, num_warmup_steps=s.warmup),
    "linear": lambda hf, opt, s: hf.get_linear_schedule_with_warmup(opt, s.warmup, s.total),
    "cosine": lambda hf, opt, s: hf.get_cosine_schedule_with_warmup(opt, s.warmup, s.total),
    "cosine_restarts": lambda hf, opt, s: hf.get_cosine_with_hard_restarts_schedule_with_warmup(
        opt, s.warmup, s.total, num_cycles=s.cycles
    ),
    "wsd": _hf_wsd,
}


@pytest.mark.parametrize("shape", SHAPES)
def test_matches_hf_transformers_schedules(shape: str) -> None:
    hf, torch = _hf_lambdas()
    base, rng = 3e-4, random.Random(7 + len(shape))
    param = torch.nn.Parameter(torch.zeros(1))
    for w, total in random_cases(40, seed=7 + len(shape)):
        opt = torch.optim.SGD([param], lr=base)
        ours = Schedule(shape, base=base, final=0.0, warmup=w, total=total, **random_parameters(shape, rng, w, total))
        factor = HF_REFERENCES[shape](hf, opt, ours).lr_lambdas[0]
        for t in range(total + 1):  # HF differs after T; ours holds
            assert ours(t) == pytest.approx(base * factor(t), rel=1e-9, abs=1e-18), (ours, t)


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
