"""Tests for lrsched.hf_plan: HF's arguments read as the strategy's, what was typed, refusals (no training)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("transformers")
from transformers import HfArgumentParser, TrainingArguments

from lrsched.errors import UsageError
from lrsched.hf import StrategyArguments, StrategyTrainingArguments
from lrsched.hf_plan import plan_json, resolve_plan, typed_names, write_plan_json


def hf_args(tmp_path: Path, **kwargs: Any) -> TrainingArguments:
    return TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True, **kwargs)


def parsed(tmp_path: Path, *argv: str) -> StrategyTrainingArguments:
    (args,) = HfArgumentParser(StrategyTrainingArguments).parse_args_into_dataclasses(
        ["--output_dir", str(tmp_path), "--use_cpu", *argv]
    )
    return args  # type: ignore[no-any-return]


# --- given means typed ----------------------------------------------------------------------------


def test_typed_on_the_command_line_even_at_a_default(tmp_path: Path) -> None:
    args = parsed(tmp_path, "--learning_rate", "5e-5", "--num-train-epochs", "3")
    names = ("learning_rate", "num_train_epochs", "warmup_steps", "lr_strategy")
    assert typed_names(args, names=names) == {"learning_rate", "num_train_epochs"}
    assert typed_names(parsed(tmp_path), names=names) == set()


def test_typed_in_code_is_what_the_constructor_was_given(tmp_path: Path) -> None:
    args = StrategyTrainingArguments(str(tmp_path), learning_rate=5e-5, use_cpu=True)
    assert typed_names(args, names=("output_dir", "learning_rate", "lr_strategy")) == {"output_dir", "learning_rate"}


def test_a_copy_by_dataclasses_replace_keeps_what_was_typed(tmp_path: Path) -> None:
    import dataclasses

    copy = dataclasses.replace(parsed(tmp_path, "--learning_rate", "5e-5"), num_train_epochs=2.0)
    names = ("learning_rate", "num_train_epochs", "lr_scheduler_type", "warmup_steps")
    assert typed_names(copy, names=names) == {"learning_rate", "num_train_epochs"}


def test_separate_strategy_arguments_record_the_whole_command_line(tmp_path: Path) -> None:
    parser = HfArgumentParser((TrainingArguments, StrategyArguments))
    args, strategy = parser.parse_args_into_dataclasses(["--output_dir", str(tmp_path), "--learning_rate", "5e-5"])
    assert typed_names(strategy, args, names=("learning_rate", "lr_strategy")) == {"learning_rate"}
    assert resolve_plan(strategy, args, 10).schedule.base == 5e-5


def test_without_a_record_a_value_at_its_class_default_is_not_typed(tmp_path: Path) -> None:
    """A plain TrainingArguments built in code records nothing: 5e-5 (HF's default) is not typed, 1e-4 is."""
    assert typed_names(hf_args(tmp_path), names=("learning_rate",)) == set()
    assert typed_names(hf_args(tmp_path, learning_rate=1e-4), names=("learning_rate",)) == {"learning_rate"}


def test_the_learning_rate_rule(tmp_path: Path) -> None:
    one = dict(num_train_epochs=1)
    assert resolve_plan(StrategyArguments(), hf_args(tmp_path, **one), 10).schedule.base == 3e-5
    assert resolve_plan(parsed(tmp_path, "--num_train_epochs", "3"), hf_args(tmp_path), 10).schedule.base == 4e-5
    typed = parsed(tmp_path, "--learning_rate", "5e-5")
    assert resolve_plan(typed, typed, 10).schedule.base == 5e-5
    scaled = StrategyArguments(scale_lr_for_short_training=True)
    assert resolve_plan(scaled, hf_args(tmp_path, learning_rate=1e-4, **one), 10).schedule.base == pytest.approx(6e-5)


# --- HF's arguments as the strategy's -------------------------------------------------------------


def test_strategy_arguments_parse_next_to_training_arguments(tmp_path: Path) -> None:
    parser = HfArgumentParser((TrainingArguments, StrategyArguments))
    argv = ["--output_dir", str(tmp_path), "--lr-strategy", "cosine", "--min_lr", "1e-6", "--decay_ratio", "0.1"]
    args, strategy = parser.parse_args_into_dataclasses(argv)
    assert (strategy.lr_strategy, strategy.min_lr, strategy.decay_ratio) == ("cosine", 1e-6, "0.1")
    plan = resolve_plan(strategy, args, 100)
    assert plan.shape == "cosine" and plan.schedule.final == 1e-6
    assert any("--decay_ratio 0.1 changes nothing" in n for n in plan.notes)


@pytest.mark.parametrize("classes", [(StrategyTrainingArguments,), (TrainingArguments, StrategyArguments)])
def test_help_lists_the_strategy_flags_and_no_program(
    classes: tuple[type, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        HfArgumentParser(classes).parse_args_into_dataclasses(["--help"])
    assert exc.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "--scale_lr_for_short_training" in out and "and warm up 5%" in out and "--lr-strategy" in out
    assert "{auto,constant,linear,cosine,cosine_restarts,wsd}" in out and "--replan" in out
    assert "train.py" not in out and "phase5" not in out


def test_warmup_and_epochs_are_read_exactly(tmp_path: Path) -> None:
    plan = resolve_plan(StrategyArguments(), hf_args(tmp_path, num_train_epochs=1, warmup_steps=0.07), 100)
    assert plan.schedule.warmup == 7  # math.ceil(0.07 * 100) is 8, as HF computes it
    plan = resolve_plan(StrategyArguments(), hf_args(tmp_path, num_train_epochs=0.07), 100)
    assert plan.schedule.total == 7 and plan.source("total") == "0.07 epochs x 100 updates"
    plan = resolve_plan(StrategyArguments(), hf_args(tmp_path, warmup_steps=12), 100)
    assert plan.schedule.warmup == 12 and plan.source("warmup") == "--warmup_steps 12"


@pytest.mark.parametrize(
    ("strategy", "kwargs", "message"),
    [
        (StrategyArguments(lr_strategy="cosin"), {}, "--lr_strategy cosin: unknown strategy 'cosin'; did you mean"),
        (StrategyArguments(num_cycles=0.0), {}, "--num_cycles 0.0: must be > 0"),
        (StrategyArguments(decay_ratio="1.5"), {}, "--decay_ratio 1.5: must be in (0, 1]"),
        (StrategyArguments(decay_type="sqrt"), {}, "--decay_type sqrt: must be one of cosine, linear, 1-sqrt"),
        (StrategyArguments(cosine_restarts=True, lr_strategy="linear"), {}, "--cosine_restarts: conflicts"),
        (StrategyArguments(), dict(warmup_steps=2.5), "--warmup_steps 2.5: must be a whole number"),
        (
            StrategyArguments(),
            dict(lr_scheduler_type="cosine_with_restarts"),
            "--lr_scheduler_type cosine_with_restarts: the strategy sets the schedule; "
            "give --lr_strategy cosine_restarts --num_cycles C instead",
        ),
        (
            StrategyArguments(),
            dict(lr_scheduler_kwargs={"num_cycles": 2, "min_lr": 1e-6}),
            '--lr_scheduler_kwargs {"num_cycles": 2, "min_lr": 1e-06}: not read by the strategy; '
            "give --min_lr, --num_cycles instead",
        ),
    ],
)
def test_a_bad_or_unfollowed_argument_is_one_usage_error_naming_it(
    strategy: StrategyArguments, kwargs: dict[str, Any], message: str, tmp_path: Path
) -> None:
    with pytest.raises(UsageError) as err:
        resolve_plan(strategy, hf_args(tmp_path, **kwargs), 10)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_a_typed_lr_scheduler_type_is_refused_even_at_hf_s_default(tmp_path: Path) -> None:
    args = parsed(tmp_path, "--lr_scheduler_type", "linear")
    with pytest.raises(UsageError, match="--lr_scheduler_type linear: the strategy sets the schedule"):
        resolve_plan(args, args, 10)


def test_a_schedule_a_class_brings_is_noted_not_refused(tmp_path: Path) -> None:
    """A TrainingArguments subclass defaulting to cosine and to scheduler keywords: not typed, so noted."""
    from dataclasses import dataclass, field

    from lrsched.hf import with_strategy

    @dataclass
    class CosineArguments(TrainingArguments):
        lr_scheduler_type: str = "cosine"
        lr_scheduler_kwargs: dict[str, Any] = field(default_factory=lambda: {"num_cycles": 0.5})

    made = with_strategy(CosineArguments)
    args = made(str(tmp_path), use_cpu=True)
    plan = resolve_plan(args, args, 10)
    assert (
        "--lr_scheduler_type cosine (StrategyCosineArguments's default) is not used: the plan sets the LR" in plan.notes
    )
    assert '--lr_scheduler_kwargs {"num_cycles": 0.5} (StrategyCosineArguments\'s default) is not used' in plan.notes
    typed = made(str(tmp_path), use_cpu=True, lr_scheduler_type="cosine")
    with pytest.raises(UsageError, match="--lr_scheduler_type cosine: the strategy sets the schedule"):
        resolve_plan(typed, typed, 10)


def test_the_trainer_s_other_count_is_noted(tmp_path: Path) -> None:
    plan = resolve_plan(StrategyArguments(), hf_args(tmp_path, num_train_epochs=0.07), 100, trainer_steps=8)
    assert plan.schedule.total == 7
    assert "the Trainer makes 8 updates (its float epochs x updates), the plan ends at 7" in " ".join(plan.notes)


def test_max_steps_without_a_dataloader_length_notes_the_default_epochs(tmp_path: Path) -> None:
    plan = resolve_plan(StrategyArguments(), hf_args(tmp_path, max_steps=40), None)
    assert plan.schedule.total == 40 and plan.shape == "linear"
    assert "without a length: the row is for the default 3 epochs" in plan.notes[0]
    with pytest.raises(UsageError, match="--max_steps: required when the training dataloader has no length"):
        resolve_plan(StrategyArguments(), hf_args(tmp_path), None)


def test_plan_json_lists_every_step_or_every_nth(tmp_path: Path) -> None:
    small = resolve_plan(StrategyArguments(), hf_args(tmp_path, num_train_epochs=2), 10)
    content = plan_json(small, {"batches": 10}, small.schedule)
    assert content["lr"] == [small.schedule(t) for t in range(21)] and "steps" not in content
    big = resolve_plan(StrategyArguments(), hf_args(tmp_path, num_train_epochs=2), 50_000)
    content = plan_json(big, {}, big.schedule)
    assert content["steps"][:3] == [0, 11, 22] and content["steps"][-1] == 100_000 and len(content["lr"]) <= 10_001
    path = write_plan_json(tmp_path / "new", content)
    assert json.loads(path.read_text())["plan"]["total_steps"] == 100_000
