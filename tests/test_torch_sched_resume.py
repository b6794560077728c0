"""Tests for resuming ScheduledLR from a checkpoint: the uninterrupted sequence, refusals, replans."""

from __future__ import annotations

import itertools
import math
import random
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch_sched_helpers import MULTS, SCHED, lrs, make_model, make_optimizer, save, train_step

from lrsched.errors import UsageError
from lrsched.schedules import Schedule
from lrsched.torch_sched import ScheduledLR, ScheduleMismatch


def run(
    groups: int, schedule: Schedule, steps: int
) -> tuple[list[list[float]], nn.Module, torch.optim.Optimizer, ScheduledLR]:
    """``steps`` updates from a fresh model: the LRs seen (``steps + 1`` rows), model, optimizer, scheduler."""
    model = make_model()
    opt = make_optimizer(model, schedule.base, groups)
    sched = ScheduledLR(opt, schedule, per_group="lr_mult" if groups > 1 else "same")
    seen = [lrs(opt)]
    for t in range(1, steps + 1):
        train_step(model, opt, sched, t)
        seen.append(lrs(opt))
    return seen, model, opt, sched


def resume(
    path: Path, groups: int, schedule: Schedule, **kwargs: Any
) -> tuple[nn.Module, torch.optim.Optimizer, ScheduledLR]:
    state = torch.load(path, weights_only=True)
    model = make_model(seed=123)  # different weights: the checkpoint must restore them
    opt = make_optimizer(model, schedule.base, groups)
    mode = "lr_mult" if groups > 1 else "same"
    sched = ScheduledLR(opt, schedule, per_group=mode, **kwargs)  # built before loading, as torch recommends
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    return model, opt, sched


def _stopped_at(path: Path, schedule: Schedule, stop: int, groups: int = 3) -> list[float]:
    seen, model, opt, sched = run(groups, schedule, stop)
    save(path, model, opt, sched)
    return seen[-1]


@pytest.mark.parametrize("groups", [1, 3])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_resume_gives_the_uninterrupted_sequence(groups: int, seed: int, tmp_path: Path) -> None:
    steps = 45
    stop = random.Random(seed * 10 + groups).randint(1, steps - 1)
    want, full_model, _, _ = run(groups, SCHED, steps)
    seen, model, opt, sched = run(groups, SCHED, stop)
    save(tmp_path / "ckpt.pt", model, opt, sched)
    del model, opt, sched
    model, opt, sched = resume(tmp_path / "ckpt.pt", groups, SCHED)
    assert sched.last_epoch == stop and lrs(opt) == seen[-1]
    for t in range(stop + 1, steps + 1):
        train_step(model, opt, sched, t)
        seen.append(lrs(opt))
    assert seen == want  # exactly, step by step and group by group
    for a, b in zip(model.parameters(), full_model.parameters()):
        assert torch.equal(a, b)


def test_a_different_schedule_is_refused_with_its_differences(tmp_path: Path) -> None:
    _stopped_at(tmp_path / "c.pt", SCHED, 12)
    with pytest.raises(ScheduleMismatch) as err:
        resume(tmp_path / "c.pt", 3, Schedule("cosine", base=0.1, final=0.001, warmup=5, total=80))
    message = str(err.value)
    assert "total: 40 -> 80" in message and "replan" in message and "\n" not in message
    assert isinstance(err.value, UsageError)  # so usage_errors turns it into exit status 2
    with pytest.raises(ScheduleMismatch) as err:
        resume(tmp_path / "c.pt", 3, Schedule("linear", base=0.2, final=0.001, warmup=5, total=40))
    assert "shape: 'cosine' -> 'linear'" in str(err.value) and "base: 0.1 -> 0.2" in str(err.value)


@pytest.mark.parametrize("groups", [1, 3])
def test_replan_decays_from_the_current_lr_with_no_jump(groups: int, tmp_path: Path) -> None:
    stop = 20
    before = _stopped_at(tmp_path / "c.pt", SCHED, stop, groups)
    longer = Schedule("cosine", base=0.1, final=0.001, warmup=5, total=100)
    model, opt, sched = resume(tmp_path / "c.pt", groups, longer, on_mismatch="replan")
    assert lrs(opt) == before  # no jump at t0
    v0, seen = SCHED(stop), []
    for t in range(stop + 1, 105):
        train_step(model, opt, sched, t)
        p = (min(t, 100) - stop) / (100 - stop)
        want = 0.001 + 0.5 * (v0 - 0.001) * (1 + math.cos(math.pi * p))  # docs/design.md section 5
        assert lrs(opt) == pytest.approx([want * m for m in MULTS[:groups]], rel=1e-9), t
        seen.append(opt.param_groups[0]["lr"])
    assert all(b <= a for a, b in itertools.pairwise(seen))
    assert seen[-1] == pytest.approx(0.001, rel=1e-12)


