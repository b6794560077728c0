"""Tests for ScheduledLR, the LRScheduler adapter on ScheduledField: torch's interface (last_epoch,
base_lrs, get_last_lr, state_dict), torch's own schedulers as an oracle, plateau cuts, HF Trainer
and Accelerate."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn
from torch_sched_helpers import MULTS, SCHED, lrs, make_model, make_optimizer, train_step

from lrsched.schedules import Schedule
from lrsched.torch_sched import BaseMismatchWarning, OutsideChangeWarning, ScheduledField, ScheduledLR


def test_sets_lr0_at_construction() -> None:
    opt = make_optimizer(make_model(), 0.1, 3)
    sched = ScheduledLR(opt, SCHED, per_group="lr_mult")
    assert lrs(opt) == [0.0, 0.0, 0.0]  # note 000: lr(0) = 0
    assert sched.get_last_lr() == [0.0, 0.0, 0.0] and sched.last_epoch == 0
    opt2 = make_optimizer(make_model(), 0.1, 3)
    ScheduledLR(opt2, Schedule("linear", base=0.1, total=10), per_group="lr_mult")
    assert lrs(opt2) == [0.1 * m for m in MULTS]


@pytest.mark.parametrize("groups", [1, 3])
def test_lr_follows_the_plan_after_each_step(groups: int) -> None:
    model = make_model()
    opt = make_optimizer(model, 0.1, groups)
    sched = ScheduledLR(opt, SCHED, per_group="lr_mult" if groups > 1 else "same")
    mults = MULTS[:groups]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "scheduler.step() before optimizer.step()" or get_lr warnings
        for t in range(1, 50):
            train_step(model, opt, sched, t)
            assert lrs(opt) == [SCHED(t) * m for m in mults], t
            assert sched.get_last_lr() == lrs(opt) and sched.last_epoch == t
    assert lrs(opt) == pytest.approx([0.001 * m for m in mults], rel=1e-12)  # held after T


def test_last_epoch_is_the_field_s_step() -> None:
    """One counter: torch's ``last_epoch`` is the field's ``t``, read and written through."""
    opt = torch.optim.SGD(make_model().parameters(), lr=0.1)
    sched = ScheduledLR(opt, SCHED)
    for _ in range(4):
        sched.step()
    assert sched.last_epoch == sched.field.t == 4
    sched.last_epoch = 9
    assert sched.field.t == 9
    sched.step()
    assert sched.field.t == 10 and lrs(opt) == [SCHED(10)]


def test_base_lrs_are_each_group_s_lr_at_the_schedule_s_base() -> None:
    for mode, want in (("same", [0.1] * 3), ("lr_mult", [0.1 * m for m in MULTS]), ("ratio", [0.1, 0.05, 0.1 * 0.1])):
        sched = ScheduledLR(make_optimizer(make_model(), 0.1, 3), SCHED, per_group=mode)
        assert sched.base_lrs == pytest.approx(want, rel=1e-15), mode


def test_matches_torch_sequential_linear_then_cosine_in_every_group() -> None:
    """Oracle: torch's own SequentialLR(LinearLR, CosineAnnealingLR), the peer bench/overhead.py times."""
    base, warm, total = 5e-4, 100, 1000
    opts = [
        torch.optim.SGD([{"params": [nn.Parameter(torch.zeros(1))], "lr": base * m, "lr_mult": m} for m in MULTS])
        for _ in "ab"
    ]
    ours = ScheduledLR(opts[0], Schedule("cosine", base=base, warmup=warm, total=total), per_group="lr_mult")
    linear = torch.optim.lr_scheduler.LinearLR(opts[1], start_factor=1e-12, total_iters=warm)  # cannot start at 0
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opts[1], T_max=total - warm)
    peer = torch.optim.lr_scheduler.SequentialLR(opts[1], [linear, cosine], milestones=[warm])
    for t in range(total + 1):
        assert lrs(opts[0]) == pytest.approx(lrs(opts[1]), rel=1e-9, abs=1e-12 * base), t
        for opt, sched in zip(opts, (ours, peer)):
            opt.step()
            sched.step()


def test_scheduled_lr_and_a_scheduled_lr_field_agree_at_every_step() -> None:
    """The adapter adds nothing to the values: ``ScheduledField(opt, s, "lr")`` sets the same, bit for bit."""
    for mode in ("same", "lr_mult", "ratio"):
        by_lr, by_field = make_optimizer(make_model(), SCHED.base, 3), make_optimizer(make_model(), SCHED.base, 3)
        sched, field = ScheduledLR(by_lr, SCHED, per_group=mode), ScheduledField(by_field, SCHED, "lr", per_group=mode)
        for _ in range(SCHED.total + 3):
            assert lrs(by_lr) == lrs(by_field), mode
            by_lr.step()
            sched.step()
            field.step()


def test_the_saved_state_holds_the_step_and_the_schedules() -> None:
    opt = make_optimizer(make_model(), SCHED.base, 3)
    state = ScheduledLR(opt, SCHED).state_dict()
    assert set(state) == {"step", "schedule", "target", "per_group", "cuts", "base_lrs"}
    ratio = ScheduledLR(make_optimizer(make_model(), SCHED.base, 3), SCHED, per_group="ratio").state_dict()
    assert ratio["initial"] == pytest.approx([0.1, 0.05, 0.01], rel=1e-15)


