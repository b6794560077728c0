"""WebDataset shards as ``--data-dir``: the shard set named (``shard_paths``), listed once into the same kind
of ``Listing`` a folder gives (``list_shards``), and one sample read by its index (``ShardListing.read``).

A shard is a standard (uncompressed) tar file. A sample is the run of consecutive members sharing one key,
WebDataset's rule: the key is a member's name up to the first dot of its last component, the rest is its
extension (``n01/000123.jpg``: key ``n01/000123``, extension ``jpg``). The sample's image is its first member
whose last extension part is an image suffix (``jpg``, ``png``, ``webp``, ...); ``key.cls`` holds its class as
a decimal integer. The listing keeps, per sample, the image member's name (in one ``bytes`` blob), its data
offset and size in its shard, and its label: about what a folder's listing keeps per file.

Sample ``i`` is read with one ``open`` and one ``pread`` at its offset, so the sample order stays a pure
function of ``(seed, step, rank, sample)`` and a resume needs no position inside a shard. A shard that
vanished, changed size since it was listed, or is cut short makes its samples unreadable: they follow the
bad-data policy of any unreadable image (``stream.readable``).
"""

from __future__ import annotations

import array
import bisect
import glob
import hashlib
import os
import re
import sys
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lrsched.errors import UsageError
from lrsched.recipes.dino.files import IMAGE_SUFFIXES, Listing, sample_digest, shown
from lrsched.recipes.dino.images import read_image
from lrsched.recipes.dino.liveness import deadline
from lrsched.recipes.dino.tar_members import Member, members

SHARD_SUFFIX = ".tar"
INDEX_SUFFIXES = (".shards", ".txt")
"""A ``--data-dir`` file with one of these suffixes lists shards, one per line (relative to its folder)."""
LAYOUT = "webdataset"
"""The ``layout`` of a shard set's fingerprint (a folder's has none)."""
_IMAGE_EXTENSIONS = frozenset(s.lstrip(".") for s in IMAGE_SUFFIXES)
_BRACE = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"(-?\d+)\.\.(-?\d+)")


# --- naming the shard set ----------------------------------------------------------------------


def expand_braces(pattern: str) -> list[str]:
    """Every name a brace pattern stands for, in order: ``{000..002}`` (zero-padded to the first bound's
    width), ``{a,b}`` (a list); several braces multiply left to right. Text without braces is itself."""
    found = _BRACE.search(pattern)
    if found is None:
        return [pattern]
    head, tail, body = pattern[: found.start()], pattern[found.end() :], found.group(1)
    bounds = _RANGE.fullmatch(body)
    if bounds is not None:
        lo, hi = int(bounds.group(1)), int(bounds.group(2))
        width = len(bounds.group(1))
        step = 1 if hi >= lo else -1
        choices = [str(v).zfill(width) for v in range(lo, hi + step, step)]
    elif "," in body:
        choices = body.split(",")
    else:
        choices = ["{" + body + "}"]
    return [head + choice + rest for choice in choices for rest in expand_braces(tail)]


def is_shard_spec(spec: str | os.PathLike[str]) -> bool:
    """Whether ``--data-dir`` names shards: a brace pattern or a glob (when no such path exists), a ``.tar`` or
    shard-list file (existing or not: ``shard_paths`` says it is missing), or a folder with ``.tar`` files at
    its top level."""
    text = os.fspath(spec)
    if os.path.isdir(text):
        return bool(_top_level_tars(Path(text)))
    named = text.endswith(SHARD_SUFFIX) or text.endswith(INDEX_SUFFIXES)
    return named or (not os.path.exists(text) and (_BRACE.search(text) is not None or glob.has_magic(text)))


def _top_level_tars(folder: Path) -> list[str]:
    try:
        with os.scandir(folder) as it:
            return sorted(e.name for e in it if e.name.endswith(SHARD_SUFFIX) and e.is_file())
    except OSError as err:
        raise UsageError(f"--data-dir {folder}: cannot list it ({err.strerror or err})") from None


def shard_paths(spec: str | os.PathLike[str], exclude: Path | None = None) -> list[Path]:
    """The shards ``spec`` names, in the order they are read; each must exist. ``UsageError`` (one line) for
    a pattern that names none, a missing shard, or a folder that holds images beside its ``.tar`` files."""
    text = os.fspath(spec)
    if os.path.isdir(text):
        names = _top_level_tars(Path(text))
        _refuse_images_beside(Path(text), exclude)
        paths = [Path(text) / n for n in names]
    elif os.path.isfile(text) and text.endswith(INDEX_SUFFIXES):
        paths = _listed_in(Path(text))
    elif not os.path.exists(text) and _BRACE.search(text) is not None:
        paths = [Path(p) for p in expand_braces(text)]
    elif not os.path.exists(text) and glob.has_magic(text):
        paths = [Path(p) for p in sorted(glob.glob(text))]
    else:
        paths = [Path(text)]
    if not paths:
        raise UsageError(f"--data-dir {text}: names no {SHARD_SUFFIX} shards")
    for path in paths:
        if not path.is_file():
            raise UsageError(f"--data-dir {text}: {'' if str(path) == text else f'shard {shown(path)}: '}no such file")
    return paths


