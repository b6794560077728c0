"""liveness.py: a deadline bounds a whole wait however many reads in it block (real FIFOs), in time the
process could run (a SIGSTOP does not count), and workers die with their parent (real processes)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest
from helpers import SRC

from lrsched.recipes.dino.data import _sampled_images
from lrsched.recipes.dino.files import list_folder
from lrsched.recipes.dino.liveness import MAX_TICKS_COUNTED, RunnableClock, Stalled, tick

from .dino_helpers import make_image_folder

MARGIN = 5.0
"""Seconds a stalled wait may take beyond its deadline on a loaded 2-core machine (ticks, closing workers)."""


def test_a_gap_between_ticks_counts_at_most_two_ticks() -> None:
    clock = RunnableClock(0.5, now=100.0)
    assert clock.advance(100.5) == 0.5
    assert clock.advance(100.9) == pytest.approx(0.9)  # a tick that came early counts what passed
    assert clock.advance(130.9) == pytest.approx(0.9 + MAX_TICKS_COUNTED * 0.5)  # 30 s stopped: one capped gap
    assert tick(600) == 1.0 and tick(2) == 0.5


def run_child(code: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh interpreter (a regression hangs there, not in the test session)."""
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env, check=False
    )


SWALLOWING_READER = """
import os, time
from lrsched.recipes.dino.liveness import Stalled, deadline
fifos = {fifos!r}
started, swallowed = time.monotonic(), 0
try:
    with deadline(1.0, lambda: "stalled"):
        for path in fifos:  # a per-image handler that takes one exception for one bad image
            try:
                open(path, "rb").close()
            except Stalled:
                swallowed += 1
        time.sleep(60)
except Stalled:
    print(f"stalled after {{time.monotonic() - started:.2f}} s, {{swallowed}} swallowed", flush=True)
"""


def test_a_deadline_bounds_every_blocked_read_after_it_not_just_the_first(tmp_path: Path) -> None:
    fifos = []
    for i in range(4):
        fifos.append(str(tmp_path / f"f{i}.jpg"))
        os.mkfifo(fifos[-1])
    done = run_child(SWALLOWING_READER.format(fifos=fifos), timeout=60)
    assert done.returncode == 0, done.stderr
    seconds = float(done.stdout.split()[2])
    assert "4 swallowed" in done.stdout and seconds < 1.0 + 6 * tick(1.0) + MARGIN, done.stdout


STOPPED_SLEEPER = """
import time
from lrsched.recipes.dino.liveness import deadline
with deadline(3.0, lambda: "stalled"):  # ticks every 0.75 s; a gap counts at most 1.5 s
    print("armed", flush=True)
    time.sleep(0.5)
print("done", flush=True)
"""


