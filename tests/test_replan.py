"""Tests for lrsched.schedules.replan: no jump at t0, re-warms, decays from the current value."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from schedule_strategies import PROPS, longer, lr_schedules, schedules

from lrsched.errors import ScheduleError
from lrsched.schedules import Replanned, Schedule, replan


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
@given(lr_schedules(), st.integers(0, 300), st.integers(1, 200), st.integers(1, 800))
def test_extending_a_finished_run_rewarms_to_the_peak(
    current: Schedule, after_end: int, warmup: int, length: int
) -> None:
    """A run at its end value (floor 0: LR 0) re-warms over the warm-up to the peak, then decays to the floor."""
    assert current.total is not None
    assume(current.end_value != current.base)
    t0 = current.total + after_end
    target = longer(current, t0 + warmup + length, warmup=warmup)
    r = replan(current, t0, target)
    assert isinstance(r, Replanned)
    _check_replan(r, current, t0, target)
    t1 = warmup if t0 < warmup else t0 + warmup  # the re-warm ends where the new plan's warm-up does, or W after t0
    assert r(t1) == pytest.approx(target.base, rel=1e-12)  # reaches the peak
    assert max(r(t) for t in range(t0, target.total + 1)) <= target.base * (1 + 1e-12)
    assert "linearly" in r.summary()


@PROPS
@given(lr_schedules(), st.integers(1, 200), st.integers(1, 800), st.data())
def test_a_longer_warmup_asked_during_warmup_reaches_the_peak(
    current: Schedule, extra: int, length: int, data: st.DataObject
) -> None:
    assume(current.warmup >= 2)
    t0 = data.draw(st.integers(1, current.warmup - 1))
    new_warmup = current.warmup + extra
    target = longer(current, new_warmup + length, warmup=new_warmup)
    r = replan(current, t0, target)
    _check_replan(r, current, t0, target)
    assert r(new_warmup) == pytest.approx(target.base, rel=1e-12)  # the peak, at the new warm-up's end
    rising = [r(t) for t in range(t0, new_warmup + 1)]
    assert all(b >= a for a, b in itertools.pairwise(rising))


@PROPS
@given(lr_schedules(), st.floats(0.1, 10.0), st.integers(1, 200), st.integers(1, 800), st.data())
def test_a_new_peak_is_reached(current: Schedule, factor: float, warmup: int, length: int, data: st.DataObject) -> None:
    assume(abs(factor - 1.0) > 1e-6)
    assert current.total is not None
    t0 = data.draw(st.integers(0, current.total + 50))
    target = longer(current, max(t0, current.warmup) + warmup + length, warmup=warmup, base=current.base * factor)
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
        assert r(t) == pytest.approx(want, rel=1e-12, abs=1e-15)
    assert r.base == 5e-4 and r.warmup == 100 and r.total is not None
    assert r.summary() == "from step 400: cosine from 0.0005 to 1e-06 by step 1400, held after"


def test_replan_of_a_decaying_run_keeps_its_current_value() -> None:
    current = Schedule("linear", base=1.0, final=0.0, warmup=10, total=110)
    r = replan(current, 60, Schedule("linear", base=1.0, final=0.0, warmup=10, total=1010))
    assert r(60) == current(60) == pytest.approx(0.5, rel=1e-12, abs=1e-15)
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


def test_a_finished_value_without_a_warm_up_continues_to_its_new_end() -> None:
    """phase5's weight decay (cosine 0.04 -> 0.4) and momentum (0.996 -> 1) have no peak to re-warm to:
    extended after they finished, each holds or moves from its value to the new end, no jump."""
    wd = Schedule("cosine", base=0.04, final=0.4, total=150)
    r = replan(wd, 150, Schedule("cosine", base=0.04, final=0.4, total=300))
    assert [r(t) for t in (149, 150, 225, 300)] == [wd(149), 0.4, 0.4, 0.4]
    momentum = Schedule("cosine", base=0.996, final=1.0, total=150)
    r = replan(momentum, 150, Schedule("cosine", base=0.996, final=0.999, total=300))
    assert r(150) == 1.0 and r(300) == pytest.approx(0.999) and 0.999 < r(225) < 1.0
    assert r.summary() == "from step 150: cosine from 1 to 0.999 by step 300, held after"


def test_a_replan_that_holds_its_value_says_held() -> None:
    """Extending a finished weight decay (0.4 at its end and at the new end) reads "held", not "cosine 0.4 to 0.4"."""
    wd = Schedule("cosine", base=0.04, final=0.4, total=150)
    r = replan(wd, 150, Schedule("cosine", base=0.04, final=0.4, total=300))
    assert r.summary() == "from step 150: 0.4 held"
