"""Tests for lrsched.flags: both spellings, one-line errors with exit status 2, flags -> plans."""

from __future__ import annotations

import argparse
from fractions import Fraction

import pytest

from lrsched.errors import ScheduleError, UsageError
from lrsched.flags import (
    FINETUNE_FLAGS,
    FLAGS,
    PRETRAIN_FLAGS,
    ArgumentParser,
    add_schedule_flags,
    finetune_plan,
    pretrain_plan,
    spellings,
    usage_errors,
)

ALL_FLAGS = tuple(dict.fromkeys(PRETRAIN_FLAGS + FINETUNE_FLAGS))

# one good value per flag and what it parses to (None: a switch)
GOOD: dict[str, tuple[str | None, object]] = {
    "lr": ("1e-3", 1e-3),
    "warmup_steps": ("5", 5),
    "min_lr": ("1e-6", 1e-6),
    "max_steps": ("100", 100),
    "replan": (None, True),
    "num_epochs": ("2.5", Fraction(5, 2)),
    "learning_rate": ("2e-5", 2e-5),
    "lr_strategy": ("cosine", "cosine"),
    "scale_lr_for_short_training": (None, True),
    "cosine_restarts": (None, True),
    "warmup_ratio": ("0.1", Fraction(1, 10)),
    "num_cycles": ("1.5", 1.5),
    "decay_ratio": ("0.07", Fraction(7, 100)),
    "decay_type": ("1-sqrt", "1-sqrt"),
    "lr_ref_batch": ("256", 256),
}


def parser_for(names: tuple[str, ...] = ALL_FLAGS) -> ArgumentParser:
    parser = ArgumentParser(prog="prog")
    add_schedule_flags(parser, names)
    return parser


def finetune_parser() -> ArgumentParser:
    return parser_for(FINETUNE_FLAGS)


def pretrain_parser() -> ArgumentParser:
    return parser_for(PRETRAIN_FLAGS)


def test_every_flag_has_a_test_value() -> None:
    assert set(GOOD) == set(FLAGS) == set(ALL_FLAGS)


@pytest.mark.parametrize("name", sorted(FLAGS))
def test_both_spellings_parse_to_the_same_dest(name: str) -> None:
    text, want = GOOD[name]
    forms = spellings(name)
    assert f"--{name.replace('_', '-')}" in forms
    assert f"--{name}" in forms
    results = []
    for flag in forms:
        argv = [flag] if text is None else [flag, text]
        ns = parser_for().parse_args(argv)
        assert getattr(ns, name) == want
        results.append(vars(ns))
        if text is not None:
            assert vars(parser_for().parse_args([f"{flag}={text}"])) == vars(ns)
    assert all(r == results[0] for r in results)


def test_defaults_are_none_or_false() -> None:
    ns = parser_for().parse_args([])
    for name, (text, _) in GOOD.items():
        assert getattr(ns, name) is (False if text is None else None), name


def test_fractions_stay_exact() -> None:
    ns = parser_for().parse_args(["--num-epochs", "0.1", "--warmup-ratio", "0.3"])
    assert ns.num_epochs == Fraction(1, 10)
    assert ns.warmup_ratio == Fraction(3, 10)


def _flag_forms(name: str) -> tuple[str, ...]:
    return tuple(spellings(name))


