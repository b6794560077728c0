"""The run skeleton: its order, and what each way a run ends prints, saves and returns.

A toy recipe (no model: the state is a step counter and a file per checkpoint) fills in the parts;
the programs' own tests run the same skeleton with the real ones.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import SafetensorError

from lrsched.errors import UsageError
from lrsched.recipes.common import skeleton
from lrsched.recipes.common.distributed import World
from lrsched.recipes.common.exits import EXIT_DATA, EXIT_ERROR, EXIT_FAILED, EXIT_NONFINITE, EXIT_USAGE
from lrsched.recipes.common.faults import DataFailure, NonFiniteLoss
from lrsched.recipes.common.rundir import Folder
from lrsched.recipes.common.stopping import Stopped, StopRequest
from lrsched.schedules import Schedule


@dataclass(frozen=True)
class Settings:
    args: argparse.Namespace
    output_dir: Path
    resume: dict[str, Any] | None = None
    resume_path: Path | None = None
    overwrite: bool = False


@dataclass
class State:
    settings: Settings
    world: World
    t: int = 0
    run_id: str | None = None
    mid_step: bool = False


class Toy(skeleton.Recipe[Settings, State]):
    """Trains ``--steps`` steps; ``--fail-at k`` raises ``--error`` at step k (inside a step with --mid-step)."""

    prog = "toy"
    folder = Folder("toy", ("log.txt", "status.txt", "checkpoints", "error.log"))

    def __init__(self) -> None:
        self.calls: list[str] = []

    def parse(self, argv: Sequence[str] | None) -> argparse.Namespace:
        p = argparse.ArgumentParser(prog="toy")
        p.add_argument("--output-dir", dest="output_dir")
        p.add_argument("--device", default="cpu")
        p.add_argument("--steps", type=int, default=3)
        p.add_argument("--fail-at", type=int)
        p.add_argument("--error", default="")
        p.add_argument("--mid-step", action="store_true")
        p.add_argument("--refuse-in", default="")
        p.add_argument("--save-error", default="")
        p.add_argument("--report-error", default="")
        p.add_argument("--no-error-log", action="store_true")
        return p.parse_args(argv)

    def settle(self, args: argparse.Namespace, world: World, device: torch.device) -> Settings:
        self.calls.append("settle")
        if args.refuse_in == "settle":
            raise UsageError("--steps 3: refused in settle")
        if args.refuse_in == "schedule":  # a library rule no check of the program caught
            Schedule("linear", base=1.0, warmup=5, total=3)
        return Settings(args, Path(args.output_dir))

    def build(self, settings: Settings, world: World, device: torch.device) -> State:
        self.calls.append("build")
        if settings.args.refuse_in == "build":
            raise UsageError("--steps 3: refused in build")
        if settings.args.refuse_in == "signal":
            os.kill(os.getpid(), signal.SIGTERM)
        return State(settings, world)

    def start(self, run: State) -> None:
        self.calls.append("start")
        (run.settings.output_dir / "log.txt").write_text("started\n")
        if run.settings.args.no_error_log:  # error.log cannot be written (as in a read-only folder)
            (run.settings.output_dir / "error.log").mkdir()

    def train(self, run: State, stop: StopRequest) -> str:
        self.calls.append("train")
        a = run.settings.args
        while run.t < a.steps:
            if a.fail_at == run.t:
                run.mid_step = a.mid_step
                raise ERRORS[a.error]
            run.t += 1
        return "finished"

    def save(self, run: State, together: bool = True) -> Path | None:
        self.calls.append(f"save together={together}")
        if run.settings.args.save_error:
            raise ERRORS[run.settings.args.save_error]
        path = run.settings.output_dir / "checkpoints" / f"step-{run.t:08d}.pt"
        path.parent.mkdir(exist_ok=True)
        path.write_text(str(run.t))
        return path

    def close(self, run: State, status: str) -> None:
        self.calls.append("close")
        (run.settings.output_dir / "status.txt").write_text(status)

    def report(self, run: State, status: str) -> None:
        self.calls.append("report")
        self.close(run, status)
        if run.settings.args.report_error:
            raise ERRORS[run.settings.args.report_error]


ERRORS: dict[str, BaseException] = {
    "stop": Stopped("SIGTERM"),
    "nan": NonFiniteLoss("non-finite loss (nan) at step 2"),
    "data": DataFailure("--data-timeout 5: no training batch for 5 s"),
    "bug": ZeroDivisionError("division by zero"),
    "full": OSError(errno.ENOSPC, "No space left on device", "/x/log.txt"),
    "full-safetensors": SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)"),
}
"""``full-safetensors``: the error safetensors raised when a full tmpfs stopped ``best/`` being written."""


def run_toy(tmp_path: Path, *flags: str) -> tuple[int, Toy]:
    toy = Toy()
    return skeleton.run(toy, ["--output-dir", str(tmp_path / "run"), *flags]), toy


def test_a_finished_run_goes_through_every_part_in_order_and_lists_its_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, toy = run_toy(tmp_path)
    assert status == 0
    assert toy.calls == ["settle", "build", "start", "train", "report", "close"]
    out = tmp_path / "run"
    assert (out / "status.txt").read_text() == "finished"
    assert json.loads((out / "run.json").read_text())["program"] == "toy"
    assert capsys.readouterr().out.splitlines()[-1] == f"toy: wrote {out}: log.txt, status.txt"


@pytest.mark.parametrize("where", ["settle", "build"])
def test_a_refusal_before_the_claim_is_one_line_exit_2_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    status, toy = run_toy(tmp_path, "--refuse-in", where)
    assert status == EXIT_USAGE and "start" not in toy.calls
    assert capsys.readouterr().err == f"toy: error: --steps 3: refused in {where}\n"
    assert not (tmp_path / "run").exists()


def test_argparse_refusals_and_help_are_statuses_not_exceptions(capsys: pytest.CaptureFixture[str]) -> None:
    assert skeleton.run(Toy(), ["--steps", "many"]) == 2
    assert skeleton.run(Toy(), ["--help"]) == 0
    assert "usage: toy" in capsys.readouterr().out


def test_an_unknown_device_is_refused_naming_the_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, toy = run_toy(tmp_path, "--device", "tpu9")
    assert status == EXIT_USAGE and toy.calls == []
    assert capsys.readouterr().err.startswith("toy: error: --device tpu9: ")


def test_a_signal_before_the_model_exists_leaves_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, toy = run_toy(tmp_path, "--refuse-in", "signal")
    assert status == 0 and "start" not in toy.calls
    assert capsys.readouterr().err == "toy: stopped by SIGTERM before the run started; nothing was written\n"
    assert not (tmp_path / "run").exists()


def test_a_stop_saves_with_every_rank_reports_and_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, toy = run_toy(tmp_path, "--fail-at", "2", "--error", "stop")
    assert status == 0 and toy.calls[-4:] == ["train", "save together=True", "report", "close"]
    out = tmp_path / "run"
    assert (out / "status.txt").read_text() == "stopped at step 2"
    line = f"toy: stopped by SIGTERM at step 2; checkpoint {out / 'checkpoints' / 'step-00000002.pt'}; "
    assert line + "continue with --resume latest" in capsys.readouterr().out


def test_a_non_finite_loss_saves_nothing_and_names_the_last_good_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, toy = run_toy(tmp_path, "--fail-at", "2", "--error", "nan")
    assert status == EXIT_NONFINITE and not any(c.startswith("save") for c in toy.calls)
    assert capsys.readouterr().err == "toy: error: non-finite loss (nan) at step 2; last good checkpoint: none\n"
    assert (tmp_path / "run" / "status.txt").read_text() == "non-finite loss (nan) at step 2"


@pytest.mark.parametrize(("error", "expected"), [("data", EXIT_DATA), ("bug", EXIT_ERROR)])
def test_a_failure_between_steps_saves_alone_and_says_so_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], error: str, expected: int
) -> None:
    status, toy = run_toy(tmp_path, "--fail-at", "2", "--error", error)
    out = tmp_path / "run"
    assert status == expected and "save together=False" in toy.calls and "report" not in toy.calls
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.endswith(
        f"stopped at step 2; checkpoint {out / 'checkpoints' / 'step-00000002.pt'}\n"
    )
    assert (out / "status.txt").read_text().startswith("failed at step 2: ")
    if error == "bug":
        assert f"ZeroDivisionError: division by zero (traceback in {out / 'error.log'})" in err
        assert "Traceback (most recent call last)" in (out / "error.log").read_text()


def test_a_failure_inside_a_step_keeps_the_last_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, toy = run_toy(tmp_path, "--fail-at", "1", "--error", "bug", "--mid-step")
    assert status == EXIT_ERROR and not any(c.startswith("save") for c in toy.calls)
    assert "the state in memory was mid-step, not saved; last checkpoint: none" in capsys.readouterr().err


def test_a_full_disk_is_exit_1_naming_the_file_and_how_to_go_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _ = run_toy(tmp_path, "--fail-at", "1", "--error", "full")
    assert status == EXIT_FAILED
    assert capsys.readouterr().err == (
        "toy: error: no space left on the device (writing /x/log.txt); no checkpoint was written yet; "
        "free some space and resume with --resume latest\n"
    )


def test_a_folder_holding_a_run_is_refused_at_the_claim_and_left_as_it_was(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_toy(tmp_path, "--fail-at", "1", "--error", "stop")[0] == 0  # a run with a checkpoint
    capsys.readouterr()
    before = sorted(p.name for p in (tmp_path / "run").iterdir())
    status, toy = run_toy(tmp_path)
    assert status == EXIT_USAGE and toy.calls == ["settle"]  # refused by the check, before building
    assert "pass --resume" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == before


# --- issue 30: the report, a second signal, a full disk anywhere, error.log only when written ----


def test_a_second_signal_during_the_report_after_a_stop_is_one_quiet_line_exit_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, toy = run_toy(tmp_path, "--fail-at", "2", "--error", "stop", "--report-error", "stop")
    assert status == 0 and toy.calls[-2:] == ["report", "close"]
    out = capsys.readouterr().out
    checkpoint = tmp_path / "run" / "checkpoints" / "step-00000002.pt"
    assert out.splitlines()[-1] == f"toy: stopped by SIGTERM during the report; the newest checkpoint is {checkpoint}"
    assert "nothing was written" not in out


@pytest.mark.parametrize("error", ["full", "full-safetensors"])
@pytest.mark.parametrize("where", ["--report-error", "--save-error"])
def test_a_full_disk_in_the_report_or_a_stops_save_is_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], error: str, where: str
) -> None:
    status, _ = run_toy(tmp_path, "--fail-at", "2", "--error", "stop", where, error)
    assert status == EXIT_FAILED
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("toy: error: no space left on the device")


def test_a_full_disk_reported_in_another_writers_words_is_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _ = run_toy(tmp_path, "--fail-at", "1", "--error", "full-safetensors")
    assert status == EXIT_FAILED
    assert capsys.readouterr().err.startswith("toy: error: no space left on the device; no checkpoint was written yet")


def test_an_error_log_that_cannot_be_written_is_not_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _ = run_toy(tmp_path, "--fail-at", "2", "--error", "bug", "--no-error-log")
    assert status == EXIT_ERROR
    err = capsys.readouterr().err
    assert "error.log" not in err and err.count("\n") == 1
    assert f"ZeroDivisionError: division by zero (its traceback could not be saved in {tmp_path / 'run'}: " in err


def test_a_library_rule_is_said_with_the_flags_typed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _ = run_toy(tmp_path, "--refuse-in", "schedule")
    assert status == EXIT_USAGE
    err = capsys.readouterr().err
    assert err == "toy: error: --max-steps 3: must be greater than --warmup-steps 5\n"
    assert skeleton.in_flags("total=3: must be greater than warmup=5", "--output_dir") == (
        "--max_steps 3: must be greater than --warmup_steps 5"
    )
