"""Tests for what a Schedule refuses, and steps and counts as integers of any kind."""

from __future__ import annotations

import json
from fractions import Fraction
from typing import Any

import pytest

from lrsched.adoption import describe
from lrsched.errors import ScheduleError
from lrsched.schedules import Replanned, Schedule, replan

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