BAD = [
    ("num_epochs", "0"),
    ("num_epochs", "-1"),
    ("num_epochs", "nan"),
    ("num_epochs", "inf"),
    ("num_epochs", "three"),
    ("learning_rate", "0"),
    ("learning_rate", "-1e-5"),
    ("learning_rate", "nan"),
    ("learning_rate", "-inf"),
    ("learning_rate", "fast"),
    ("lr", "0"),
    ("lr", "-5e-4"),
    ("lr", "NaN"),
    ("lr", "inf"),
    ("lr", "5e-4x"),
    ("min_lr", "-1e-6"),
    ("min_lr", "nan"),
    ("min_lr", "inf"),
    ("min_lr", "low"),
    ("warmup_steps", "-1"),
    ("warmup_steps", "2.5"),
    ("warmup_steps", "nan"),
    ("warmup_steps", "many"),
    ("max_steps", "0"),
    ("max_steps", "-10"),
    ("max_steps", "1e3"),
    ("max_steps", "inf"),
    ("lr_strategy", "cosin"),
    ("lr_strategy", "banana"),
    ("lr_strategy", ""),
    ("warmup_ratio", "1.0"),
    ("warmup_ratio", "1"),
    ("warmup_ratio", "1.5"),
    ("warmup_ratio", "-0.1"),
    ("warmup_ratio", "nan"),
    ("warmup_ratio", "ten"),
    ("num_cycles", "0"),
    ("num_cycles", "-2"),
    ("num_cycles", "nan"),
    ("num_cycles", "inf"),
    ("num_cycles", "two"),
]


