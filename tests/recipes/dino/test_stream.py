"""Streaming batches: the same crops whatever the number of workers, from any start step."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch
from helpers import SRC

from lrsched.recipes.common.faults import STALL_AT, DataFailure
from lrsched.recipes.common.stopping import Stopped, StopRequest
from lrsched.recipes.dino.augment import Geometry, Photometric
from lrsched.recipes.dino.data import Dataset, Sampler, Source, mix, open_folder
from lrsched.recipes.dino.stream import (
    SHUTDOWN_GRACE,
    Batch,
    Stream,
    default_workers,
    eval_batches,
    readable,
    train_loader,
)

from .dino_helpers import make_image_folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("imgs"), 40, classes=2, sizes=(40, 90))


def crops(folder: Path, workers: int, start: int, stop: int) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
    ds = open_folder(folder)
    geo = Geometry(32, 16, 2, ds.channels)
    sampler = Sampler(len(ds.train), 4, 2, seed=5)
    batches = train_loader(ds.train, geo, sampler, rank=1, start=start, stop=stop, workers=workers)
    return [(b.step, b.global_px, b.local_px) for b in batches]


def test_crops_do_not_depend_on_the_number_of_workers_or_the_start(folder: Path) -> None:
    main = crops(folder, 0, 0, 6)
    assert [s for s, _, _ in main] == list(range(6))
    assert main[0][1].shape == (4, 2, 32, 32, 3) and main[0][2].shape == (4, 2, 16, 16, 3)
    for other in (crops(folder, 2, 0, 6), crops(folder, 0, 3, 6)):
        for s, g, loc in other:
            assert torch.equal(g, main[s][1]) and torch.equal(loc, main[s][2])


def test_eval_batches_come_in_order_with_their_labels(folder: Path) -> None:
    ds = open_folder(folder)
    assert ds.knn_test is not None and ds.knn_test.labels is not None
    ids = torch.tensor([3, 0, 2])
    got = list(eval_batches(ds.knn_test, ids, 24, workers=1, batch=2))
    assert [x.shape for x, _ in got] == [(2, 24, 24, 3), (1, 24, 24, 3)]
    assert torch.cat([y for _, y in got]).tolist() == ds.knn_test.labels[ids].tolist()


def test_default_workers_leave_a_core_for_training() -> None:
    assert 0 <= default_workers() <= 8


# --- views wherever the colour work runs ----------------------------------------------------------


def views(folder: Path, workers: int, in_workers: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The normalised views of steps 0-3 on rank 1, coloured in the workers or afterwards in this process."""
    ds = open_folder(folder)
    geo, photometric = Geometry(32, 16, 2, ds.channels), Photometric(ds.mean, ds.std)
    sampler = Sampler(len(ds.train), 4, 2, seed=5)
    colour = photometric if in_workers else None
    out = []
    with train_loader(ds.train, geo, sampler, rank=1, start=0, stop=4, workers=workers, photometric=colour) as stream:
        for b in stream:
            if not b.coloured:
                g = torch.Generator().manual_seed(mix(5, b.step, 1))
                c = photometric(b.global_px, b.local_px, g)
                out.append((c.global_crops, c.local_crops))
            else:
                out.append((b.global_px, b.local_px))
    return out


def test_views_are_bitwise_the_same_whatever_the_workers_and_wherever_the_colour_is_made(folder: Path) -> None:
    reference = views(folder, 0, in_workers=False)
    assert reference[0][0].dtype == torch.float32 and reference[0][0].shape == (8, 3, 32, 32)
    for workers, in_workers in ((0, True), (1, True), (2, True), (2, False)):
        for (g, loc), (g0, loc0) in zip(views(folder, workers, in_workers), reference, strict=True):
            assert torch.equal(g, g0) and torch.equal(loc, loc0), (workers, in_workers)


# --- unreadable images, data gone, stalls, stops, closing ------------------------------------------


def listed_copy(folder: Path, tmp: Path) -> tuple[Path, Dataset]:
    """A copy of ``folder``, listed (``open_folder``) while every file is readable."""
    import shutil

    copy = tmp / "copy"
    shutil.copytree(folder, copy)
    return copy, open_folder(copy)


def test_unreadable_images_are_replaced_by_the_next_readable_one_and_reported(folder: Path, tmp_path: Path) -> None:
    _, ds = listed_copy(folder, tmp_path)
    before, _ = readable(ds.train, 0)
    for i in range(3):
        ds.train.listing.path(i).write_bytes(b"not an image")  # type: ignore[attr-defined]
    image, skipped = readable(ds.train, 0)
    assert len(skipped) == 3 and all("cannot read image" in reason for _, reason in skipped)
    assert [file for file, _ in skipped] == [str(ds.train.listing.path(i)) for i in range(3)]  # type: ignore[attr-defined]
    assert image.tobytes() == readable(ds.train, 3)[0].tobytes() != before.tobytes()
    sampler = Sampler(len(ds.train), len(ds.train), 1, seed=0)
    with train_loader(ds.train, Geometry(32, 16, 1, 3), sampler, rank=0, start=0, stop=1, workers=1) as stream:
        batch = next(stream)
    assert len(batch.skipped) == 3 + 2 + 1 and batch.lost is None  # images 0, 1 and 2 each skip the broken ones


