"""A closed terminal or a closed pipe is a stop, not a failure (issue 30), and a second Ctrl-C is quiet.

Real processes and real pipes: the test holds the read ends of the program's stdout and stderr and
closes them as ``| head`` (stdout alone) or ``| tee`` with its terminal gone (both, with SIGHUP) would.
The program must save its state, write its report, exit 0 and never blame a full disk (exit 1) or
record "failed ... BrokenPipeError". A storm of SIGINTs after the first stop's save (a user pressing
Ctrl-C again while the program shuts down) must leave no traceback and no false "nothing was written".
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from fault_helpers import DINO, DINO_PROGRAM, DINO_SMALL, TRAIN, TRAIN_PROGRAM, TRAIN_SMALL, load_every_checkpoint
from fault_helpers import log_rows as logged
from helpers import FASHION, PYTHON, REPO, child_env

needs_fashion = pytest.mark.skipif(not FASHION.is_dir(), reason="Fashion-MNIST missing")
PHASE5 = [*DINO_SMALL, "--max-steps", "60", "--warmup-steps", "3", "--save-every", "10", "--eval-every", "20"]
"""phase5: the k-NN line at step 20 is its first write to stdout after the start."""
TRAIN_PY = ["--num_epochs", "1", "--max_train_samples", "16", "--per_device_train_batch_size", "2", *TRAIN_SMALL]
"""train.py: 8 updates; the validation line at the end is its first write to stdout after the start."""
PROGRAMS = {
    "phase5": (DINO, DINO_PROGRAM, [*PHASE5, "--output-dir"]),
    "train.py": (TRAIN, TRAIN_PROGRAM, [*TRAIN_PY, "--output_dir"]),
}


def launch(name: str, out: Path) -> subprocess.Popen[bytes]:
    entry, _, args = PROGRAMS[name]
    cmd = [PYTHON, str(entry), *args, str(out)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env(), cwd=REPO)


def wait_rows(proc: subprocess.Popen[bytes], out: Path, rows: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while logged(out) < rows:
        assert proc.poll() is None, f"ended early: exit {proc.returncode}"
        assert time.monotonic() < deadline, f"no {rows} log rows in {timeout} s"
        time.sleep(0.02)


def assert_stopped_and_saved(name: str, out: Path) -> int:
    """The state saved at the last logged step, no error.log; phase5's report says it stopped there."""
    step = int(load_every_checkpoint(out, PROGRAMS[name][1])[-1]["step"])
    assert step == logged(out) and not (out / "error.log").exists()
    if name == "phase5":
        assert json.loads((out / "metrics.json").read_text())["status"] == f"stopped at step {step}"
        assert (out / "curves.png").is_file()
    return step


@needs_fashion
@pytest.mark.parametrize("name", ["phase5", pytest.param("train.py", marks=pytest.mark.slow)])
def test_a_closed_stdout_pipe_stops_the_run_saved_and_exits_0(tmp_path: Path, name: str) -> None:
    out = tmp_path / "head"
    proc = launch(name, out)
    wait_rows(proc, out, 3)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader went away, as `| head` does after its lines
    stderr = proc.stderr.read().decode(errors="replace")
    assert proc.wait(timeout=300) == 0, stderr[-2000:]
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr and "error:" not in stderr
    step = assert_stopped_and_saved(name, out)
    assert f"stopped by a closed output at step {step}; checkpoint " in stderr


@needs_fashion
@pytest.mark.parametrize("name", [pytest.param("phase5", marks=pytest.mark.slow), "train.py"])
def test_sighup_with_both_pipes_closed_is_a_stop_exit_0(tmp_path: Path, name: str) -> None:
    out = tmp_path / "tee"
    proc = launch(name, out)
    wait_rows(proc, out, 3)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # `2>&1 | tee log` in a terminal that closed: tee is gone, SIGHUP arrives
    proc.stderr.close()
    proc.send_signal(signal.SIGHUP)
    assert proc.wait(timeout=300) == 0
    assert_stopped_and_saved(name, out)


@needs_fashion
@pytest.mark.parametrize("name", ["phase5", pytest.param("train.py", marks=pytest.mark.slow)])
def test_more_sigints_after_the_stop_are_quiet(tmp_path: Path, name: str) -> None:
    out = tmp_path / "again"
    proc = launch(name, out)
    wait_rows(proc, out, 3)
    assert proc.stdout is not None
    proc.send_signal(signal.SIGINT)
    for line in proc.stdout:
        if b"stopped by SIGINT at step" in line:
            break
    while proc.poll() is None:  # Ctrl-C, again and again, while the report is written and the process ends
        try:
            os.kill(proc.pid, signal.SIGINT)
        except ProcessLookupError:
            break
        time.sleep(0.02)
    _, stderr_bytes = proc.communicate(timeout=300)
    stderr = stderr_bytes.decode(errors="replace")
    assert proc.returncode == 0, stderr[-2000:]
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr and "nothing was written" not in stderr
    assert_stopped_and_saved(name, out)