def _listed_in(index: Path) -> list[Path]:
    """The shards a shard-list file names, one per line (blank lines and ``#`` comments skipped)."""
    try:
        lines = index.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"--data-dir {index}: cannot read the shard list ({err})") from None
    names = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    return [index.parent / name for name in names]


def _refuse_images_beside(folder: Path, exclude: Path | None) -> None:
    """A folder of shards holds no images, at its top level or in a sub-folder (but the run's own)."""
    from lrsched.recipes.dino.files import _identity, _walk

    skip = _identity(exclude)
    with os.scandir(folder) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        if entry.is_dir() and _identity(Path(entry.path)) != skip:
            image = next(_walk(Path(entry.path), exclude=exclude), None)
            name = f"{entry.name}/{image}" if image is not None else None
        else:
            name = entry.name if entry.name.lower().endswith(IMAGE_SUFFIXES) else None
        if name is not None:
            raise UsageError(
                f"--data-dir {folder}: holds both {SHARD_SUFFIX} shards and images (first: {shown(name)}); "
                "a data folder is one or the other"
            )


# --- the listing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShardListing(Listing):
    """A ``Listing`` of samples in shards: ``blob`` holds each sample's image member name, ``relative(i)`` is
    ``<shard>/<member>`` (the shard relative to ``root``); ``starts``/``sizes`` locate the member's data."""

    shard_names: tuple[str, ...]
    shard_sizes: tuple[int, ...]
    shard_first: array.array
    """Sample index of each shard's first sample, then the total: shard ``s`` holds ``[first[s], first[s+1])``."""
    starts: array.array
    sizes: array.array
    shards_digest: str

    def shard_of(self, i: int) -> int:
        return bisect.bisect_right(self.shard_first, i) - 1

    def relative(self, i: int) -> str:
        member = self.blob[self.offsets[i] : self.offsets[i + 1]].decode("utf-8", "surrogateescape")
        return f"{self.shard_names[self.shard_of(i)]}/{member}"

    @property
    def reads_itself(self) -> bool:
        return True

    def describe(self) -> dict[str, Any]:
        return {"layout": LAYOUT, "shards": len(self.shard_names), "shards_digest": self.shards_digest}

    def read(self, i: int, mode: str | None) -> Any:
        """Sample ``i``'s image: one ``pread`` of its member; a shard gone, resized or cut short is a
        ``UsageError`` naming ``<shard>/<member>`` (an unreadable image)."""
        shard = self.shard_of(i)
        name, start, size = self.path(i), int(self.starts[i]), int(self.sizes[i])
        try:
            with open(self.root / self.shard_names[shard], "rb") as f:
                now = os.fstat(f.fileno()).st_size
                if now != self.shard_sizes[shard]:
                    raise UsageError(
                        f"--data-dir: cannot read image {shown(name)} (its shard changed size since it was "
                        f"listed: {self.shard_sizes[shard]} -> {now} bytes)"
                    )
                content = os.pread(f.fileno(), size, start)
        except OSError as err:
            raise UsageError(f"--data-dir: cannot read image {shown(name)} ({err.strerror or err})") from None
        if len(content) != size:
            raise UsageError(f"--data-dir: cannot read image {shown(name)} (its shard is cut short)")
        return read_image(name, mode, content=content)


def split_name(member: str) -> tuple[str, str]:
    """``(key, extension)`` of a tar member by WebDataset's rule: the key ends at the first dot of the last
    path component (``a/b.c.jpg`` -> ``a/b``, ``c.jpg``); a name with no dot there has no extension."""
    folder, _, base = member.rpartition("/")
    stem, dot, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), (ext if dot else "")


@dataclass
class _Sample:
    """The members of one sample seen so far: its image (name, offset, size) and its label."""

    key: str
    image: tuple[str, int, int] | None = None
    label: int = -1


