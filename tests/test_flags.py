"""Tests for lrsched.flags: both spellings, one-line errors with exit status 2, what was typed, no program named."""

from __future__ import annotations

import argparse
from fractions import Fraction

import pytest

from lrsched.errors import ScheduleError, UsageError
from lrsched.flags import (
    FLAGS,
    ArgumentParser,
    add_schedule_flags,
    flag_names,
    given,
    spellings,
    typed_names,
    typed_values,
    usage_errors,
)

ALL_FLAGS = tuple(FLAGS)
STEP_FLAGS = ("lr", "warmup_steps", "warmup_ratio", "min_lr", "max_steps", "replan", "decay_ratio", "decay_type")
EPOCH_FLAGS = tuple(n for n in FLAGS if n not in ("lr", "replan"))

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
}


def parser_for(names: tuple[str, ...] = ALL_FLAGS) -> ArgumentParser:
    parser = ArgumentParser(prog="prog")
    add_schedule_flags(parser, names)
    return parser


def finetune_parser() -> ArgumentParser:
    return parser_for(EPOCH_FLAGS)


def pretrain_parser() -> ArgumentParser:
    return parser_for(STEP_FLAGS)


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
    ("max_steps", str(2**53 + 1)),
    ("warmup_steps", str(2**53 + 1)),
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
def test_a_parser_has_only_the_flags_it_names(name: str) -> None:
    assert name in STEP_FLAGS
    parser = pretrain_parser()
    assert parser.parse_args([]).__dict__.keys() == set(STEP_FLAGS)
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


# --- issue 22: each program's help, and args.json in JSON types ---------------------------------


def test_args_json_holds_json_types_and_resolved_defaults() -> None:
    import json
    from pathlib import Path

    from lrsched.flags import args_json

    defaults = {"num_epochs": Fraction(3), "lr_strategy": "auto"}
    parser = parser_for(EPOCH_FLAGS)
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--output_dir", type=Path)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(["--num_epochs", "1", "--bf16", "--output_dir", "runs/x", "--warmup_ratio", "0.05"])
    record = args_json(args, defaults)
    assert json.loads(json.dumps(record)) == record
    assert (record["bf16"], record["seed"], record["num_epochs"]) == (True, 1, 1)
    assert (record["lr_strategy"], record["warmup_ratio"], record["output_dir"]) == ("auto", 0.05, "runs/x")
    assert record["learning_rate"] is None and record["cosine_restarts"] is False
    assert args_json(parser.parse_args([]), defaults)["num_epochs"] == 3
    assert args_json(parser.parse_args(["--num_epochs", "2.5"]))["num_epochs"] == 2.5


# --- issue 27: given means typed, and the table names no program ---------------------------------


def test_typed_names_counts_a_value_equal_to_its_default_and_never_a_default() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--learning_rate", type=float, default=5e-5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--bf16", action="store_true")
    parser.set_defaults(extra="from set_defaults")
    assert typed_names(parser, ["--learning_rate", "5e-5"]) == {"learning_rate"}  # equals the default: typed
    assert typed_names(parser, []) == frozenset()
    assert typed_names(parser, ["--bf16", "--seed=42"]) == {"bf16", "seed"}
    assert typed_names(parser, [], passed=["seed"]) == {"seed"}  # a keyword given to a constructor in code
    ns = parser.parse_args(["--seed", "7"])
    assert typed_values(ns, typed_names(parser, ["--seed", "7"])) == {"seed": 7}
    assert parser.parse_args([]).learning_rate == 5e-5 and parser.parse_args([]).extra == "from set_defaults"


def test_typed_names_reads_subcommands() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    show = sub.add_parser("show")
    add_schedule_flags(show, ("lr", "max_steps"))
    show.add_argument("--every", type=int, default=1)
    assert typed_names(parser, ["show", "--lr", "1e-3"]) == {"command", "lr"}


def test_typed_names_of_an_hf_parser_leaves_out_the_defaults_a_config_brings() -> None:
    """TRL's ``SFTConfig`` defaults the learning rate to 2e-5: not typed; ``--learning_rate 5e-5`` typed is."""
    transformers = pytest.importorskip("transformers")
    from dataclasses import dataclass, field

    @dataclass
    class Config:
        learning_rate: float = field(default=2e-5)
        num_train_epochs: float = field(default=3.0)

    parser = transformers.HfArgumentParser(Config)
    assert typed_names(parser, []) == frozenset()
    assert typed_names(parser, ["--learning_rate", "2e-5"]) == {"learning_rate"}
    assert typed_names(parser, ["--num_train_epochs", "3"], passed=["learning_rate"]) == {
        "num_train_epochs",
        "learning_rate",
    }


def test_given_is_what_typed_names_says_for_flags_without_defaults() -> None:
    parser = parser_for()
    for argv in ([], ["--lr", "5e-4"], ["--cosine_restarts", "--num-epochs", "3"], ["--warmup-steps", "0"]):
        ns = parser.parse_args(argv)
        assert given(ns, ALL_FLAGS) == typed_values(ns, typed_names(parser, argv)), argv


def test_the_flag_table_names_no_program() -> None:
    text = " ".join(str(spec.get("help", "")) for spec in FLAGS.values())
    for name in ("phase5", "train.py", "note 0", "DINO"):
        assert name not in text, name
    assert "auto, constant, linear, cosine, cosine_restarts, wsd" in FLAGS["lr_strategy"]["help"]


def test_flag_names_spell_each_keyword_as_its_flag() -> None:
    assert flag_names()["epochs"] == "--num_epochs" and flag_names()["strategy"] == "--lr_strategy"
    assert flag_names(dashed=True)["warmup_steps"] == "--warmup-steps"
    assert flag_names(epochs="--num_train_epochs")["epochs"] == "--num_train_epochs"


def test_step_counts_are_bounded_at_parse_time_by_2_53(capsys: pytest.CaptureFixture[str]) -> None:
    """Every integer up to 2**53 is exact in a float64 schedule: more is refused by the parser, in words."""
    assert parser_for().parse_args(["--max-steps", str(2**53)]).max_steps == 2**53
    with pytest.raises(SystemExit):
        parser_for().parse_args(["--max-steps", str(10**19)])
    assert "10000000000000000000: must be in [1, 2**53]" in capsys.readouterr().err
