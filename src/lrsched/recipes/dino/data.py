"""Images for DINO, streamed: Fashion-MNIST from Debian's idx files, or any folder of images.

A folder is listed once (``list_folder``): relative paths in one ``bytes`` blob with offsets,
labels in one array, so a million files cost tens of MB and fork-started workers share them
without copying. Nothing is decoded up front: a ``Source`` opens image ``i`` when asked
(``Source.image``), in a DataLoader worker during training. The per-epoch data order is a
pure function of ``(seed, epoch)``, computed once per epoch (``Sampler``).
"""

from __future__ import annotations

import array
import gzip
import hashlib
import itertools
import os
import re
import struct
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lrsched.errors import UsageError
from lrsched.recipes.common.atomic import atomic_write

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
INSTALL_HINT = "apt-get install dataset-fashion-mnist"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
HELD_OUT_EVERY = 10
"""A labelled folder without train/ and test/ keeps every 10th file (sorted order) for k-NN testing."""
MAX_PIXELS = 100_000_000
"""An image with more pixels is skipped with a warning (300 MB decoded as RGB, per worker)."""
MAX_ASPECT = 100
"""An image with one side more than this many times the other is skipped with a warning."""
ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")
"""Pillow modes with an alpha channel: composited on white (``to_8bit``)."""
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


class ImageTooLarge(UsageError):
    """An image over the size limits (``check_size``): skipped with a warning wherever it is met."""


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


@dataclass(frozen=True)
class Listing:
    """Files under ``root``: relative paths (UTF-8, ``blob[offsets[i]:offsets[i+1]]``) and class ids (-1: none)."""

    root: Path
    blob: bytes
    offsets: array.array
    classes: tuple[str, ...]
    label_ids: array.array
    digest: str = field(compare=False)
    """SHA-256 of the sorted relative paths and their classes: equal listings, equal digests."""

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def relative(self, i: int) -> str:
        return self.blob[self.offsets[i] : self.offsets[i + 1]].decode("utf-8", "surrogateescape")

    def path(self, i: int) -> Path:
        return self.root / self.relative(i)

    @property
    def labelled(self) -> bool:
        return len(self) > 0 and min(self.label_ids) >= 0


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
        return read_image(self.listing.path(int(i if self.ids is None else self.ids[i])), self.mode)


def read_image(path: Path, mode: str | None) -> Any:
    """The image at ``path`` in 8 bits, as ``mode`` (``L`` or ``RGB``; None: whichever it is).

    Sizes are checked before anything is decoded (``check_size``); every Pillow mode is mapped to
    8-bit ``L`` or ``RGB`` by the rules of ``to_8bit`` or refused. Any failure is a ``UsageError``
    naming the file (``ImageTooLarge`` for the size limits).
    """
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit below
            with Image.open(path) as img:
                check_size(img.width, img.height, path)
                img.load()
                out = to_8bit(img, path)
    except UsageError:
        raise
    except Image.DecompressionBombError:
        raise ImageTooLarge(f"--data-dir: image {shown(path)} has more than {MAX_PIXELS:,} pixels; skipped") from None
    except (OSError, ValueError, SyntaxError) as err:
        raise UsageError(f"--data-dir: cannot read image {shown(path)} ({err})") from None
    return out if mode is None or out.mode == mode else out.convert(mode)


def check_size(width: int, height: int, path: Path) -> None:
    """``ImageTooLarge`` for more than ``MAX_PIXELS`` pixels or sides more than ``MAX_ASPECT`` to 1."""
    if width * height > MAX_PIXELS:
        raise ImageTooLarge(
            f"--data-dir: image {shown(path)} is {width} x {height}, more than {MAX_PIXELS:,} pixels; skipped"
        )
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise ImageTooLarge(
            f"--data-dir: image {shown(path)} is {width} x {height}, one side more than {MAX_ASPECT} times "
            "the other (its views would be slivers); skipped"
        )


