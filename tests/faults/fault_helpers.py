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
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import torch
from helpers import DINO_ENTRY, TRAIN_ENTRY, start_program, wait_for
from helpers import DINO_SMALL as SMALL

from lrsched.recipes.common.checkpoint import load_checkpoint

DINO, TRAIN = DINO_ENTRY, TRAIN_ENTRY
DINO_PROGRAM = "phase5_big_run"
TRAIN_PROGRAM = "train.py"
DINO_SMALL = [*SMALL, "--device", "cpu"]
"""The shared small run (tests/helpers.py), on the CPU whatever the machine has."""

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
    """Start a program in the background (``slow_disk``: through the slow-fsync wrapper)."""
    return start_program(entry, args, prefix=["-c", _SLOW_DISK] if slow_disk else None, **env)


def log_rows(out: Path) -> int:
    """Rows in log.csv so far (0 when it does not exist yet)."""
    path = out / "log.csv"
    if not path.exists():
        return 0
    return max(0, len(path.read_text().splitlines()) - 1)


def wait_rows(proc: subprocess.Popen[str], out: Path, rows: int) -> None:
    """Wait (at most 240 s) until log.csv has ``rows`` rows; the process killed and the test failed else."""
    if not wait_for(proc, lambda: log_rows(out) >= rows, 240, poll=0.1):
        proc.kill()
        raise AssertionError(f"no {rows} rows (exit {proc.poll()}): {proc.communicate()[1]}")


def step_files(out: Path) -> list[Path]:
    d = out / "checkpoints"
    return sorted(p for p in d.iterdir() if STEP_FILE.match(p.name)) if d.is_dir() else []


def tmp_files(out: Path) -> list[Path]:
    d = out / "checkpoints"
    return sorted(p for p in d.iterdir() if TMP_FILE.match(p.name)) if d.is_dir() else []


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
