"""Tests for lrsched.strategy and lrsched.step_plan: the docs/design.md section 4 table, a plan counted in steps,
sources and notes, exact step counts, errors."""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import pytest

from lrsched import strategy
from lrsched.errors import UsageError
from lrsched.flags import flag_names
from lrsched.schedules import Schedule
from lrsched.step_plan import StepDefaults, resolve_steps
from lrsched.strategy import Plan, row_for, updates_per_epoch

UNDERSCORED, DASHED = flag_names(), flag_names(dashed=True)
"""The flags a caller names the keywords by: ``--warmup_steps`` (train.py's spelling), ``--warmup-steps``."""
STEP_DEFAULTS = StepDefaults(peak=5e-4, warmup_steps=2500, min_lr=1e-6)


def resolve_finetune(**kwargs: Any) -> Plan:
    """The policy as a caller that spells its flags ``--warmup_steps`` calls it."""
    return strategy.resolve_finetune(names=UNDERSCORED, **kwargs)


def plan_in_steps(**kwargs: Any) -> Plan:
    """A step plan with 5e-4, 2500 and 1e-6 as defaults, as a caller that spells its flags ``--warmup-steps``."""
    return resolve_steps(defaults=STEP_DEFAULTS, names=DASHED, **kwargs)


# docs/design.md section 4, with 100 updates per epoch: E -> (shape, peak, total, warm-up steps, cycles)
TABLE = {
    "0.5": ("constant", 3e-5, 50, 3, 0.5),  # ceil(0.05 * 50) = ceil(2.5)
    "1": ("constant", 3e-5, 100, 5, 0.5),
    "1.5": ("linear", 4e-5, 150, 15, 1.0),
    "2": ("linear", 4e-5, 200, 20, 1.0),
    "3": ("linear", 4e-5, 300, 30, 1.0),
    "3.99": ("linear", 4e-5, 399, 40, 1.0),  # ceil(0.1 * 399) = ceil(39.9)
    "4": ("cosine", 5e-5, 400, 40, 2.0),
    "10": ("cosine", 5e-5, 1000, 100, 2.0),
}


@pytest.mark.parametrize("epochs", list(TABLE))
def test_auto_row(epochs: str) -> None:
    shape, peak, total, warmup, cycles = TABLE[epochs]
    plan = resolve_finetune(epochs=Fraction(epochs), steps_per_epoch=100)
    s = plan.schedule
    assert (s.shape, s.base, s.final, s.total, s.warmup) == (shape, peak, 0.0, total, warmup)
    assert plan.shape == shape
    assert plan.cycles is None  # not a cosine_restarts plan
    assert plan.source("shape").startswith("auto") and shape in plan.source("shape")
    assert plan.source("peak").startswith("auto") and f"{peak:g}" in plan.source("peak")
    assert plan.source("warmup").startswith("auto") and str(total) in plan.source("warmup")
    assert plan.source("cycles") == "n/a: only cosine_restarts has cycles"  # not the row's unused cycles
    assert plan.source("min_lr") == "default"
    assert plan.source("total") == f"{epochs} {'epoch' if epochs == '1' else 'epochs'} x 100 updates"
    assert plan.notes == ()
    # the same row with cosine_restarts gets the row's cycles
    restarts = resolve_finetune(epochs=Fraction(epochs), steps_per_epoch=100, strategy="cosine_restarts")
    assert restarts.shape == "cosine_restarts"
    assert restarts.cycles == cycles
    assert restarts.schedule.base == peak and restarts.schedule.warmup == warmup
    assert restarts.source("shape") == "--lr_strategy cosine_restarts"


@pytest.mark.parametrize(
    ("epochs", "label"), [("0.5", "E <= 1"), ("1", "E <= 1"), ("1.01", "1 < E < 4"), ("4", "E >= 4")]
)
def test_row_for(epochs: str, label: str) -> None:
    assert row_for(Fraction(epochs)).label == label


