"""phase5 never hangs and never ends without its state (issue 20): real processes, real workers, real files.

Whatever ends a run once the model exists -- images that vanish, a stalled data path, a signal
while it stalls, an unexpected error -- it saves the latest whole state, prints one line, and
exits with its documented status (stream.py, main.py) well within 30 s.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

import pytest
from fault_helpers import log_rows, wait_rows
from helpers import DINO_ENTRY, PYTHON, child_env, start_program, wait_for
from recipes.dino.dino_helpers import make_image_folder

from lrsched.recipes.common.checkpoint import latest_checkpoint, load_checkpoint
from lrsched.recipes.common.exits import EXIT_DATA, EXIT_ERROR
from lrsched.recipes.common.faults import FAIL_AT, STALL_AT, STOP_AT
from lrsched.recipes.dino.data import Sampler, _sample, open_folder
from lrsched.recipes.dino.files import list_folder
from lrsched.recipes.dino.flags import PROGRAM_ID
from lrsched.recipes.dino.stream import SHUTDOWN_GRACE

FOLDER_RUN = [
    *("--preset", "micro", "--batch-size", "8", "--local-crops", "1", "--global-size", "32", "--local-size", "16"),
    *("--knn-train-samples", "20", "--knn-test-samples", "10", "--eval-every", "0", "--seed", "0"),
    *("--warmup-steps", "2", "--workers", "1"),
]
"""A phase5 run on an image folder with one worker, a few seconds to start."""


@pytest.fixture
def images(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "images", 40, classes=2, sizes=(40, 90))


def start(images: Path, out: Path, *extra: str, **env: str) -> subprocess.Popen[str]:
    cmd = [PYTHON, str(DINO_ENTRY), *FOLDER_RUN, "--data-dir", str(images), "--output-dir", str(out), *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(**env))


def ended(proc: subprocess.Popen[str], within: float) -> tuple[int, str, float]:
    """Exit status, stderr and seconds until the exit (the test fails if it takes more than ``within``)."""
    started = time.monotonic()
    try:
        _, err = proc.communicate(timeout=within)
    except subprocess.TimeoutExpired:
        proc.kill()  # a hang must fail the test, not outlive it
        proc.communicate()
        raise
    return proc.returncode, err, time.monotonic() - started


def saved_step(out: Path) -> int:
    path = latest_checkpoint(out / "checkpoints")
    assert path is not None
    return int(load_checkpoint(path, PROGRAM_ID)["step"])


def test_images_deleted_mid_run_stop_it_saved_in_one_line_within_30_s(images: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = start(images, out)
    wait_rows(proc, out, 3)
    shutil.rmtree(images)
    status, err, seconds = ended(proc, 30)
    assert status == EXIT_DATA, err
    assert seconds < 30
    lines = err.strip().splitlines()
    assert "the data went away" in lines[-1] and "stopped at step" in lines[-1] and "Traceback" not in err
    step = saved_step(out)
    assert step == log_rows(out) >= 3
    assert json.loads((out / "metrics.json").read_text())["status"].startswith(f"failed at step {step}")


def test_a_stalled_data_path_stops_the_run_saved_at_its_deadline(images: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = start(images, out, "--data-timeout", "2", **{STALL_AT: "4"})
    status, err, _ = ended(proc, 240)
    assert status == EXIT_DATA, err
    assert err.strip().splitlines()[-1] == (
        "phase5_big_run.py: error: the data path failed: --data-timeout 2: no training batch from the data path "
        f"for 2 s; stopped at step 4; checkpoint {out / 'checkpoints' / 'step-00000004.pt'}"
    )
    assert saved_step(out) == 4


def test_sigterm_while_the_data_path_stalls_saves_and_exits_0_at_once(images: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = start(images, out, "--data-timeout", "0", **{STALL_AT: "3"})
    wait_rows(proc, out, 3)
    time.sleep(1)  # waiting for the batch of step 3, which never comes
    proc.send_signal(signal.SIGTERM)
    status, err, seconds = ended(proc, 30)
    assert status == 0, err
    assert seconds < 30 and saved_step(out) == 3


def test_an_unexpected_error_saves_prints_one_line_and_keeps_the_traceback(images: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = start(images, out, **{FAIL_AT: "3"})
    status, err, _ = ended(proc, 240)
    assert status == EXIT_ERROR, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        f"phase5_big_run.py: error: MemoryError: test hook {FAIL_AT}=3 (traceback in {out / 'error.log'}); "
        f"stopped at step 3; checkpoint {out / 'checkpoints' / 'step-00000003.pt'}"
    )
    assert "Traceback" in (out / "error.log").read_text() and saved_step(out) == 3
    again = start(images, out, "--max-steps", "5", "--resume", "latest", "--replan")
    status, err, _ = ended(again, 240)
    assert status == 0, err


def test_a_few_unreadable_images_are_skipped_counted_and_reported(images: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = start(images, out, "--max-steps", "30")
    wait_rows(proc, out, 1)
    broken = sorted(images.rglob("*.jpg"))[:2]
    for path in broken:
        path.write_bytes(b"no longer an image")
    stdout, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err
    skipped = json.loads((out / "metrics.json").read_text())["skipped_images"]
    assert skipped > 0
    assert f"skipped {skipped} unreadable image(s)" in stdout + err
    assert str(broken[0]) in stdout + err


# --- issue 30: a deadline at every worker count, distinct bad files, no orphans, evaluations redone ----


def many_images(tmp_path: Path) -> Path:
    """200 small labelled images: 180 train (22 steps of 8 an epoch), so a step's files come once an epoch."""
    return make_image_folder(tmp_path / "many", 200, classes=2, sizes=(40, 60))


