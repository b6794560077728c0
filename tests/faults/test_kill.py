"""kill -9 at random moments: resuming from ``latest`` gives the uninterrupted run's LRs and weights.

A chain of kills on one run: start, SIGKILL at a random moment (after a random number of new
log rows plus a random delay, or as soon as a checkpoint's temporary file appears, i.e. while
a checkpoint is being written), load every checkpoint left on disk with the program's own
loader, resume with ``latest``, kill again, ... then let the last resume finish. The finished
run's log.csv (LR and every other scheduled value, loss, gradient norm) and its final
checkpoint (weights, optimizer, scheduler) must equal, bitwise, those of a run never killed.

A chain's run is sized to its points (``sized_total``) so that it does not end before its last
kill on a fast or idle machine; should it still end by itself (exit 0), that is the end of the
chain, and the finished run is compared all the same.
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from fault_helpers import (
    DINO,
    DINO_PROGRAM,
    DINO_SMALL,
    TRAIN,
    TRAIN_PROGRAM,
    TRAIN_SMALL,
    kill9,
    load_every_checkpoint,
    log_rows,
    read_columns,
    start,
    step_files,
    tensors_equal,
    tmp_files,
)
from helpers import needs_data, run_program, wait_for


@dataclass(frozen=True)
class Program:
    entry: Path
    name: str
    base: tuple[str, ...]
    output_flag: str
    resume: tuple[str, ...]
    total: int
    columns: tuple[str, ...]
    state_keys: tuple[str, ...]

    def argv(self, out: Path, *extra: str) -> list[str]:
        return [*self.base, self.output_flag, str(out), *extra]


def dino_run(total: int) -> Program:
    return Program(
        DINO,
        DINO_PROGRAM,
        (*DINO_SMALL, "--max-steps", str(total), "--warmup-steps", "4", "--save-every", "2", "--keep-checkpoints", "3"),
        "--output-dir",
        ("--resume", "latest"),
        total,
        ("step", "lr", "weight_decay", "momentum", "teacher_temp", "loss", "grad_norm", "last_layer_frozen"),
        ("step", "student", "teacher", "optimizer", "center", "schedules"),
    )


TRAIN_RUN = Program(
    TRAIN,
    TRAIN_PROGRAM,
    (
        *TRAIN_SMALL,
        "--num_epochs",
        "3",
        "--max_train_samples",
        "12",
        "--per_device_train_batch_size",
        "3",
        "--save_steps",
        "1",
        "--save_total_limit",
        "2",
    ),
    "--output_dir",
    ("--resume_from_checkpoint", "latest"),
    12,
    ("step", "epoch", "lr", "loss", "grad_norm"),
    ("step", "model", "optimizer", "schedules", "history", "best"),
)


@dataclass(frozen=True)
class Point:
    """Kill once ``rows`` new log rows exist, then after ``delay`` s; or, with ``write``, as soon
    as a checkpoint's temporary file appears after that."""

    rows: int
    delay: float
    write: bool


def sized_total(points: list[Point], save_every: int, slack: int = 3) -> int:
    """Steps enough for every point: each moves the run on by at most its rows, the steps to the
    next checkpoint write (``save_every``), and a few more during its delay (``slack``)."""
    return sum(p.rows + save_every + slack for p in points)


def random_points(rng: random.Random, count: int, writes: int, max_rows: int) -> list[Point]:
    kinds = [True] * writes + [False] * (count - writes)
    rng.shuffle(kinds)
    return [Point(rng.randint(1, max_rows), round(rng.uniform(0, 0.4), 3), w) for w in kinds]


def reference(program: Program, out: Path) -> None:
    proc = run_program(program.entry, program.argv(out))
    assert proc.returncode == 0, proc.stderr[-3000:]


def finished_by_itself(proc: subprocess.Popen[str], i: int, point: Point) -> bool:
    """The run ended on its own before kill point ``i``: exit 0 ends the chain, anything else fails."""
    if proc.poll() is None:
        return False
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 0, f"point {i} {point}: exit {proc.returncode}: {err[-2000:]}"
    return True