def test_images_gone_mark_the_batch_lost_without_an_exception(folder: Path, tmp_path: Path) -> None:
    import shutil

    copy, ds = listed_copy(folder, tmp_path)
    shutil.rmtree(copy)
    sampler = Sampler(len(ds.train), 4, 1, seed=0)
    with train_loader(ds.train, Geometry(32, 16, 1, 3), sampler, rank=0, start=0, stop=2, workers=1) as stream:
        batch = next(stream)
    assert batch.lost is not None and "the data went away" in batch.lost and "\n" not in batch.lost


def stalled_stream(folder: Path, workers: int, timeout: float, stop: StopRequest | None = None) -> Stream[Batch]:
    """A stream whose step 1 never arrives (the ``STALL_AT`` test hook)."""
    ds = open_folder(folder)
    sampler = Sampler(len(ds.train), 4, 1, seed=0)
    geo = Geometry(32, 16, 1, 3)
    return train_loader(
        ds.train, geo, sampler, rank=0, start=0, stop=5, workers=workers, timeout=timeout, stop_request=stop
    )


@pytest.mark.parametrize("workers", [0, 1])
def test_a_stalled_data_path_fails_in_one_line_at_its_deadline_and_ends_its_workers(
    folder: Path, workers: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(STALL_AT, "1")
    stream = stalled_stream(folder, workers, timeout=1.5)
    assert next(stream).step == 0
    pids = [w.pid for w in getattr(stream._iterator, "_workers", [])]
    started = time.monotonic()
    with pytest.raises(DataFailure, match=r"^--data-timeout 1.5: no training batch from the data path for 1.5 s$"):
        next(stream)
    assert time.monotonic() - started < 1.5 + SHUTDOWN_GRACE + 3
    assert all(not Path(f"/proc/{pid}").exists() or _zombie(pid) for pid in pids)
    with pytest.raises(StopIteration):
        next(stream)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] == "Z"
    except OSError:
        return True


def test_a_stop_signal_ends_a_wait_for_a_stalled_batch_at_once(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(STALL_AT, "1")
    with StopRequest() as stop:
        stop.defer()
        stream = stalled_stream(folder, 1, timeout=0, stop=stop)
        next(stream)
        threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM)).start()
        started = time.monotonic()
        with pytest.raises(Stopped):
            next(stream)
    assert time.monotonic() - started < 0.5 + SHUTDOWN_GRACE + 3


def test_a_worker_that_raises_is_one_line_naming_the_error(folder: Path) -> None:
    class Failing(Source):
        channels, labels = 3, None

        def __len__(self) -> int:
            return 8

        def image(self, i: int) -> object:
            raise ZeroDivisionError("boom in the worker")

    sampler = Sampler(8, 4, 1, seed=0)
    with (
        train_loader(Failing(), Geometry(32, 16, 1, 3), sampler, rank=0, start=0, stop=2, workers=1) as stream,
        pytest.raises(DataFailure) as failure,
    ):
        next(stream)
    assert str(failure.value) == "a data worker failed: ZeroDivisionError: boom in the worker"


SCRIPT = """
import sys
sys.path.insert(0, {src!r})
from pathlib import Path
from lrsched.recipes.dino.augment import Geometry
from lrsched.recipes.dino.data import Sampler, open_folder
from lrsched.recipes.dino.stream import train_loader
ds = open_folder(Path({folder!r}))
batches = train_loader(ds.train, Geometry(32, 16, 1, 3), Sampler(len(ds.train), 2, 1, 0), rank=0, start=0,
                       stop=None, workers=1)
taken = [next(batches) for _ in range(16)]
keep_alive = (batches, taken)  # never closed: interpreter exit must still end the worker
print("took", len(taken), flush=True)
"""


def test_an_unfinished_stream_does_not_block_interpreter_exit(folder: Path) -> None:
    import subprocess
    import sys

    code = SCRIPT.format(src=str(SRC), folder=str(folder))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0 and "took 16" in done.stdout, done.stderr


def test_a_worker_thread_error_is_one_line_and_a_dropped_hand_off_is_silent(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from lrsched.recipes.dino.stream import _worker_excepthook

    _worker_excepthook(ConnectionResetError, ConnectionResetError(104, "Connection reset by peer"), None)
    assert capsys.readouterr().err == ""  # the main process stopped waiting mid-transfer: expected
    _worker_excepthook(ValueError, ValueError("bad\nvalue"), None)
    err = capsys.readouterr().err
    assert err == f"warning: data worker {os.getpid()}: ValueError: value\n"
