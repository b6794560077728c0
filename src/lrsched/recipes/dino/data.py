"""Images for DINO, streamed: Fashion-MNIST from Debian's idx files, or any folder of images.

A folder is listed once (``list_folder``): relative paths in one ``bytes`` blob with offsets,
labels in one array, so a million files cost tens of MB and fork-started workers share them
without copying. Nothing is decoded up front: a ``Source`` opens image ``i`` when asked
(``Source.image``), in a DataLoader worker during training. The per-epoch data order is a
pure function of ``(seed, epoch)``, computed once per epoch (``Sampler``).
"""

from __future__ import annotations

import gzip
import os
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lrsched.errors import UsageError
from lrsched.recipes.dino.files import IMAGE_SUFFIXES, Listing, list_folder
from lrsched.recipes.dino.images import ImageTooLarge, read_image
from lrsched.recipes.dino.liveness import deadline
from lrsched.recipes.dino.shards import is_shard_spec, list_shards, shard_paths

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
INSTALL_HINT = "apt-get install dataset-fashion-mnist"
HELD_OUT_EVERY = 10
"""A labelled folder without train/ and test/ keeps every 10th file (sorted order) for k-NN testing."""
STATS_SAMPLE = 256
"""Images (evenly spaced in the listing) decoded at start to estimate the channel statistics."""
STATS_SIZE = 64
"""Those images are shrunk to at most this side first: the statistics need colours, not detail."""


# --- sources: image i on request ------------------------------------------------------------


class Source:
    """``len(source)`` images; ``image(i)`` is a PIL image in mode ``L`` or ``RGB``."""

    channels: int
    labels: torch.Tensor | None
    """``(N,)`` int64 class indices, or None when the images are unlabelled."""

    def __len__(self) -> int:
        raise NotImplementedError

    def image(self, i: int) -> Any:
        raise NotImplementedError

    def name(self, i: int) -> str:
        """What names image ``i`` in messages and in the run's record of unreadable files."""
        return f"image #{i}"


class ArraySource(Source):
    """Images held as a uint8 tensor ``(N, C, H, W)`` (Fashion-MNIST: 47 MB)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None) -> None:
        self.images, self.labels, self.channels = images, labels, int(images.shape[1])

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def image(self, i: int) -> Any:
        from PIL import Image

        pixels = self.images[i].permute(1, 2, 0).numpy()
        return Image.fromarray(pixels[:, :, 0] if self.channels == 1 else pixels)


class FileSource(Source):
    """Images ``ids`` of a ``Listing``, decoded from disk when asked."""

    def __init__(self, listing: Listing, ids: torch.Tensor | None, channels: int) -> None:
        self.listing, self.ids, self.channels = listing, ids, channels
        self.mode = "RGB" if channels == 3 else "L"
        self.labels = None
        if listing.labelled:
            all_labels = torch.tensor(listing.label_ids, dtype=torch.long)
            self.labels = all_labels if ids is None else all_labels[ids]

    def __len__(self) -> int:
        return len(self.listing) if self.ids is None else int(self.ids.shape[0])

    def image(self, i: int) -> Any:
        """Image ``i`` decoded; ``UsageError`` when it cannot be (``stream.readable`` picks a replacement)."""
        return read_listed(self.listing, int(i if self.ids is None else self.ids[i]), self.mode)

    def name(self, i: int) -> str:
        """The path of image ``i`` as given to ``--data-dir``."""
        return str(self.listing.path(int(i if self.ids is None else self.ids[i])))


def read_listed(listing: Listing, i: int, mode: str | None) -> Any:
    """Image ``i`` of a listing: its file (``read_image``), or a shard set's member (``ShardListing.read``)."""
    return listing.read(i, mode) if listing.reads_itself else read_image(listing.path(i), mode)


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


def load_fashion_mnist(directory: Path = FASHION_MNIST_DIR) -> tuple[ArraySource, ArraySource]:
    """The 60k training and 10k test images ``(N, 1, 28, 28)`` with labels 0..9."""
    if not directory.is_dir():
        raise UsageError(f"Fashion-MNIST: {directory} not found; install it with `{INSTALL_HINT}`")
    splits = []
    for prefix in ("train", "t10k"):
        images = read_idx(_idx_file(directory, f"{prefix}-images-idx3-ubyte"))
        labels = read_idx(_idx_file(directory, f"{prefix}-labels-idx1-ubyte"))
        splits.append(ArraySource(images.unsqueeze(1).contiguous(), labels.long()))
    return splits[0], splits[1]


# --- the dataset of a run ------------------------------------------------------------------


