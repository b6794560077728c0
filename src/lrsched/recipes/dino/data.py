"""Images for DINO: Fashion-MNIST from Debian's idx files, or any folder of images.

Everything is held in memory as ``uint8`` tensors ``(N, C, H, W)`` and augmented on the
training device. Batches are a pure function of ``(seed, step)``: resuming at step ``t``
gives exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

from lrsched.strategy import UsageError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
INSTALL_HINT = "apt-get install dataset-fashion-mnist"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
HELD_OUT_EVERY = 10
"""A folder without train/ and test/ keeps every 10th image (sorted order) for k-NN testing."""


@dataclass(frozen=True)
class Split:
    """Images ``(N, C, H, W)`` uint8 and labels ``(N,)`` (-1 where unknown)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def labelled(self) -> bool:
        return bool((self.labels >= 0).all()) and len(self) > 0


@dataclass(frozen=True)
class Dataset:
    """A training split, a labelled evaluation pair (or None) and the channel statistics."""

    name: str
    train: Split
    knn_train: Split | None
    knn_test: Split | None
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def channels(self) -> int:
        return int(self.train.images.shape[1])


# --- Fashion-MNIST (idx files) -----------------------------------------------------------


def read_idx(path: Path) -> torch.Tensor:
    """An idx file (gzip or plain): magic ``0x00 0x00 0x08 ndim``, ndim big-endian sizes, uint8 data."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
        zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
        if zero != 0 or dtype != 0x08:
            raise ValueError("not a uint8 idx file")
        dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
        data = torch.frombuffer(bytearray(raw[4 + 4 * ndim :]), dtype=torch.uint8)
        return data.reshape(dims)
    except (OSError, ValueError, RuntimeError, struct.error, EOFError) as err:
        raise UsageError(f"{path}: not a readable idx file ({err})") from None


def _idx_file(directory: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (directory / name).is_file():
            return directory / name
    raise UsageError(f"Fashion-MNIST: {directory / stem}.gz missing; install it with `{INSTALL_HINT}`")


def load_fashion_mnist(directory: Path = FASHION_MNIST_DIR) -> tuple[Split, Split]:
    """The 60k training and 10k test images ``(N, 1, 28, 28)`` with labels 0..9."""
    if not directory.is_dir():
        raise UsageError(f"Fashion-MNIST: {directory} not found; install it with `{INSTALL_HINT}`")
    splits = []
    for prefix in ("train", "t10k"):
        images = read_idx(_idx_file(directory, f"{prefix}-images-idx3-ubyte"))
        labels = read_idx(_idx_file(directory, f"{prefix}-labels-idx1-ubyte"))
        splits.append(Split(images.unsqueeze(1).contiguous(), labels.long()))
    return splits[0], splits[1]


# --- image folders -------------------------------------------------------------------------


def _image_files(directory: Path) -> list[tuple[Path, str]]:
    """``(file, class)`` for every image under ``directory``; the class is its first sub-folder ("" if none)."""
    out = []
    for path in sorted(directory.rglob("*")):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            rel = path.relative_to(directory).parts
            out.append((path, rel[0] if len(rel) > 1 else ""))
    return out


def _load_images(files: list[tuple[Path, str]], size: int, rgb: bool, classes: list[str]) -> Split:
    """Decode, convert and resize each file to ``size x size`` (PIL, bicubic)."""
    from PIL import Image, UnidentifiedImageError

    mode = "RGB" if rgb else "L"
    images = torch.empty(len(files), 3 if rgb else 1, size, size, dtype=torch.uint8)
    for i, (path, _) in enumerate(files):
        try:
            with Image.open(path) as img:
                pixels = img.convert(mode).resize((size, size), Image.Resampling.BICUBIC)
        except (OSError, UnidentifiedImageError) as err:
            raise UsageError(f"--data-dir: cannot read image {path} ({err})") from None
        array = torch.frombuffer(bytearray(pixels.tobytes()), dtype=torch.uint8)
        images[i] = array.reshape(size, size, -1).permute(2, 0, 1)
    labels = torch.tensor([classes.index(c) if c in classes else -1 for _, c in files], dtype=torch.long)
    return Split(images, labels)


def _is_rgb(files: list[tuple[Path, str]]) -> bool:
    from PIL import Image

    try:
        with Image.open(files[0][0]) as img:
            return img.mode not in ("L", "LA", "1", "I", "I;16", "F")
    except OSError as err:  # PIL's UnidentifiedImageError is an OSError
        raise UsageError(f"--data-dir: cannot read image {files[0][0]} ({err})") from None


def load_folder(directory: Path, size: int) -> tuple[Split, Split | None, Split | None]:
    """A folder of images -> (train, k-NN train, k-NN test).

    ``train/`` and ``test/`` (or ``val/``) sub-folders are used as they are; otherwise every
    ``HELD_OUT_EVERY``-th image is held out for testing. Class sub-folders give labels; without
    them the k-NN evaluation is skipped.
    """
    if not directory.is_dir():
        raise UsageError(f"--data-dir {directory}: no such directory")
    test_dir = next((directory / n for n in ("test", "val") if (directory / n).is_dir()), None)
    if (directory / "train").is_dir() and test_dir is not None:
        train_files, test_files = _image_files(directory / "train"), _image_files(test_dir)
    else:
        every = _image_files(directory)
        train_files = [f for i, f in enumerate(every) if i % HELD_OUT_EVERY != HELD_OUT_EVERY - 1]
        test_files = [f for i, f in enumerate(every) if i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1]
    if not train_files:
        raise UsageError(f"--data-dir {directory}: no images ({', '.join(IMAGE_SUFFIXES)})")
    classes = sorted({c for _, c in train_files + test_files if c})
    rgb = _is_rgb(train_files)
    train = _load_images(train_files, size, rgb, classes)
    test = _load_images(test_files, size, rgb, classes) if test_files else None
    if test is None or not train.labelled or not test.labelled:
        return train, None, None
    return train, train, test


def channel_stats(images: torch.Tensor, limit: int = 10_000) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of pixels in [0, 1], over the first ``limit`` images."""
    x = images[:limit].float().div_(255)
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return tuple(mean.tolist()), tuple(std.tolist())


