"""phase5 never hangs and never ends without its state (issue 20): real processes, real workers, real files.

Whatever ends a run once the model exists -- images that vanish, a stalled data path, a signal
while it stalls, an unexpected error -- it saves the latest whole state, prints one line, and
exits with its documented status (stream.py, main.py) well within 30 s.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers import DINO_ENTRY, PYTHON, child_env, read_rows, wait_for
from recipes.dino.dino_helpers import make_image_folder

from lrsched.recipes.common.checkpoint import latest_checkpoint, load_checkpoint
from lrsched.recipes.common.exits import EXIT_DATA, EXIT_ERROR
from lrsched.recipes.common.faults import FAIL_AT, STALL_AT
from lrsched.recipes.dino.flags import PROGRAM_ID

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


def steps_logged(out: Path) -> int:
    path = out / "log.csv"
    return len(read_rows(path)) if path.exists() else 0


def wait_rows(proc: subprocess.Popen[str], out: Path, rows: int) -> None:
    if not wait_for(proc, lambda: steps_logged(out) >= rows, 240, poll=0.1):
        proc.kill()
        raise AssertionError(f"no {rows} rows (exit {proc.poll()}): {proc.communicate()[1]}")


def ended(proc: subprocess.Popen[str], within: float) -> tuple[int, str, float]:
    """Exit status, stderr and seconds until the exit (the test fails if it takes more than ``within``)."""
    started = time.monotonic()
    _, err = proc.communicate(timeout=within)
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
    assert step == steps_logged(out) >= 3
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
