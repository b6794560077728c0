"""DINO's own data path, rebuilt from its documented parts, timed alone: one run, one JSON line.

Run by ``bench/data_pipeline.py`` with the bench-only virtualenv's python (torchvision is
not a dependency of lrsched), never imported by the project:
``/work/venv-tv/bin/python bench/data_pipeline_official.py --folder DIR --workers W ...``.

What it builds (the parts DINO's ``main_dino.py`` and ``utils.py`` document, written here
from that description, not copied): ``torchvision.datasets.ImageFolder`` (PIL decode,
RGB) with DINO's multi-crop transform for ViTs, and ``torch.utils.data.DataLoader`` with
``shuffle=True`` (DINO: a shuffling ``DistributedSampler``), ``drop_last=True`` and the
requested workers. ``pin_memory`` stays off: there is no accelerator to pin for.

The multi-crop transform, per image: 2 global views at ``global_size`` (area 0.4-1.0) and
``local_crops`` local views at ``local_size`` (area 0.05-0.4). Every view: a
``RandomResizedCrop`` with bicubic interpolation, a horizontal flip (p=0.5), a
``ColorJitter(0.4, 0.4, 0.2, 0.1)`` applied with p=0.8, grayscale with p=0.2, a PIL
Gaussian blur of radius U(0.1, 2) with p=1.0 (global view 1), 0.1 (global view 2) or 0.5
(local views), solarisation (p=0.2, global view 2 only), then ``ToTensor`` and
``Normalize`` with the ImageNet mean and std. A batch is the default collation: a list of
``2 + local_crops`` float tensors ``(B, 3, S, S)``.

``--match-lrsched`` makes the photometric work that of lrsched's ``Photometric`` instead, for
an equal-work control: ``ColorJitter(0.4, 0.4)`` (brightness and contrast only, no saturation
or hue) and a blur radius drawn in ``[0.1, max(0.5, 2 S / 224)]`` (0.86 at 96 px); everything
else as above.

Timing: the loader is built, ``warmup`` batches are drawn (worker start-up and first
reads included there), then ``batches`` more are drawn and timed: images/s =
``batches * batch_size / seconds``. The result is printed as one line ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from typing import Any

# isort: split
from _common import process_tree_cpu_seconds  # standard library only: fine in the bench-only venv

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PilBlur:
    """With probability ``p``: PIL's Gaussian blur with a radius drawn uniformly in ``radius``."""

    def __init__(self, p: float, radius: tuple[float, float] = (0.1, 2.0)) -> None:
        self.p = p
        self.radius = radius

    def __call__(self, img: Any) -> Any:
        from PIL import ImageFilter

        if self.p < 1.0 and random.random() >= self.p:
            return img
        return img.filter(ImageFilter.GaussianBlur(radius=random.uniform(*self.radius)))


class PilSolarize:
    """With probability ``p``: PIL's solarisation (pixels at or above 128 inverted)."""

    def __init__(self, p: float) -> None:
        self.p = p

    def __call__(self, img: Any) -> Any:
        from PIL import ImageOps

        return ImageOps.solarize(img) if random.random() < self.p else img


class MultiCrop:
    """DINO's multi-crop views of one PIL image: a list of ``2 + local_crops`` normalised tensors."""

    def __init__(self, global_size: int, local_size: int, local_crops: int, match_lrsched: bool = False) -> None:
        from torchvision import transforms as T

        saturation, hue = (0.0, 0.0) if match_lrsched else (0.2, 0.1)

        def view(size: int, scale: tuple[float, float], blur_p: float, solarize_p: float) -> Any:
            radius = (0.1, max(0.5, 2.0 * size / 224)) if match_lrsched else (0.1, 2.0)
            steps = [
                T.RandomResizedCrop(size, scale=scale, interpolation=T.InterpolationMode.BICUBIC),
                T.RandomHorizontalFlip(p=0.5),
                T.RandomApply([T.ColorJitter(brightness=0.4, contrast=0.4, saturation=saturation, hue=hue)], p=0.8),
                T.RandomGrayscale(p=0.2),
                PilBlur(blur_p, radius),
            ]
            if solarize_p > 0:
                steps.append(PilSolarize(solarize_p))
            steps += [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
            return T.Compose(steps)

        self.views = [
            view(global_size, (0.4, 1.0), 1.0, 0.0),
            view(global_size, (0.4, 1.0), 0.1, 0.2),
            *[view(local_size, (0.05, 0.4), 0.5, 0.0) for _ in range(local_crops)],
        ]

    def __call__(self, img: Any) -> list[Any]:
        return [transform(img) for transform in self.views]


def run(opts: argparse.Namespace) -> dict[str, Any]:
    import torch
    from torchvision import datasets

    torch.manual_seed(opts.seed)
    random.seed(opts.seed)
    started = time.perf_counter()
    dataset = datasets.ImageFolder(
        opts.folder, transform=MultiCrop(opts.global_size, opts.local_size, opts.local_crops, opts.match_lrsched)
    )
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=opts.batch, shuffle=True, num_workers=opts.workers, drop_last=True, pin_memory=False
    )
    batches = iter(loader)
    first = None
    for _ in range(opts.warmup):
        batch = next(batches)
        first = first if first is not None else time.perf_counter() - started
    shapes = [list(t.shape) for t in batch[0]] if opts.warmup else []  # batch: (views, labels)
    times = []
    cpu0 = process_tree_cpu_seconds()  # this process and its DataLoader workers
    t0 = time.perf_counter()
    last = t0
    for _ in range(opts.batches):
        next(batches)
        now = time.perf_counter()
        times.append(now - last)
        last = now
    seconds = last - t0
    cpu1 = process_tree_cpu_seconds()
    cpu = cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None
    del batches
    return {
        "images_per_s": opts.batches * opts.batch / seconds,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "cpu_ms_per_image": None if cpu is None else 1000 * cpu / (opts.batches * opts.batch),
        "batch_seconds": [round(t, 4) for t in times],
        "first_batch_seconds": first,
        "dataset_images": len(dataset),
        "batch_shapes": shapes,
        "torch_threads_main": torch.get_num_threads(),
        "versions": {
            "torch": torch.__version__,
            "torchvision": __import__("torchvision").__version__,
            "pillow": __import__("PIL").__version__,
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", required=True, help="an ImageFolder root (class subfolders of images)")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--global-size", type=int, default=224)
    parser.add_argument("--local-size", type=int, default=96)
    parser.add_argument("--local-crops", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=3, help="batches drawn before timing")
    parser.add_argument("--batches", type=int, default=20, help="batches timed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--match-lrsched", action="store_true", help="lrsched's lighter photometric work (a control)")
    opts = parser.parse_args(argv)
    print("RESULT " + json.dumps(run(opts)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