@pytest.mark.parametrize("strategy", ["constant", "linear", "cosine", "cosine_restarts"])
@pytest.mark.parametrize("epochs", ["1", "2", "10"])
def test_explicit_strategy_overrides_the_row_shape_only(strategy: str, epochs: str) -> None:
    plan = resolve_finetune(epochs=Fraction(epochs), steps_per_epoch=100, strategy=strategy)
    auto = resolve_finetune(epochs=Fraction(epochs), steps_per_epoch=100)
    assert plan.shape == strategy
    assert plan.source("shape") == f"--lr_strategy {strategy}"
    assert (plan.schedule.base, plan.schedule.warmup, plan.schedule.total) == (
        auto.schedule.base,
        auto.schedule.warmup,
        auto.schedule.total,
    )


def test_legacy_cosine_restarts_flag() -> None:
    plan = resolve_finetune(epochs=Fraction(2), steps_per_epoch=100, cosine_restarts=True)
    assert plan.shape == "cosine_restarts"
    assert plan.cycles == 1.0
    assert "--cosine_restarts" in plan.source("shape")
    same = resolve_finetune(epochs=Fraction(2), steps_per_epoch=100, cosine_restarts=True, strategy="cosine_restarts")
    assert same.schedule == plan.schedule


@pytest.mark.parametrize("strategy", ["constant", "linear", "cosine"])
def test_legacy_flag_with_another_strategy_is_an_error(strategy: str) -> None:
    with pytest.raises(UsageError, match="--cosine_restarts") as err:
        resolve_finetune(epochs=Fraction(5), steps_per_epoch=10, cosine_restarts=True, strategy=strategy)
    assert f"--lr_strategy {strategy}" in str(err.value)
    assert "\n" not in str(err.value)


# --- peak LR and --scale_lr_for_short_training ---


@pytest.mark.parametrize(("epochs", "factor"), [("0.5", 0.6), ("1", 0.6), ("1.5", 0.8), ("3.99", 0.8)])
def test_scale_lr_multiplies_an_explicit_lr_below_4_epochs(epochs: str, factor: float) -> None:
    plan = resolve_finetune(
        epochs=Fraction(epochs), steps_per_epoch=100, learning_rate=1e-4, scale_lr_for_short_training=True
    )
    assert plan.schedule.base == pytest.approx(1e-4 * factor, rel=1e-12)
    assert "--scale_lr_for_short_training" in plan.source("peak")
    assert f"x{factor:g}" in plan.source("peak")
    assert plan.notes == ()
    total = plan.schedule.total
    assert total is not None
    assert plan.schedule.warmup == math.ceil(Fraction(5, 100) * total)  # 5% warm-up below 4 epochs
    assert "--scale_lr_for_short_training" in plan.source("warmup")


@pytest.mark.parametrize("epochs", ["4", "10"])
def test_scale_lr_changes_nothing_from_4_epochs_and_says_so(epochs: str) -> None:
    plain = resolve_finetune(epochs=Fraction(epochs), steps_per_epoch=100, learning_rate=1e-4)
    scaled = resolve_finetune(
        epochs=Fraction(epochs), steps_per_epoch=100, learning_rate=1e-4, scale_lr_for_short_training=True
    )
    assert scaled.schedule == plain.schedule
    assert scaled.schedule.base == 1e-4
    assert len(scaled.notes) == 1
    assert "--scale_lr_for_short_training" in scaled.notes[0] and "nothing" in scaled.notes[0]
    assert any("note:" in line for line in scaled.lines())


def test_scale_without_explicit_lr_keeps_the_row_lr() -> None:
    plan = resolve_finetune(epochs=Fraction(2), steps_per_epoch=100, scale_lr_for_short_training=True)
    assert plan.schedule.base == 4e-5
    assert plan.schedule.warmup == 10  # 5% of 200


def test_explicit_lr_is_used_as_given() -> None:
    plan = resolve_finetune(epochs=Fraction(1), steps_per_epoch=100, learning_rate=2e-5)
    assert plan.schedule.base == 2e-5
    assert plan.source("peak") == "--learning_rate 2e-05"


# --- warm-up, cycles, floor, total ---


