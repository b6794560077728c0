"""Tests for lrsched.torch_sched: ScheduledLR and ScheduledField in loops, on resume, and in HF Trainer."""

from __future__ import annotations

import itertools
import math
import random
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from lrsched.schedules import Schedule
from lrsched.strategy import UsageError
from lrsched.torch_sched import ScheduledField, ScheduledLR, ScheduleMismatch

MULTS = (1.0, 0.5, 0.1)  # lr_mult of three param groups


def make_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))


def make_optimizer(model: nn.Module, base: float, groups: int) -> torch.optim.Optimizer:
    params = list(model.parameters())
    if groups == 1:
        return torch.optim.SGD(params, lr=base, momentum=0.9)
    chunks = [params[:2], params[2:3], params[3:]]
    return torch.optim.SGD(
        [{"params": p, "lr": base * m} for p, m in zip(chunks, MULTS)],
        lr=base,
        momentum=0.9,
    )


def train_step(model: nn.Module, opt: torch.optim.Optimizer, sched: Any, t: int) -> None:
    g = torch.Generator().manual_seed(1000 + t)
    x = torch.randn(5, 4, generator=g)
    loss = model(x).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    sched.step()


def lrs(opt: torch.optim.Optimizer) -> list[float]:
    return [group["lr"] for group in opt.param_groups]


SCHED = Schedule("cosine", base=0.1, final=0.001, warmup=5, total=40)


def test_sets_lr0_at_construction() -> None:
    model = make_model()
    opt = make_optimizer(model, 0.1, 3)
    sched = ScheduledLR(opt, SCHED)
    assert lrs(opt) == [0.0, 0.0, 0.0]  # seed 000: lr(0) = 0
    assert sched.get_last_lr() == [0.0, 0.0, 0.0]
    no_warmup = Schedule("linear", base=0.1, total=10)
    opt2 = make_optimizer(make_model(), 0.1, 3)
    ScheduledLR(opt2, no_warmup)
    assert lrs(opt2) == pytest.approx([0.1 * m for m in MULTS], rel=1e-12)


@pytest.mark.parametrize("groups", [1, 3])
def test_lr_follows_the_plan_after_each_step(groups: int) -> None:
    model = make_model()
    opt = make_optimizer(model, 0.1, groups)
    sched = ScheduledLR(opt, SCHED)
    mults = MULTS[:groups]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "scheduler.step() before optimizer.step()" or get_lr warnings
        for t in range(1, 50):
            train_step(model, opt, sched, t)
            want = [SCHED(t) * m for m in mults]
            assert lrs(opt) == pytest.approx(want, rel=1e-12, abs=1e-18), t
            assert sched.get_last_lr() == lrs(opt)
            assert sched.last_epoch == t
    assert lrs(opt) == pytest.approx([0.001 * m for m in mults], rel=1e-12)  # held after T


def test_group_ratios_survive_every_step() -> None:
    model = make_model()
    opt = make_optimizer(model, 0.1, 3)
    sched = ScheduledLR(opt, Schedule("cosine_restarts", base=0.1, final=0.0, warmup=3, total=30, cycles=2))
    for t in range(1, 35):
        train_step(model, opt, sched, t)
        first = opt.param_groups[0]["lr"]
        if first > 0:
            for group, m in zip(opt.param_groups, MULTS):
                assert group["lr"] / first == pytest.approx(m, rel=1e-12)


def test_optimizer_lr_other_than_base_is_a_multiplier() -> None:
    """``initial_lr * lr(t) / base``: an optimizer built with lr=1 gets lr(t) / base."""
    opt = torch.optim.SGD(make_model().parameters(), lr=1.0)
    ScheduledLR(opt, Schedule("constant", base=0.5, total=10))
    assert opt.param_groups[0]["lr"] == pytest.approx(1.0)


def test_rejects_a_non_positive_base() -> None:
    opt = torch.optim.SGD(make_model().parameters(), lr=1.0)
    with pytest.raises(UsageError, match="base"):
        ScheduledLR(opt, Schedule("constant", base=0.0, total=10))
    with pytest.raises(UsageError, match="base"):
        ScheduledField(opt, Schedule("constant", base=0.0, total=10), "weight_decay")


# --- resume ---


def run(
    groups: int, schedule: Schedule, steps: int
) -> tuple[list[list[float]], nn.Module, torch.optim.Optimizer, ScheduledLR]:
    """``steps`` updates from a fresh model: the LRs seen (``steps + 1`` rows), model, optimizer, scheduler."""
    model = make_model()
    opt = make_optimizer(model, schedule.base, groups)
    sched = ScheduledLR(opt, schedule)
    seen = [lrs(opt)]
    for t in range(1, steps + 1):
        train_step(model, opt, sched, t)
        seen.append(lrs(opt))
    return seen, model, opt, sched


