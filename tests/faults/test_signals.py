"""SIGTERM or SIGINT at random moments of an open-ended phase5_big_run.py run (no --max-steps):
exit status 0 and a loadable checkpoint at the step reached, every time; resuming from it goes on
with the open-ended LR (warm-up, then the peak held), each step logged exactly once."""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

import pytest
from fault_helpers import (
    DINO,
    DINO_PROGRAM,
    DINO_SMALL,
    load_every_checkpoint,
    log_rows,
    read_columns,
    start,
    step_files,
    tmp_files,
)
from helpers import FASHION, wait_for

from lrsched.schedules import Schedule

pytestmark = pytest.mark.skipif(not FASHION.is_dir(), reason="Fashion-MNIST missing")
OPEN = [*DINO_SMALL, "--warmup-steps", "3", "--save-every", "4", "--keep-checkpoints", "2"]


def stop_at_random(out: Path, sig: signal.Signals, rows: int, delay: float, during_write: bool) -> int:
    """Start (or resume) the open-ended run, signal it at the moment described; returns the step saved."""
    resume = ["--resume", "latest"] if step_files(out) else []
    target = log_rows(out) + rows
    proc = start(DINO, [*OPEN, "--output-dir", str(out), *resume], slow_disk=during_write)
    assert wait_for(proc, lambda: log_rows(out) >= target, timeout=300, poll=0.01), proc.stderr
    if during_write:
        stale = set(tmp_files(out))
        assert wait_for(proc, lambda: bool(set(tmp_files(out)) - stale), timeout=120, poll=0.002)
    else:
        time.sleep(delay)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, f"{sig.name}: exit {proc.returncode}: {stderr[-2000:]}"
    assert "Traceback" not in stderr
    assert f"stopped by {sig.name} at step" in stdout + stderr
    states = load_every_checkpoint(out, DINO_PROGRAM)
    step = int(states[-1]["step"])
    assert step == log_rows(out), "the checkpoint is not at the last logged step"
    return step


def check_log(out: Path) -> None:
    rows = read_columns(out, ("step", "lr"))
    lr = Schedule("constant", base=5e-4, warmup=3, total=None)
    assert [int(s) for s, _ in rows] == list(range(len(rows)))
    assert [float(v) for _, v in rows] == pytest.approx([lr(t) for t in range(len(rows))], rel=1e-12)


def test_sigterm_mid_run_saves_and_exits_0(tmp_path: Path) -> None:
    out = tmp_path / "open"
    step = stop_at_random(out, signal.SIGTERM, rows=5, delay=0.05, during_write=False)
    assert step >= 5
    check_log(out)


@pytest.mark.slow
def test_six_random_signals_each_leave_a_checkpoint_and_the_run_continues(tmp_path: Path) -> None:
    rng = random.Random(5)
    out = tmp_path / "open"
    steps = []
    for i in range(6):
        sig = rng.choice([signal.SIGTERM, signal.SIGINT])
        steps.append(stop_at_random(out, sig, rng.randint(1, 6), round(rng.uniform(0, 0.5), 3), i in (1, 4)))
    assert steps == sorted(steps) and steps[0] >= 1
    check_log(out)
    assert tmp_files(out) == []