def batch_files(images: Path) -> Callable[[int], list[str]]:
    """The files of a step's batch (seed 0, 8 a step), listed now: the run's own listing of ``images``."""
    ds = open_folder(images)
    sampler = Sampler(len(ds.train), 8, 1, seed=0)
    return lambda step: [ds.train.name(i) for i in sampler.indices(step, 0).tolist()]


def become_fifos(names: list[str]) -> None:
    """Files made FIFOs: opening one blocks (no writer)."""
    for name in names:
        os.remove(name)
        os.mkfifo(name)


STALLS = [
    (0, 2),
    *(pytest.param(w, n, marks=pytest.mark.slow) for w in (0, 1, 2) for n in (1, 2, 8) if (w, n) != (0, 2)),
]
"""(workers, reads that block in one batch of 8); test_liveness.py runs every 0-worker case fast."""


@pytest.mark.parametrize(("workers", "stalled"), STALLS)
def test_reads_that_block_end_the_run_at_its_deadline_saved_at_any_worker_count(
    tmp_path: Path, workers: int, stalled: int
) -> None:
    images, out = many_images(tmp_path), tmp_path / "run"
    files_of = batch_files(images)
    proc = start(images, out, "--workers", str(workers), "--data-timeout", "2", "--max-steps", "400")
    wait_rows(proc, out, 2)
    planned = log_rows(out) + 8  # in this epoch, past what the workers fetched ahead
    assert planned < 22
    stalled_files = files_of(planned)[:stalled]
    become_fifos(stalled_files)
    status, err, seconds = ended(proc, 120)
    assert status == EXIT_DATA, err
    step = saved_step(out)  # planned, or (had the log lagged behind the workers) where the next epoch meets them
    next_epoch = next(t for t in range(22, 44) if set(files_of(t)) & set(stalled_files))
    assert step in (planned, next_epoch), (step, planned, next_epoch)
    assert err.strip().splitlines()[-1] == (
        "phase5_big_run.py: error: the data path failed: --data-timeout 2: no training batch from the data path "
        f"for 2 s; stopped at step {step}; checkpoint {out / 'checkpoints' / f'step-{step:08d}.pt'}"
    )
    assert step == log_rows(out)
    assert seconds < 2 + 30 + SHUTDOWN_GRACE + 15  # the steps before it, the deadline, closing the workers


