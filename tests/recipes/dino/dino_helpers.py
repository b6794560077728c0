"""Helpers for the DINO tests: small real runs on Fashion-MNIST."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
ENTRY = REPO / "phase5_big_run.py"
FASHION = Path("/usr/share/datasets/fashion-mnist")

SMALL = [
    "--preset",
    "micro",
    "--batch-size",
    "16",
    "--local-crops",
    "2",
    "--knn-train-samples",
    "600",
    "--knn-test-samples",
    "200",
    "--eval-every",
    "0",
]
"""A run small enough for a test: a 2-block, 48-wide ViT, 16 images a step, 2 local crops."""


needs_data = pytest.mark.skipif(
    not FASHION.is_dir(), reason="Fashion-MNIST missing: apt-get install dataset-fashion-mnist"
)


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


PYTHON = sys.executable


def make_image_folder(
    root: Path, n: int, *, classes: int = 4, seed: int = 0, sizes: tuple[int, int] = (200, 500)
) -> Path:
    """``n`` JPEGs of random sizes (``sizes`` px a side) in ``classes`` class sub-folders (0: none).

    Each image is a random 8x8 colour grid smoothed up to its size: distinct files, cheap to make.
    """
    import random

    import numpy as np
    from PIL import Image

    rng, draw = np.random.default_rng(seed), random.Random(seed)
    for i in range(n):
        w, h = draw.randint(*sizes), draw.randint(*sizes)
        grid = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
        folder = root / f"class{i % classes}" if classes else root
        folder.mkdir(parents=True, exist_ok=True)
        grid.resize((w, h), Image.Resampling.BILINEAR).save(folder / f"img{i:07d}.jpg", quality=85)
    return root
