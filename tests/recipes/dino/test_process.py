"""phase5_big_run.py as a real process: signals, SIGKILL and resume, torchrun with 2 ranks, learning."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import DINO_ENTRY, DINO_SMALL, PYTHON, child_env, needs_data, read_rows, start_program, wait_for

from lrsched.recipes.common.checkpoint import latest_checkpoint, load_checkpoint
from lrsched.recipes.dino.flags import PROGRAM_ID

from .dino_helpers import make_image_folder

pytestmark = needs_data
TORCHRUN = Path(PYTHON).with_name("torchrun")


def start(out: Path, *extra: str, **env: str) -> subprocess.Popen[str]:
    return start_program(DINO_ENTRY, [*DINO_SMALL, "--output-dir", str(out), *extra], **env)


def wait_until(proc: subprocess.Popen[str], condition: Callable[[], bool], timeout: float = 240) -> None:
    """Wait (``helpers.wait_for``) until ``condition`` holds; fail with the child's stderr if it never does."""
    if not wait_for(proc, condition, timeout, poll=0.2):
        proc.kill()
        raise AssertionError(f"condition not met (exit {proc.poll()}): {proc.stderr.read() if proc.stderr else ''}")


def stop_with(proc: subprocess.Popen[str], sig: signal.Signals, out: Path) -> tuple[str, dict[str, Any]]:
    """Send ``sig``: the program must exit 0 and leave a loadable checkpoint; its stdout and that checkpoint."""
    proc.send_signal(sig)
    stdout, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    path = latest_checkpoint(out / "checkpoints")
    assert path is not None
    return stdout, load_checkpoint(path, PROGRAM_ID)


def logged_steps(out: Path) -> int:
    path = out / "log.csv"
    return len(read_rows(path)) if path.exists() else 0


def test_bad_flag_from_the_command_line_is_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [PYTHON, str(DINO_ENTRY), "--warmup-steps", "10", "--max-steps", "10", "--output-dir", str(tmp_path / "x")],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith(
        "phase5_big_run.py: error: --warmup-steps 10: must be less than --max-steps 10"
    )
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_open_ended_run_exits_0_on_sigterm_with_a_loadable_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "open"
    proc = start(out, "--warmup-steps", "2")
    wait_until(proc, lambda: logged_steps(out) >= 3)
    stdout, state = stop_with(proc, signal.SIGTERM, out)
    assert state["step"] == logged_steps(out) >= 3
    assert json.loads((out / "metrics.json").read_text())["status"].startswith("stopped at step")
    assert "stopped by SIGTERM at step" in stdout


@pytest.mark.slow
@pytest.mark.parametrize("data", ["fashion-mnist", "jpeg-folder-2-workers"])
def test_sigkill_after_a_checkpoint_then_resume_matches_an_uninterrupted_run(tmp_path: Path, data: str) -> None:
    flags = ["--max-steps", "16", "--warmup-steps", "3", "--save-every", "4", "--keep-checkpoints", "10"]
    if data != "fashion-mnist":
        folder = make_image_folder(tmp_path / "images", 120, classes=4, sizes=(60, 160))
        flags += ["--data-dir", str(folder), "--workers", "2", "--global-size", "32"]
    whole = start(tmp_path / "whole", *flags)
    assert whole.wait(timeout=600) == 0
    out = tmp_path / "killed"
    proc = start(out, *flags)
    wait_until(proc, lambda: (out / "checkpoints" / "step-00000008.pt").exists())
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    again = start(out, *flags, "--resume", "latest")
    _, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    a, b = read_rows(tmp_path / "whole" / "log.csv"), read_rows(out / "log.csv")
    assert [r["step"] for r in b] == [str(t) for t in range(16)]
    assert [r["lr"] for r in a] == [r["lr"] for r in b]
    sa = load_checkpoint(tmp_path / "whole" / "checkpoints" / "step-00000016.pt", PROGRAM_ID)
    sb = load_checkpoint(out / "checkpoints" / "step-00000016.pt", PROGRAM_ID)
    for key in ("student", "teacher"):
        assert all(torch.equal(sa[key][k], sb[key][k]) for k in sa[key])
    assert torch.equal(sa["center"], sb["center"])


