"""Batches streamed from a ``Source`` through ``torch.utils.data`` workers, with a deadline on every wait.

Training: ``train_loader`` yields, for steps ``start, start + 1, ...``, the crops of the rank's
batch (``Geometry``, and on a CPU also ``Photometric``, run in the workers). The batch sampler
lives in the main process and tags each sample with its crop seed ``mix(seed, step, rank, j)``
and its step; a batch's colours come from a generator seeded with ``mix(seed, step, rank)``. So
what a batch holds is a pure function of ``(seed, step, rank, sample)``, whatever ``--workers``
and wherever the colour work runs: a resumed run sees exactly the views of an uninterrupted one.
Evaluation: ``eval_batches`` yields whole images (``center_view``) with their labels.

Liveness (docs/phase5.md, "When the data path fails"). Every ``Stream`` is closed on every path
out (normal end, exception, signal: it is a context manager, and ``close`` is idempotent);
closing asks the workers to leave, waits at most ``SHUTDOWN_GRACE`` seconds, then SIGKILLs the
ones left. Each wait for a batch has a deadline (``--data-timeout``, ``liveness.deadline``: it bounds
the whole batch, however many reads in it block, in time the process could run) and gives way at
once to a stop signal. Workers run in their own process group, so a Ctrl-C in the terminal reaches
only the main process (which saves first), while their parent can always end them; they die with
it (``liveness.watched_context``). A worker that dies is reported at the next wait, as a
``DataFailure``, never in the middle of an update.

Unreadable images are replaced by the next readable one of the same source (the same one every
time) and reported with the batch (``Batch.skipped``: the file and why); ``MAX_IN_A_ROW`` failures
in a row mean the data went away (``Batch.lost``).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext, suppress
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, TypeVar

import torch
from torch.utils.data import DataLoader

from lrsched.errors import UsageError
from lrsched.recipes.common.faults import STALL_AT, DataFailure, hook_step, one_line
from lrsched.recipes.common.stopping import StopRequest
from lrsched.recipes.dino.augment import Geometry, Photometric, center_view
from lrsched.recipes.dino.data import Sampler, Source, mix
from lrsched.recipes.dino.liveness import Stalled, deadline, watched_context

MAX_DEFAULT_WORKERS = 8
MAX_IN_A_ROW = 100
"""Unreadable images in a row after which the data is taken as gone (a folder deleted, a mount lost)."""
T = TypeVar("T")
SHUTDOWN_GRACE = 10.0
"""Seconds the workers get to leave when a stream closes; then they are killed."""


def default_workers() -> int:
    """Usable cores minus one (the training process), at most ``MAX_DEFAULT_WORKERS``."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(MAX_DEFAULT_WORKERS, cores - 1))


def _init_worker(worker_id: int) -> None:
    """A worker leaves the terminal's process group (Ctrl-C and a closed terminal reach only the main
    process, which decides when to stop); SIGTERM keeps its default, so its parent can always end it.
    An error in one of its helper threads is one line (``_worker_excepthook``)."""
    if hasattr(os, "setpgid"):
        os.setpgid(0, 0)
    for sig in (signal.SIGINT, getattr(signal, "SIGHUP", None)):
        if sig is not None:
            signal.signal(sig, signal.SIG_IGN)
    sys.excepthook = _worker_excepthook


def _worker_excepthook(kind: type[BaseException], err: BaseException, tb: TracebackType | None) -> None:
    """A stop or a deadline can end the main process's wait while a worker hands it a batch; the worker's
    sending thread then finds the connection gone: expected, so silent. Anything else: one line."""
    if not isinstance(err, (ConnectionError, EOFError)):
        print(f"warning: data worker {os.getpid()}: {one_line(err)}", file=sys.stderr, flush=True)


# --- one image, read or replaced ------------------------------------------------------------


def readable(source: Source, i: int) -> tuple[Any, list[tuple[str, str]]]:
    """Image ``i`` of ``source``, or the next readable one after it (cyclically), and each one before it
    that was skipped, as ``(file, why)``. ``DataFailure`` after ``MAX_IN_A_ROW`` unreadable images in a row."""
    skipped: list[tuple[str, str]] = []
    n = len(source)
    for k in range(min(n, MAX_IN_A_ROW)):
        try:
            return source.image((i + k) % n), skipped
        except UsageError as err:
            skipped.append((source.name((i + k) % n), str(err)))
    raise DataFailure(f"{skipped[-1][1]}; and the {len(skipped) - 1} images before it in a row: the data went away")


