"""What every test shares: the repository's paths, the data, one small DINO run, and running the programs.

A child program gets ``child_env``: one thread, src/ importable, offline, no test hook (unless given).
``start_program``/``run_program`` launch ``phase5_big_run.py`` or ``train.py`` the way a user does;
``wait_for`` polls a condition while a child runs.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
PYTHON = sys.executable
DINO_ENTRY = REPO / "phase5_big_run.py"
TRAIN_ENTRY = REPO / "train.py"
FASHION = Path("/usr/share/datasets/fashion-mnist")

needs_data = pytest.mark.skipif(
    not FASHION.is_dir(), reason="Fashion-MNIST missing: apt-get install dataset-fashion-mnist"
)

DINO_SMALL = [
    *("--preset", "micro", "--batch-size", "16", "--local-crops", "2"),
    *("--knn-train-samples", "600", "--knn-test-samples", "200", "--eval-every", "0", "--seed", "0"),
]
"""A phase5 run small enough for a test: a 2-block, 48-wide ViT, 16 images a step, 2 local crops."""


def child_env(**extra: str) -> dict[str, str]:
    """os.environ without LRSCHED_* hooks, on one torch thread, plus ``extra`` (hooks given on purpose)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LRSCHED_")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(SRC), HF_HUB_OFFLINE="1")
    env.update(extra)
    return env


def start_program(
    entry: Path, args: list[str], *, prefix: list[str] | None = None, **env: str
) -> subprocess.Popen[str]:
    """The program in the background, stdout and stderr piped (``prefix``: interpreter arguments before it)."""
    cmd = [PYTHON, *(prefix or []), str(entry), *args]
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(**env), cwd=REPO
    )


def run_program(entry: Path, args: list[str], timeout: float = 600, **env: str) -> subprocess.CompletedProcess[str]:
    """The program to the end, its output captured."""
    cmd = [PYTHON, str(entry), *args]
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env=child_env(**env), cwd=REPO, check=False
    )


def wait_for(proc: subprocess.Popen[str], condition: Callable[[], bool], timeout: float, poll: float = 0.005) -> bool:
    """Poll ``condition`` until it holds (True), or the process ends or time runs out (its value then)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if proc.poll() is not None:
            return condition()
        time.sleep(poll)
    return False


def read_rows(path: Path) -> list[dict[str, str]]:
    """A CSV file's rows as dicts (log.csv)."""
    with path.open(newline="") as f:
        return list(csv.DictReader(f))
