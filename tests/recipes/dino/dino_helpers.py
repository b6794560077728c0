"""Helpers for the DINO tests beyond tests/helpers.py: image folders to stream from."""

from __future__ import annotations

from pathlib import Path


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