def to_8bit(img: Any, path: Path) -> Any:
    """``img`` (loaded, any Pillow mode) as 8-bit ``L`` or ``RGB``, by the rules in docs/phase5.md.

    ``1``/``L`` -> ``L``; 16-bit and 32-bit integer -> ``L`` from the top 8 of 16 bits; float ->
    ``L`` from [0, 1] x 255; alpha or a transparent colour -> composited on white; palette, CMYK and
    other colour modes -> ``RGB`` by Pillow's conversion.
    """
    mode = img.mode
    if mode.startswith("I"):
        return _integer_to_8bit(img, path)
    if mode == "F":
        return _float_to_8bit(img, path)
    if mode in ALPHA_MODES or "transparency" in img.info:
        return _on_white(img)
    if mode in ("L", "RGB"):
        return img
    gray = mode == "1" or (mode == "P" and _gray_palette(img))
    return img.convert("L" if gray else "RGB")


def _integer_to_8bit(img: Any, path: Path) -> Any:
    """16-bit samples (``I;16*``, or ``I`` with values in 0..65535) -> their top 8 bits, as ``L``.

    A TIFF that declares 32-bit integer samples has no standard 8-bit reading, and is refused, as
    is any ``I`` image with a value outside 0..65535.
    """
    import numpy as np
    from PIL import Image

    values = np.asarray(img)  # uint16 for I;16*, int32 for I: no wider copy
    declared = getattr(img, "tag_v2", {}).get(258, (16,)) if img.mode == "I" else (16,)
    low, high = (int(values.min()), int(values.max())) if values.size else (0, 0)
    if max(declared) > 16 or low < 0 or high > 65535:
        bits = f"{max(declared)}-bit " if max(declared) > 16 else ""
        raise UsageError(
            f"--data-dir: image {shown(path)} has {bits}integer samples in {low}..{high}; only 16-bit ones "
            "(0..65535) have a standard 8-bit reading: save it in 8 or 16 bits"
        )
    return Image.fromarray((values >> 8).astype(np.uint8), mode="L")


def _float_to_8bit(img: Any, path: Path) -> Any:
    """Float samples in [0, 1] -> ``round(255 x)`` as ``L``; values that round outside 0..255 are refused."""
    import numpy as np
    from PIL import Image

    values = np.asarray(img)  # float32
    scaled = np.rint(values * np.float32(255))
    if not np.isfinite(scaled).all() or scaled.min(initial=0) < 0 or scaled.max(initial=0) > 255:
        raise UsageError(
            f"--data-dir: image {shown(path)} has float samples outside [0, 1] "
            f"({np.nanmin(values):g}..{np.nanmax(values):g}, or not finite); save it as 8-bit or scale it to [0, 1]"
        )
    return Image.fromarray(scaled.astype(np.uint8), mode="L")


def _on_white(img: Any) -> Any:
    """An image with alpha (or a transparent colour) composited on white: ``L`` if it was gray, else ``RGB``."""
    from PIL import Image

    gray = img.mode in ("LA", "La", "L", "1") or (img.mode == "P" and _gray_palette(img))
    rgba = img.convert("RGBA")
    out = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return out.convert("L" if gray else "RGB")


def _gray_palette(img: Any) -> bool:
    """Whether every colour of a palette image's palette is a gray (R = G = B)."""
    colours = img.getpalette() or []
    return all(colours[k] == colours[k + 1] == colours[k + 2] for k in range(0, len(colours) - 2, 3))


# --- listing a folder ---------------------------------------------------------------------------


@dataclass
class Skipped:
    """What a walk left out: entries it could not stat or list, and symbolic links leading outside."""

    unreadable: int = 0
    first_unreadable: str = ""
    outside: int = 0
    first_outside: str = ""

    def unreadable_entry(self, path: str, err: OSError) -> None:
        self.unreadable += 1
        self.first_unreadable = self.first_unreadable or f"{shown(path)} ({err.strerror or err})"

    def outside_link(self, path: str) -> None:
        self.outside += 1
        self.first_outside = self.first_outside or shown(path)

    def warnings(self, root: Path) -> list[str]:
        """One line per kind of skip, with its count and the first case."""
        lines = []
        if self.unreadable:
            lines.append(
                f"warning: --data-dir {root}: skipped {self.unreadable} entries that could not be read "
                f"(first: {self.first_unreadable})"
            )
        if self.outside:
            lines.append(
                f"warning: --data-dir {root}: did not follow {self.outside} symbolic links that lead outside "
                f"the folder (first: {self.first_outside}); --follow-links follows them"
            )
        return lines


