"""An image folder on disk: its listing (``list_folder``, a walk that stays inside the folder) and the
run's record of it (``data_index.tsv``: ``write_index``, ``read_index``).

A listing holds the relative paths in one ``bytes`` blob with offsets and the labels in one array,
so a million files cost tens of MB and fork-started workers share them without copying.
"""

from __future__ import annotations

import array
import hashlib
import itertools
import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lrsched.atomic import atomic_write
from lrsched.errors import UsageError
from lrsched.recipes.dino.liveness import deadline

DATA_INDEX = "data_index.tsv"
"""The run's record of its data: the fingerprint, then one line per file (``label<TAB>path``)."""
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


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

    def read(self, i: int, mode: str | None) -> Any:
        """Image ``i`` decoded, for a listing whose images are not files of their own (``reads_itself``);
        a folder's files are read by ``images.read_image`` on ``path(i)``."""
        raise NotImplementedError

    @property
    def reads_itself(self) -> bool:
        """Whether image ``i`` is read by ``read`` (a shard set's member) rather than from ``path(i)``."""
        return False

    def describe(self) -> dict[str, Any]:
        """What the data fingerprint adds for this kind of listing (a folder: nothing)."""
        return {}


def sample_digest(sha: Any, rel: str, label: int) -> None:
    """Add one sample of a shard set to its digest: ``<shard>/<member>``, NUL, its label, NUL."""
    sha.update(rel.encode("utf-8", "surrogateescape") + b"\0" + str(label).encode() + b"\0")


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


def _identity(path: Path | None) -> tuple[int, int] | None:
    """``(device, inode)`` of the folder at ``path``, or None (no path, or nothing there)."""
    try:
        st = os.stat(path) if path is not None else None
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if st is not None else None


def _walk(
    root: Path,
    follow_links: bool = False,
    skipped: Skipped | None = None,
    exclude: Path | None = None,
    alive: Callable[[], None] | None = None,
) -> Iterator[str]:
    """Relative paths of image files under ``root`` in sorted depth-first order.

    Symbolic links are followed only when they resolve inside ``root`` (anywhere with
    ``follow_links``); a folder reached twice (a link loop) is listed once. Entries that cannot be
    stat'ed or listed are counted in ``skipped``; ``root`` itself must be listable. The folder
    ``exclude`` (the run's own output folder, by device and inode) is never entered. ``alive`` is
    called after each folder read and each entry looked at (a deadline's ``progress``).
    """
    skipped = skipped if skipped is not None else Skipped()
    base, seen = os.path.realpath(root), set[tuple[int, int]]()
    excluded = _identity(exclude)
    if excluded is not None and excluded != _identity(root):
        seen.add(excluded)  # as if visited already
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
            if alive is not None:
                alive()
            if kind == "dir":
                subdirs.append(name)
            elif kind == "file" and entry.name.lower().endswith(IMAGE_SUFFIXES):
                yield name
        stack.extend(reversed(subdirs))


def list_folder(
    root: Path, progress: bool = False, follow_links: bool = False, exclude: Path | None = None, timeout: float = 0.0
) -> Listing:
    """Every image file under ``root`` (sorted), but in ``exclude``; its class is its first sub-folder (none
    at top level). What the walk skipped (unreadable entries, links leading outside) is one warning line each.
    A read of the folder that makes no progress for ``timeout`` seconds (0: no deadline) is ``Stalled``.
    """
    from tqdm import tqdm

    blob, offsets, label_ids = bytearray(), array.array("q", [0]), array.array("i")
    classes: list[str] = []
    digest, skipped = hashlib.sha256(), Skipped()

    def stalled() -> str:
        return (
            f"--data-timeout {timeout:g}: listing --data-dir {root} made no progress for {timeout:g} s "
            f"({len(offsets) - 1} images listed)"
        )

    with deadline(timeout, stalled) as clock:
        walk = _walk(root, follow_links, skipped, exclude, alive=clock.progress)
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


# --- the index of a run's data ----------------------------------------------------------------


def write_index(fingerprint: dict[str, Any], listings: tuple[Listing, ...], path: Path) -> None:
    """``data_index.tsv``: a JSON header line (the fingerprint), then ``label<TAB>path`` per file.

    A path is written as it is, unless it starts with ``"`` or holds a character that is not
    printable (TAB, newline, other controls, separators but space, bytes that are not UTF-8):
    then it is a JSON string (``index_field``). Written as it is produced, atomically renamed.
    """
    import json

    with atomic_write(path, durable=True, encoding="utf-8", newline="\n") as f:
        f.write(json.dumps(fingerprint) + "\n")
        for listing in listings:
            prefix = listing.root.name + "/" if len(listings) > 1 else ""
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
            free_labels = header.get("layout") is not None  # shards: labels from .cls members, in the digest
            for count, digest in expected:
                _check_listing(lines, count, digest, prefixed=len(header["digests"]) > 1, free_labels=free_labels)
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


def _check_listing(
    lines: Iterator[tuple[int, str]], count: int, digest: str, prefixed: bool, free_labels: bool = False
) -> None:
    """The next ``count`` lines: each parses, labels follow the class folders, and they hash to ``digest``.

    ``free_labels`` (a shard set): a label is any class id or -1, and the digest covers it (``sample_digest``).
    """
    sha, last_class, label_now, n, seen = hashlib.sha256(), "", -1, 0, 0
    for n, line in itertools.islice(lines, count):
        label, rel = _index_line(n, line, prefixed)
        if free_labels:
            if label < -1:
                raise _BadIndex(f"line {n}: label {label} is not a class")
            sample_digest(sha, rel, label)
            seen += 1
            continue
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