@pytest.mark.slow
@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun not beside this Python")
def test_torchrun_two_ranks_agree_on_every_lr_and_the_weights(tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    cmd = [str(TORCHRUN), "--standalone", "--nproc_per_node", "2", str(DINO_ENTRY), *DINO_SMALL]
    cmd += ["--max-steps", "6", "--warmup-steps", "2", "--output-dir", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=child_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    ranks = metrics["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1] and metrics["world_size"] == 2
    assert ranks[0]["lr_trace"] == ranks[1]["lr_trace"] and ranks[0]["weights"] == ranks[1]["weights"]
    rows = read_rows(out / "log.csv")
    assert len(rows) == 6 and float(rows[2]["lr"]) == pytest.approx(5e-4)
    state = load_checkpoint(out / "checkpoints" / "step-00000006.pt", PROGRAM_ID)
    assert state["data"]["world_size"] == 2


@pytest.mark.slow
@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun not beside this Python")
def test_torchrun_ranks_that_listed_different_files_refuse_to_start(tmp_path: Path) -> None:
    """Every rank lists --data-dir itself. When the folder changes between their listings (here rank 1
    sees one file more) every rank stops before training: one line naming the flag (rank 0 says what
    every rank found), nothing written."""
    seen = [tmp_path / f"rank{r}" for r in (0, 1)]
    for r, directory in enumerate(seen):
        make_image_folder(directory / "images", 40 + r, classes=0)
    out = tmp_path / "run"
    child = Path(__file__).with_name("per_rank_data_dir.py")
    cmd = [str(TORCHRUN), "--standalone", "--nproc_per_node", "2", str(child), *map(str, seen), *DINO_SMALL]
    cmd += ["--max-steps", "2", "--warmup-steps", "1", "--output-dir", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=child_env(), timeout=600)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("phase5_big_run.py: error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    assert "--data-dir images: process 1 saw other data than process 0 (files 40 -> 41)" in errors[0]
    assert "lrsched/recipes/" not in proc.stderr  # no traceback from the program (torchrun prints its own)
    assert not out.exists()


@pytest.mark.slow
def test_student_learns_its_teacher_and_knn_beats_the_network_at_init(tmp_path: Path) -> None:
    """The CPU recipe of docs/phase5.md, smaller: k-NN ends clearly above the network at init.

    DINO's cross-entropy ``H(P_t) + KL(P_t || P_s)`` is not monotone: centering raises the
    teacher's entropy early on. Its KL part, the student's mismatch with its teacher, must fall.
    """
    out = tmp_path / "learn"
    flags = ["--max-steps", "400", "--warmup-steps", "30", "--batch-size", "64", "--out-dim", "512"]
    flags += ["--lr", "1e-3", "--warmup-teacher-temp", "0.04", "--teacher-temp", "0.04", "--momentum-teacher", "0.99"]
    flags += ["--koleo-weight", "0.1", "--knn-train-samples", "3000", "--knn-test-samples", "600"]
    proc = start(out, *flags)
    _, err = proc.communicate(timeout=1800)
    assert proc.returncode == 0, err
    rows = read_rows(out / "log.csv")
    kl = [float(r["loss"]) - 0.1 * float(r["koleo"]) - float(r["teacher_entropy"]) for r in rows]
    assert sum(kl[-50:]) / 50 < 0.75 * sum(kl[:20]) / 20
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["knn_top1"] > metrics["knn_top1_at_init"] + 0.03


def start_logged(out: Path, log: Path, *extra: str) -> subprocess.Popen[str]:
    """The program with stdout and stderr in a file, so a test can wait for a line."""
    handle = log.open("w")
    return subprocess.Popen(
        [PYTHON, str(DINO_ENTRY), *DINO_SMALL, "--output-dir", str(out), *extra],
        stdout=handle,
        stderr=subprocess.STDOUT,
        text=True,
        env=child_env(),
    )


@pytest.mark.parametrize(
    "sig",
    [
        signal.SIGTERM,
        pytest.param(signal.SIGINT, marks=pytest.mark.slow),
        pytest.param(signal.SIGHUP, marks=pytest.mark.slow),
    ],
)
def test_a_signal_during_the_knn_baseline_saves_step_0_and_exits_0(tmp_path: Path, sig: signal.Signals) -> None:
    out, log = tmp_path / "run", tmp_path / "out.txt"
    proc = start_logged(out, log, "--max-steps", "5", "--warmup-steps", "1", "--knn-train-samples", "60000")
    wait_until(proc, lambda: "data: fashion-mnist" in log.read_text())  # printed just before the baselines
    proc.send_signal(sig)
    assert proc.wait(timeout=120) == 0
    text = log.read_text()
    assert f"stopped by {sig.name} at step 0" in text and "Traceback" not in text
    state = load_checkpoint(out / "checkpoints" / "step-00000000.pt", PROGRAM_ID)
    assert state["step"] == 0 and "knn_top1_at_init" not in state["metrics"]
    again = start(out, "--max-steps", "5", "--warmup-steps", "1", "--resume", "latest", "--knn-train-samples", "600")
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["knn_top1_at_init"] is not None and metrics["status"] == "finished"


def test_sighup_in_the_loop_saves_and_exits_0(tmp_path: Path) -> None:
    out = tmp_path / "open"
    proc = start(out, "--warmup-steps", "2")
    wait_until(proc, lambda: logged_steps(out) >= 2)
    _, state = stop_with(proc, signal.SIGHUP, out)
    assert state["step"] == logged_steps(out)


def test_a_second_process_on_the_folder_is_refused_at_once_naming_the_first(tmp_path: Path) -> None:
    out = tmp_path / "open"
    first = start(out, "--warmup-steps", "2")
    wait_until(first, lambda: logged_steps(out) >= 2)
    second = subprocess.run(
        [PYTHON, str(DINO_ENTRY), *DINO_SMALL, "--output-dir", str(out), "--resume", "latest"],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=120,
    )
    rows = logged_steps(out)
    first.send_signal(signal.SIGTERM)
    _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert second.returncode == 2
    assert second.stderr.strip().endswith(
        f"in use by another process (pid {first.pid}); wait for it to end or stop it, or choose another folder"
    )
    assert rows <= logged_steps(out) and [r["step"] for r in read_rows(out / "log.csv")] == [
        str(t) for t in range(logged_steps(out))
    ]