def save(path: Path, model: nn.Module, opt: torch.optim.Optimizer, sched: Any) -> None:
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict()}, path)


def resume(
    path: Path, groups: int, schedule: Schedule, **kwargs: Any
) -> tuple[nn.Module, torch.optim.Optimizer, ScheduledLR]:
    state = torch.load(path, weights_only=True)
    model = make_model(seed=123)  # different weights: the checkpoint must restore them
    opt = make_optimizer(model, schedule.base, groups)
    sched = ScheduledLR(opt, schedule, **kwargs)  # built before loading, as torch recommends
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    return model, opt, sched


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
    assert sched.last_epoch == stop
    assert lrs(opt) == seen[-1]
    for t in range(stop + 1, steps + 1):
        train_step(model, opt, sched, t)
        seen.append(lrs(opt))
    assert seen == want  # exactly, step by step and group by group
    for a, b in zip(model.parameters(), full_model.parameters()):
        assert torch.equal(a, b)


def _stopped_at(path: Path, schedule: Schedule, stop: int, groups: int = 3) -> list[float]:
    seen, model, opt, sched = run(groups, schedule, stop)
    save(path, model, opt, sched)
    return seen[-1]


def test_a_different_schedule_is_refused_with_its_differences(tmp_path: Path) -> None:
    _stopped_at(tmp_path / "c.pt", SCHED, 12)
    other = Schedule("cosine", base=0.1, final=0.001, warmup=5, total=80)
    with pytest.raises(ScheduleMismatch) as err:
        resume(tmp_path / "c.pt", 3, other)
    message = str(err.value)
    assert "total: 40 -> 80" in message
    assert "replan" in message
    assert "\n" not in message
    assert isinstance(err.value, UsageError)  # so usage_errors turns it into exit status 2
    worse = Schedule("linear", base=0.2, final=0.001, warmup=5, total=40)
    with pytest.raises(ScheduleMismatch) as err:
        resume(tmp_path / "c.pt", 3, worse)
    assert "shape: 'cosine' -> 'linear'" in str(err.value) and "base: 0.1 -> 0.2" in str(err.value)


@pytest.mark.parametrize("groups", [1, 3])
def test_replan_decays_from_the_current_lr_with_no_jump(groups: int, tmp_path: Path) -> None:
    stop = 20
    before = _stopped_at(tmp_path / "c.pt", SCHED, stop, groups)
    longer = Schedule("cosine", base=0.1, final=0.001, warmup=5, total=100)
    model, opt, sched = resume(tmp_path / "c.pt", groups, longer, on_mismatch="replan")
    assert lrs(opt) == pytest.approx(before, rel=1e-12)  # no jump at t0
    assert lrs(opt) == pytest.approx([SCHED(stop) * m for m in MULTS[:groups]], rel=1e-12)
    v0 = SCHED(stop)
    seen = []
    for t in range(stop + 1, 105):
        train_step(model, opt, sched, t)
        p = (min(t, 100) - stop) / (100 - stop)
        want = 0.001 + 0.5 * (v0 - 0.001) * (1 + math.cos(math.pi * p))  # DESIGN section 5
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
    assert set(state) >= {"step", "schedule", "target"}
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
    warm = Schedule("cosine", base=0.1, final=0.0, warmup=10, total=None)
    before = _stopped_at(tmp_path / "c.pt", warm, 4)
    target = Schedule("cosine", base=0.1, final=0.0, warmup=10, total=50)
    model, opt, sched = resume(tmp_path / "c.pt", 3, target, on_mismatch="replan")
    assert lrs(opt) == pytest.approx(before, rel=1e-12)
    assert sched.schedule == target
    for t in range(5, 51):
        train_step(model, opt, sched, t)
        assert opt.param_groups[0]["lr"] == pytest.approx(target(t), rel=1e-12, abs=1e-18)


def test_state_dict_loads_with_weights_only(tmp_path: Path) -> None:
    opt = make_optimizer(make_model(), 0.1, 3)
    sched = ScheduledLR(opt, SCHED)
    torch.save(sched.state_dict(), tmp_path / "s.pt")
    state = torch.load(tmp_path / "s.pt", weights_only=True)
    assert state == sched.state_dict()


# --- ScheduledField ---