LISTED_THEN_FIFOS = (
    "import os, runpy, sys\n"
    "from lrsched.recipes.dino import data\n"
    "_list = data.list_folder\n"
    "def listed_then_fifos(*args, **kwargs):\n"
    "    listing = _list(*args, **kwargs)\n"
    "    for i in range(len(listing)):\n"
    "        os.remove(listing.path(i))\n"
    "        os.mkfifo(listing.path(i))\n"
    "    return listing\n"
    "data.list_folder = listed_then_fifos\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)
"""Runs phase5 with every file of its folder made a FIFO right after the listing (the program unchanged)."""


def test_the_images_sampled_at_start_stall_within_the_deadline_and_nothing_is_written(
    images: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    proc = start_program(
        DINO_ENTRY,
        [*FOLDER_RUN, "--data-dir", str(images), "--output-dir", str(out), "--data-timeout", "2"],
        prefix=["-c", LISTED_THEN_FIFOS],
    )
    status, err, _ = ended(proc, 120)
    assert status == EXIT_DATA, err
    lines = err.strip().splitlines()
    assert lines[-1].startswith("phase5_big_run.py: error: the data path failed: --data-timeout 2: the 40 images")
    assert lines[-1].endswith("were not read within 2 s (0 were); nothing was written") and "Traceback" not in err
    assert not out.exists()


@pytest.mark.slow
def test_a_run_stopped_and_continued_longer_than_its_deadline_is_not_blamed_on_the_data(
    images: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    proc = start(images, out, "--workers", "0", "--data-timeout", "1", "--max-steps", "80")
    wait_rows(proc, out, 2)
    for _ in range(5):  # Ctrl-Z for 2.5 s (SIGSTOP: the same for the process), then fg
        proc.send_signal(signal.SIGSTOP)
        time.sleep(2.5)
        proc.send_signal(signal.SIGCONT)
        time.sleep(0.7)
    status, err, _ = ended(proc, 240)
    assert status == 0, err
    assert log_rows(out) == 80


def children(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (read from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its reaper is dead)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def gone_within(pids: list[int], seconds: float) -> bool:
    ends = time.monotonic() + seconds
    while any(alive(p) for p in pids) and time.monotonic() < ends:
        time.sleep(0.05)
    return not any(alive(p) for p in pids)


def kill_survivors(pids: list[int]) -> None:
    for pid in pids:
        with suppress(OSError):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.slow  # test_liveness.py kills a watched worker's parent in seconds
def test_workers_blocked_in_a_read_die_with_a_main_process_killed_by_sigkill(images: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = start(images, out, "--workers", "2", "--data-timeout", "0", **{STALL_AT: "3"})
    wait_rows(proc, out, 3)  # the workers now sleep in the batch of step 3
    workers = children(proc.pid)
    assert len(workers) >= 2
    proc.kill()
    proc.wait(timeout=30)
    try:
        assert gone_within(workers, 10), "a data worker outlived the main process"
    finally:
        kill_survivors(workers)


@pytest.mark.slow
def test_a_main_process_killed_as_its_workers_start_leaves_no_worker(images: Path, tmp_path: Path) -> None:
    for attempt in range(3):
        out = tmp_path / f"run{attempt}"
        proc = start(images, out, "--workers", "2", "--eval-every", "0", "--no-knn")
        started = wait_for(proc, lambda pid=proc.pid: bool(children(pid)), 240, poll=0.001)
        workers = children(proc.pid)
        proc.kill()
        proc.wait(timeout=30)
        assert started and workers, proc.communicate()[1]
        time.sleep(0.5)
        try:
            assert gone_within(workers + [c for w in workers for c in children(w)], 10), f"attempt {attempt}"
        finally:
            kill_survivors(workers)


@pytest.mark.slow  # 300 steps; test_a_resume_keeps_the_files_known_unreadable checks the same rule fast
def test_one_unreadable_image_met_in_150_epochs_is_counted_once_and_named(tmp_path: Path) -> None:
    images, out = make_image_folder(tmp_path / "few", 16, classes=0, sizes=(40, 60)), tmp_path / "run"
    proc = start(images, out, "--workers", "0", "--max-steps", "300")
    wait_rows(proc, out, 1)
    bad = sorted(images.glob("*.jpg"))[5]
    bad.write_bytes(b"no longer an image")  # in every epoch (2 steps of 8 of the 16 images): met ~150 times
    stdout, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["unreadable_files"] == [str(bad)] and metrics["skipped_images"] == 1
    assert (stdout + err).count("cannot read image") == 1
    assert f"skipped 1 unreadable image(s), each replaced by the next readable one: {bad}" in stdout + err


def test_a_resume_keeps_the_files_known_unreadable(tmp_path: Path) -> None:
    images, out = make_image_folder(tmp_path / "many", 300, classes=0, sizes=(40, 60)), tmp_path / "run"
    outside_the_sample = min(set(range(300)) - set(_sample(list_folder(images))))  # a resume reads the sample
    proc = start(images, out, "--workers", "0", "--max-steps", "150", **{STOP_AT: "80"})
    wait_rows(proc, out, 1)
    bad = sorted(images.glob("*.jpg"))[outside_the_sample]
    bad.write_bytes(b"no longer an image")  # met once in each epoch of 37 steps after this one
    stdout, err = proc.communicate(timeout=600)
    assert proc.returncode == 0 and (stdout + err).count("cannot read image") == 1, err
    saved = load_checkpoint(out / "checkpoints" / "step-00000080.pt", PROGRAM_ID)["metrics"]
    assert saved["unreadable_files"] == [str(bad)]
    again = start(images, out, "--workers", "0", "--max-steps", "150", "--resume", "latest")
    stdout, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["unreadable_files"] == [str(bad)] and metrics["skipped_images"] == 1
    assert "cannot read image" not in stdout + err  # known from the checkpoint: met again, not reported again
    assert f"skipped 1 unreadable image(s), each replaced by the next readable one: {bad}" in stdout + err


@pytest.mark.slow  # a run, a stop in its k-NN and a resume: about 20 s
def test_an_evaluation_a_stop_cut_short_is_done_on_resume(images: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = start(images, out, "--eval-every", "4", "--max-steps", "6", **{STOP_AT: "4"})
    status, err, _ = ended(first, 240)
    assert status == 0 and saved_step(out) == 4, err
    assert [p[0] for p in json.loads((out / "metrics.json").read_text())["knn_history"]] == [0]
    again = start(images, out, "--eval-every", "4", "--max-steps", "6", "--resume", "latest")
    status, err, _ = ended(again, 240)
    assert status == 0, err
    assert [p[0] for p in json.loads((out / "metrics.json").read_text())["knn_history"]] == [0, 4, 6]


@pytest.mark.slow  # a run and a resume: about 20 s
def test_an_output_folder_inside_the_data_folder_is_not_data_and_the_run_resumes(images: Path) -> None:
    out = images / "runs" / "first"
    status, err, _ = ended(start(images, out, "--max-steps", "6", **{STOP_AT: "3"}), 240)
    assert status == 0 and (out / "curves.png").exists(), err
    status, err, _ = ended(start(images, out, "--max-steps", "6", "--resume", "latest"), 240)
    assert status == 0, err
    assert saved_step(out) == 6


@pytest.mark.slow  # the fault table refuses --data-timeout 1e10 in-process
def test_a_data_timeout_beyond_a_day_is_refused_at_parse_time(images: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    status, err, _ = ended(start(images, out, "--data-timeout", "1e10"), 120)
    assert status == 2
    assert err.strip().splitlines() == [
        "phase5_big_run.py: error: argument --data-timeout/--data_timeout: 1e10: must be in [0, 86400]"
    ]
    assert not out.exists()