def test_warmup_steps_beat_ratio_beat_row() -> None:
    both = resolve_finetune(epochs=Fraction(3), steps_per_epoch=100, warmup_steps=7, warmup_ratio=Fraction("0.5"))
    assert both.schedule.warmup == 7
    assert both.source("warmup") == "--warmup_steps 7"
    ratio = resolve_finetune(epochs=Fraction(3), steps_per_epoch=100, warmup_ratio=Fraction("0.25"))
    assert ratio.schedule.warmup == 75
    assert ratio.source("warmup").startswith("--warmup_ratio 0.25")
    zero = resolve_finetune(epochs=Fraction(3), steps_per_epoch=100, warmup_steps=0)
    assert zero.schedule.warmup == 0
    assert zero.schedule(0) == zero.schedule.base


def test_exact_ceil_from_decimals() -> None:
    plan = resolve_finetune(epochs=Fraction(3), max_steps=70, warmup_ratio=Fraction("0.1"))
    assert plan.schedule.total == 70
    assert plan.schedule.warmup == 7
    assert resolve_finetune(epochs=Fraction(3), steps_per_epoch=10).schedule.warmup == 3  # the row's 10% of 30
    assert math.ceil(0.07 * 100) == 8  # 7.000000000000001 in floating point
    assert resolve_finetune(epochs=Fraction(3), max_steps=100, warmup_ratio=Fraction("0.07")).schedule.warmup == 7
    assert resolve_finetune(epochs=Fraction("2.5"), steps_per_epoch=3).schedule.total == 8  # ceil(7.5)
    # the floating-point trap: 1.1 * 50 = 55.00000000000001 and 2.2 * 25 = 55.00000000000001
    assert math.ceil(1.1 * 50) == 56 and math.ceil(2.2 * 25) == 56
    assert resolve_finetune(epochs=Fraction("1.1"), steps_per_epoch=50).schedule.total == 55
    assert resolve_finetune(epochs=Fraction("2.2"), steps_per_epoch=25).schedule.total == 55


def test_max_steps_sizes_the_run() -> None:
    plan = resolve_finetune(epochs=Fraction(3), steps_per_epoch=100, max_steps=50)
    assert plan.schedule.total == 50
    assert plan.source("total") == "--max_steps 50"
    assert plan.schedule.warmup == 5


def test_num_cycles_and_min_lr_flags() -> None:
    plan = resolve_finetune(
        epochs=Fraction(10), steps_per_epoch=100, strategy="cosine_restarts", num_cycles=3.5, min_lr=1e-6
    )
    assert plan.cycles == 3.5
    assert plan.source("cycles") == "--num_cycles 3.5"
    assert plan.schedule.final == 1e-6
    assert plan.source("min_lr") == "--min_lr 1e-06"
    assert plan.schedule(plan.schedule.total) == 1e-6


def test_updates_per_epoch_counts_a_partial_accumulation() -> None:
    assert updates_per_epoch(10, 1) == 10
    assert updates_per_epoch(10, 4) == 3
    assert updates_per_epoch(12, 4) == 3
    assert updates_per_epoch(1, 8) == 1


# --- errors ---


@pytest.mark.parametrize(
    ("kwargs", "flag"),
    [
        (dict(epochs=Fraction(0), steps_per_epoch=10), "--num_epochs"),
        (dict(epochs=Fraction(-1), steps_per_epoch=10), "--num_epochs"),
        (dict(epochs=Fraction(3), steps_per_epoch=100, warmup_steps=300), "--warmup_steps"),
        (dict(epochs=Fraction(3), steps_per_epoch=100, warmup_steps=1000), "--warmup_steps"),
        (dict(epochs=Fraction(3), max_steps=10, warmup_steps=10), "--warmup_steps"),
        (dict(epochs=Fraction(3), steps_per_epoch=100, min_lr=1e-4), "--min_lr"),
        (dict(epochs=Fraction(3), steps_per_epoch=100, learning_rate=1e-5, min_lr=2e-5), "--min_lr"),
        (dict(epochs=Fraction(3)), "--steps_per_epoch"),
        (dict(epochs=Fraction(3), steps_per_epoch=0), "--steps_per_epoch"),
        (dict(epochs=Fraction(3), steps_per_epoch=100, max_steps=0), "--max_steps"),
    ],
)
def test_bad_input_is_a_one_line_usage_error_naming_the_flag(kwargs: dict, flag: str) -> None:
    with pytest.raises(UsageError) as err:
        resolve_finetune(**kwargs)
    message = str(err.value)
    assert message.startswith(flag), message
    assert "\n" not in message


