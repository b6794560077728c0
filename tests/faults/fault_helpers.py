"""Helpers for the fault tests: start the real programs, kill them, load what they left behind.

Every child runs the real entry point (``phase5_big_run.py``, ``train.py``) on one CPU thread.
``slow_disk=True`` runs it through a wrapper that makes ``os.fsync`` take 0.3 s longer, so a
checkpoint's temporary file stays on disk long enough for a test to kill the program while the
checkpoint is being written (the program's own code is unchanged).
"""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import torch
from child_process import child_env

from lrsched.recipes.common.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
DINO = REPO / "phase5_big_run.py"
TRAIN = REPO / "train.py"
DINO_PROGRAM = "phase5_big_run"
TRAIN_PROGRAM = "train.py"
FASHION = Path("/usr/share/datasets/fashion-mnist")

DINO_SMALL = [
    "--preset",
    "micro",
    "--batch-size",
    "16",
    "--local-crops",
    "2",
    "--knn-train-samples",
    "300",
    "--knn-test-samples",
    "100",
    "--eval-every",
    "0",
    "--device",
    "cpu",
    "--seed",
    "0",
]
"""A 2-block, 48-wide ViT, 16 images a step, 2 local crops: a few steps a second on one core."""

TRAIN_SMALL = [
    "--max_eval_samples",
    "8",
    "--per_device_eval_batch_size",
    "8",
    "--disable_tqdm",
    "--device",
    "cpu",
]
"""train.py with the real MiniLM and tweets, shrunk (the size of the train split is given per test)."""

STEP_FILE = re.compile(r"^step-(\d+)\.pt$")
TMP_FILE = re.compile(r"^\.step-\d+\.pt\..*\.tmp$")

_SLOW_DISK = (
    "import os, runpy, sys, time\n"
    "_fsync = os.fsync\n"
    "def _slow(fd):\n"
    "    time.sleep(0.3)\n"
    "    _fsync(fd)\n"
    "os.fsync = _slow\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)


def start(entry: Path, args: list[str], *, slow_disk: bool = False, **env: str) -> subprocess.Popen[str]:
    """Start a program in the background (stdout and stderr to files beside nothing: pipes)."""
    cmd = [PYTHON, "-c", _SLOW_DISK, str(entry), *args] if slow_disk else [PYTHON, str(entry), *args]
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(**env), cwd=REPO
    )


def run(entry: Path, args: list[str], timeout: float = 600, **env: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [PYTHON, str(entry), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_env(**env),
        cwd=REPO,
        check=False,
    )
    return proc


def log_rows(out: Path) -> int:
    """Rows in log.csv so far (0 when it does not exist yet)."""
    path = out / "log.csv"
    if not path.exists():
        return 0
    return max(0, len(path.read_text().splitlines()) - 1)


def step_files(out: Path) -> list[Path]:
    d = out / "checkpoints"
    return sorted(p for p in d.iterdir() if STEP_FILE.match(p.name)) if d.is_dir() else []


def tmp_files(out: Path) -> list[Path]:
    d = out / "checkpoints"
    return sorted(p for p in d.iterdir() if TMP_FILE.match(p.name)) if d.is_dir() else []


def wait_for(proc: subprocess.Popen[str], condition: Callable[[], bool], timeout: float, poll: float = 0.005) -> bool:
    """Poll ``condition`` until it holds (True) or the process ends or time runs out (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if proc.poll() is not None:
            return condition()
        time.sleep(poll)
    return False


def kill9(proc: subprocess.Popen[str]) -> str:
    """SIGKILL the program (if still running) and return its stderr."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    return err


def load_every_checkpoint(out: Path, program: str) -> list[dict[str, Any]]:
    """Load every step checkpoint in the run with the programs' own loader; any failure raises."""
    states = []
    for path in step_files(out):
        state = load_checkpoint(path, program)
        assert int(state["step"]) == int(STEP_FILE.match(path.name).group(1)), path  # type: ignore[union-attr]
        states.append(state)
    return states


def tensors_equal(a: Any, b: Any, where: str = "") -> list[str]:
    """Paths inside two nested states where tensors (or plain values) differ bitwise."""
    if isinstance(a, torch.Tensor):
        same = isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
        return [] if same else [where]
    if isinstance(a, dict):
        if not isinstance(b, dict) or a.keys() != b.keys():
            return [where]
        return [d for k in a for d in tensors_equal(a[k], b[k], f"{where}.{k}")]
    if isinstance(a, (list, tuple)):
        if not isinstance(b, (list, tuple)) or len(a) != len(b):
            return [where]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in tensors_equal(x, y, f"{where}[{i}]")]
    return [] if a == b else [where]


def read_columns(out: Path, columns: tuple[str, ...]) -> list[tuple[str, ...]]:
    """The given columns of log.csv, row by row, as the strings written."""
    import csv

    with (out / "log.csv").open(newline="") as f:
        return [tuple(r[c] for c in columns) for r in csv.DictReader(f)]


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with its bytes (None for folders): to prove nothing changed."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def call_main(program: str, argv: list[str]) -> tuple[int, str, str]:
    """Run a program's ``main(argv)`` in this process: ``(exit status, stdout, stderr)``.

    ``program``: ``phase5_big_run`` or ``phase5_big_run.py``, ``train.py``, or anything else for ``lrsched``.
    """
    if program.startswith(DINO_PROGRAM):
        from lrsched.recipes.dino.main import main
    elif program == TRAIN_PROGRAM:
        from lrsched.recipes.finetune.main import main
    else:
        from lrsched.cli import main
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            status = main(argv)
        except SystemExit as exit_:
            status = exit_.code if isinstance(exit_.code, int) else 1
    return int(status or 0), out.getvalue(), err.getvalue()
