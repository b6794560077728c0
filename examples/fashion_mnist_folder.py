"""Fashion-MNIST's training images as an image folder: one PNG per image in a sub-folder per class
(``0/`` .. ``9/``, the dataset's own label ids), the input ``make_shards`` turns into shards.

    python examples/fashion_mnist_folder.py runs/fashion-mnist-png [--limit 600]
    python -m lrsched.recipes.dino.make_shards runs/fashion-mnist-png 'runs/fm-shards/train-%06d.tar'

The images come from Debian's ``dataset-fashion-mnist`` (the idx files phase5 reads without
``--data-dir``). The folder is written under a temporary name and renamed when whole; an existing
folder is refused. Image ``i`` is ``<label>/<i:05d>.png``, so phase5's sorted listing (and the shards)
hold the images by class, in the dataset's order within a class.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

try:
    import lrsched  # noqa: F401
except ImportError:  # a plain checkout: make src/ importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from lrsched.recipes.dino.data import load_fashion_mnist


def write_folder(out: Path, limit: int | None = None) -> int:
    """The first ``limit`` training images (all: None) as PNGs under ``out``; how many."""
    from PIL import Image

    if out.exists():
        raise SystemExit(f"fashion_mnist_folder.py: {out} exists already; remove it or name another folder")
    train, _ = load_fashion_mnist()
    assert train.labels is not None
    n = len(train) if limit is None else min(limit, len(train))
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        for c in range(10):
            (tmp / str(c)).mkdir(parents=True)
        for i in range(n):
            pixels = train.images[i, 0].numpy()
            Image.fromarray(pixels).save(tmp / str(int(train.labels[i])) / f"{i:05d}.png", optimize=False)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the folder to create")
    parser.add_argument("--limit", type=int, help="only the first N training images")
    opts = parser.parse_args()
    n = write_folder(opts.out, opts.limit)
    print(f"fashion_mnist_folder.py: {n} images in {opts.out}/0 .. {opts.out}/9")


if __name__ == "__main__":
    main()