def _inside(path: str, base: str) -> bool:
    """Whether the resolved ``path`` is ``base`` or under it (both resolved)."""
    return path == base or path.startswith(base.rstrip(os.sep) + os.sep)


def _entries(directory: str, seen: set[tuple[int, int]], skipped: Skipped) -> list[os.DirEntry[str]]:
    """The entries of ``directory`` sorted by name; none if it was seen already (a link loop) or cannot be read."""
    try:
        st = os.stat(directory)
        if (st.st_dev, st.st_ino) in seen:
            return []
        seen.add((st.st_dev, st.st_ino))
        with os.scandir(directory) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError as err:
        skipped.unreadable_entry(directory, err)
        return []


def _kind(entry: os.DirEntry[str], base: str, follow_links: bool, skipped: Skipped) -> str:
    """``"dir"``, ``"file"`` or ``""`` (anything else, an entry that cannot be stat'ed, a link leading out).

    Only symbolic links are resolved; one leading outside ``base`` counts in ``skipped`` when it
    would have been listed (a folder, or an image file name).
    """
    try:
        if entry.is_symlink():
            if not follow_links and not _inside(os.path.realpath(entry.path), base):
                if entry.name.lower().endswith(IMAGE_SUFFIXES) or os.path.isdir(entry.path):
                    skipped.outside_link(entry.path)
                return ""
            if entry.name.lower().endswith(IMAGE_SUFFIXES):
                entry.stat()  # an image link that is dangling or cannot be followed: counted as unreadable
        if entry.is_dir():
            return "dir"
        return "file" if entry.is_file() else ""
    except OSError as err:
        skipped.unreadable_entry(entry.path, err)
        return ""


def _walk(root: Path, follow_links: bool = False, skipped: Skipped | None = None) -> Iterator[str]:
    """Relative paths of image files under ``root`` in sorted depth-first order.

    Symbolic links are followed only when they resolve inside ``root`` (anywhere with
    ``follow_links``); a folder reached twice (a link loop) is listed once. Entries that cannot be
    stat'ed or listed are counted in ``skipped``; ``root`` itself must be listable.
    """
    skipped = skipped if skipped is not None else Skipped()
    base, seen = os.path.realpath(root), set[tuple[int, int]]()
    try:
        os.scandir(root).close()
    except OSError as err:
        raise UsageError(f"--data-dir {root}: cannot list it ({err.strerror or err})") from None
    stack = [""]
    while stack:
        rel = stack.pop()
        subdirs = []
        for entry in _entries(os.path.join(root, rel), seen, skipped):
            name = f"{rel}/{entry.name}" if rel else entry.name
            kind = _kind(entry, base, follow_links, skipped)
            if kind == "dir":
                subdirs.append(name)
            elif kind == "file" and entry.name.lower().endswith(IMAGE_SUFFIXES):
                yield name
        stack.extend(reversed(subdirs))