def test_warmup_error_states_both_counts() -> None:
    with pytest.raises(UsageError, match="300") as err:
        resolve_finetune(epochs=Fraction(3), steps_per_epoch=100, warmup_steps=400)
    assert "400" in str(err.value)


def test_a_run_too_short_for_the_automatic_warmup_says_the_ratio_was_automatic() -> None:
    with pytest.raises(UsageError) as err:
        resolve_finetune(epochs=Fraction(1), steps_per_epoch=1)
    assert str(err.value) == (
        "--warmup_ratio (auto 5%): gives 1 warm-up step, must be fewer than the 1 total step;"
        " pass --warmup_steps 0 or train longer"
    )
    assert resolve_finetune(epochs=Fraction(1), steps_per_epoch=1, warmup_steps=0).schedule.warmup == 0


def test_min_lr_equal_to_peak_is_allowed() -> None:
    plan = resolve_finetune(epochs=Fraction(3), steps_per_epoch=100, min_lr=4e-5)
    assert plan.schedule.final == plan.schedule.base


# --- the issue's examples ---


@pytest.mark.parametrize(
    ("epochs", "steps", "restarts", "want"),
    [
        ("1", 200, False, ("constant", 3e-05, 10, 200, None)),
        ("3", 100, False, ("linear", 4e-05, 30, 300, None)),
        ("10", 100, True, ("cosine_restarts", 5e-05, 100, 1000, 2.0)),
    ],
)
def test_issue_examples(epochs: str, steps: int, restarts: bool, want: tuple) -> None:
    plan = resolve_finetune(epochs=Fraction(epochs), steps_per_epoch=steps, cosine_restarts=restarts)
    s = plan.schedule
    assert (s.shape, s.base, s.warmup, s.total, plan.cycles) == want


# --- Plan presentation ---


def test_plan_json_and_lines() -> None:
    plan = resolve_finetune(epochs=Fraction(10), steps_per_epoch=100, cosine_restarts=True, min_lr=1e-7)
    data = plan.to_json()
    assert data == {
        "shape": "cosine_restarts",
        "base_lr": 5e-5,
        "min_lr": 1e-7,
        "warmup_steps": 100,
        "total_steps": 1000,
        "cycles": 2.0,
        "decay_steps": None,
        "decay_type": None,
        "sources": dict(plan.sources),
        "notes": [],
    }
    assert set(data["sources"]) == {"shape", "peak", "total", "warmup", "cycles", "min_lr"}
    text = "\n".join(plan.lines())
    for piece in ("cosine_restarts", "5e-05", "1e-07", "100 steps", "1000 steps", "--cosine_restarts"):
        assert piece in text
    assert isinstance(plan, Plan)


# --- a plan counted in steps (lrsched.step_plan) ---


def test_pretrain_defaults_are_open_ended() -> None:
    plan = plan_in_steps()
    s = plan.schedule
    assert (s.shape, s.base, s.warmup, s.final, s.total) == ("cosine", 5e-4, 2500, 1e-6, None)
    assert plan.notes == ("no --max-steps: holding 0.0005 after warm-up",)
    assert plan.source("peak") == plan.source("warmup") == plan.source("min_lr") == "default"
    assert "open-ended" in plan.source("total")
    assert s(2500) == s(10**8) == 5e-4
    assert "open-ended" in "\n".join(plan.lines())


def test_pretrain_with_max_steps_decays_to_min_lr() -> None:
    plan = plan_in_steps(lr=1e-3, warmup_steps=100, min_lr=1e-5, max_steps=1100)
    s = plan.schedule
    assert (s.shape, s.base, s.warmup, s.final, s.total) == ("cosine", 1e-3, 100, 1e-5, 1100)
    assert plan.notes == ()
    assert plan.source("peak") == "--lr 0.001"
    assert plan.source("warmup") == "--warmup-steps 100"
    assert plan.source("min_lr") == "--min-lr 1e-05"
    assert plan.source("total") == "--max-steps 1100"
    assert s(600) == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5), rel=1e-12)
    assert s(1100) == pytest.approx(1e-5, rel=1e-12)


