"""Streaming batches: the same crops whatever the number of workers, from any start step."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lrsched.recipes.dino.augment import Geometry
from lrsched.recipes.dino.data import Sampler, open_folder
from lrsched.recipes.dino.stream import default_workers, eval_batches, train_loader

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
