"""Tests for lrsched.torch_sched's rule: a field at step t is the schedule's value at t, for every field;
per-group scaling (a multiplier key, or each group's own ratio) only when asked, the same for every field.

The LRScheduler adapter is in test_torch_sched_adapter.py, checkpoints and replans in
test_torch_sched_resume.py.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch_sched_helpers import SCHED, lrs, make_model, make_optimizer

from lrsched.errors import UsageError
from lrsched.schedules import Schedule
from lrsched.torch_sched import (
    BaseMismatchWarning,
    ForeignState,
    OutsideChangeWarning,
    ScheduledField,
    ScheduledLR,
    ScheduleMismatch,
)

LR = Schedule("cosine", base=5e-4, final=1e-6, warmup=100, total=1000)
WD = Schedule("cosine", base=0.04, final=0.4, total=1000)


def adamw_groups(wd: tuple[float, ...] = (0.04, 0.02, 0.0)) -> torch.optim.AdamW:
    params = list(make_model().parameters())
    chunks = [params[:2], params[2:3], params[3:]]
    return torch.optim.AdamW(
        [
            {"params": p, "weight_decay": w, "lr": 1e-3 * w / 0.04, "lr_mult": w / 0.04, "wd_mult": w / 0.04}
            for p, w in zip(chunks, wd)
        ]
    )


def test_what_you_write_is_what_you_get_for_every_field() -> None:
    """README's example: a default AdamW (lr 1e-3, weight decay 0.01) gets 0.04 -> 0.4, not 0.01 -> 0.1."""
    opt = torch.optim.AdamW(make_model().parameters())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to warn: the optimizer's own values are not read
        sched = ScheduledLR(opt, LR)
        wd = ScheduledField(opt, WD, "weight_decay")
    for t in range(1003):
        assert opt.param_groups[0]["lr"] == LR(t) and opt.param_groups[0]["weight_decay"] == WD(t), t
        opt.step()
        sched.step()
        wd.step()
    assert opt.param_groups[0]["weight_decay"] == pytest.approx(0.4, rel=1e-15)


@pytest.mark.parametrize("field", ["lr", "weight_decay", "momentum"])
def test_the_default_gives_every_group_the_schedule_s_value(field: str) -> None:
    params = list(make_model().parameters())
    opt = torch.optim.SGD(
        [{"params": params[:2], field: 0.3}, {"params": params[2:], field: 7.0}], lr=0.1, momentum=0.5
    )
    schedule = Schedule("linear", base=0.9, final=0.1, warmup=2, total=10)
    scheduled = ScheduledField(opt, schedule, field)
    for t in range(12):
        assert [g[field] for g in opt.param_groups] == [schedule(t)] * 2, t
        scheduled.step()


@pytest.mark.parametrize(("field", "key"), [("lr", "lr_mult"), ("weight_decay", "wd_mult")])
def test_a_multiplier_key_scales_every_field_the_same_way(field: str, key: str) -> None:
    """``per_group=key``: ``schedule(t) * group[key]``, read at every step (DINOv2's convention)."""
    opt = adamw_groups()
    schedule = LR if field == "lr" else WD
    scheduled = ScheduledField(opt, schedule, field, per_group=key)
    mults = [g[key] for g in opt.param_groups]
    for t in range(0, 1001, 50):
        scheduled.set_step(t)
        assert [g[field] for g in opt.param_groups] == [schedule(t) * m for m in mults], t
    opt.param_groups[1][key] = 0.1  # e.g. a backbone unfrozen at a smaller rate
    scheduled.step()
    assert opt.param_groups[1][field] == schedule(1001) * 0.1


@pytest.mark.parametrize("field", ["lr", "weight_decay"])
def test_ratio_mode_keeps_each_group_s_own_ratio_for_every_field(field: str) -> None:
    """``per_group="ratio"``: ``start_i * schedule(t) / base``, a group at 0 stays at 0."""
    opt = adamw_groups()
    starts = [g[field] for g in opt.param_groups]
    schedule = Schedule("cosine", base=starts[0], final=starts[0] * 10, total=30)
    scheduled = ScheduledField(opt, schedule, field, per_group="ratio")
    for t in range(35):
        want = [s * (schedule(t) / schedule.base) for s in starts]
        assert [g[field] for g in opt.param_groups] == want, t
        scheduled.step()
    assert opt.param_groups[2][field] == 0.0


