"""train.py under real signals and real second processes (issue 10): SIGHUP in the loop, SIGINT at
start-up, SIGTERM during the final test, two processes on one folder, torchrun ranks refused
together, and a training file with a 50 MB line that must not blow up memory."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import time
from pathlib import Path

import pytest
from fault_helpers import (
    TRAIN,
    TRAIN_PROGRAM,
    TRAIN_SMALL,
    load_every_checkpoint,
    log_rows,
    read_columns,
    start,
    step_files,
    tree,
)
from helpers import PYTHON, REPO, child_env, run_program, wait_for

from lrsched.recipes.common.runlock import acquire_lock, release_lock

ARGS = ["--num_epochs", "1", "--max_train_samples", "16", "--per_device_train_batch_size", "2", *TRAIN_SMALL]
"""8 updates, validation at the end, a test of 8 tweets."""


def argv(out: Path, *extra: str) -> list[str]:
    return [*ARGS, "--output_dir", str(out), *extra]


def check_steps_logged_once(out: Path, total: int) -> None:
    assert [int(s) for (s,) in read_columns(out, ("step",))] == list(range(total))


def test_sighup_in_the_loop_saves_a_checkpoint_and_exits_0(tmp_path: Path) -> None:
    out = tmp_path / "hup"
    proc = start(TRAIN, argv(out))
    assert wait_for(proc, lambda: log_rows(out) >= 1, timeout=300, poll=0.05), proc.stderr
    proc.send_signal(signal.SIGHUP)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-2000:]
    assert (
        "Traceback" not in stderr
        and "stopped by SIGHUP at step" in stdout
        and "; continue with --resume_from_checkpoint latest" in stdout
    )
    step = int(load_every_checkpoint(out, TRAIN_PROGRAM)[-1]["step"])
    assert 1 <= step < 8 and log_rows(out) == step


def test_sigint_during_start_up_exits_0_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "never"
    proc = start(TRAIN, argv(out))
    time.sleep(1.0)  # importing torch, reading the data or loading the model
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr[-2000:]
    assert stderr.strip().splitlines() == ["train.py: stopped by SIGINT before the run started; nothing was written"], (
        stderr[-2000:]
    )
    assert not out.exists()


@pytest.mark.slow
def test_sigterm_during_the_final_test_saves_and_resume_finishes_the_report(tmp_path: Path) -> None:
    out = tmp_path / "final"
    proc = start(TRAIN, argv(out, "--max_test_samples", "600"))
    assert wait_for(proc, lambda: (out / "last" / "config.json").exists(), timeout=400, poll=0.02), proc.stderr
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-2000:]
    assert "stopped by SIGTERM at step 8" in stdout and "Traceback" not in stderr
    assert [p.name for p in step_files(out)][-1] == "step-00000008.pt"
    assert json.loads((out / "eval.json").read_text())["test"] is None
    done = run_program(TRAIN, argv(out, "--max_test_samples", "600", "--resume_from_checkpoint", "latest"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((out / "eval.json").read_text())["test"]["accuracy"] >= 0
    check_steps_logged_once(out, 8)


@pytest.mark.slow
def test_a_second_train_py_on_the_same_folder_is_refused_and_the_first_finishes(tmp_path: Path) -> None:
    out = tmp_path / "shared"
    first = start(TRAIN, argv(out))
    assert wait_for(first, lambda: log_rows(out) >= 1, timeout=300, poll=0.05), first.stderr
    started = time.monotonic()
    second = run_program(TRAIN, argv(out))
    assert second.returncode == 2, second.stderr[-2000:]
    assert second.stderr.strip().splitlines() == [
        f"train.py: error: --output_dir {out}: in use by another process (pid {first.pid}); "
        "wait for it to end or stop it, or choose another folder"
    ]
    assert second.stdout == "" and time.monotonic() - started < 120
    _, stderr = first.communicate(timeout=600)
    assert first.returncode == 0, stderr[-2000:]
    check_steps_logged_once(out, 8)


@pytest.mark.slow
def test_torchrun_ranks_are_refused_together_when_the_folder_is_locked(tmp_path: Path) -> None:
    out = tmp_path / "locked"
    out.mkdir()
    fd = acquire_lock(out, "test")
    try:
        before = tree(out)
        cmd = [PYTHON, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(TRAIN), *argv(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=child_env(), cwd=REPO, check=False)
    finally:
        release_lock(fd)
    assert proc.returncode != 0
    refusals = [line for line in proc.stderr.splitlines() if "in use by another process" in line]
    assert refusals == [
        f"train.py: error: --output_dir {out}: in use by another process (pid {os.getpid()}); "
        "wait for it to end or stop it, or choose another folder"
    ], proc.stderr[-3000:]
    assert tree(out) == before


@pytest.mark.slow
def test_a_50_mb_line_is_clipped_not_loaded_into_the_tokenizer(tmp_path: Path) -> None:
    train = tmp_path / "train.jsonl"
    rows = [{"text": f"message {i}: {'great' if i % 2 else 'awful'} day", "label": i % 2} for i in range(40)]
    rows.append({"text": "lorem ipsum dolor " * 2_800_000, "label": 1})  # one line of 50 MB
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    args = ["--train_file", str(train), "--num_epochs", "2", "--per_device_train_batch_size", "41", *TRAIN_SMALL]
    cmd = [PYTHON, str(TRAIN), *args, "--warmup_steps", "0", "--output_dir", str(out)]

    def limit() -> None:  # on today's code the tokenizer would take the machine: fail fast instead
        resource.setrlimit(resource.RLIMIT_AS, (12 << 30, 12 << 30))

    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(), preexec_fn=limit
    )
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    stderr = proc.stderr.read() if proc.stderr else ""
    assert proc.returncode == 0, stderr[-2000:]
    peak_mb = usage.ru_maxrss / 1024
    assert peak_mb < 2500, f"peak memory {peak_mb:.0f} MB"
    check_steps_logged_once(out, 2)