def test_time_stopped_by_sigstop_is_not_counted_against_a_deadline() -> None:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.Popen(
        [sys.executable, "-c", STOPPED_SLEEPER], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout is not None and proc.stdout.readline() == "armed\n"
    proc.send_signal(signal.SIGSTOP)
    time.sleep(6)  # twice the deadline, stopped: counted at most 0.5 + 1.5 s (and the load's delays)
    proc.send_signal(signal.SIGCONT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and out == "done\n", err


def fifo_folder(tmp_path: Path, n: int) -> tuple[Path, list[Path]]:
    """A folder of ``n`` images, listed, whose files then all become FIFOs (a read blocks: no writer)."""
    root = make_image_folder(tmp_path / "images", n, classes=0, sizes=(40, 60))
    paths = sorted(root.glob("*.jpg"))
    return root, paths


def rescue(fifos: list[Path], after: float, done: threading.Event) -> None:
    """After ``after`` seconds, open each FIFO for writing (and close it) until ``done``: a reader blocked
    on one then gets an empty file, so a missing deadline fails the test instead of hanging it."""
    if done.wait(after):
        return
    while not done.is_set():
        for fifo in fifos:
            with suppress(OSError):
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # ENXIO while no reader waits
        time.sleep(0.05)


def _slow_scandir(monkeypatch: pytest.MonkeyPatch, seconds: float, only: str | None = None) -> None:
    """``os.scandir`` that sleeps ``seconds`` before reading a folder (only those named ``only``, if given):
    a folder on a stalled mount, or a slow one. A folder given as a descriptor (``shutil.rmtree`` removing
    ``tmp_path`` at teardown) is read at once."""
    real = os.scandir

    def scandir(path: str | int) -> Any:
        if not isinstance(path, int) and (only is None or os.path.basename(os.fspath(path)) == only):
            time.sleep(seconds)
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)


def test_a_listing_that_makes_no_progress_stalls_at_its_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "data"
    make_image_folder(root / "a", 2)
    (root / "stuck").mkdir()
    _slow_scandir(monkeypatch, 600.0, only="stuck")
    started = time.monotonic()
    with pytest.raises(
        Stalled, match=r"^--data-timeout 1: listing --data-dir .* made no progress for 1 s \(2 images listed\)$"
    ):
        list_folder(root, timeout=1.0)
    assert time.monotonic() - started < 1.0 + MARGIN


def test_a_long_listing_that_keeps_moving_is_not_stalled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The deadline bounds the time without progress, not the whole walk: 9 folders at 0.4 s each (3.6 s)
    list under a 1 s deadline, as a million files on a slow mount list under the default 600 s."""
    root = tmp_path / "data"
    for name in "abcdefgh":
        make_image_folder(root / name, 1, classes=0)
    _slow_scandir(monkeypatch, 0.4)
    started = time.monotonic()
    assert len(list_folder(root, timeout=1.0)) == 8
    assert time.monotonic() - started > 3.6


def test_the_images_sampled_at_start_are_read_within_the_deadline(tmp_path: Path) -> None:
    root, paths = fifo_folder(tmp_path, 6)
    listing = list_folder(root)
    for path in paths[2:]:
        path.unlink()
        os.mkfifo(path)
    done = threading.Event()
    threading.Thread(target=rescue, args=(paths[2:], 30.0, done), daemon=True).start()
    started = time.monotonic()
    try:
        with pytest.raises(Stalled, match=r"^--data-timeout 1: the 6 images sampled at start .* \(2 were\)$"):
            _sampled_images(listing, timeout=1.0)
    finally:
        done.set()
    assert time.monotonic() - started < 1.0 + MARGIN


STREAM_OVER_FIFOS = """
import os, time
from pathlib import Path
from lrsched.recipes.dino.augment import Geometry
from lrsched.recipes.dino.data import Sampler, open_folder
from lrsched.recipes.dino.stream import train_loader
from lrsched.recipes.common.faults import DataFailure
ds = open_folder(Path({root!r}))
sampler = Sampler(len(ds.train), 8, 1, seed=0)
batch_files = [ds.train.name(i) for i in sampler.indices(0, 0).tolist()]
for name in batch_files[: {stalled}]:
    os.remove(name)
    os.mkfifo(name)
started = time.monotonic()
try:
    with train_loader(ds.train, Geometry(32, 16, 1, 3), sampler, rank=0, start=0, stop=4, workers={workers},
                      timeout=1.0) as stream:
        next(stream)
except DataFailure as err:
    print(f"{{time.monotonic() - started:.2f}} {{err}}", flush=True)
"""


SLOW = pytest.mark.slow  # workers blocked in a read take the stream's SHUTDOWN_GRACE to be killed
BATCHES = [
    *((0, stalled) for stalled in (1, 2, 8)),
    (1, 2),
    *(pytest.param(w, stalled, marks=SLOW) for w, stalled in ((1, 1), (1, 8), (2, 1), (2, 2), (2, 8))),
]
"""(workers, blocked reads in a batch of 8)."""


@pytest.mark.parametrize(("workers", "stalled"), BATCHES)
def test_a_batch_with_any_number_of_blocked_reads_ends_at_its_deadline(
    tmp_path: Path, workers: int, stalled: int
) -> None:
    root, _ = fifo_folder(tmp_path, 16)
    done = run_child(STREAM_OVER_FIFOS.format(root=str(root), stalled=stalled, workers=workers), timeout=120)
    assert done.returncode == 0 and done.stdout, done.stderr
    seconds, message = done.stdout.split(" ", 1)
    assert message.strip() == "--data-timeout 1: no training batch from the data path for 1 s"
    assert float(seconds) < 1.0 + MARGIN + (10 if workers else 0)  # with workers: their shutdown grace too


# --- workers die with their parent --------------------------------------------------------------


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its reaper counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _gone_within(pids: list[int], seconds: float) -> bool:
    ends = time.monotonic() + seconds
    while time.monotonic() < ends:
        if not any(_alive(p) for p in pids):
            return True
        time.sleep(0.05)
    return not any(_alive(p) for p in pids)


PARENT_OF_A_SLEEPER = """
import time
from lrsched.recipes.dino.liveness import watched_context
child = watched_context().Process(target=time.sleep, args=(120,))
child.start()
print(child.pid, flush=True)
time.sleep(120)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_PDEATHSIG) is Linux's")
def test_a_watched_worker_dies_when_its_parent_is_killed() -> None:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT_OF_A_SLEEPER], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    assert _alive(child)
    parent.kill()
    parent.wait(timeout=30)
    try:
        assert _gone_within([child], 5), "the worker outlived its parent"
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)


ORPHANED_AT_BIRTH = """
from lrsched.recipes.dino.liveness import die_with_parent
die_with_parent(1 << 22)  # the parent it was started by is not its parent now: that one died before it looked
print("still running", flush=True)
"""


def test_a_worker_whose_parent_died_before_it_looked_leaves_at_once() -> None:
    done = run_child(ORPHANED_AT_BIRTH, timeout=60)
    assert done.returncode == 0 and done.stdout == "", done.stdout + done.stderr