def kill_chain(program: Program, out: Path, points: list[Point]) -> list[str]:
    """Apply every kill point in turn; returns a line per kill (what it hit)."""
    seen = []
    for i, point in enumerate(points):
        resume = list(program.resume) if step_files(out) else []
        rows_before, latest_before = log_rows(out), (step_files(out) or [None])[-1]
        stale = set(tmp_files(out))
        proc = start(program.entry, program.argv(out, *resume), slow_disk=point.write)

        def reached(target: int = rows_before + point.rows) -> bool:
            return log_rows(out) >= target and bool(step_files(out))

        if not wait_for(proc, reached, timeout=400, poll=0.02) and finished_by_itself(proc, i, point):
            seen.append(f"point {i}: the run had finished (exit 0); the chain ends there")
            return seen
        assert reached(), f"point {i} {point}: never reached"
        if point.write:

            def writing(stale: set[Path] = stale) -> bool:
                return bool(set(tmp_files(out)) - stale)

            if not wait_for(proc, writing, timeout=200, poll=0.002) and finished_by_itself(proc, i, point):
                seen.append(f"point {i}: the run finished before a checkpoint write; the chain ends there")
                return seen
            assert writing(), f"point {i}: no checkpoint write seen"
        else:
            time.sleep(point.delay)
        if finished_by_itself(proc, i, point):
            seen.append(f"point {i}: the run finished during the delay; the chain ends there")
            return seen
        err = kill9(proc)
        if proc.returncode == 0:  # it ended between the look and the kill
            seen.append(f"point {i}: the run finished just before the kill; the chain ends there")
            return seen
        assert proc.returncode == -signal.SIGKILL, f"point {i} {point}: ended by itself ({proc.returncode}): {err}"
        states = load_every_checkpoint(out, program.name)  # every file named a checkpoint loads
        assert states, f"point {i}: no checkpoint left"
        if latest_before is not None:  # nothing that was there before is lost: the newest only moves on
            assert step_files(out)[-1].name >= latest_before.name
        partial = [p.name for p in tmp_files(out)]
        seen.append(
            f"kill {i}: {'during a checkpoint write' if point.write else 'between steps'} at log row "
            f"{log_rows(out)}, newest checkpoint {step_files(out)[-1].name}, temporary files {partial}"
        )
    proc_final = run_program(program.entry, program.argv(out, *program.resume))
    assert proc_final.returncode == 0, proc_final.stderr[-3000:]
    return seen


def assert_same_run(program: Program, ref: Path, out: Path) -> None:
    """The killed-and-resumed run equals the uninterrupted one: log and final state, bitwise."""
    expected = read_columns(ref, program.columns)
    assert len(expected) == program.total
    assert read_columns(out, program.columns) == expected
    final = f"step-{program.total:08d}.pt"
    a = load_every_checkpoint(ref, program.name)[-1]
    b = load_every_checkpoint(out, program.name)[-1]
    assert step_files(out)[-1].name == final
    for key in program.state_keys:
        assert tensors_equal(a[key], b[key], key) == [], key
    assert tmp_files(out) == [], "a finished run left temporary checkpoint files"


def check_program(program: Program, tmp_path: Path, points: list[Point]) -> None:
    ref, out = tmp_path / "ref", tmp_path / "killed"
    reference(program, ref)
    lines = kill_chain(program, out, points)
    print("\n".join(lines))
    assert_same_run(program, ref, out)


@needs_data
def test_dino_kill_during_a_checkpoint_write_resumes_identically(tmp_path: Path) -> None:
    check_program(dino_run(10), tmp_path, [Point(3, 0.0, True)])


@needs_data
@pytest.mark.slow
def test_dino_twelve_random_kills_resume_identically(tmp_path: Path) -> None:
    points = random_points(random.Random(6), 12, writes=4, max_rows=2)
    check_program(dino_run(sized_total(points, save_every=2)), tmp_path, points)


def test_a_kill_chain_is_sized_to_its_points() -> None:
    points = random_points(random.Random(6), 12, writes=4, max_rows=2)
    assert sized_total(points, save_every=2) >= 12 * (1 + 2 + 3) > 40  # 40 steps ran out before point 9 once


@pytest.mark.slow
def test_train_kill_during_a_checkpoint_write_resumes_identically(tmp_path: Path) -> None:
    check_program(TRAIN_RUN, tmp_path, [Point(1, 0.0, True)])


@pytest.mark.slow
def test_train_ten_random_kills_resume_identically(tmp_path: Path) -> None:
    check_program(TRAIN_RUN, tmp_path, random_points(random.Random(7), 10, writes=4, max_rows=1))