def load_dataset(data_dir: Path | None, image_size: int) -> Dataset:
    """Fashion-MNIST (``data_dir`` None) or an image folder resized to ``image_size``."""
    knn_train: Split | None
    knn_test: Split | None
    if data_dir is None:
        train, test = load_fashion_mnist()
        name = "fashion-mnist"
        knn_train, knn_test = train, test
    else:
        train, knn_train, knn_test = load_folder(data_dir, image_size)
        name = str(data_dir)
    mean, std = channel_stats(train.images)
    return Dataset(name, train, knn_train, knn_test, mean, std)


# --- batches as a pure function of (seed, step) ---------------------------------------------


def mix(*values: int) -> int:
    """A 63-bit seed from integers (splitmix64-style), so (seed, step, rank) streams never collide."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h ^ (v & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


@dataclass(frozen=True)
class Sampler:
    """Epoch ``e`` is a permutation drawn from ``(seed, e)``; step ``t`` takes its ``t``-th slice.

    ``batches_per_epoch = N // (batch * world)`` (the last partial batch is dropped);
    ``epoch = t // batches_per_epoch``, and rank ``r`` takes items
    ``[(i * world + r) * batch, ... + batch)`` of that epoch's permutation, ``i = t mod batches_per_epoch``.
    """

    size: int
    batch: int
    world: int
    seed: int

    @property
    def batches_per_epoch(self) -> int:
        return self.size // (self.batch * self.world)

    def position(self, step: int) -> tuple[int, int]:
        """``(epoch, batch index in the epoch)`` of ``step``."""
        return divmod(step, self.batches_per_epoch)

    def indices(self, step: int, rank: int) -> torch.Tensor:
        epoch, i = self.position(step)
        g = torch.Generator().manual_seed(mix(self.seed, epoch))
        perm = torch.randperm(self.size, generator=g)
        start = (i * self.world + rank) * self.batch
        return perm[start : start + self.batch]