def test_pretrain_open_ended_note_uses_the_given_lr() -> None:
    plan = plan_in_steps(lr=2e-4, warmup_steps=10)
    assert plan.notes == ("no --max-steps: holding 0.0002 after warm-up",)


@pytest.mark.parametrize(
    ("kwargs", "flag"),
    [
        (dict(warmup_steps=100, max_steps=100), "--warmup-steps"),
        (dict(warmup_steps=200, max_steps=100), "--warmup-steps"),
        (dict(max_steps=2500), "--warmup-steps"),
        (dict(lr=1e-3, min_lr=2e-3), "--min-lr"),
        (dict(lr=5e-7), "--min-lr"),
    ],
)
def test_pretrain_errors(kwargs: dict, flag: str) -> None:
    with pytest.raises(UsageError) as err:
        plan_in_steps(**kwargs)
    assert str(err.value).startswith(flag)
    assert "\n" not in str(err.value)


def test_pretrain_schedule_is_the_design_cosine() -> None:
    plan = plan_in_steps(max_steps=12500)
    want = Schedule("cosine", base=5e-4, final=1e-6, warmup=2500, total=12500)
    assert plan.schedule == want
    t = 7500
    assert plan.schedule(t) == pytest.approx(1e-6 + 0.5 * (5e-4 - 1e-6) * (1 + math.cos(math.pi * 0.5)), rel=1e-12)


# --- issue 11: wsd in both programs, and a note for every typed flag that changes nothing ---


def test_train_wsd_takes_peak_and_warmup_from_the_row() -> None:
    plan = resolve_finetune(epochs=Fraction(3), steps_per_epoch=100, strategy="wsd")
    s = plan.schedule
    assert (s.shape, s.base, s.warmup, s.total, s.decay, s.decay_type) == ("wsd", 4e-5, 30, 300, 60, "cosine")
    assert plan.source("decay") == "--decay_ratio (default 0.2): 20% of 300, cosine from step 240"
    assert plan.to_json()["decay_steps"] == 60 and plan.to_json()["decay_type"] == "cosine"
    assert any(line.split()[:3] == ["decay", "60", "steps"] for line in plan.lines())
    exact = resolve_finetune(
        epochs=Fraction(10), steps_per_epoch=10, strategy="wsd", decay_ratio=Fraction("0.07"), decay_type="1-sqrt"
    )
    assert (exact.schedule.decay, exact.schedule.decay_type) == (7, "1-sqrt")  # 0.07 x 100 exactly


def test_a_decay_longer_than_after_warmup_is_refused() -> None:
    with pytest.raises(UsageError, match=r"^--decay_ratio 0\.95: gives 285 decay steps, more than the 270 steps"):
        resolve_finetune(epochs=Fraction(3), steps_per_epoch=100, strategy="wsd", decay_ratio=Fraction("0.95"))
    with pytest.raises(UsageError, match=r"^--decay-ratio 1: gives 100 decay steps, more than the 90"):
        plan_in_steps(max_steps=100, warmup_steps=10, decay_ratio=Fraction(1))


def test_phase5_decay_ratio_selects_wsd() -> None:
    plan = plan_in_steps(max_steps=10_000, decay_ratio=Fraction("0.1"))
    s = plan.schedule
    assert (s.shape, s.base, s.warmup, s.final, s.decay, s.decay_type) == ("wsd", 5e-4, 2500, 1e-6, 1000, "cosine")
    assert plan_in_steps(max_steps=10_000, decay_type="linear").schedule.decay == 2000  # the default ratio
    open_ended = plan_in_steps(decay_ratio=Fraction("0.1"))
    assert open_ended.schedule.total is None and open_ended.schedule.decay is None
    assert open_ended.source("decay").startswith("--decay-ratio 0.1 of the --max-steps a resume gives")
    assert plan_in_steps(max_steps=10_000).schedule.shape == "cosine"  # unchanged without the flags