def test_scheduled_field_weight_decay_keeps_zero_groups_at_zero(tmp_path: Path) -> None:
    model = make_model()
    params = list(model.parameters())
    opt = torch.optim.AdamW(
        [
            {"params": [params[0], params[2]], "weight_decay": 0.04},  # weights
            {"params": [params[1], params[3]], "weight_decay": 0.0},  # biases
            {"params": [], "weight_decay": 0.02},  # wd_mult 0.5
        ],
        lr=1e-3,
    )
    wd = Schedule("cosine", base=0.04, final=0.4, total=30)  # DINO: cosine 0.04 -> 0.4
    field = ScheduledField(opt, wd, "weight_decay")
    lr = ScheduledLR(opt, Schedule("constant", base=1e-3, total=30))

    def check(t: int) -> None:
        want = 0.4 + 0.5 * (0.04 - 0.4) * (1 + math.cos(math.pi * min(t, 30) / 30))
        assert opt.param_groups[0]["weight_decay"] == pytest.approx(want, rel=1e-12)
        assert opt.param_groups[1]["weight_decay"] == 0.0
        assert opt.param_groups[2]["weight_decay"] == pytest.approx(want / 2, rel=1e-12)
        assert opt.param_groups[0]["lr"] == pytest.approx(1e-3)  # the LR is not touched

    check(0)
    for t in range(1, 12):
        train_step(model, opt, lr, t)
        field.step()
        check(t)
    torch.save({"opt": opt.state_dict(), "field": field.state_dict()}, tmp_path / "f.pt")
    state = torch.load(tmp_path / "f.pt", weights_only=True)

    params2 = list(make_model(seed=5).parameters())
    opt2 = torch.optim.AdamW(
        [
            {"params": [params2[0], params2[2]], "weight_decay": 0.04},
            {"params": [params2[1], params2[3]], "weight_decay": 0.0},
            {"params": [], "weight_decay": 0.02},
        ],
        lr=1e-3,
    )
    field2 = ScheduledField(opt2, wd, "weight_decay")
    opt2.load_state_dict(state["opt"])
    field2.load_state_dict(state["field"])
    opt = opt2  # check() reads `opt`
    assert field2.last_epoch == 11
    check(11)
    for t in range(12, 40):
        field2.step()
        check(t)
    with pytest.raises(ScheduleMismatch, match=r"final: 0\.4 -> 0\.5"):
        ScheduledField(opt2, Schedule("cosine", base=0.04, final=0.5, total=30), "weight_decay").load_state_dict(
            state["field"]
        )


# --- HF Trainer ---


class TinyRegressor(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loss": nn.functional.mse_loss(self.linear(x).squeeze(-1), y)}


class TinyData(torch.utils.data.Dataset):
    def __init__(self, n: int = 16) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 4, generator=g)
        self.y = self.x.sum(dim=1)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "y": self.y[i]}


def test_hf_trainer_logs_the_planned_learning_rate(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = TinyRegressor()
    schedule = Schedule("cosine", base=0.05, final=0.005, warmup=3, total=10)
    opt = torch.optim.SGD(model.parameters(), lr=schedule.base)
    sched = ScheduledLR(opt, schedule)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=12,
        per_device_train_batch_size=4,
        logging_steps=1,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    trainer = transformers.Trainer(model=model, args=args, train_dataset=TinyData(), optimizers=(opt, sched))
    trainer.train()
    logged = [(e["step"], e["learning_rate"]) for e in trainer.state.log_history if "learning_rate" in e]
    assert [step for step, _ in logged] == list(range(1, 13))
    # transformers 5.x reads get_last_lr() after optimizer.step() and *before* lr_scheduler.step():
    # the entry at global step k is the LR that update k used, lr(k - 1).
    for step, value in logged:
        assert value == pytest.approx(schedule(step - 1), rel=1e-12, abs=1e-18), step
    assert logged[0][1] == 0.0  # the first update ran at lr(0) = 0 (seed 000's warm-up)
    assert sched.last_epoch == 12
    assert opt.param_groups[0]["lr"] == pytest.approx(schedule(12), rel=1e-12)


def test_replan_at_step_zero_to_a_new_peak_keeps_each_group_multiplier() -> None:
    """Replanning adopts a schedule with another base: groups follow it times their multiplier."""
    old = Schedule("cosine", base=1e-3, final=0.0, warmup=10, total=100)
    new = Schedule("cosine", base=4e-4, final=0.0, warmup=10, total=200)
    weight, bias = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([{"params": [weight], "lr": 1e-3}, {"params": [bias], "lr": 1e-4}])
    state = ScheduledLR(opt, old).state_dict()

    weight2, bias2 = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    opt2 = torch.optim.SGD([{"params": [weight2], "lr": 4e-4}, {"params": [bias2], "lr": 4e-5}])
    sched2 = ScheduledLR(opt2, new, on_mismatch="replan")
    sched2.load_state_dict(state)
    for _ in range(15):
        opt2.step()
        sched2.step()
    expected = new(15)
    assert opt2.param_groups[0]["lr"] == pytest.approx(expected, rel=1e-12)
    assert opt2.param_groups[1]["lr"] == pytest.approx(expected * 0.1, rel=1e-12)
