"""DINO's own data path from torchvision parts, timed alone: one run, one ``RESULT {json}`` line.

Run by ``bench/data_pipeline.py`` with the bench-only venv's python: ``python data_pipeline_official.py
--folder DIR --workers W [--match-lrsched] ...``. Written from the description of DINO's ``main_dino.py``
(``DataAugmentationDINO``, ViT settings), not copied: ``ImageFolder``, that multi-crop transform list,
``DataLoader(shuffle, drop_last, num_workers=W)``. ``--match-lrsched``: lrsched's lighter photometric work.
"""

import argparse
import json
import os
import random
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

from PIL import ImageFilter

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet's
INT_FLAGS = ("workers", "batch", "global_size", "local_size", "local_crops", "warmup", "batches", "seed")


def side_options(argv: list[str] | None = None) -> argparse.Namespace:
    """One side's options (``--folder``, ``--workers`` ...), shared with lrsched's side."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, required=True)
    parser.add_argument("--match-lrsched", action="store_true", help="lrsched's photometric work (a control)")
    for name in INT_FLAGS:
        parser.add_argument("--" + name.replace("_", "-"), type=int, required=True)
    return parser.parse_args(argv)


def tree_cpu_seconds() -> float:
    """User + system CPU seconds of this process and its live descendants (DataLoader workers), from /proc."""
    pids, ticks = [os.getpid()], 0
    while pids:
        pid = pids.pop()
        try:
            ticks += sum(map(int, Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[11:13]))
            pids += [int(c) for t in Path(f"/proc/{pid}/task").glob("*/children") for c in t.read_text().split()]
        except OSError:  # it ended meanwhile
            pass
    return ticks / os.sysconf("SC_CLK_TCK")


def timed(batches: Any, opts: argparse.Namespace, started: float) -> dict[str, Any]:
    """Draw ``warmup`` batches (worker start-up included), then time ``batches`` more: the run's result."""
    for _ in range(opts.warmup):
        next(batches)
    warmup, ends, cpu = time.perf_counter() - started, [time.perf_counter()], tree_cpu_seconds()
    for _ in range(opts.batches):
        next(batches)
        ends.append(time.perf_counter())
    images, cpu = opts.batches * opts.batch, tree_cpu_seconds() - cpu
    result = {"images_per_s": images / (ends[-1] - ends[0]), "cpu_ms_per_image": 1000 * cpu / images}
    return result | {"batch_seconds": [round(b - a, 4) for a, b in pairwise(ends)], "warmup_seconds": warmup}


def import_torchvision() -> Any:
    """torchvision; the 0.28.0 wheel here is a CUDA build whose C++ ops do not load beside a CPU torch."""
    import torch

    try:
        import torchvision
    except RuntimeError:  # it then fails on two of them: declare those (the data path uses no C++ op)
        for op in ("nms", "qnms"):
            torch.library.define(f"torchvision::{op}", "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        import torchvision
    return torchvision


def multi_crop(opts: argparse.Namespace) -> Any:
    """DINO's views of one PIL image: 2 global + ``local_crops`` local normalised tensors."""
    T = import_torchvision().transforms
    saturation, hue = (0.0, 0.0) if opts.match_lrsched else (0.2, 0.1)

    def view(size: int, scale: tuple[float, float], blur_p: float, solarize_p: float) -> Any:
        radius = (0.1, max(0.5, 2.0 * size / 224)) if opts.match_lrsched else (0.1, 2.0)
        crop = T.RandomResizedCrop(size, scale=scale, interpolation=T.InterpolationMode.BICUBIC)
        colour = [T.RandomApply([T.ColorJitter(0.4, 0.4, saturation, hue)], p=0.8), T.RandomGrayscale(p=0.2)]
        blur = T.RandomApply([lambda img: img.filter(ImageFilter.GaussianBlur(random.uniform(*radius)))], p=blur_p)
        solarize = [T.RandomSolarize(128, p=solarize_p)] if solarize_p else []
        normalize = [T.ToTensor(), T.Normalize(MEAN, STD)]
        return T.Compose([crop, T.RandomHorizontalFlip(p=0.5), *colour, blur, *solarize, *normalize])

    g, loc = opts.global_size, opts.local_size
    views = [view(g, (0.4, 1.0), 1.0, 0.0), view(g, (0.4, 1.0), 0.1, 0.2)]
    views += [view(loc, (0.05, 0.4), 0.5, 0.0) for _ in range(opts.local_crops)]
    return lambda img: [v(img) for v in views]


if __name__ == "__main__":
    import torch

    opts = side_options()
    torch.manual_seed(opts.seed)
    random.seed(opts.seed)
    started = time.perf_counter()
    dataset = import_torchvision().datasets.ImageFolder(opts.folder, transform=multi_crop(opts))
    loader = torch.utils.data.DataLoader(dataset, opts.batch, shuffle=True, num_workers=opts.workers, drop_last=True)
    print("RESULT " + json.dumps(timed(iter(loader), opts, started)), flush=True)
