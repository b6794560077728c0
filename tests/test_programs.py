"""Tests for lrsched.programs: programs plug in through entry points, and each one's plan, flags and help.

train.py and phase5 are found as any third program is: through the entry-point group
``lrsched.programs``. A toy program, installed for the test as a package's metadata on the path,
shows its plan through ``lrsched show`` without any change to the library.
"""

from __future__ import annotations

import argparse
import subprocess
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from helpers import PYTHON, SRC, child_env

from lrsched import cli, flags, hf_program, programs
from lrsched.errors import UsageError
from lrsched.programs import Program, Shown
from lrsched.recipes.dino import plan as phase5
from lrsched.recipes.finetune import plan as train
from lrsched.step_plan import StepDefaults, resolve_steps

SHOW = "import sys; from lrsched.cli import main; sys.exit(main(sys.argv[1:]))"


def test_the_programs_are_found_through_their_entry_points() -> None:
    found = programs.installed()
    assert [p.name for p in found] == ["phase5_big_run.py", "train.py", "HF Trainer script"]
    assert found == (phase5.PROGRAM, train.PROGRAM, hf_program.PROGRAM)


# --- a third program plugs in --------------------------------------------------------------------

TOY = """
from lrsched.programs import Program, Shown
from lrsched.step_plan import StepDefaults, resolve_steps


def plan(given):
    return Shown(
        resolve_steps(
            defaults=StepDefaults(peak=1e-3, warmup_steps=10, min_lr=0.0),
            warmup_steps=given.get("warmup_steps"),
            max_steps=given.get("toy_steps", 100),
            names={"max_steps": "--toy-steps", "warmup_steps": "--warmup-steps"},
            shape_source="toy.py: warm-up + cosine",
        )
    )


PROGRAM = Program(
    name="toy.py",
    schedule_flags=("warmup_steps",),
    plan=plan,
    flags={"toy_steps": dict(type=int, metavar="N", help="toy.py's total steps (default 100)")},
    other_flags={"toy_seed": 1},
)
"""


