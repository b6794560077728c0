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

from lrsched.errors import UsageError
from lrsched.schedules import Schedule
from lrsched.torch_sched import (
    ForeignState,
    OutsideChangeWarning,
    PeakMismatchWarning,
    ScheduledField,
    ScheduledLR,
    ScheduledValue,
    ScheduleMismatch,
)

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
    assert lrs(opt) == [0.0, 0.0, 0.0]  # note 000: lr(0) = 0
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


def test_matches_torch_sequential_linear_then_cosine_in_every_group() -> None:
    """Oracle: torch's own SequentialLR(LinearLR, CosineAnnealingLR), the peer bench/overhead.py times."""
    base, warm, total = 5e-4, 100, 1000
    opts = [torch.optim.SGD([{"params": [nn.Parameter(torch.zeros(1))], "lr": base * m} for m in MULTS]) for _ in "ab"]
    ours = ScheduledLR(opts[0], Schedule("cosine", base=base, final=0.0, warmup=warm, total=total))
    linear = torch.optim.lr_scheduler.LinearLR(opts[1], start_factor=1e-12, total_iters=warm)  # cannot start at 0
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opts[1], T_max=total - warm)
    peer = torch.optim.lr_scheduler.SequentialLR(opts[1], [linear, cosine], milestones=[warm])
    for t in range(total + 1):
        assert lrs(opts[0]) == pytest.approx(lrs(opts[1]), rel=1e-9, abs=1e-12 * base), t
        for opt, sched in zip(opts, (ours, peer)):
            opt.step()
            sched.step()


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
    with pytest.warns(PeakMismatchWarning):
        ScheduledLR(opt, Schedule("constant", base=0.5, total=10))
    assert opt.param_groups[0]["lr"] == pytest.approx(1.0)


# --- issue 11: the peak the run trains at, errors in the library's words ---


def test_a_peak_other_than_the_schedule_s_is_warned_once_naming_both() -> None:
    """``AdamW(params)`` (lr 1e-3) with a 5e-4 schedule trains at 1e-3: said once, at construction."""
    opt = torch.optim.AdamW(make_model().parameters())
    with pytest.warns(PeakMismatchWarning) as caught:
        sched = ScheduledLR(opt, Schedule("cosine", base=5e-4, warmup=2, total=10))
        for _ in range(5):
            opt.step()
            sched.step()
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "base 0.0005" in message and "group lrs: 0.001" in message and "peaks at 0.001" in message
    assert 'group_lr="lr_mult"' in message
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3 * sched.schedule(5) / 5e-4)  # what was warned


def test_no_warning_when_one_group_is_at_the_base() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ScheduledLR(make_optimizer(make_model(), 0.1, 3), SCHED)  # groups 0.1, 0.05, 0.01


def test_lr_mult_groups_take_the_lr_from_the_schedule() -> None:
    """DINOv2's convention, opt-in: the schedule carries the LR, groups only ``lr_mult``."""
    params = list(make_model().parameters())
    opt = torch.optim.AdamW([{"params": params[:2], "lr_mult": 1.0}, {"params": params[2:], "lr_mult": 0.25}])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sched = ScheduledLR(opt, SCHED, group_lr="lr_mult")
    for t in range(1, 45):
        opt.step()
        sched.step()
        assert lrs(opt) == pytest.approx([SCHED(t), 0.25 * SCHED(t)], rel=1e-12, abs=1e-18)
    with pytest.raises(UsageError, match="group_lr='other'"):
        ScheduledLR(opt, SCHED, group_lr="other")  # type: ignore[arg-type]


def test_a_foreign_state_is_refused_in_one_sentence() -> None:
    opt = torch.optim.SGD(make_model().parameters(), lr=0.1)
    lambda_state = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0).state_dict()
    for cls, build in ((ScheduledLR, lambda: ScheduledLR(opt, SCHED)), (ScheduledField, None)):
        sched = build() if build else ScheduledField(opt, Schedule("constant", base=0.1, total=10), "weight_decay")
        with pytest.raises(ForeignState) as err:
            sched.load_state_dict(lambda_state)
        message = str(err.value)
        assert message.startswith(f"{cls.__name__}.load_state_dict: not a {cls.__name__} state")
        assert "LambdaLR" in message and "\n" not in message and message.count(". ") == 0
        assert isinstance(err.value, UsageError)


def test_a_mismatch_names_the_library_argument() -> None:
    opt = torch.optim.SGD(make_model().parameters(), lr=0.1)
    state = ScheduledLR(opt, SCHED).state_dict()
    other = Schedule("cosine", base=0.1, final=0.001, warmup=5, total=80)
    with pytest.raises(ScheduleMismatch) as err:
        ScheduledLR(opt, other).load_state_dict(state)
    assert 'on_mismatch="replan"' in str(err.value) and "--replan" not in str(err.value)