def list_folder(root: Path, progress: bool = False, follow_links: bool = False) -> Listing:
    """Every image file under ``root`` (sorted); its class is its first sub-folder (none at top level).

    What the walk skipped (unreadable entries, links leading outside ``root``) is one warning line each.
    """
    from tqdm import tqdm

    blob, offsets, label_ids = bytearray(), array.array("q", [0]), array.array("i")
    classes: list[str] = []
    digest, skipped = hashlib.sha256(), Skipped()
    walk = _walk(root, follow_links, skipped)
    for rel in tqdm(walk, desc=f"listing {root}", unit=" files", disable=not progress, mininterval=2):
        cls = rel.split("/", 1)[0] if "/" in rel else ""
        if cls and (not classes or classes[-1] != cls):
            classes.append(cls)
        encoded = rel.encode("utf-8", "surrogateescape")
        blob += encoded
        offsets.append(len(blob))
        label_ids.append(len(classes) - 1 if cls else -1)
        digest.update(encoded + b"\0")
    for line in skipped.warnings(root):
        print(line, file=sys.stderr)
    return Listing(root, bytes(blob), offsets, tuple(classes), label_ids, digest.hexdigest())


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
        """What identifies the data of a run: checked on resume (``check_same_data``)."""
        return {
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


def _sampled_images(listing: Listing) -> tuple[list[Any], int]:
    """The ``STATS_SAMPLE`` images decoded and the channels: 3 if any has colour.

    Each must be readable (a ``UsageError`` otherwise), but for images over the size limits,
    which are skipped with a warning as in training and k-NN; at least one must remain.
    """
    images = []
    for i in _sample(listing):
        try:
            images.append(read_image(listing.path(i), None))
        except ImageTooLarge as err:
            print(f"warning: {err}", file=sys.stderr)
    if not images:
        raise UsageError(f"--data-dir {listing.root}: every sampled image is over the size limits")
    channels = 1 if all(img.mode == "L" for img in images) else 3
    return [img.convert("RGB" if channels == 3 else "L") for img in images], channels


def open_folder(root: Path, progress: bool = False, follow_links: bool = False) -> Dataset:
    """A folder of images: listed, never decoded up front (but for ``STATS_SAMPLE`` images).

    ``train/`` + ``test/`` (or ``val/``) sub-folders are used as they are; otherwise a labelled
    folder holds every ``HELD_OUT_EVERY``-th file out for k-NN testing, and an unlabelled one
    (no class sub-folders) trains on everything and skips k-NN. ``follow_links``: see ``_walk``.
    """
    if not root.is_dir():
        raise UsageError(f"--data-dir {root}: no such directory")
    split = _split_dirs(root)
    folders = split or (root,)
    listings = tuple(list_folder(d, progress, follow_links) for d in folders)
    first = listings[0]
    if len(first) == 0:
        raise UsageError(f"--data-dir {root}: no images ({', '.join(IMAGE_SUFFIXES)})")
    sample, channels = _sampled_images(first)
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
        note = "no class sub-folders (no labels)"
    mean, std = _stats_of(sample, channels)
    return Dataset(str(root), train, knn_train, knn_test, mean, std, listings, note)


def fashion_mnist() -> Dataset:
    """Fashion-MNIST: 60k training images, k-NN on them and the 10k test images."""
    train, test = load_fashion_mnist()
    x = train.images[:10_000].float().div_(255)
    mean, std = x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return Dataset("fashion-mnist", train, train, test, tuple(mean.tolist()), tuple(std.tolist()))


def load_dataset(data_dir: Path | None, progress: bool = False, follow_links: bool = False) -> Dataset:
    """Fashion-MNIST (``data_dir`` None) or an image folder, streamed."""
    return fashion_mnist() if data_dir is None else open_folder(Path(data_dir), progress, follow_links)


def write_index(dataset: Dataset, path: Path) -> None:
    """``data_index.tsv``: a JSON header line (the fingerprint), then ``label<TAB>path`` per file.

    A path is written as it is, unless it starts with ``"`` or holds a character that is not
    printable (TAB, newline, other controls, separators but space, bytes that are not UTF-8):
    then it is a JSON string (``index_field``). Written as it is produced, atomically renamed.
    """
    import json

    with atomic_write(path, durable=True, encoding="utf-8", newline="\n") as f:
        f.write(json.dumps(dataset.fingerprint()) + "\n")
        for listing in dataset.listings:
            prefix = listing.root.name + "/" if len(dataset.listings) > 1 else ""
            for i in range(len(listing)):
                f.write(f"{listing.label_ids[i]}\t{index_field(prefix + listing.relative(i))}\n")


def index_field(rel: str) -> str:
    """A relative path as ``data_index.tsv`` writes it: as is, or JSON-quoted when it must be."""
    import json

    return json.dumps(rel) if rel.startswith('"') or not rel.isprintable() else rel


def shown(path: str | os.PathLike[str]) -> str:
    """A path for a one-line message: as it is, or JSON-quoted when it holds a newline or the like."""
    return index_field(os.fspath(path))


def read_index_header(path: Path) -> dict[str, Any] | None:
    """The fingerprint line of a ``data_index.tsv``, or None when there is none."""
    import json

    try:
        with path.open(encoding="utf-8", errors="surrogateescape") as f:
            header = json.loads(f.readline())
    except (OSError, ValueError):
        return None
    return header if isinstance(header, dict) else None


class _BadIndex(Exception):
    """A line of ``data_index.tsv`` that does not parse or disagrees with the header."""


def read_index(path: Path) -> dict[str, Any] | None:
    """Parse a whole ``data_index.tsv`` and check it against its header (file counts, digests, labels).

    Returns the header (the fingerprint); None when there is no file; a one-line ``UsageError``
    when it cannot be read, does not parse or disagrees with its header. Streams: O(1) memory.
    """
    try:
        with path.open(encoding="utf-8", newline="\n") as f:
            lines = enumerate(f, start=1)
            header = _index_header(next(lines, (1, ""))[1])
            expected = zip(header["files"], header["digests"], strict=False) if header["digests"] else ()
            for count, digest in expected:
                _check_listing(lines, count, digest, prefixed=len(header["digests"]) > 1)
            extra = next(lines, None)
            if extra is not None:
                raise _BadIndex(f"line {extra[0]}: more files than the header's {header['files']}")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, _BadIndex) as err:
        raise UsageError(
            f"{path}: not a data index this program can read ({err}); move it aside and the run writes it again"
        ) from None
    return header