@pytest.fixture(scope="module")
def toy_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding ``toyprog.py`` and the metadata of an installed package that declares it."""
    root = tmp_path_factory.mktemp("toy")
    (root / "toyprog.py").write_text(textwrap.dedent(TOY))
    info = root / "toyprog-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toyprog\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[lrsched.programs]\ntoy.py = toyprog:PROGRAM\n")
    return root


def show(toy: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = child_env(PYTHONPATH=f"{SRC}:{toy}")
    return subprocess.run([PYTHON, "-c", SHOW, "show", *argv], capture_output=True, text=True, env=env, timeout=120)


def test_a_third_program_plugs_in_through_an_entry_point(toy_path: Path) -> None:
    done = show(toy_path, "--toy-steps", "50", "--warmup-steps", "5", "--toy-seed", "3")
    assert (done.returncode, done.stderr) == (0, "")
    lines = done.stdout.splitlines()
    assert lines[0] == "plan for toy.py"
    assert "(toy.py: warm-up + cosine)" in lines[1] and "(--toy-steps 50)" in done.stdout
    assert "  peak    0.001            (default)" in lines
    assert "  note: not used for toy.py's LR plan: --toy_seed 3" in lines


def test_the_other_programs_keep_their_plans_beside_a_third(toy_path: Path) -> None:
    phase5_line = show(toy_path, "--max-steps", "100", "--warmup-steps", "10")
    assert phase5_line.stdout.splitlines()[0] == "plan for phase5_big_run.py"
    train_line = show(toy_path, "--num_epochs", "3", "--steps_per_epoch", "100")
    assert train_line.stdout.splitlines()[0] == "plan for train.py"
    both = show(toy_path, "--toy-steps", "50", "--num_epochs", "3")
    assert both.returncode == 2 and both.stdout == "" and both.stderr.count("\n") == 1
    assert "is train.py's flag, but --toy_steps makes this toy.py's plan" in both.stderr
    listed = show(toy_path, "--help")
    assert "toy.py flags (any of them selects toy.py's plan)" in listed.stdout and "--toy-steps" in listed.stdout


def toy_program() -> Program:
    def plan(given: Mapping[str, Any]) -> Shown:
        return Shown(resolve_steps(defaults=StepDefaults(2e-3, 0, 0.0), max_steps=given.get("toy_steps", 10)))

    return Program(name="toy.py", schedule_flags=(), plan=plan, flags={"toy_steps": dict(type=int)})


def test_the_entry_point_lookup_is_the_one_seam(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = programs.installed
    monkeypatch.setattr(programs, "installed", lambda: (*real(), toy_program()))
    assert cli.main(["show", "--toy-steps", "4"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("plan for toy.py\n") and "  total   4 steps" in out


def test_an_entry_point_that_is_no_program_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    class Point:
        name, value = "bad", "somewhere:THING"

        def load(self) -> object:
            return object()

    monkeypatch.setattr(programs, "entry_points", lambda group: [Point()])
    with pytest.raises(UsageError, match=r"^entry point bad = somewhere:THING: is not an lrsched"):
        programs.installed()


def test_with_no_program_installed_show_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(programs, "installed", lambda: ())
    assert cli.main(["show", "--max-steps", "10"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no program is installed" in err


# --- each program's plan from its parsed flags ----------------------------------------------------


def train_parser() -> argparse.ArgumentParser:
    from lrsched.recipes.finetune.flags import build_parser

    return build_parser()


def phase5_parser() -> argparse.ArgumentParser:
    from lrsched.recipes.dino.flags import build_parser

    return build_parser()


@pytest.mark.parametrize(
    ("argv", "steps_per_epoch", "want"),
    [
        (["--num_epochs", "1"], 200, ("constant", 3e-5, 10, 200)),
        (["--num_epochs", "3"], 100, ("linear", 4e-5, 30, 300)),
        ([], 10, ("linear", 4e-5, 3, 30)),  # train.py's default: 3 epochs
        (["--num_epochs", "10", "--cosine_restarts"], 100, ("cosine_restarts", 5e-5, 100, 1000)),
        (["--max-steps", "70", "--warmup-ratio", "0.1"], None, ("linear", 4e-5, 7, 70)),
    ],
)
def test_train_py_plans_its_parsed_flags(argv: list[str], steps_per_epoch: int | None, want: tuple[Any, ...]) -> None:
    s = train.plan_from_args(train_parser().parse_args(argv), steps_per_epoch).schedule
    assert (s.shape, s.base, s.warmup, s.total) == want


def test_phase5_plans_its_parsed_flags_with_its_defaults() -> None:
    plan = phase5.plan_from_args(phase5_parser().parse_args([]), processes=1)
    s = plan.schedule
    assert (s.base, s.warmup, s.final, s.total) == (5e-4, 2500, 1e-6, None)
    assert plan.source("shape") == "phase5_big_run.py: warm-up + cosine"
    argv = ["--lr", "1e-3", "--warmup_steps", "10", "--max_steps", "110"]
    s = phase5.plan_from_args(phase5_parser().parse_args(argv), processes=1).schedule
    assert (s.base, s.warmup, s.total) == (1e-3, 10, 110)
    for spelling in flags.spellings("warmup_ratio"):
        ratio = phase5.plan_from_args(phase5_parser().parse_args([spelling, "0.07", "--max-steps", "100"]), 1)
        assert ratio.schedule.warmup == 7


def test_phase5_scales_the_peak_by_the_processes_it_is_given() -> None:
    args = phase5_parser().parse_args(["--lr", "1e-3", "--lr-ref-batch", "256", "--batch-size", "64"])
    assert phase5.plan_from_args(args, processes=1).schedule.base == pytest.approx(2.5e-4)
    assert phase5.plan_from_args(args, processes=4).schedule.base == pytest.approx(1e-3)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--warmup-ratio", "0.1"], "--warmup-ratio 0.1: needs --max-steps"),
        (["--warmup-ratio", "0.1", "--warmup-steps", "5", "--max-steps", "100"], "not both"),
        (["--warmup-steps", "100", "--max-steps", "100"], "--warmup-steps 100: must be less than --max-steps 100"),
    ],
)
def test_phase5_refuses_a_bad_warmup_in_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc, flags.usage_errors("phase5_big_run.py"):
        phase5.plan_from_args(phase5_parser().parse_args(argv), 1)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--cosine_restarts", "--lr_strategy", "linear"], "--cosine_restarts"),
        (["--num-epochs", "3", "--min-lr", "1"], "--min_lr"),
        (["--max-steps", "10", "--warmup-steps", "10"], "--warmup_steps"),
    ],
)
def test_train_py_refuses_in_one_line_naming_its_flag(
    argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc, flags.usage_errors("train.py"):
        train.plan_from_args(train_parser().parse_args(argv), steps_per_epoch=100)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"train.py: error: {flag}") and err.count("\n") == 1


# --- given means typed ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parser", "names", "argv"),
    [
        (train_parser, train.SCHEDULE_FLAGS, ["--num_epochs", "3", "--lr_strategy", "auto", "--min_lr", "0"]),
        (train_parser, train.SCHEDULE_FLAGS, ["--cosine_restarts", "--warmup_ratio", "0.1"]),
        (phase5_parser, phase5.SCHEDULE_FLAGS, ["--lr", "5e-4", "--warmup-steps", "2500", "--min-lr", "1e-6"]),
        (phase5_parser, phase5.SCHEDULE_FLAGS, []),
    ],
)
def test_the_programs_read_typed_values_as_typed_names_says(
    parser: Any, names: tuple[str, ...], argv: list[str]
) -> None:
    """Both programs' schedule flags declare no default, so ``flags.given`` is ``typed_names``' answer."""
    built = parser()
    ns = built.parse_args(argv)
    typed = flags.typed_names(built, argv)
    assert flags.given(ns, names) == {k: v for k, v in flags.typed_values(ns, typed).items() if k in names}


def test_a_value_typed_equal_to_the_default_is_given() -> None:
    argv = ["--lr", "5e-4", "--warmup-steps", "2500", "--min-lr", "1e-6"]  # phase5's own defaults, typed
    plan = phase5.plan_from_args(phase5_parser().parse_args(argv), processes=1)
    assert (plan.source("peak"), plan.source("warmup"), plan.source("min_lr")) == (
        "--lr 0.0005",
        "--warmup-steps 2500",
        "--min-lr 1e-06",
    )
    untyped = phase5.plan_from_args(phase5_parser().parse_args([]), processes=1)
    assert untyped.source("peak") == untyped.source("warmup") == "default"


# --- each program's --help ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parser", "mine", "other"),
    [(phase5_parser, "(default 1e-6)", "train.py"), (train_parser, "(default 0)", "phase5")],
)
def test_each_program_s_help_states_its_own_defaults(parser: Any, mine: str, other: str) -> None:
    text = " ".join(parser().format_help().split())
    assert f"floor at the end of the decay {mine}" in text and other not in text
    assert "note 0" not in text


@pytest.mark.parametrize("parser", [phase5_parser, train_parser])
def test_help_shows_every_default(parser: Any) -> None:
    """Every flag that has a value without being typed says which in its help (switches and --replan excepted)."""
    built = parser()
    for action in built._actions:
        if not action.option_strings or action.dest == "help" or action.nargs == 0:
            continue
        assert "default" in (action.help or "").lower(), action.dest


def test_train_py_help_lists_the_strategies() -> None:
    text = " ".join(train_parser().format_help().split())
    assert "one of auto, constant, linear, cosine, cosine_restarts, wsd" in text


def test_the_programs_parsers_define_warmup_ratio_once_from_the_table() -> None:
    for parser in (phase5_parser(), train_parser(), cli.build_parser()._subparsers._group_actions[0].choices["show"]):  # type: ignore[union-attr]
        actions = [a for a in parser._actions if a.dest == "warmup_ratio"]
        assert len(actions) == 1 and actions[0].option_strings == ["--warmup-ratio", "--warmup_ratio"]
        assert actions[0].type is flags.FLAGS["warmup_ratio"]["type"]


def test_lrsched_show_counts_a_typed_default_as_given(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    assert cli.main(["show", "--warmup-steps", "2500", "--lr", "5e-4", "--max-steps", "10000", "--json"]) == 0
    sources = json.loads(capsys.readouterr().out)["plan"]["sources"]
    assert (sources["warmup"], sources["peak"], sources["min_lr"]) == ("--warmup-steps 2500", "--lr 0.0005", "default")


def test_lrsched_show_help_states_each_program_s_default(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["show", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "floor at the end of the decay (phase5_big_run.py: default 1e-6; train.py: default 0)" in text
    assert "peak learning rate (phase5_big_run.py: default 5e-4)" in text