@pytest.mark.parametrize(
    ("kwargs", "note"),
    [
        (dict(num_cycles=3.0), "--num_cycles 3 changes nothing: only cosine_restarts has cycles (the shape is linear)"),
        (dict(decay_ratio=Fraction("0.1")), "--decay_ratio 0.1 changes nothing: only wsd has a final decay"),
        (dict(decay_type="linear"), "--decay_type linear changes nothing: only wsd has a final decay"),
        (dict(warmup_steps=5, warmup_ratio=Fraction("0.2")), "--warmup_ratio 0.2 changes nothing: --warmup_steps 5"),
        (dict(strategy="constant", min_lr=1e-6), "--min_lr 1e-06 changes nothing: constant holds the peak"),
    ],
)
def test_a_typed_flag_that_changes_nothing_gets_a_note(kwargs: dict, note: str) -> None:
    plan = resolve_finetune(epochs=Fraction(3), steps_per_epoch=100, **kwargs)
    assert any(n.startswith(note) for n in plan.notes), plan.notes
    assert any(line.startswith(f"  note: {note}") for line in plan.lines())


def test_cycles_are_kept_only_for_cosine_restarts() -> None:
    assert resolve_finetune(epochs=Fraction(10), steps_per_epoch=10).schedule.cycles == 1.0  # cosine: unused
    restarts = resolve_finetune(epochs=Fraction(10), steps_per_epoch=10, strategy="cosine_restarts")
    assert restarts.schedule.cycles == 2.0


# --- issue 23: phase5's --warmup-ratio, and --scale_lr_for_short_training's notes ---


@pytest.mark.parametrize(("ratio", "total", "warmup"), [("0.07", 100, 7), ("0.1", 1000, 100), ("0.15", 7, 2)])
def test_phase5_warmup_ratio_is_an_exact_decimal_of_max_steps(ratio: str, total: int, warmup: int) -> None:
    plan = plan_in_steps(max_steps=total, warmup_ratio=Fraction(ratio))
    assert plan.schedule.warmup == warmup  # ceil(0.07 * 100) in floats is 8
    assert plan.source("warmup").startswith(f"--warmup-ratio {ratio}: ")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(warmup_ratio=Fraction("0.1")), r"^--warmup-ratio 0\.1: needs --max-steps"),
        (dict(warmup_ratio=Fraction("0.1"), warmup_steps=5, max_steps=100), r"^--warmup-ratio 0\.1: .*not both"),
        (dict(warmup_ratio=Fraction("0.95"), max_steps=10), r"^--warmup-ratio 0\.95: gives 10 warm-up steps"),
    ],
)
def test_phase5_warmup_ratio_is_refused_in_one_sentence(kwargs: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message) as err:
        plan_in_steps(**kwargs)
    assert "\n" not in str(err.value)


def test_phase5_warmup_not_below_max_steps_suggests_the_ratio() -> None:
    with pytest.raises(UsageError, match=r"^--warmup-steps 2500 \(default\): must be less than --max-steps 1000; "):
        plan_in_steps(max_steps=1000)
    with pytest.raises(UsageError, match=r"--warmup-ratio R \(e\.g\. 0\.1: 100 steps\)"):
        plan_in_steps(max_steps=1000, warmup_steps=1000)


@pytest.mark.parametrize(
    ("kwargs", "note"),
    [
        (dict(epochs=Fraction(1)), "at 1 epoch: it scales only an explicit --learning_rate (the peak is auto's 3e-0"),
        (dict(epochs=Fraction("0.5")), "auto's warm-up at E <= 1 is 5% with it or without"),
        (dict(epochs=Fraction(2), warmup_steps=3), "the warm-up comes from --warmup_steps"),
        (dict(epochs=Fraction(1), warmup_ratio=Fraction("0.2")), "the warm-up comes from --warmup_ratio"),
        (dict(epochs=Fraction(5)), "at 5 epochs (only below 4)"),
    ],
)
def test_scale_lr_that_changes_nothing_gets_a_note(kwargs: dict, note: str) -> None:
    plan = resolve_finetune(steps_per_epoch=100, scale_lr_for_short_training=True, **kwargs)
    unscaled = resolve_finetune(steps_per_epoch=100, **kwargs)
    assert plan.schedule == unscaled.schedule
    assert any(n.startswith("--scale_lr_for_short_training changes nothing") and note in n for n in plan.notes)


