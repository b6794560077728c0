"""Batches streamed from a ``Source`` through ``torch.utils.data`` workers.

Training: ``train_loader`` yields, for steps ``start, start + 1, ...``, the uint8 crops of the
rank's batch (``Geometry`` run in the workers). The batch sampler lives in the main process and
tags each sample with its crop seed ``mix(seed, step, rank, j)``, so what a worker makes is a
pure function of ``(seed, step, rank, sample)``, whatever ``--workers``: a resumed run sees
exactly the crops of an uninterrupted one. Evaluation: ``eval_batches`` yields whole images
(``center_view``) with their labels, a batch at a time, so k-NN features are computed without
holding the images.

Workers ignore SIGINT, SIGTERM and SIGHUP: the main process decides when to stop (it saves a
checkpoint first), and a worker killed by Ctrl-C would break the step in flight.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Generator, Iterator
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader

from lrsched.recipes.dino.augment import Geometry, center_view
from lrsched.recipes.dino.data import Sampler, Source, mix

MAX_DEFAULT_WORKERS = 8


def default_workers() -> int:
    """Usable cores minus one (the training process), at most ``MAX_DEFAULT_WORKERS``."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(MAX_DEFAULT_WORKERS, cores - 1))


def _quiet_worker(worker_id: int) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if sig is not None:
            signal.signal(sig, signal.SIG_IGN)


@dataclass(frozen=True)
class Batch:
    """One step's images on one rank: uint8 ``global_px (B, 2, G, G, C)`` and ``local_px (B, N, L, L, C)``."""

    step: int
    global_px: torch.Tensor
    local_px: torch.Tensor


class StepSamples:
    """Batch sampler: for each step from ``start`` (to ``stop``, or for ever), ``[(index, crop seed), ...]``."""

    def __init__(self, sampler: Sampler, rank: int, start: int, stop: int | None) -> None:
        self.sampler, self.rank, self.start, self.stop = sampler, rank, start, stop

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step, seed = self.start, self.sampler.seed
        while self.stop is None or step < self.stop:
            idx = self.sampler.indices(step, self.rank).tolist()
            yield [(i, mix(seed, step, self.rank, j)) for j, i in enumerate(idx)]
            step += 1


class CropSet(torch.utils.data.Dataset):
    """``dataset[(index, seed)]`` -> the crops ``Geometry`` cuts from image ``index`` with ``seed``."""

    def __init__(self, source: Source, geometry: Geometry) -> None:
        self.source, self.geometry = source, geometry

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        index, seed = item
        return self.geometry(self.source.image(index), seed)


def loader_options(workers: int, pin_memory: bool) -> dict[str, object]:
    """DataLoader settings shared by training and evaluation."""
    if workers == 0:
        return {"num_workers": 0, "pin_memory": pin_memory}
    return {
        "num_workers": workers,
        "pin_memory": pin_memory,
        "worker_init_fn": _quiet_worker,
        "prefetch_factor": 2,
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
    pin_memory: bool = False,
) -> Generator[Batch, None, None]:
    """The crops of steps ``start, start + 1, ...`` (until ``stop``) for ``rank``."""
    loader = DataLoader(
        CropSet(source, geometry),
        batch_sampler=StepSamples(sampler, rank, start, stop),
        **loader_options(workers, pin_memory),  # type: ignore[arg-type]
    )
    for step, (global_px, local_px) in enumerate(loader, start=start):
        yield Batch(step, global_px, local_px)


class WholeImages(torch.utils.data.Dataset):
    """``dataset[i]`` -> (``center_view`` of image ``ids[i]``, its label)."""

    def __init__(self, source: Source, ids: torch.Tensor, size: int) -> None:
        self.source, self.ids, self.size = source, ids, size

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        index = int(self.ids[i])
        assert self.source.labels is not None
        view = center_view(self.source.image(index), self.size, self.source.channels)
        return view, int(self.source.labels[index])


def eval_batches(
    source: Source, ids: torch.Tensor, size: int, workers: int, batch: int = 256
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(uint8 images (b, size, size, C), labels (b,))`` for ``ids`` of a labelled source, in order."""
    loader = DataLoader(WholeImages(source, ids, size), batch_size=batch, **loader_options(workers, False))  # type: ignore[arg-type]
    yield from loader
