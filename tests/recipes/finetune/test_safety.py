"""train.py keeps a run's data safe (issue 10): one run per folder, one process per folder, signals
anywhere, refusals before damage, integrity of checkpoints. Real tiny runs, in this process; the
signals are real (sent to this process at chosen moments); ``tests/faults`` sends them to children.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import shutil
import signal
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lrsched.recipes.common import checkpoint as ckpt
from lrsched.recipes.common.exits import EXIT_ERROR
from lrsched.recipes.common.rundir import RUN_FILE, Folder, claim_run_dir
from lrsched.recipes.common.runlock import acquire_lock, release_lock
from lrsched.recipes.common.runlog import read_log
from lrsched.recipes.finetune import loop
from lrsched.recipes.finetune import model as M
from lrsched.recipes.finetune.flags import PROGRAM_ID
from lrsched.recipes.finetune.main import RUN_FILES

from .finetune_helpers import TINY, assert_log_follows_plan, run_train

ARGS = ["--num_epochs", "2", "--max_train_samples", "8", "--per_device_train_batch_size", "4", *TINY]
"""2 epochs of 2 updates: validation at steps 2 and 4, test at the end (8 tweets)."""


def argv(out: Path, *extra: str) -> list[str]:
    return [*ARGS, "--output_dir", str(out), *extra]


def tree(root: Path) -> dict[str, bytes | None]:
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def run_id(out: Path) -> str:
    return str(json.loads((out / RUN_FILE).read_text())["id"])


def steps(out: Path) -> list[int]:
    return [s for p in sorted((out / "checkpoints").glob("step-*.pt")) if (s := ckpt.step_of(p)) is not None]


@pytest.fixture(scope="module")
def run_a(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run: checkpoints at steps 2 and 4 (the epoch ends)."""
    out = tmp_path_factory.mktemp("a") / "run"
    assert run_train(argv(out)) == 0
    assert steps(out) == [2, 4]
    return out


def signal_when(
    monkeypatch: pytest.MonkeyPatch,
    module: Any,
    name: str,
    sig: signal.Signals,
    when: Callable[..., bool],
    after: bool = False,
) -> None:
    """Wrap ``module.name`` so that ``sig`` is sent to this process just before (or ``after``) a call
    for which ``when(*args)``."""
    real = getattr(module, name)

    def wrapper(*args: Any, **kw: Any) -> Any:
        hit = when(*args)
        if hit and not after:
            os.kill(os.getpid(), sig)
        result = real(*args, **kw)
        if hit and after:
            os.kill(os.getpid(), sig)
        return result

    monkeypatch.setattr(module, name, wrapper)


