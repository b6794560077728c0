"""Tests for the wsd shape (warmup-stable-decay): its plateau, its decay over the last D steps, and
HF transformers' get_wsd_schedule with a floor."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from schedule_strategies import random_cases

from lrsched.errors import ScheduleError
from lrsched.schedules import DECAY_TYPES, Schedule

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
    hf = pytest.importorskip("transformers.optimization")
    torch = pytest.importorskip("torch")
    base = 3e-4
    param = torch.nn.Parameter(torch.zeros(1))
    for w, total in random_cases(40, seed=11 + len(kind)):
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