def test_a_missing_field_is_named() -> None:
    opt = torch.optim.AdamW(make_model().parameters(), lr=0.1)
    with pytest.raises(UsageError, match="ScheduledField: param group 0 has no field 'momentum' \\(it has lr, betas"):
        ScheduledField(opt, Schedule("constant", base=0.9, total=10), "momentum")


def test_numpy_steps_and_schedules_work_in_the_scheduler() -> None:
    np = pytest.importorskip("numpy")
    opt = make_optimizer(make_model(), 0.1, 1)
    sched = ScheduledLR(opt, Schedule("linear", base=0.1, warmup=np.int64(3), total=np.int64(10)))
    state = sched.state_dict()
    state["step"] = np.int64(5)
    sched.load_state_dict(state)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 5 / 7)


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
    assert field2.t == 11
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
    assert logged[0][1] == 0.0  # the first update ran at lr(0) = 0 (note 000's warm-up)
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


# --- Accelerate with 2 processes (README, "The library": patterns A and B) ---


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("pattern", ["A", "B", "naive"])
def test_accelerate_two_processes_lr_per_update(pattern: str, tmp_path: Path) -> None:
    """Under ``torchrun --nproc_per_node 2`` (CPU, gloo) each documented pattern trains at the schedule's LR.

    ``naive`` (the scheduler prepared, T counted per rank) is the trap: Accelerate steps it twice per update.
    """
    import json
    import subprocess
    import sys

    from accelerate_child import UPDATES, schedule
    from helpers import child_env

    pytest.importorskip("accelerate")
    child = Path(__file__).with_name("accelerate_child.py")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port())]
    done = subprocess.run([*cmd, str(child), pattern, str(tmp_path)], env=child_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{k}.json").read_text()) for k in (0, 1)]
    assert ranks[0] == ranks[1] and ranks[0]["processes"] == 2
    used = ranks[0]["lr"]
    per_rank = schedule("A", 1)
    want = [per_rank(k) for k in range(UPDATES)]
    if pattern == "naive":
        assert used == pytest.approx([per_rank(2 * k) for k in range(UPDATES)], rel=1e-12, abs=1e-15)
        assert used != pytest.approx(want)  # ends its schedule at half time
        return
    assert used == pytest.approx(want, rel=1e-12, abs=1e-15)
    if pattern == "B":
        accelerate_way = schedule("B", 2)
        assert used == pytest.approx([accelerate_way(2 * k) for k in range(UPDATES)], rel=1e-12, abs=1e-15)


def test_scheduled_value_is_saved_and_resumed_as_the_lr_is() -> None:
    """DINO's teacher momentum: a value outside the optimizer, same state form, same rule, no jump on replan."""
    open_ended = Schedule("cosine", base=0.996, final=1.0, warmup=0, total=None, start=0.996)
    momentum = ScheduledValue(open_ended)
    for _ in range(30):
        momentum.step()
    state = momentum.state_dict()
    assert set(state) == {"step", "schedule", "target"} and state["step"] == 30
    ended = Schedule("cosine", base=0.996, final=1.0, warmup=0, total=100, start=0.996)
    with pytest.raises(ScheduleMismatch, match="total: None -> 100"):
        ScheduledValue(ended).load_state_dict(state)
    resumed = ScheduledValue(ended, on_mismatch="replan")
    resumed.load_state_dict(state)
    assert resumed.t == 30 and resumed.value == pytest.approx(momentum.value, rel=1e-12)
    assert resumed.replanned is not None
    for _ in range(70):
        resumed.step()
    assert resumed.value == pytest.approx(1.0, rel=1e-12)


# --- issue 23: plateau cuts compose, no false warnings, live group fields, repr ---


def _plateau_run(steps: int, losses: list[float]) -> tuple[list[float], ScheduledLR, torch.optim.Optimizer]:
    """torch's real ReduceLROnPlateau (factor 0.1, patience 0) stepped after ScheduledLR each update."""
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=SCHED.base)
    sched = ScheduledLR(opt, SCHED)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.1, patience=0)
    seen = []
    for t in range(steps):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
        plateau.step(losses[t])
    return seen, sched, opt


def test_a_plateau_cut_composes_with_the_schedule_and_is_not_undone() -> None:
    """Before: lr 1e-3, 1e-3, 1e-4, 1e-3, 1e-4... Now the schedule times the product of the cuts."""
    losses = [1.0, 0.9, 0.9, 0.8, 0.7, 0.7, 0.7] + [0.6 - 0.01 * k for k in range(20)]  # flat at 2, 5, 6
    seen, sched, _ = _plateau_run(25, losses)
    # after update k's plateau step the cut applies from update k + 1 on
    cut_after = {3: 0.1, 4: 0.1, 5: 0.1, 6: 0.01}
    for t in range(1, 25):
        cut = cut_after.get(t, 0.001 if t > 6 else 1.0)
        assert seen[t] == pytest.approx(SCHED(t) * cut, rel=1e-12, abs=1e-18), t
    assert sched.cuts == pytest.approx([0.001], rel=1e-12)