def count_saves(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    saves: Counter[str] = Counter()
    real = ckpt.save_checkpoint

    def counting(state: dict[str, Any], path: Path, *args: Any, **kw: Any) -> Path:
        saves[path.name] += 1
        return real(state, path, *args, **kw)

    monkeypatch.setattr(ckpt, "save_checkpoint", counting)
    return saves


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("train.py: error: "), captured.err[-2000:]
    assert "Traceback" not in captured.err
    return lines[0]


# ---------------------------------------------------------------- 1, 2, 5: the folder


def test_another_runs_checkpoint_into_a_run_folder_is_refused_naming_both(
    run_a: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    b = tmp_path / "b"
    with claim_run_dir(b, Folder(PROGRAM_ID, RUN_FILES)):
        (b / "log.csv").write_text("step,epoch,lr,loss\n0,1,0.0,1.0\n")
    before = tree(b)
    mid = run_a / "checkpoints" / "step-00000002.pt"
    assert run_train(argv(b, "--resume_from_checkpoint", str(mid))) == 2
    line = one_error_line(capsys)
    assert run_id(run_a) in line and run_id(b) in line and str(mid) in line and str(b) in line
    assert tree(b) == before


def test_a_second_process_on_the_folder_is_refused_at_once_naming_the_holder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "busy"
    out.mkdir()
    fd = acquire_lock(out, PROGRAM_ID)  # another open file description: the same as another process for flock
    try:
        before = tree(out)
        assert run_train(argv(out)) == 2
        line = one_error_line(capsys)
        assert f"in use by another process (pid {os.getpid()})" in line
        assert tree(out) == before and capsys.readouterr().out == ""
    finally:
        release_lock(fd)


def test_a_run_that_died_before_its_first_checkpoint_is_no_dead_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "early"
    with claim_run_dir(out, Folder(PROGRAM_ID, RUN_FILES)):  # what a kill before the first checkpoint leaves
        (out / "plan.json").write_text("{}")
        (out / "log.csv").write_text("step,epoch,lr,loss\n0,1,0.0,1.0\n")
    old = run_id(out)
    assert run_train(argv(out, "--resume_from_checkpoint", "latest")) == 2
    line = one_error_line(capsys)
    assert "start it again without --resume_from_checkpoint" in line and "latest to continue" not in line
    assert run_train(argv(out, "--max_steps", "1", "--warmup_steps", "0")) == 0  # a fresh start just works
    assert run_id(out) != old and [r["step"] for r in read_log(out / "log.csv")] == ["0"]


# ---------------------------------------------------------------- 3: signals anywhere


def test_sigint_while_the_model_loads_exits_0_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    signal_when(monkeypatch, M, "load_model", signal.SIGINT, lambda *a: True)
    out = tmp_path / "never"
    assert run_train(argv(out)) == 0
    captured = capsys.readouterr()
    assert captured.err.strip() == "train.py: stopped by SIGINT before the run started; nothing was written"
    assert not out.exists()


def test_sighup_in_the_loop_saves_and_exits_0(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "hup"
    signal_when(monkeypatch, loop, "update", signal.SIGHUP, lambda run, group: run.t == 1)
    assert run_train(argv(out)) == 0
    assert steps(out) == [2] and [r["step"] for r in read_log(out / "log.csv")] == ["0", "1"]
    monkeypatch.undo()
    assert run_train(argv(out, "--resume_from_checkpoint", "latest")) == 0
    assert_log_follows_plan(out)


def test_a_stop_under_save_strategy_no_exits_0_without_a_checkpoint_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "nosave"
    signal_when(monkeypatch, loop, "update", signal.SIGTERM, lambda run, group: run.t == 1)
    assert run_train(argv(out, "--save_strategy", "no")) == 0
    assert not (out / "checkpoints").exists() or not any((out / "checkpoints").iterdir())
    assert "stopped by SIGTERM at step 2; --save_strategy no: no checkpoint to continue from" in capsys.readouterr().out


def test_sigterm_at_an_epoch_end_writes_that_checkpoint_once_and_validation_cut_short_is_redone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "epoch"
    saves = count_saves(monkeypatch)
    signal_when(monkeypatch, loop, "end_epoch", signal.SIGTERM, lambda run, *a: run.t == 2, after=True)
    assert run_train(argv(out)) == 0
    assert saves == Counter({"step-00000002.pt": 1}) and "stopped by SIGTERM at step 2" in capsys.readouterr().out
    history = ckpt.load_checkpoint(out / "checkpoints" / "step-00000002.pt", PROGRAM_ID)["history"]
    assert [h["step"] for h in history] == [2]
    monkeypatch.undo()
    # a signal in the middle of the validation at step 2: the run stops at step 2 without it
    out2 = tmp_path / "mid-validation"
    signal_when(monkeypatch, loop, "evaluate", signal.SIGTERM, lambda *a: True)
    assert run_train(argv(out2)) == 0
    assert steps(out2) == [2]
    assert ckpt.load_checkpoint(out2 / "checkpoints" / "step-00000002.pt", PROGRAM_ID)["history"] == []
    monkeypatch.undo()
    assert run_train(argv(out2, "--resume_from_checkpoint", "latest")) == 0
    ev = json.loads((out2 / "eval.json").read_text())
    assert [h["step"] for h in ev["validation"]] == [2, 4] and ev["test"] is not None


def test_sigterm_during_the_final_test_keeps_the_last_checkpoint_and_resume_finishes_the_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "final"
    saves = count_saves(monkeypatch)
    tests: list[bool] = []

    def is_test(run: Any, model: Any, data: Any, *a: Any) -> bool:
        tests.append(data is run.settings.splits.test)
        return tests[-1]

    signal_when(monkeypatch, loop, "evaluate", signal.SIGTERM, is_test)
    assert run_train(argv(out)) == 0
    assert "stopped by SIGTERM at step 4" in capsys.readouterr().out
    assert saves == Counter({"step-00000002.pt": 1, "step-00000004.pt": 1})
    assert json.loads((out / "eval.json").read_text())["test"] is None
    monkeypatch.undo()
    before = (out / "checkpoints" / "step-00000004.pt").read_bytes()
    assert run_train(argv(out, "--resume_from_checkpoint", "latest")) == 0
    assert json.loads((out / "eval.json").read_text())["test"] is not None
    assert (out / "checkpoints" / "step-00000004.pt").read_bytes() == before
    assert_log_follows_plan(out)


# ---------------------------------------------------------------- 6, 7: sizes and a full disk


def test_a_batch_of_a_billion_is_refused_before_anything_is_allocated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "huge"
    args = ["--num_epochs", "1", "--warmup_steps", "0", "--per_device_train_batch_size", "1000000000"]
    args += ["--max_eval_samples", "8"]
    assert run_train([*args, "--disable_tqdm", "--output_dir", str(out)]) == 2
    line = one_error_line(capsys)
    assert line.startswith("train.py: error: --per_device_train_batch_size 1000000000: a batch of ")
    assert "GB to train, more than the" in line and "this device has" in line and not out.exists()


def test_a_full_disk_while_checkpointing_is_one_line_and_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "full"
    writes: list[int] = []
    real_init = ckpt._HashingWriter.__init__

    class FullDisk:
        def __init__(self, f: Any) -> None:
            self.f, self.n = f, 0

        def write(self, data: bytes) -> int:
            self.n += len(data)
            if self.n > 1_000_000:
                raise OSError(errno.ENOSPC, "No space left on device")
            return int(self.f.write(data))

        def __getattr__(self, name: str) -> Any:
            return getattr(self.f, name)

    def init(self: Any, f: Any) -> None:
        writes.append(1)
        real_init(self, FullDisk(f) if len(writes) == 2 else f)

    monkeypatch.setattr(ckpt._HashingWriter, "__init__", init)
    assert run_train(argv(out, "--save_steps", "1")) == 1
    line = one_error_line(capsys)
    assert "no space left on the device" in line and "step-00000001.pt is intact" in line
    assert steps(out) == [1] and ckpt.load_checkpoint(out / "checkpoints" / "step-00000001.pt", PROGRAM_ID)
    assert not list((out / "checkpoints").glob(".*.tmp"))


def test_a_full_disk_under_best_is_exit_1_not_5(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """safetensors says a full disk in its own words (seen on a full 64 kB tmpfs): it is still exit 1."""
    from safetensors import SafetensorError

    out = tmp_path / "full-best"
    real = M.save_folder

    def full_under_best(model: Any, tokenizer: Any, target: Path) -> None:
        if target.name == "best":
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        real(model, tokenizer, target)

    monkeypatch.setattr(M, "save_folder", full_under_best)
    assert run_train(argv(out)) == 1
    line = one_error_line(capsys)
    assert line.startswith("train.py: error: no space left on the device;") and "step-00000002.pt is intact" in line
    assert not (out / "error.log").exists()


# ---------------------------------------------------------------- 9: integrity


def test_a_checkpoint_with_64_zeroed_bytes_is_refused(
    run_a: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.pt"
    data = bytearray((run_a / "checkpoints" / "step-00000002.pt").read_bytes())
    at = len(data) // 2
    while data[at : at + 64] == bytes(64):  # AdamW's moments of unused embedding rows are zeros already
        at += 64
    data[at : at + 64] = bytes(64)
    bad.write_bytes(bytes(data))
    out = tmp_path / "out"
    assert run_train(argv(out, "--resume_from_checkpoint", str(bad))) == 2
    line = one_error_line(capsys)
    assert line == (
        f"train.py: error: --resume_from_checkpoint {bad}: damaged (its SHA-256 checksum does not match its contents)"
    )
    assert not out.exists()


def test_a_checkpoint_error_names_the_path_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "x.pt"
    assert run_train(argv(tmp_path / "out", "--resume_from_checkpoint", str(missing))) == 2
    assert one_error_line(capsys).count(str(missing)) == 1


def test_resuming_from_an_earlier_checkpoint_sets_the_abandoned_future_aside(
    run_a: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "copy"
    shutil.copytree(run_a, out, ignore=shutil.ignore_patterns("best", "last", "tb"))
    shutil.copytree(run_a / "best", out / "best")
    signal_when(monkeypatch, loop, "update", signal.SIGTERM, lambda run, group: run.t == 2)
    assert run_train(argv(out, "--resume_from_checkpoint", str(out / "checkpoints" / "step-00000002.pt"))) == 0
    assert steps(out) == [2, 3]  # the resumed run's own: 2, and 3 where it stopped
    aside = out / "checkpoints" / "abandoned-after-step-00000002"
    assert sorted(p.name for p in aside.iterdir()) == ["log.csv", "step-00000004.pt"]
    assert (aside / "log.csv").read_bytes() == (run_a / "log.csv").read_bytes()  # the abandoned steps' own rows
    with (out / "log.csv").open(newline="") as f:
        assert [r["step"] for r in csv.DictReader(f)] == ["0", "1", "2"]
    assert ckpt.latest_checkpoint(out / "checkpoints") == out / "checkpoints" / "step-00000003.pt"
    # issue 30: resuming from the abandoned checkpoint brings back its own rows, not the other branch's
    assert run_train(argv(out, "--resume_from_checkpoint", str(aside / "step-00000004.pt"))) == 0
    with (out / "log.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    with (run_a / "log.csv").open(newline="") as f:
        original = list(csv.DictReader(f))
    assert [r["step"] for r in rows] == [r["step"] for r in original] == ["0", "1", "2", "3"]
    assert [(r["lr"], r["loss"]) for r in rows] == [(r["lr"], r["loss"]) for r in original]
    again = out / "checkpoints" / "abandoned-after-step-00000002-2"  # the branch resumed at 2 and stopped at 3
    assert sorted(p.name for p in again.iterdir()) == ["log.csv", "step-00000003.pt"]
    with (again / "log.csv").open(newline="") as f:
        assert [r["step"] for r in csv.DictReader(f)] == ["0", "1", "2"]


# ---------------------------------------------------------------- issue 20: the checkpoint before the reports


def fail_on(monkeypatch: pytest.MonkeyPatch, name: str, when: Callable[..., bool], error: BaseException) -> None:
    """Make ``loop.name`` raise ``error`` on the calls for which ``when(*args)``."""
    real = getattr(loop, name)

    def failing(*args: Any, **kw: Any) -> Any:
        if when(*args):
            raise error
        return real(*args, **kw)

    monkeypatch.setattr(loop, name, failing)


def test_a_failing_best_model_save_keeps_the_epochs_checkpoint_and_resume_writes_best(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report"
    broken = OSError(errno.EIO, os.strerror(errno.EIO), str(out / "best"))
    fail_on(monkeypatch, "save_model", lambda run, model, name, *a: name == "best", broken)
    assert run_train(argv(out)) == EXIT_ERROR  # one line, the traceback in error.log
    line = one_error_line(capsys)
    assert "Input/output error" in line and f"traceback in {out / 'error.log'}" in line
    assert "Traceback" in (out / "error.log").read_text()
    assert steps(out) == [2], line  # the epoch's training is on disk although best/ failed
    saved = ckpt.load_checkpoint(out / "checkpoints" / "step-00000002.pt", PROGRAM_ID)
    assert [h["step"] for h in saved["history"]] == [2] and saved["best"]["step"] == 2
    assert not (out / "best").exists() and not (out / "eval.json").exists()
    monkeypatch.undo()
    repaired: list[bool] = []
    real = loop.best_is_missing
    monkeypatch.setattr(loop, "best_is_missing", lambda *a: repaired.append(real(*a)) or repaired[-1])
    assert run_train(argv(out, "--resume_from_checkpoint", "latest")) == 0, capsys.readouterr().err[-2000:]
    assert repaired == [True]  # best/ written from the checkpoint's model before training on
    assert (out / "best" / "config.json").is_file() and (out / "best" / "tokenizer.json").is_file()
    report = json.loads((out / "eval.json").read_text())
    assert [h["step"] for h in report["validation"]] == [2, 4] and report["test"] is not None
    assert_log_follows_plan(out)


def test_a_failing_validation_keeps_the_epochs_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "validation"
    fail_on(monkeypatch, "evaluate", lambda *a: True, RuntimeError("evaluation broke"))
    assert run_train(argv(out)) == EXIT_ERROR
    line = one_error_line(capsys)
    assert "RuntimeError: evaluation broke" in line
    assert steps(out) == [2], line  # saved by the failure's handler: a full disk says "saving failed too"
    assert ckpt.load_checkpoint(out / "checkpoints" / "step-00000002.pt", PROGRAM_ID)["history"] == []
    monkeypatch.undo()
    assert run_train(argv(out, "--resume_from_checkpoint", "latest")) == 0, capsys.readouterr().err[-2000:]
    # the validation is redone
    assert [h["step"] for h in json.loads((out / "eval.json").read_text())["validation"]] == [2, 4]
    assert_log_follows_plan(out)