def _index_header(line: str) -> dict[str, Any]:
    """The JSON header line, checked to hold ``files`` (counts) and ``digests`` (one per count, or none)."""
    import json

    try:
        header = json.loads(line)
    except ValueError:
        raise _BadIndex("line 1: not a JSON header") from None
    files, digests = (header.get("files"), header.get("digests")) if isinstance(header, dict) else (None, None)
    if not (isinstance(files, list) and all(isinstance(n, int) and n >= 0 for n in files)):
        raise _BadIndex("line 1: no file counts")
    if not (isinstance(digests, list) and all(isinstance(d, str) for d in digests)):
        raise _BadIndex("line 1: no digests")
    if digests and len(digests) != len(files):
        raise _BadIndex("line 1: file counts and digests differ in number")
    return header


def _check_listing(lines: Iterator[tuple[int, str]], count: int, digest: str, prefixed: bool) -> None:
    """The next ``count`` lines: each parses, labels follow the class folders, and they hash to ``digest``."""
    sha, last_class, label_now, n, seen = hashlib.sha256(), "", -1, 0, 0
    for n, line in itertools.islice(lines, count):
        label, rel = _index_line(n, line, prefixed)
        cls = rel.split("/", 1)[0] if "/" in rel else ""
        if cls and cls != last_class:
            last_class, label_now = cls, label_now + 1
        if label != (label_now if cls else -1):
            raise _BadIndex(f"line {n}: label {label} where the class folders give {label_now if cls else -1}")
        sha.update(rel.encode("utf-8", "surrogateescape") + b"\0")
        seen += 1
    if seen < count:
        raise _BadIndex(f"{count - seen} files fewer than the header says (after line {n})")
    if sha.hexdigest() != digest:
        raise _BadIndex(f"the paths up to line {n} do not match the header's digest")


def _index_line(n: int, line: str, prefixed: bool) -> tuple[int, str]:
    """``(label, relative path)`` of line ``n``; ``prefixed``: without its first folder (train/, val/)."""
    import json

    if not line.endswith("\n"):
        raise _BadIndex(f"line {n}: cut short")
    label, tab, field = line[:-1].partition("\t")
    if not tab or not re.fullmatch("-?[0-9]+", label):
        raise _BadIndex(f"line {n}: not label<TAB>path")
    try:
        rel = json.loads(field) if field.startswith('"') else field
    except ValueError:
        raise _BadIndex(f"line {n}: a quoted path that is not a JSON string") from None
    if not isinstance(rel, str) or not rel or (not field.startswith('"') and not rel.isprintable()):
        raise _BadIndex(f"line {n}: a path with a TAB or control character that is not quoted")
    if prefixed:
        _, slash, rel = rel.partition("/")
        if not slash or not rel:
            raise _BadIndex(f"line {n}: no train/ or test/ folder before the path")
    return int(label), rel


def data_changes(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """How the data of ``now`` differs from ``saved`` (two fingerprints), in words."""
    changes = []
    if saved.get("name") != now["name"]:
        changes.append(f"data {saved.get('name')} -> {now['name']}")
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