def test_state_dict_loads_with_weights_only(tmp_path: Path) -> None:
    sched = ScheduledLR(make_optimizer(make_model(), 0.1, 3), SCHED, per_group="ratio")
    torch.save(sched.state_dict(), tmp_path / "s.pt")
    assert torch.load(tmp_path / "s.pt", weights_only=True) == sched.state_dict()


def test_repr_shows_the_schedule_the_step_and_the_mode() -> None:
    opt = make_optimizer(make_model(), SCHED.base, 3)
    sched = ScheduledLR(opt, SCHED)
    for _ in range(3):
        opt.step()
        sched.step()
    assert repr(sched) == f"ScheduledLR({SCHED!r}, step=3)"
    assert repr(ScheduledLR(opt, SCHED, per_group="lr_mult")).endswith("step=0, per_group='lr_mult')")
    assert "field='momentum'" in repr(ScheduledField(opt, SCHED, "momentum"))


# --- ratio mode: the base check waits for a load that may bring another base ---


def test_a_tensor_lr_at_the_base_is_not_a_base_mismatch() -> None:
    """A float32 tensor lr holds 1e-3 as 0.0010000000475: that is the base; the tensor is filled in place."""
    opt = torch.optim.Adam(make_model().parameters(), lr=torch.tensor(1e-3))
    tensor = opt.param_groups[0]["lr"]
    schedule = Schedule("cosine", base=1e-3, warmup=2, total=10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sched = ScheduledLR(opt, schedule, per_group="ratio")
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] is tensor and float(tensor) == pytest.approx(schedule(1), rel=1e-6)
    opt = torch.optim.Adam(make_model().parameters(), lr=torch.tensor(2e-3))
    with pytest.warns(BaseMismatchWarning, match="lr is at most 0.002 where the schedule says 0.001"):
        ScheduledLR(opt, schedule, per_group="ratio")


def test_replan_to_a_new_base_brought_by_load_state_dict_is_not_warned() -> None:
    old = Schedule("cosine", base=1e-3, warmup=2, total=20)
    new = Schedule("cosine", base=2e-3, warmup=2, total=40)
    opt = torch.optim.SGD(make_model().parameters(), lr=old.base)
    sched = ScheduledLR(opt, old, per_group="ratio")
    for _ in range(10):
        opt.step()
        sched.step()
    state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}
    opt2 = torch.optim.SGD(make_model().parameters(), lr=old.base)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resumed = ScheduledLR(opt2, new, per_group="ratio", on_mismatch="replan")
        opt2.load_state_dict(state["optimizer"])
        resumed.load_state_dict(state["scheduler"])
        for _ in range(5):
            opt2.step()
            resumed.step()
    assert resumed.replanned is not None


def test_replan_without_a_state_still_warns_at_the_first_step() -> None:
    opt = torch.optim.SGD(make_model().parameters(), lr=1e-3)
    sched = ScheduledLR(opt, Schedule("cosine", base=2e-3, warmup=2, total=40), per_group="ratio", on_mismatch="replan")
    opt.step()
    with pytest.warns(BaseMismatchWarning, match="lr is at most 0.001 where the schedule says 0.002"):
        sched.step()


# --- plateau cuts compose ---


def _plateau_run(steps: int, losses: list[float]) -> tuple[list[float], ScheduledLR]:
    """torch's real ReduceLROnPlateau (factor 0.1, patience 0) stepped after ScheduledLR each update."""
    opt = torch.optim.SGD(make_model().parameters(), lr=SCHED.base)
    sched = ScheduledLR(opt, SCHED)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.1, patience=0)
    seen = []
    for t in range(steps):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
        plateau.step(losses[t])
    return seen, sched


def test_a_plateau_cut_composes_with_the_schedule_and_is_not_undone() -> None:
    losses = [1.0, 0.9, 0.9, 0.8, 0.7, 0.7, 0.7] + [0.6 - 0.01 * k for k in range(20)]  # flat at 2, 5, 6
    seen, sched = _plateau_run(25, losses)
    cut_after = {3: 0.1, 4: 0.1, 5: 0.1, 6: 0.01}  # after update k's plateau step the cut applies from k + 1
    for t in range(1, 25):
        cut = cut_after.get(t, 0.001 if t > 6 else 1.0)
        assert seen[t] == pytest.approx(SCHED(t) * cut, rel=1e-12, abs=1e-18), t
    assert sched.cuts == pytest.approx([0.001], rel=1e-12)


def test_a_plateau_cut_survives_state_dict() -> None:
    _, sched = _plateau_run(10, [1.0, 1.0] + [0.9 - 0.01 * k for k in range(30)])  # one flat update
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
            assert opt.param_groups[0]["lr"] == SCHED(t)
    assert len(caught) == 1 and "param group 0's lr was changed outside the scheduler" in str(caught[0].message)


# --- HF Trainer, Accelerate ---


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
    opt = torch.optim.SGD(model.parameters(), lr=1.0)  # not read: the schedule carries the lr
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
        assert value == schedule(step - 1), step
    assert sched.last_epoch == 12 and opt.param_groups[0]["lr"] == schedule(12)


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