@pytest.mark.parametrize(("name", "value"), BAD)
def test_bad_value_exits_2_with_one_line_naming_the_flag(
    name: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for flag in spellings(name):
        with pytest.raises(SystemExit) as exc:
            parser_for().parse_args([f"{flag}={value}"])
        assert exc.value.code == 2
        out, err = capsys.readouterr()
        assert out == ""
        assert err.endswith("\n") and err.count("\n") == 1, err
        assert err.startswith("prog: error: ")
        assert any(form in err for form in _flag_forms(name)), err
        assert value in err, err
        assert "Traceback" not in err and "usage:" not in err


@pytest.mark.parametrize(("name", "value"), [("lr", "-1"), ("min_lr", "-0.5"), ("max_steps", "-3")])
def test_negative_value_as_separate_word(name: str, value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parser_for().parse_args([spellings(name)[0], value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert spellings(name)[0] in err


def test_unknown_strategy_suggests_the_nearest(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        finetune_parser().parse_args(["--lr_strategy", "cosin"])
    err = capsys.readouterr().err
    assert "did you mean 'cosine'?" in err
    with pytest.raises(SystemExit):
        finetune_parser().parse_args(["--lr-strategy", "cosine_restart"])
    assert "did you mean 'cosine_restarts'?" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        finetune_parser().parse_args(["--lr-strategy", "zzzz"])
    err = capsys.readouterr().err
    assert "did you mean" not in err and "auto" in err


def test_missing_value_and_unknown_flag_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--lr"], ["--max-steps"], ["--no-such-flag"]):
        with pytest.raises(SystemExit) as exc:
            pretrain_parser().parse_args(argv)
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and argv[0] in err


@pytest.mark.parametrize("name", ["lr", "max_steps", "replan"])
def test_pretrain_parser_has_only_its_flags(name: str) -> None:
    assert name in PRETRAIN_FLAGS
    parser = pretrain_parser()
    assert parser.parse_args([]).__dict__.keys() == set(PRETRAIN_FLAGS)
    with pytest.raises(SystemExit):
        parser.parse_args(["--num-epochs", "1"])


def test_every_spelling_is_registered() -> None:
    parser = parser_for()
    registered = {s for a in parser._actions for s in a.option_strings}
    for name in ALL_FLAGS:
        for form in spellings(name):
            assert form in registered


# --- usage_errors ---


@pytest.mark.parametrize(
    "error", [UsageError("--min-lr 1: must be between 0 and the peak LR 0.0005"), ScheduleError("total=3: x")]
)
def test_usage_errors_become_one_line_and_exit_2(error: Exception, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc, usage_errors("phase5_big_run.py"):
        raise error
    assert exc.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"phase5_big_run.py: error: {error}\n"
    assert exc.value.__cause__ is None and exc.value.__suppress_context__


def test_usage_errors_let_other_errors_and_success_through(capsys: pytest.CaptureFixture[str]) -> None:
    with usage_errors("prog"):
        value = 1
    assert value == 1
    with pytest.raises(KeyError), usage_errors("prog"):
        raise KeyError("x")
    with pytest.raises(ValueError, match="plain"), usage_errors("prog"):
        raise ValueError("plain")
    assert capsys.readouterr().err == ""


# --- flags -> plans ---


def test_issue_example_one_epoch() -> None:
    plan = finetune_plan(finetune_parser().parse_args(["--num_epochs", "1"]), steps_per_epoch=200)
    s = plan.schedule
    assert (s.shape, s.base, s.warmup, s.total) == ("constant", 3e-5, 10, 200)


def test_issue_example_three_epochs() -> None:
    plan = finetune_plan(finetune_parser().parse_args(["--num_epochs", "3"]), steps_per_epoch=100)
    s = plan.schedule
    assert (s.shape, s.base, s.warmup, s.total) == ("linear", 4e-5, 30, 300)


def test_issue_example_ten_epochs_cosine_restarts() -> None:
    plan = finetune_plan(finetune_parser().parse_args(["--num_epochs", "10", "--cosine_restarts"]), 100)
    s = plan.schedule
    assert (s.shape, s.base, s.warmup, s.total, plan.cycles) == ("cosine_restarts", 5e-5, 100, 1000, 2.0)


def test_finetune_default_epochs_is_3() -> None:
    plan = finetune_plan(finetune_parser().parse_args([]), steps_per_epoch=10)
    assert plan.schedule.total == 30 and plan.shape == "linear"


def test_finetune_flags_reach_the_plan() -> None:
    argv = [
        "--num-epochs=2.5",
        "--learning-rate=1e-4",
        "--lr-strategy=cosine_restarts",
        "--scale-lr-for-short-training",
        "--warmup-ratio=0.1",
        "--num-cycles=3",
        "--min-lr=1e-7",
    ]
    plan = finetune_plan(finetune_parser().parse_args(argv), steps_per_epoch=3)
    s = plan.schedule
    assert s.total == 8  # ceil(2.5 * 3)
    assert s.warmup == 1  # ceil(0.1 * 8)
    assert s.base == pytest.approx(8e-5, rel=1e-12)
    assert (s.shape, s.cycles, s.final) == ("cosine_restarts", 3.0, 1e-7)
    underscored = ["--" + a[2:].split("=")[0].replace("-", "_") + a[2:][len(a[2:].split("=")[0]) :] for a in argv]
    assert underscored[0] == "--num_epochs=2.5"
    assert finetune_plan(finetune_parser().parse_args(underscored), 3) == plan


def test_exact_ratio_through_the_parser() -> None:
    plan = finetune_plan(finetune_parser().parse_args(["--max-steps", "70", "--warmup-ratio", "0.1"]), None)
    assert (plan.schedule.warmup, plan.schedule.total) == (7, 70)


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--cosine_restarts", "--lr_strategy", "linear"], "--cosine_restarts"),
        (["--num-epochs", "3", "--min-lr", "1"], "--min_lr"),
        (["--max-steps", "10", "--warmup-steps", "10"], "--warmup_steps"),
    ],
)
def test_finetune_usage_errors_exit_2(argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    args = finetune_parser().parse_args(argv)
    with pytest.raises(SystemExit) as exc, usage_errors("train.py"):
        finetune_plan(args, steps_per_epoch=100)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"train.py: error: {flag}") and err.count("\n") == 1


def test_pretrain_plan_defaults_and_flags() -> None:
    plan = pretrain_plan(pretrain_parser().parse_args([]))
    assert (plan.schedule.base, plan.schedule.warmup, plan.schedule.final, plan.schedule.total) == (
        5e-4,
        2500,
        1e-6,
        None,
    )
    assert any("no --max-steps" in note and "0.0005" in note for note in plan.notes)
    plan = pretrain_plan(pretrain_parser().parse_args(["--lr", "1e-3", "--warmup_steps", "10", "--max_steps", "110"]))
    assert (plan.schedule.base, plan.schedule.warmup, plan.schedule.total) == (1e-3, 10, 110)


def test_pretrain_warmup_not_below_max_steps_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    args = pretrain_parser().parse_args(["--warmup-steps", "100", "--max-steps", "100"])
    with pytest.raises(SystemExit) as exc, usage_errors("phase5_big_run.py"):
        pretrain_plan(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--warmup-steps 100" in err and "--max-steps 100" in err and err.count("\n") == 1


def test_help_lists_both_spellings(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parser_for().parse_args(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--warmup-steps" in out and "--warmup_steps" in out and "--lr_strategy" in out


def test_add_schedule_flags_accepts_a_plain_argparse_parser() -> None:
    parser = argparse.ArgumentParser()
    add_schedule_flags(parser, ("lr", "max_steps"))
    assert parser.parse_args(["--max_steps", "3"]).max_steps == 3


# --- issue 23: phase5's --warmup-ratio, from the one flag table ---


def test_phase5_takes_warmup_ratio_in_both_spellings_exactly() -> None:
    assert "warmup_ratio" in PRETRAIN_FLAGS
    for spelling in spellings("warmup_ratio"):
        plan = pretrain_plan(pretrain_parser().parse_args([spelling, "0.07", "--max-steps", "100"]))
        assert plan.schedule.warmup == 7


def test_the_programs_parsers_define_warmup_ratio_once_from_the_table() -> None:
    from lrsched.cli import build_parser
    from lrsched.recipes.dino.flags import build_parser as phase5_parser

    for parser in (phase5_parser(), build_parser()._subparsers._group_actions[0].choices["show"]):  # type: ignore[union-attr]
        actions = [a for a in parser._actions if a.dest == "warmup_ratio"]
        assert len(actions) == 1 and actions[0].option_strings == ["--warmup-ratio", "--warmup_ratio"]
        assert actions[0].type is FLAGS["warmup_ratio"]["type"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--warmup-ratio", "0.1"], "--warmup-ratio 0.1: needs --max-steps"),
        (["--warmup-ratio", "0.1", "--warmup-steps", "5", "--max-steps", "100"], "not both"),
        (["--warmup-ratio", "1", "--max-steps", "100"], "--warmup-ratio/--warmup_ratio: 1: must be in [0, 1)"),
    ],
)
def test_phase5_refuses_a_bad_warmup_ratio_in_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc, usage_errors("phase5_big_run.py"):
        pretrain_plan(pretrain_parser().parse_args(argv))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


# --- issue 22: each program's help, and args.json in JSON types ---------------------------------


@pytest.mark.parametrize(
    "program, names, mine, other",
    [("phase5", PRETRAIN_FLAGS, "(default 1e-6)", "train.py"), ("train", FINETUNE_FLAGS, "(default 0)", "phase5")],
)
def test_each_program_s_help_states_its_own_defaults(
    program: str, names: tuple[str, ...], mine: str, other: str
) -> None:
    parser = ArgumentParser(prog=program)
    add_schedule_flags(parser, names, program=program)
    text = " ".join(parser.format_help().split())
    assert f"floor at the end of the decay {mine}" in text and other not in text
    both = " ".join(parser_for(names).format_help().split())
    assert "phase5 default 1e-6; train.py default 0" in both  # lrsched itself serves both programs


def test_args_json_holds_json_types_and_resolved_defaults() -> None:
    import json
    from pathlib import Path

    from lrsched.flags import FINETUNE_DEFAULTS, args_json

    parser = parser_for(FINETUNE_FLAGS)
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--output_dir", type=Path)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(["--num_epochs", "1", "--bf16", "--output_dir", "runs/x", "--warmup_ratio", "0.05"])
    record = args_json(args, FINETUNE_DEFAULTS)
    assert json.loads(json.dumps(record)) == record
    assert (record["bf16"], record["seed"], record["num_epochs"]) == (True, 1, 1)
    assert (record["lr_strategy"], record["warmup_ratio"], record["output_dir"]) == ("auto", 0.05, "runs/x")
    assert record["learning_rate"] is None and record["cosine_restarts"] is False
    assert args_json(parser.parse_args([]), FINETUNE_DEFAULTS)["num_epochs"] == 3
    assert args_json(parser.parse_args(["--num_epochs", "2.5"]))["num_epochs"] == 2.5