def test_open_ended_run_given_an_end(tmp_path: Path) -> None:
    open_ended = Schedule("cosine", base=0.1, final=0.001, warmup=5, total=None)
    _stopped_at(tmp_path / "c.pt", open_ended, 30)
    ended = Schedule("cosine", base=0.1, final=0.001, warmup=5, total=60)
    with pytest.raises(ScheduleMismatch, match="total: None -> 60"):
        resume(tmp_path / "c.pt", 3, ended)
    model, opt, sched = resume(tmp_path / "c.pt", 3, ended, on_mismatch="replan")
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1, rel=1e-12)  # still the held peak: no jump
    for t in range(31, 61):
        train_step(model, opt, sched, t)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.001, rel=1e-12)


def test_second_resume_after_a_replan_with_the_same_flags(tmp_path: Path) -> None:
    _stopped_at(tmp_path / "a.pt", SCHED, 20)
    longer = Schedule("cosine", base=0.1, final=0.001, warmup=5, total=100)
    model, opt, sched = resume(tmp_path / "a.pt", 3, longer, on_mismatch="replan")
    for t in range(21, 41):
        train_step(model, opt, sched, t)
    state = sched.state_dict()
    assert state["schedule"]["type"] == "Replanned" and state["target"]["total"] == 100
    save(tmp_path / "b.pt", model, opt, sched)
    want = []
    for t in range(41, 70):  # the uninterrupted continuation
        train_step(model, opt, sched, t)
        want.append(lrs(opt))
    for mode in ("error", "replan"):  # the same flags again: no error, the same replanned path
        model2, opt2, sched2 = resume(tmp_path / "b.pt", 3, longer, on_mismatch=mode)
        assert sched2.schedule == sched.schedule
        seen = []
        for t in range(41, 70):
            train_step(model2, opt2, sched2, t)
            seen.append(lrs(opt2))
        assert seen == want
    with pytest.raises(ScheduleMismatch, match="total: 100 -> 200"):  # a new horizon again is still refused
        resume(tmp_path / "b.pt", 3, Schedule("cosine", base=0.1, final=0.001, warmup=5, total=200))


def test_replan_while_warming_up_keeps_the_line(tmp_path: Path) -> None:
    before = _stopped_at(tmp_path / "c.pt", Schedule("cosine", base=0.1, final=0.0, warmup=10, total=None), 4)
    target = Schedule("cosine", base=0.1, final=0.0, warmup=10, total=50)
    model, opt, sched = resume(tmp_path / "c.pt", 3, target, on_mismatch="replan")
    assert lrs(opt) == before and sched.schedule == target
    for t in range(5, 51):
        train_step(model, opt, sched, t)
        assert opt.param_groups[0]["lr"] == target(t)


def test_replanned_says_what_the_replan_does(tmp_path: Path) -> None:
    finished = Schedule("cosine", base=0.1, final=0.0, warmup=5, total=40)
    _stopped_at(tmp_path / "c.pt", finished, 40, groups=1)
    longer = Schedule("cosine", base=0.1, final=0.0, warmup=5, total=80)
    model, opt, sched = resume(tmp_path / "c.pt", 1, longer, on_mismatch="replan")
    assert sched.replanned == "from step 40: 0 -> 0.1 linearly by step 45, then cosine to 0 by step 80, held after"
    for t in range(41, 46):
        train_step(model, opt, sched, t)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)  # re-warmed: the extension trains
    _, _, same = resume(tmp_path / "c.pt", 1, finished)
    assert same.replanned is None


def test_replan_at_step_zero_to_a_new_peak_keeps_each_group_ratio() -> None:
    """``per_group="ratio"``: replanning adopts a schedule with another base; groups keep their ratios."""
    old = Schedule("cosine", base=1e-3, final=0.0, warmup=10, total=100)
    new = Schedule("cosine", base=4e-4, final=0.0, warmup=10, total=200)
    opt = torch.optim.SGD([{"params": [nn.Parameter(torch.zeros(2))], "lr": 1e-3}, {"params": [], "lr": 1e-4}])
    state = ScheduledLR(opt, old, per_group="ratio").state_dict()
    opt2 = torch.optim.SGD([{"params": [nn.Parameter(torch.zeros(2))], "lr": 4e-4}, {"params": [], "lr": 4e-5}])
    sched2 = ScheduledLR(opt2, new, per_group="ratio", on_mismatch="replan")
    sched2.load_state_dict(state)
    for _ in range(15):
        opt2.step()
        sched2.step()
    assert lrs(opt2) == pytest.approx([new(15), new(15) * 0.1], rel=1e-12)


def test_numpy_steps_and_schedules_work_in_the_scheduler() -> None:
    np = pytest.importorskip("numpy")
    opt = make_optimizer(make_model(), 0.1, 1)
    sched = ScheduledLR(opt, Schedule("linear", base=0.1, warmup=np.int64(3), total=np.int64(10)))
    state = sched.state_dict()
    state["step"] = np.int64(5)
    sched.load_state_dict(state)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 5 / 7)