@pytest.mark.parametrize("field", ["lr", "weight_decay", "momentum"])
def test_ratio_mode_says_so_the_same_way_for_every_field(field: str) -> None:
    """No group starts at the base: one ``BaseMismatchWarning`` naming the field, whatever the field."""
    opt = torch.optim.SGD(make_model().parameters(), lr=1e-3, momentum=0.8, weight_decay=0.01)
    schedule = Schedule("constant", base=0.5, total=10)
    with pytest.warns(BaseMismatchWarning) as caught:
        scheduled = ScheduledField(opt, schedule, field, per_group="ratio")
        for _ in range(5):
            scheduled.step()
    assert len(caught) == 1
    message = str(caught[0].message)
    assert f"group {field}s: " in message and "base 0.5" in message and 'per_group at "same"' in message
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ScheduledField(
            opt, Schedule("constant", base=float(opt.param_groups[0][field]), total=10), field, per_group="ratio"
        )


def test_a_multiplier_key_no_group_has_is_refused() -> None:
    opt = torch.optim.SGD(make_model().parameters(), lr=0.1)
    with pytest.raises(UsageError, match=r"per_group='lr_mul': no param group has that key"):
        ScheduledField(opt, SCHED, "lr", per_group="lr_mul")


def test_a_missing_field_is_named() -> None:
    opt = torch.optim.AdamW(make_model().parameters(), lr=0.1)
    with pytest.raises(UsageError, match="ScheduledField: param group 0 has no field 'momentum' \\(it has lr, betas"):
        ScheduledField(opt, Schedule("constant", base=0.9, total=10), "momentum")


def test_only_the_ratio_mode_needs_a_positive_base() -> None:
    opt = torch.optim.SGD(make_model().parameters(), lr=1.0)
    zero = Schedule("constant", base=0.0, total=10)
    with pytest.raises(UsageError, match=r"^schedule base=0.0: must be > 0 to scale param groups by their ratio$"):
        ScheduledField(opt, zero, "weight_decay", per_group="ratio")
    ScheduledField(opt, zero, "weight_decay")  # what you write: 0
    assert opt.param_groups[0]["weight_decay"] == 0.0


def test_set_step_is_the_program_s_step_not_a_second_counter() -> None:
    """A program holding its own step sets the field to it; the field's values are a function of it only."""
    opt = torch.optim.AdamW(make_model().parameters())
    field = ScheduledField(opt, WD, "weight_decay")
    for t in (7, 3, 999, 0, 1000, 5000):
        field.set_step(t)
        assert field.t == t and opt.param_groups[0]["weight_decay"] == WD(t)


def test_a_cut_from_outside_composes_with_any_field() -> None:
    opt = torch.optim.AdamW(make_model().parameters())
    wd = ScheduledField(opt, WD, "weight_decay")
    wd.step()
    opt.param_groups[0]["weight_decay"] *= 0.5  # lowered from outside: kept as a factor
    for t in range(2, 10):
        wd.step()
        assert opt.param_groups[0]["weight_decay"] == pytest.approx(WD(t) * 0.5, rel=1e-15), t
    assert wd.cuts == [0.5]
    with pytest.warns(OutsideChangeWarning, match="param group 0's weight_decay was changed outside"):
        opt.param_groups[0]["weight_decay"] = 1.0
        wd.step()
    assert opt.param_groups[0]["weight_decay"] == pytest.approx(WD(10) * 0.5, rel=1e-15)


def test_a_foreign_state_is_refused_in_one_sentence() -> None:
    opt = torch.optim.SGD(make_model().parameters(), lr=0.1)
    lambda_state = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0).state_dict()
    for scheduler in (ScheduledLR(opt, SCHED), ScheduledField(opt, SCHED, "weight_decay")):
        with pytest.raises(ForeignState) as err:
            scheduler.load_state_dict(lambda_state)
        message, name = str(err.value), type(scheduler).__name__
        assert message.startswith(f"{name}.load_state_dict: not a {name} state")
        assert "LambdaLR" in message and "\n" not in message and message.count(". ") == 0
        assert isinstance(err.value, UsageError)