def test_a_plateau_cut_survives_state_dict() -> None:
    losses = [1.0, 1.0] + [0.9 - 0.01 * k for k in range(30)]  # one flat update
    _, sched, _ = _plateau_run(10, losses)
    state = sched.state_dict()
    assert state["cuts"] == pytest.approx([0.1], rel=1e-12)
    opt2 = torch.optim.SGD(make_model().parameters(), lr=SCHED.base)
    resumed = ScheduledLR(opt2, SCHED)
    resumed.load_state_dict(state)
    for t in range(11, 20):
        opt2.step()
        resumed.step()
        assert opt2.param_groups[0]["lr"] == pytest.approx(SCHED(t) * 0.1, rel=1e-12), t


def test_a_rise_from_outside_is_undone_with_one_warning() -> None:
    opt = torch.optim.SGD(make_model().parameters(), lr=SCHED.base)
    sched = ScheduledLR(opt, SCHED)
    with pytest.warns(OutsideChangeWarning) as caught:
        for t in range(1, 8):
            opt.param_groups[0]["lr"] *= 10  # a rise every step: not a cut
            opt.step()
            sched.step()
            assert opt.param_groups[0]["lr"] == pytest.approx(SCHED(t), rel=1e-12)
    assert len(caught) == 1 and "param group 0's lr was changed outside the scheduler" in str(caught[0].message)