@pytest.mark.parametrize(
    "kwargs", [dict(epochs=Fraction(1), learning_rate=1e-4), dict(epochs=Fraction(2)), dict(epochs=Fraction("3.5"))]
)
def test_scale_lr_that_changes_something_gets_no_note(kwargs: dict) -> None:
    plan = resolve_finetune(steps_per_epoch=100, scale_lr_for_short_training=True, **kwargs)
    assert plan.schedule != resolve_finetune(steps_per_epoch=100, **kwargs).schedule
    assert not any("--scale_lr_for_short_training" in n for n in plan.notes)


# --- issue 22: counts, epoch sizes, what the plan prints ---------------------------------------


def test_count_is_singular_only_for_exactly_one() -> None:
    from lrsched.strategy import count

    assert [count(1, "step"), count(0, "step"), count(2, "step")] == ["1 step", "0 steps", "2 steps"]
    assert [count("1", "epoch"), count("1.5", "epoch"), count("0.5", "epoch")] == [
        "1 epoch",
        "1.5 epochs",
        "0.5 epochs",
    ]
    assert count(3, "batch", "batches") == "3 batches"


def test_epoch_size_per_process_and_its_refusal() -> None:
    from lrsched.strategy import epoch_size

    assert epoch_size(40, 4, 2, processes=2) == (5, 3)  # 20 each, 5 batches, ceil(5 / 2)
    assert epoch_size(1280, 16, 2) == (80, 40)
    with pytest.raises(UsageError) as err:
        epoch_size(4, 4, 5, accumulation_flag="--gradient_accumulation_steps")
    assert str(err.value) == (
        "--gradient_accumulation_steps 5: larger than the 1 batch of an epoch (4 examples, batch 4, 1 process)"
    )


def test_the_printed_plan_has_cycles_only_for_restarts_and_says_when_it_holds() -> None:
    linear = resolve_finetune(epochs=Fraction(3), steps_per_epoch=100)
    assert [line.split()[0] for line in linear.lines()] == ["shape", "peak", "min_lr", "warmup", "total"]
    restarts = resolve_finetune(epochs=Fraction(3), steps_per_epoch=100, strategy="cosine_restarts")
    assert restarts.lines()[-1].split()[:2] == ["cycles", "1"]
    held = plan_in_steps()
    assert held.shape == "cosine" and held.to_json()["shape"] == "cosine"
    assert held.shape_text == "constant (open-ended: cosine needs --max-steps)"
    assert plan_in_steps(max_steps=10_000).shape_text == "cosine"


# --- issue 27: the policy names no flag; the caller does ------------------------------------------


def test_the_policy_names_its_keywords_unless_the_caller_names_flags() -> None:
    plain = strategy.resolve_finetune(epochs=Fraction(2), steps_per_epoch=100, learning_rate=1e-4, min_lr=1e-6)
    assert (plain.source("peak"), plain.source("min_lr")) == ("learning_rate 0.0001", "min_lr 1e-06")
    hf = {"epochs": "--num_train_epochs", "strategy": "--lr_strategy", "cosine_restarts": "--cosine_restarts"}
    with pytest.raises(UsageError, match=r"^--num_train_epochs 0: must be > 0$"):
        strategy.resolve_finetune(epochs=Fraction(0), steps_per_epoch=10, names=hf)
    with pytest.raises(UsageError, match=r"^--cosine_restarts: conflicts with --lr_strategy linear"):
        strategy.resolve_finetune(
            epochs=Fraction(2), steps_per_epoch=10, strategy="linear", cosine_restarts=True, names=hf
        )


def test_a_step_plan_takes_its_defaults_and_shape_source_from_the_caller() -> None:
    plan = resolve_steps(defaults=StepDefaults(peak=1e-3, warmup_steps=5, min_lr=0.0), max_steps=50, shape_source="why")
    s = plan.schedule
    assert (s.base, s.warmup, s.final, s.total) == (1e-3, 5, 0.0, 50)
    assert plan.source("shape") == "why" and plan.source("peak") == "default"


def test_a_run_longer_than_2_53_steps_is_refused_naming_what_made_it() -> None:
    with pytest.raises(UsageError, match=r"3 epochs x 9000000000000000 updates = 27,000,000,000,000,000 steps"):
        resolve_finetune(epochs=Fraction(3), steps_per_epoch=9 * 10**15)
