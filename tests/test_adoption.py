"""Tests for lrsched.adoption: descriptions round-trip, differences, and the one adoption rule."""

from __future__ import annotations

import json
import math
import pickle
from typing import Any

import pytest
from hypothesis import given
from schedule_strategies import PROPS, any_schedules

from lrsched.adoption import adopt, describe, differences, from_description
from lrsched.errors import ScheduleError, ScheduleMismatch
from lrsched.schedules import AnySchedule, Replanned, Schedule, replan


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