def test_a_tensor_lr_at_the_base_is_not_a_peak_mismatch() -> None:
    """A float32 tensor lr holds 1e-3 as 0.0010000000475: that is the base, not 'a peak at 0.001, not 0.001'."""
    opt = torch.optim.Adam(make_model().parameters(), lr=torch.tensor(1e-3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sched = ScheduledLR(opt, Schedule("cosine", base=1e-3, warmup=2, total=10))
        opt.step()
        sched.step()
    opt = torch.optim.Adam(make_model().parameters(), lr=torch.tensor(2e-3))
    with pytest.warns(PeakMismatchWarning, match="peaks at 0.002, not 0.001"):
        ScheduledLR(opt, Schedule("cosine", base=1e-3, warmup=2, total=10))


def test_replan_to_a_new_peak_brought_by_load_state_dict_is_not_warned() -> None:
    """The optimizer is rebuilt at the old peak (as the checkpoint had it); loading the state brings the new one."""
    old = Schedule("cosine", base=1e-3, warmup=2, total=20)
    new = Schedule("cosine", base=2e-3, warmup=2, total=40)
    opt = torch.optim.SGD(make_model().parameters(), lr=old.base)
    sched = ScheduledLR(opt, old)
    for _ in range(10):
        opt.step()
        sched.step()
    state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}
    opt2 = torch.optim.SGD(make_model().parameters(), lr=old.base)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resumed = ScheduledLR(opt2, new, on_mismatch="replan")
        opt2.load_state_dict(state["optimizer"])
        resumed.load_state_dict(state["scheduler"])
        for _ in range(5):
            opt2.step()
            resumed.step()
    assert resumed.replanned is not None


def test_replan_without_a_state_still_warns_at_the_first_step() -> None:
    opt = torch.optim.SGD(make_model().parameters(), lr=1e-3)
    sched = ScheduledLR(opt, Schedule("cosine", base=2e-3, warmup=2, total=40), on_mismatch="replan")
    opt.step()
    with pytest.warns(PeakMismatchWarning, match="peaks at 0.001, not 0.002"):
        sched.step()


def test_lr_mult_is_read_at_every_step() -> None:
    params = list(make_model().parameters())
    opt = torch.optim.SGD([{"params": params[:2], "lr_mult": 1.0}, {"params": params[2:], "lr_mult": 0.5}])
    sched = ScheduledLR(opt, SCHED, group_lr="lr_mult")
    for _ in range(1, 6):
        opt.step()
        sched.step()
    opt.param_groups[1]["lr_mult"] = 0.1  # e.g. unfreezing a backbone at a smaller rate
    for t in range(6, 12):
        opt.step()
        sched.step()
        assert lrs(opt) == pytest.approx([SCHED(t), 0.1 * SCHED(t)], rel=1e-12), t


def test_a_state_for_another_number_of_groups_is_refused_at_load() -> None:
    state = ScheduledLR(make_optimizer(make_model(), SCHED.base, 3), SCHED).state_dict()
    opt = make_optimizer(make_model(), SCHED.base, 1)
    sched = ScheduledLR(opt, SCHED)
    with pytest.raises(UsageError) as err:
        sched.load_state_dict(state)
    message = str(err.value)
    assert "saved for 3 param group(s), but the optimizer has 1" in message and "\n" not in message
    field_state = ScheduledField(make_optimizer(make_model(), SCHED.base, 3), SCHED, "momentum").state_dict()
    with pytest.raises(UsageError, match="saved for 3 param group"):
        ScheduledField(opt, SCHED, "momentum").load_state_dict(field_state)


def test_repr_shows_the_schedule_and_the_step() -> None:
    opt = torch.optim.SGD(make_model().parameters(), lr=SCHED.base)
    sched = ScheduledLR(opt, SCHED)
    for _ in range(3):
        opt.step()
        sched.step()
    assert repr(sched) == f"ScheduledLR({SCHED!r}, step=3)"
    assert repr(ScheduledValue(SCHED)) == f"ScheduledValue({SCHED!r}, step=0)"
    assert "field='momentum'" in repr(ScheduledField(opt, SCHED, "momentum"))


# --- issue 22: ScheduledLR is the "lr" case of the one field scheduler ---


def test_scheduled_lr_and_a_scheduled_lr_field_agree_at_every_step() -> None:
    """The same closed form: ``ScheduledField(opt, s, "lr")`` sets what ``ScheduledLR(opt, s)`` sets, bit for bit."""
    by_lr = make_optimizer(make_model(), SCHED.base, 3)
    by_field = make_optimizer(make_model(), SCHED.base, 3)
    sched, field = ScheduledLR(by_lr, SCHED), ScheduledField(by_field, SCHED, "lr")
    for _ in range(SCHED.total + 3):
        assert lrs(by_lr) == lrs(by_field)
        by_lr.step()
        sched.step()
        field.step()


def test_lr_and_field_resume_by_the_same_path_after_a_replan() -> None:
    """One adopt/resume path: both refuse a foreign state in one sentence, and a replan to a new peak keeps
    each group's multiplier in both, with the same values."""
    for scheduler in (ScheduledLR(make_optimizer(make_model(), SCHED.base, 1), SCHED), ScheduledValue(SCHED)):
        with pytest.raises(ForeignState, match=rf"^{type(scheduler).__name__}\.load_state_dict: not a "):
            scheduler.load_state_dict({"last_epoch": 3})
    lr_opt, field_opt = (make_optimizer(make_model(), SCHED.base, 3) for _ in range(2))
    saved_lr, saved_field = ScheduledLR(lr_opt, SCHED), ScheduledField(field_opt, SCHED, "lr")
    for _ in range(12):
        lr_opt.step()
        saved_lr.step()
        saved_field.step()
    lr_state, field_state = saved_lr.state_dict(), saved_field.state_dict()
    higher = Schedule("cosine", base=0.2, final=0.001, warmup=5, total=60)
    lr_opt, field_opt = (make_optimizer(make_model(), higher.base, 3) for _ in range(2))
    sched, field = (
        ScheduledLR(lr_opt, higher, on_mismatch="replan"),
        ScheduledField(field_opt, higher, "lr", on_mismatch="replan"),
    )
    sched.load_state_dict(lr_state)
    field.load_state_dict(field_state)
    assert sched.replanned == field.replanned and sched.replanned is not None
    for _ in range(10):
        assert lrs(lr_opt) == pytest.approx(lrs(field_opt), rel=1e-12)
        lr_opt.step()
        sched.step()
        field.step()
    assert lrs(lr_opt) == pytest.approx([lrs(lr_opt)[0] * m for m in MULTS], rel=1e-12)


def test_the_one_base_guard_refuses_in_the_same_words() -> None:
    opt = make_optimizer(make_model(), SCHED.base, 1)
    flat = Schedule("constant", base=0.0, final=0.0, warmup=0, total=10)
    messages = set()
    for build in (lambda: ScheduledLR(opt, flat), lambda: ScheduledField(opt, flat, "momentum")):
        with pytest.raises(UsageError) as err:
            build()
        messages.add(str(err.value))
    assert messages == {"schedule base=0.0: must be > 0 to scale param groups"}


def test_the_saved_state_keeps_its_format() -> None:
    opt = make_optimizer(make_model(), SCHED.base, 3)
    assert set(ScheduledLR(opt, SCHED).state_dict()) == {"step", "schedule", "target", "base_lrs", "cuts"}
    assert set(ScheduledField(opt, SCHED, "momentum").state_dict()) == {"step", "schedule", "target", "initial"}
    assert set(ScheduledValue(SCHED).state_dict()) == {"step", "schedule", "target"}