class _Builder:
    """Accumulates samples into the arrays of a ``ShardListing``; counts samples without an image."""

    def __init__(self) -> None:
        self.blob, self.offsets = bytearray(), array.array("q", [0])
        self.starts, self.sizes, self.labels = array.array("q"), array.array("q"), array.array("i")
        self.digest, self.without_image, self.first_without = hashlib.sha256(), 0, ""

    def add(self, shard_name: str, sample: _Sample | None) -> None:
        if sample is None:
            return
        if sample.image is None:
            self.without_image += 1
            self.first_without = self.first_without or f"{shard_name}/{sample.key}"
            return
        member, start, size = sample.image
        encoded = member.encode("utf-8", "surrogateescape")
        self.blob += encoded
        self.offsets.append(len(self.blob))
        self.starts.append(start)
        self.sizes.append(size)
        self.labels.append(sample.label)
        sample_digest(self.digest, f"{shard_name}/{member}", sample.label)

    def __len__(self) -> int:
        return len(self.offsets) - 1


def _label(fd: int, member: Member, shard: Path) -> int:
    """The class a ``.cls`` member holds: a decimal integer, 0 or more."""
    text = os.pread(fd, min(member.size, 64), member.offset).decode("ascii", "replace").strip()
    if not re.fullmatch(r"[0-9]+", text):
        raise UsageError(
            f"--data-dir: shard {shown(shard)}: {member.name} holds {text[:20]!r}, not a class (0, 1, ...)"
        )
    return int(text)


def _list_one(builder: _Builder, shard: Path, shard_name: str, size: int, alive: Callable[[], None]) -> None:
    """Add one shard's samples: consecutive members sharing a key make one sample (WebDataset's grouping).

    The headers are read by ``tar_members.members``; a shard cut short or damaged is a ``UsageError``.
    """
    with open(shard, "rb") as raw:
        try:
            found = members(raw.fileno(), size, alive)
        except (tarfile.ReadError, tarfile.CompressionError) as err:
            raise UsageError(f"--data-dir: shard {shown(shard)}: not a readable uncompressed tar ({err})") from None
        sample: _Sample | None = None
        for member in found:
            key, ext = split_name(member.name)
            if sample is None or key != sample.key:
                builder.add(shard_name, sample)
                sample = _Sample(key)
            last = ext.rpartition(".")[2].lower()
            if sample.image is None and last in _IMAGE_EXTENSIONS:
                sample.image = (member.name, member.offset, member.size)
            elif ext.lower() == "cls":
                sample.label = _label(raw.fileno(), member, shard)
        builder.add(shard_name, sample)


def _root_of(paths: list[Path]) -> Path:
    """The folder every shard lies in, as given (absolute when they mix absolute and relative paths)."""
    parents = [os.path.dirname(os.fspath(p)) or "." for p in paths]
    try:
        return Path(os.path.commonpath(parents))
    except ValueError:
        return Path(os.path.commonpath([os.path.abspath(p) for p in parents]))


def list_shards(paths: list[Path], progress: bool = False, timeout: float = 0.0) -> ShardListing:
    """Every sample of ``paths`` (in that order, each shard in tar order), with its member's offset and size.

    Read once, in order (the headers, and the ``.cls`` members' bytes). A shard read that makes no progress
    for ``timeout`` seconds (0: none) is ``Stalled``. A shard that is not an uncompressed tar, or is cut short,
    is a ``UsageError``; samples without an image member are left out with one warning line.
    """
    from tqdm import tqdm

    root, builder = _root_of(paths), _Builder()
    names = tuple(os.path.relpath(p, root) for p in paths)
    sizes, first, shards_sha = [], array.array("q", [0]), hashlib.sha256()

    def stalled() -> str:
        return (
            f"--data-timeout {timeout:g}: listing the shards of --data-dir made no progress for {timeout:g} s "
            f"({len(builder)} samples listed)"
        )

    with deadline(timeout, stalled) as clock:
        for path, name in tqdm(list(zip(paths, names)), desc="listing shards", unit=" shards", disable=not progress):
            size = os.stat(path).st_size
            clock.progress()
            _list_one(builder, path, name, size, clock.progress)
            sizes.append(size)
            first.append(len(builder))
            shards_sha.update(f"{name}\0{size}\0{len(builder)}\n".encode("utf-8", "surrogateescape"))
    if builder.without_image:
        print(
            f"warning: --data-dir: left out {builder.without_image} samples without an image member "
            f"(first: {shown(builder.first_without)})",
            file=sys.stderr,
        )
    labels = builder.labels
    classes = tuple(str(c) for c in sorted(set(labels))) if len(labels) and min(labels) >= 0 else ()
    return ShardListing(
        root,
        bytes(builder.blob),
        builder.offsets,
        classes,
        labels,
        builder.digest.hexdigest(),
        names,
        tuple(sizes),
        first,
        builder.starts,
        builder.sizes,
        shards_sha.hexdigest(),
    )