# --- training batches --------------------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    """One step's images on one rank.

    ``coloured`` False: uint8 crops ``global_px (B, 2, G, G, C)`` and ``local_px (B, N, L, L, C)``, the
    colour work still to do on the device. True: ``Photometric``'s normalised views, ``global_px
    (2B, C, G, G)`` and ``local_px (N B, C, L, L)``. ``skipped``: each replaced image, ``(file, why it was
    unreadable)``; ``lost``: set when the data went away (the tensors then hold nothing useful).
    """

    step: int
    global_px: torch.Tensor
    local_px: torch.Tensor
    coloured: bool = False
    skipped: tuple[tuple[str, str], ...] = ()
    lost: str | None = None


class StepSamples:
    """Batch sampler: for each step from ``start`` (to ``stop``, or for ever), ``[(index, crop seed, step), ...]``."""

    def __init__(self, sampler: Sampler, rank: int, start: int, stop: int | None) -> None:
        self.sampler, self.rank, self.start, self.stop = sampler, rank, start, stop

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        step, seed = self.start, self.sampler.seed
        while self.stop is None or step < self.stop:
            idx = self.sampler.indices(step, self.rank).tolist()
            yield [(i, mix(seed, step, self.rank, j), step) for j, i in enumerate(idx)]
            step += 1


Skips = list[tuple[str, str]]
"""Images a sample replaced: ``(file, why it was unreadable)`` each."""


class CropSet(torch.utils.data.Dataset):
    """``dataset[(index, seed, step)]`` -> ``(step, global, local, skipped, lost)``: the crops ``Geometry``
    cuts with ``seed`` from image ``index`` (or the readable one that replaces it). A deadline that
    passes (``Stalled``, with ``--workers 0``) ends the whole batch, never just this image."""

    def __init__(self, source: Source, geometry: Geometry) -> None:
        self.source, self.geometry = source, geometry

    def __getitem__(self, item: tuple[int, int, int]) -> tuple[int, torch.Tensor, torch.Tensor, Skips, str | None]:
        index, seed, step = item
        if hook_step(STALL_AT) == step:
            time.sleep(10**6)
        try:
            image, skipped = readable(self.source, index)
        except Stalled:
            raise
        except DataFailure as err:
            return step, *self._nothing(), [], str(err)
        return step, *self.geometry(image, seed), skipped, None

    def _nothing(self) -> tuple[torch.Tensor, torch.Tensor]:
        g = self.geometry
        return (
            torch.zeros(2, g.global_size, g.global_size, g.channels, dtype=torch.uint8),
            torch.zeros(g.local_crops, g.local_size, g.local_size, g.channels, dtype=torch.uint8),
        )


@dataclass(frozen=True)
class StepCollate:
    """The samples of one step -> a batch (a dict: workers send plain data); with ``photometric``, the
    views are coloured here, with a generator seeded from ``(seed, step, rank)``."""

    seed: int
    rank: int
    photometric: Photometric | None

    def __call__(self, samples: list[tuple[int, torch.Tensor, torch.Tensor, Skips, str | None]]) -> dict[str, Any]:
        step = samples[0][0]
        global_px = torch.stack([s[1] for s in samples])
        local_px = torch.stack([s[2] for s in samples])
        if self.photometric is not None:
            crops = self.photometric(
                global_px, local_px, torch.Generator().manual_seed(mix(self.seed, step, self.rank))
            )
            global_px, local_px = crops.global_crops, crops.local_crops
        return {
            "step": step,
            "global": global_px,
            "local": local_px,
            "coloured": self.photometric is not None,
            "skipped": [skip for s in samples for skip in s[3]],
            "lost": next((s[4] for s in samples if s[4] is not None), None),
        }


def _as_batch(d: dict[str, Any]) -> Batch:
    skipped = tuple((str(file), str(why)) for file, why in d["skipped"])
    return Batch(d["step"], d["global"], d["local"], d["coloured"], skipped, d["lost"])


def loader_options(workers: int, pin_memory: bool) -> dict[str, Any]:
    """DataLoader settings shared by training and evaluation: workers that die with the main process."""
    if workers == 0:
        return {"num_workers": 0, "pin_memory": pin_memory}
    return {
        "num_workers": workers,
        "pin_memory": pin_memory,
        "worker_init_fn": _init_worker,
        "prefetch_factor": 2,
        "multiprocessing_context": watched_context(),
    }


def train_loader(
    source: Source,
    geometry: Geometry,
    sampler: Sampler,
    *,
    rank: int,
    start: int,
    stop: int | None,
    workers: int,
    photometric: Photometric | None = None,
    pin_memory: bool = False,
    timeout: float = 0.0,
    stop_request: StopRequest | None = None,
) -> Stream[Batch]:
    """The batches of steps ``start, start + 1, ...`` (until ``stop``) for ``rank``; coloured by
    ``photometric`` in the workers when it is given (a CPU run), else left as uint8 crops."""
    loader = DataLoader(
        CropSet(source, geometry),
        batch_sampler=StepSamples(sampler, rank, start, stop),
        collate_fn=StepCollate(sampler.seed, rank, photometric),
        **loader_options(workers, pin_memory),
    )
    return Stream(loader, "training batch", timeout, stop_request, _as_batch)


# --- evaluation batches ------------------------------------------------------------------------


class WholeImages(torch.utils.data.Dataset):
    """``dataset[i]`` -> (``center_view`` of image ``ids[i]``, its label); an unreadable image is replaced
    by the next readable one of the source, with its own label."""

    def __init__(self, source: Source, ids: torch.Tensor, size: int) -> None:
        self.source, self.ids, self.size = source, ids, size

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        assert self.source.labels is not None
        index = int(self.ids[i])
        image, skipped = readable(self.source, index)
        for _, reason in skipped:
            print(f"warning: {reason}; k-NN uses the next image", flush=True)
        used = (index + len(skipped)) % len(self.source)
        return center_view(image, self.size, self.source.channels), int(self.source.labels[used])


def eval_batches(
    source: Source,
    ids: torch.Tensor,
    size: int,
    workers: int,
    batch: int = 256,
    *,
    timeout: float = 0.0,
    stop_request: StopRequest | None = None,
) -> Stream[tuple[torch.Tensor, torch.Tensor]]:
    """``(uint8 images (b, size, size, C), labels (b,))`` for ``ids`` of a labelled source, in order."""
    loader = DataLoader(WholeImages(source, ids, size), batch_size=batch, **loader_options(workers, False))
    return Stream(loader, "k-NN batch", timeout, stop_request, _identity)


def _identity(x: Any) -> Any:
    return x


# --- a stream: deadlines, stops, closing ---------------------------------------------------------


class Stream(Generic[T]):
    """Iterates a ``DataLoader``: each wait has a deadline (``timeout`` seconds, 0: none) and gives way to a
    stop signal (``stop_request``); any failure of the data path becomes one ``DataFailure`` line; the
    workers are ended on every path out (``close``, ``with``, or the end of the data)."""

    def __init__(
        self,
        loader: DataLoader,
        what: str,
        timeout: float,
        stop_request: StopRequest | None,
        convert: Callable[[Any], T],
    ) -> None:
        self.what, self.timeout, self.stop_request, self.convert = what, timeout, stop_request, convert
        self._iterator: Any = iter(loader)
        main_thread = threading.current_thread() is threading.main_thread()
        if loader.num_workers > 0 and main_thread and hasattr(signal, "SIGCHLD"):
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # a dead worker: reported at the next wait, not mid-update

    def __iter__(self) -> Stream[T]:
        return self

    def __next__(self) -> T:
        if self._iterator is None:
            raise StopIteration
        try:
            with self._interruptible(), deadline(self.timeout, self._stalled):
                item = next(self._iterator)
        except DataFailure as err:
            self.close()
            raise DataFailure(one_line(err, with_type=False)) from None
        except StopIteration:
            self.close()
            raise
        except Exception as err:
            self.close()
            raise DataFailure(f"a data worker failed: {one_line(err)}") from None
        except BaseException:  # a stop (``Stopped``)
            self.close()
            raise
        return self.convert(item)

    def _interruptible(self) -> AbstractContextManager[None]:
        return self.stop_request.interruptible() if self.stop_request is not None else nullcontext()

    def _stalled(self) -> str:
        return f"--data-timeout {self.timeout:g}: no {self.what} from the data path for {self.timeout:g} s"

    def close(self) -> None:
        """End the workers: they get ``SHUTDOWN_GRACE`` seconds to leave, then SIGKILL. Idempotent."""
        iterator, self._iterator = self._iterator, None
        if iterator is None:
            return
        workers = list(getattr(iterator, "_workers", ()))
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if shutdown is not None and not sys.is_finalizing():  # no new thread can start at interpreter exit
            polite = threading.Thread(target=shutdown, name="lrsched-data-shutdown", daemon=True)
            polite.start()
            polite.join(SHUTDOWN_GRACE)
        for worker in workers:
            if worker.is_alive():
                worker.kill()
                worker.join(timeout=1.0)

    def __enter__(self) -> Stream[T]:
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def __del__(self) -> None:
        with suppress(Exception):  # at interpreter exit the modules it needs may be gone
            self.close()