@dataclass(frozen=True)
class Dataset:
    """The training images, a labelled k-NN pair (or None, with the reason) and channel statistics."""

    name: str
    train: Source
    knn_train: Source | None
    knn_test: Source | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    listings: tuple[Listing, ...] = ()
    knn_note: str = ""

    @property
    def channels(self) -> int:
        return self.train.channels

    def fingerprint(self) -> dict[str, Any]:
        """What identifies the data of a run: checked on resume (``check_same_data``); a shard set adds its
        layout, its number of shards and their digest (names and sizes: ``ShardListing.describe``)."""
        return {
            **(self.listings[0].describe() if self.listings else {}),
            "name": self.name,
            "files": [len(x) for x in self.listings] or [len(self.train)],
            "digests": [x.digest for x in self.listings],
            "channels": self.channels,
            "mean": list(self.mean),
            "std": list(self.std),
        }


def _split_dirs(root: Path) -> tuple[Path, Path] | None:
    test = next((root / n for n in ("test", "val") if (root / n).is_dir()), None)
    return (root / "train", test) if (root / "train").is_dir() and test is not None else None


def _stats_of(images: list[Any], channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of pixels in [0, 1] over ``images`` (PIL, shrunk to ``STATS_SIZE``)."""
    sums, squares, count = torch.zeros(channels, dtype=torch.float64), torch.zeros(channels, dtype=torch.float64), 0
    for img in images:
        img.thumbnail((STATS_SIZE, STATS_SIZE))
        x = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(-1, channels).double() / 255
        sums += x.sum(0)
        squares += (x * x).sum(0)
        count += x.shape[0]
    mean = sums / count
    std = (squares / count - mean * mean).clamp_min(0).sqrt().clamp_min(1e-3)
    return tuple(mean.tolist()), tuple(std.tolist())


def _sample(listing: Listing) -> list[int]:
    n = len(listing)
    return sorted({i * n // min(n, STATS_SAMPLE) for i in range(min(n, STATS_SAMPLE))})


def _sampled_images(listing: Listing, timeout: float = 0.0, what: str = "--data-dir") -> tuple[list[Any], int]:
    """The ``STATS_SAMPLE`` images decoded and the channels: 3 if any has colour.

    Each must be readable (a ``UsageError`` otherwise), but for images over the size limits,
    which are skipped with a warning as in training and k-NN; at least one must remain. All of
    them within ``timeout`` seconds (``liveness.deadline``; 0: no deadline), else ``Stalled``.
    """
    images: list[Any] = []

    def stalled() -> str:
        return (
            f"--data-timeout {timeout:g}: the {len(_sample(listing))} images sampled at start from {what} "
            f"were not read within {timeout:g} s ({len(images)} were)"
        )

    with deadline(timeout, stalled):
        for i in _sample(listing):
            try:
                images.append(read_listed(listing, i, None))
            except ImageTooLarge as err:
                print(f"warning: {err}", file=sys.stderr)
    if not images:
        raise UsageError(f"{what}: every sampled image is over the size limits")
    channels = 1 if all(img.mode == "L" for img in images) else 3
    return [img.convert("RGB" if channels == 3 else "L") for img in images], channels


def open_folder(
    root: Path, progress: bool = False, follow_links: bool = False, *, timeout: float = 0.0, exclude: Path | None = None
) -> Dataset:
    """A folder of images: listed, never decoded up front (but for ``STATS_SAMPLE`` images, within ``timeout``).

    ``train/`` + ``test/`` (or ``val/``) sub-folders are used as they are; otherwise a labelled
    folder holds every ``HELD_OUT_EVERY``-th file out for k-NN testing, and an unlabelled one
    (no class sub-folders) trains on everything and skips k-NN. ``follow_links``: see ``_walk``;
    ``exclude`` (the run's own output folder) is never listed.
    """
    if not root.is_dir():
        raise UsageError(f"--data-dir {root}: no such directory")
    split = _split_dirs(root)
    folders = split or (root,)
    listings = tuple(list_folder(d, progress, follow_links, exclude, timeout) for d in folders)
    if len(listings[0]) == 0:
        raise UsageError(f"--data-dir {root}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return dataset_of(str(root), listings, timeout, "no class sub-folders (no labels)")


def dataset_of(
    name: str, listings: tuple[Listing, ...], timeout: float, unlabelled: str, what: str | None = None
) -> Dataset:
    """The run's ``Dataset`` from its listings (a folder's, or a shard set's): the start-up sample read (within
    ``timeout``; ``what`` names the data in messages), the k-NN split (``open_folder``), the channel statistics;
    ``unlabelled``: the note when there are no labels."""
    first = listings[0]
    split = len(listings) > 1
    sample, channels = _sampled_images(first, timeout, what or f"--data-dir {first.root}")
    source = FileSource(first, None, channels)
    train: Source = source
    knn_train: Source | None = None
    knn_test: Source | None = None
    note = ""
    if split:
        test = FileSource(listings[1], None, channels)
        if source.labels is not None and test.labels is not None and listings[1].classes == first.classes:
            knn_train, knn_test = source, test
        else:
            note = "train/ and test/ (or val/) need the same class sub-folders"
    elif first.labelled and len(first) >= HELD_OUT_EVERY:
        held = torch.arange(HELD_OUT_EVERY - 1, len(first), HELD_OUT_EVERY)
        kept = torch.ones(len(first), dtype=torch.bool)
        kept[held] = False
        train = knn_train = FileSource(first, kept.nonzero().squeeze(1), channels)
        knn_test = FileSource(first, held, channels)
    elif first.labelled:
        note = f"fewer than {HELD_OUT_EVERY} images: none held out to test on"
    else:
        note = unlabelled
    mean, std = _stats_of(sample, channels)
    return Dataset(name, train, knn_train, knn_test, mean, std, listings, note)


def open_shards(
    spec: str | os.PathLike[str], progress: bool = False, *, timeout: float = 0.0, exclude: Path | None = None
) -> Dataset:
    """WebDataset shards (``recipes/dino/shards.py``) as the run's ``Dataset``: listed once (``list_shards``),
    then as a flat folder is (the start-up sample, the channel statistics); labelled by ``.cls`` members,
    every 10th sample held out for k-NN testing as in a folder of class sub-folders. Without a ``.cls`` in
    every sample there is no k-NN."""
    text = os.fspath(spec)
    listing = list_shards(shard_paths(text, exclude), progress, timeout)
    if len(listing) == 0:
        raise UsageError(f"--data-dir {text}: the shards hold no images ({', '.join(IMAGE_SUFFIXES)})")
    return dataset_of(text, (listing,), timeout, "not every sample has a .cls member (no labels)", f"--data-dir {text}")


def fashion_mnist() -> Dataset:
    """Fashion-MNIST: 60k training images, k-NN on them and the 10k test images."""
    train, test = load_fashion_mnist()
    x = train.images[:10_000].float().div_(255)
    mean, std = x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return Dataset("fashion-mnist", train, train, test, tuple(mean.tolist()), tuple(std.tolist()))


def load_dataset(
    data_dir: Path | None,
    progress: bool = False,
    follow_links: bool = False,
    *,
    timeout: float = 0.0,
    exclude: Path | None = None,
) -> Dataset:
    """Fashion-MNIST (``data_dir`` None), WebDataset shards (``open_shards``) or an image folder,
    streamed (``open_folder``)."""
    if data_dir is None:
        return fashion_mnist()
    if is_shard_spec(data_dir):
        return open_shards(data_dir, progress, timeout=timeout, exclude=exclude)
    return open_folder(Path(data_dir), progress, follow_links, timeout=timeout, exclude=exclude)


def data_changes(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """How the data of ``now`` differs from ``saved`` (two fingerprints), in words."""
    changes = []
    if saved.get("name") != now["name"]:
        changes.append(f"data {saved.get('name')} -> {now['name']}")
    if saved.get("shards") != now.get("shards"):
        changes.append(f"shards {saved.get('shards', 0)} -> {now.get('shards', 0)}")
    elif saved.get("shards_digest") != now.get("shards_digest"):
        changes.append(f"the same {now.get('shards')} shards in number, other names or sizes")
    count = "/".join(str(n) for n in now["files"])
    if saved.get("files") != now["files"]:
        changes.append(f"files {'/'.join(str(n) for n in saved.get('files', []))} -> {count}")
    elif saved.get("digests") != now["digests"]:
        changes.append(f"the same {count} files in number, other names or classes")
    keys = ("channels", "mean", "std")
    if not changes and any(saved.get(k) != now[k] for k in keys):
        changes.append("other channel statistics")
    return changes


# --- batches as a pure function of (seed, step) ---------------------------------------------


def mix(*values: int) -> int:
    """A 63-bit seed from integers (splitmix64-style), so (seed, step, rank) streams never collide."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h ^ (v & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


class Sampler:
    """Epoch ``e`` is a permutation drawn from ``(seed, e)``; step ``t`` takes its ``t``-th slice.

    ``batches_per_epoch = N // (batch * world)`` (the last partial batch is dropped);
    ``epoch = t // batches_per_epoch``, and rank ``r`` takes items
    ``[(i * world + r) * batch, ... + batch)`` of that epoch's permutation, ``i = t mod batches_per_epoch``.
    The permutation is drawn once per epoch and kept (8 bytes per image).
    """

    def __init__(self, size: int, batch: int, world: int, seed: int) -> None:
        self.size, self.batch, self.world, self.seed = size, batch, world, seed
        self._epoch: int | None = None
        self._perm = torch.empty(0, dtype=torch.long)

    @property
    def batches_per_epoch(self) -> int:
        return self.size // (self.batch * self.world)

    def position(self, step: int) -> tuple[int, int]:
        """``(epoch, batch index in the epoch)`` of ``step``."""
        return divmod(step, self.batches_per_epoch)

    def permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(mix(self.seed, epoch))
            self._perm, self._epoch = torch.randperm(self.size, generator=g), epoch
        return self._perm

    def indices(self, step: int, rank: int) -> torch.Tensor:
        epoch, i = self.position(step)
        start = (i * self.world + rank) * self.batch
        return self.permutation(epoch)[start : start + self.batch]