def test_a_state_saved_with_another_mode_or_number_of_groups_is_refused() -> None:
    state = ScheduledField(make_optimizer(make_model(), SCHED.base, 3), SCHED, "momentum").state_dict()
    opt = make_optimizer(make_model(), SCHED.base, 1)
    with pytest.raises(UsageError) as err:
        ScheduledField(opt, SCHED, "momentum").load_state_dict(state)
    assert "saved for 3 param group(s), but the optimizer has 1" in str(err.value) and "\n" not in str(err.value)
    opt3 = make_optimizer(make_model(), SCHED.base, 3)
    with pytest.raises(UsageError, match=r"saved with per_group='same', this scheduler has per_group='lr_mult'"):
        ScheduledField(opt3, SCHED, "lr", per_group="lr_mult").load_state_dict(state)


def test_a_field_resumes_at_the_saved_step_and_refuses_another_schedule() -> None:
    opt = torch.optim.AdamW(make_model().parameters())
    wd = ScheduledField(opt, WD, "weight_decay")
    for _ in range(11):
        wd.step()
    state = wd.state_dict()
    assert set(state) == {"step", "schedule", "target", "per_group", "cuts"} and state["step"] == 11
    opt2 = torch.optim.AdamW(make_model().parameters())
    resumed = ScheduledField(opt2, WD, "weight_decay")
    resumed.load_state_dict(state)
    assert resumed.t == 11 and opt2.param_groups[0]["weight_decay"] == WD(11)
    with pytest.raises(ScheduleMismatch, match=r"final: 0\.4 -> 0\.5") as err:
        ScheduledField(opt2, Schedule("cosine", base=0.04, final=0.5, total=1000), "weight_decay").load_state_dict(
            state
        )
    assert 'on_mismatch="replan"' in str(err.value) and "--replan" not in str(err.value)


def test_a_replan_keeps_each_group_s_multiplier_in_every_mode() -> None:
    longer = Schedule("cosine", base=0.1, final=0.001, warmup=5, total=100)
    for mode in ("lr_mult", "ratio"):
        opt = make_optimizer(make_model(), SCHED.base, 3)
        field = ScheduledField(opt, SCHED, "lr", per_group=mode)
        for _ in range(20):
            field.step()
        before, state = lrs(opt), field.state_dict()
        opt2 = make_optimizer(make_model(), SCHED.base, 3)
        resumed = ScheduledField(opt2, longer, "lr", per_group=mode, on_mismatch="replan")
        resumed.load_state_dict(state)
        assert lrs(opt2) == pytest.approx(before, rel=1e-15) and resumed.replanned is not None
        v0 = SCHED(20)
        for t in range(21, 101):
            resumed.step()
            want = 0.001 + 0.5 * (v0 - 0.001) * (1 + math.cos(math.pi * (t - 20) / 80))  # docs/design.md section 5
            assert lrs(opt2) == pytest.approx([want * m for m in (1.0, 0.5, 0.1)], rel=1e-9), (mode, t)


def test_states_of_the_version_before_the_one_rule_still_load() -> None:
    """``ScheduledLR`` states held ``base_lrs``, ``ScheduledField`` states ``initial``; no ``per_group``."""
    schedule = {"type": "Schedule", "shape": "cosine", "base": 0.1, "final": 0.001, "warmup": 5, "total": 40}
    old_lr = {"step": 12, "schedule": schedule, "target": schedule, "base_lrs": [0.1, 0.05, 0.01], "cuts": [1.0] * 3}
    opt = make_optimizer(make_model(), SCHED.base, 3)
    sched = ScheduledLR(opt, SCHED, per_group="lr_mult")
    sched.load_state_dict(old_lr)
    assert sched.last_epoch == 12 and lrs(opt) == [SCHED(12) * m for m in (1.0, 0.5, 0.1)]
    old_field = {"step": 12, "schedule": schedule, "target": schedule, "initial": [0.1, 0.05, 0.01]}
    field = ScheduledField(make_optimizer(make_model(), SCHED.base, 3), SCHED, "lr", per_group="ratio")
    field.load_state_dict(old_field)
    assert field.t == 12 and field.values(12) == pytest.approx([SCHED(12) * m for m in (1.0, 0.5, 0.1)], rel=1e-15)
