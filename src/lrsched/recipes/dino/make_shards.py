"""WebDataset shards from an image folder: ``python -m lrsched.recipes.dino.make_shards SRC OUT_PATTERN``.

``SRC`` is listed as phase5 lists a ``--data-dir`` (``files.list_folder``: sorted, class = first
sub-folder), and its files are copied byte for byte (never decoded or re-encoded) into standard
tar files named by ``OUT_PATTERN`` (``shards/train-%06d.tar`` gives ``train-000000.tar``,
``train-000001.tar``, ...). Sample ``i`` of the listing is the members ``KEY.EXT`` (the file's
own suffix, lower case) and, when every file has a class sub-folder, ``KEY.cls`` (the class id
as decimal text), where ``KEY`` is ``i`` zero-padded to ``key_width(n)`` digits.

A shard takes samples in order until ``--max-count`` samples or ``--max-bytes`` bytes (the whole
tar file: a member costs ``512 + 512 * ceil(size / 512)`` bytes, and the file ends with two zero
blocks padded to a 10,240-byte record) would be passed; a sample larger than ``--max-bytes``
alone fills a shard. The plan comes from the files' sizes before anything is written.

The same folder gives byte-identical shards: members in key order, ``KEY.cls`` and ``KEY.EXT``
sorted by extension, every header in the POSIX ustar format with mtime 0, uid and gid 0, no
user or group name and mode 0444. Shards are written to ``.NAME.RANDOM.tmp`` beside their final
names, flushed to disk, and renamed only once all are written, each with ``os.link`` (which
never replaces a file); shards of the pattern that exist already are refused before anything
is read. Any way out but success (bad input, a stalled read, a full disk, a signal) removes what
it wrote.

Exit statuses: 0 written; 1 a write failed (a full disk); 2 bad input (a flag, a path, an
unreadable file, shards already there, a file that changed while it was copied), one line;
4 a read or listing made no progress for ``--data-timeout`` seconds; 128 + N after signal N.
"""

from __future__ import annotations

import argparse
import array
import errno
import io
import os
import secrets
import shutil
import signal
import sys
import tarfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import BinaryIO

from lrsched.atomic import fsync_dir
from lrsched.errors import UsageError
from lrsched.flags import ArgumentParser, number
from lrsched.paths import PathKind, check_path
from lrsched.recipes.common.exits import EXIT_DATA, EXIT_FAILED, EXIT_USAGE
from lrsched.recipes.dino.files import IMAGE_SUFFIXES, Listing, list_folder, shown
from lrsched.recipes.dino.liveness import Stalled, deadline
from lrsched.recipes.dino.shard_layout import (
    RECORD,
    Limits,
    Pattern,
    header,
    key_width,
    member_bytes,
    members,
    parse_pattern,
    plan_shards,
    shard_bytes,
)

PROG = "make_shards"
DEFAULT_MAX_COUNT = 10_000
"""Samples per shard by default: with ImageNet-sized JPEGs (about 110 KB) a shard of about 1 GB, the byte default."""
DEFAULT_MAX_BYTES = 1_000_000_000
"""Bytes per shard by default (the whole tar file): a million images make about a hundred shards."""


# --- the folder -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """The folder to copy: its listing, each file's size, and whether labels (``.cls``) are written."""

    listing: Listing
    sizes: array.array
    labelled: bool

    def __len__(self) -> int:
        return len(self.listing)

    def suffix(self, i: int) -> str:
        return self.listing.relative(i).rsplit(".", 1)[1].lower()

    def label(self, i: int) -> int | None:
        return int(self.listing.label_ids[i]) if self.labelled else None

    def cost(self, i: int) -> int:
        """Bytes the members of sample ``i`` take in a shard."""
        label = self.label(i)
        return member_bytes(self.sizes[i]) + (member_bytes(len(str(label))) if label is not None else 0)

    def read(self, i: int) -> bytes:
        """File ``i``'s bytes; ``UsageError`` when it cannot be read or its size changed since it was listed."""
        path = self.listing.path(i)
        try:
            data = path.read_bytes()
        except OSError as err:
            raise UsageError(f"SRC: cannot read {shown(path)} ({err.strerror or err})") from None
        if len(data) != self.sizes[i]:
            raise UsageError(f"SRC: {shown(path)} changed while it was copied ({self.sizes[i]} -> {len(data)} bytes)")
        return data


def open_source(src: Path, timeout: float, follow_links: bool) -> Source:
    """``src`` listed as phase5 lists a ``--data-dir``, and each file's size: ``Stalled`` when the listing or
    a look at a file makes no progress for ``timeout`` seconds (0: no deadline)."""
    if not src.is_dir():
        raise UsageError(f"SRC {src}: no such folder")
    if (src / "train").is_dir() and any((src / n).is_dir() for n in ("val", "test")):
        raise UsageError(
            f"SRC {src}: holds train/ and val/ (or test/): write each on its own "
            f"({PROG} {src}/train OUT/train-%06d.tar, then {src}/val to OUT/val-%06d.tar)"
        )
    listing = list_folder(src, progress=sys.stderr.isatty(), follow_links=follow_links, timeout=timeout)
    if len(listing) == 0:
        raise UsageError(f"SRC {src}: no images ({', '.join(IMAGE_SUFFIXES)})")
    sizes = array.array("q")

    def stalled() -> str:
        return f"--data-timeout {timeout:g}: looking at the files of SRC {src} made no progress for {timeout:g} s"

    with deadline(timeout, stalled) as clock:
        for i in range(len(listing)):
            try:
                sizes.append(listing.path(i).stat().st_size)
            except OSError as err:
                raise UsageError(f"SRC: cannot read {shown(listing.path(i))} ({err.strerror or err})") from None
            clock.progress()
    return Source(listing, sizes, listing.labelled)


# --- writing ---------------------------------------------------------------------------------------


class Written:
    """The shards of this run: temporary files while written, final names once published; ``discard`` removes both."""

    def __init__(self, pattern: Pattern) -> None:
        self.pattern = pattern
        self.temporary: list[Path] = []
        self.published: list[Path] = []

    def create(self, shard: int) -> tuple[Path, BinaryIO]:
        """A new temporary file beside shard ``shard``'s final name."""
        tmp = self.pattern.folder / f".{self.pattern.name(shard)}.{secrets.token_hex(4)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
        self.temporary.append(tmp)
        return tmp, os.fdopen(fd, "wb")

    def publish(self) -> None:
        """Every temporary file to its final name, never over a file that is there (``os.link`` fails then)."""
        for shard, tmp in enumerate(self.temporary):
            final = self.pattern.folder / self.pattern.name(shard)
            try:
                os.link(tmp, final)
            except FileExistsError:
                raise UsageError(f"OUT_PATTERN: {final} appeared while the shards were written") from None
            except OSError as err:
                if err.errno not in NO_HARD_LINKS:
                    raise
                if final.exists():  # a file system without hard links: look, then rename
                    raise UsageError(f"OUT_PATTERN: {final} appeared while the shards were written") from None
                os.rename(tmp, final)
            self.published.append(final)
            tmp.unlink(missing_ok=True)
        fsync_dir(self.pattern.folder)

    def discard(self) -> None:
        """Remove every file this run made."""
        for path in [*self.temporary, *self.published]:
            path.unlink(missing_ok=True)


NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK}
"""``os.link`` errors of a file system that has no hard links (then ``publish`` looks, then renames)."""


def write_shard(out: BinaryIO, source: Source, samples: range, alive: Callable[[], None]) -> None:
    """Samples ``samples`` of ``source`` as one tar file on ``out``, flushed to disk; ``alive()`` after each."""
    width = key_width(len(source))
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for i in samples:
            for name, data in members(f"{i:0{width}d}", source.suffix(i), source.read(i), source.label(i)):
                tar.addfile(header(name, len(data)), io.BytesIO(data))
            alive()
    out.flush()
    os.fsync(out.fileno())


def write_shards(source: Source, pattern: Pattern, counts: list[int], timeout: float) -> int:
    """The planned shards (``counts`` samples each), published together at the end; their bytes. On any
    failure nothing stays; ``Stalled`` when copying makes no progress (a sample) for ``timeout`` seconds."""
    from tqdm import tqdm

    written, done = Written(pattern), [0]
    bar = tqdm(total=len(source), unit=" images", disable=not sys.stderr.isatty(), mininterval=2)

    def stalled() -> str:
        return f"--data-timeout {timeout:g}: copying SRC made no progress for {timeout:g} s ({done[0]} images copied)"

    def alive() -> None:
        clock.progress()
        done[0] += 1
        bar.update()

    try:
        with deadline(timeout, stalled) as clock, bar:
            for shard, (start, count) in enumerate(spans(counts)):
                samples = range(start, start + count)
                tmp, out = written.create(shard)
                with out:
                    write_shard(out, source, samples, alive)
                size, planned = tmp.stat().st_size, shard_bytes(sum(source.cost(i) for i in samples))
                if size != planned:
                    raise RuntimeError(f"{tmp}: {size} bytes written, {planned} planned")
        written.publish()
    except BaseException:
        written.discard()
        raise
    return sum(path.stat().st_size for path in written.published)


# --- the command ----------------------------------------------------------------------------------

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(BaseException):
    """A stop signal arrived (a BaseException, so no ``except Exception`` on the way swallows it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextmanager
def interruptible() -> Iterator[None]:
    """Within: SIGINT, SIGTERM or SIGHUP raises ``Interrupted`` once and is ignored from then on, so the
    removal of what was written is not cut short by a second Ctrl-C."""

    def stop(signum: int, frame: FrameType | None) -> None:
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        raise Interrupted(signum)

    previous = {sig: signal.signal(sig, stop) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def whole_number(least: int) -> Callable[[str], int]:
    """An argparse type: 0 (no limit) or a whole number of at least ``least`` (``1e9`` allowed)."""

    def parse(text: str) -> int:
        value = number(text)
        if value != int(value) or (value != 0 and value < least):
            raise argparse.ArgumentTypeError(f"{text!r}: must be 0 (no limit) or a whole number of at least {least}")
        return int(value)

    return parse


def seconds(text: str) -> float:
    value = number(text)
    if not 0 <= value <= MAX_TIMEOUT:
        raise argparse.ArgumentTypeError(f"{text!r}: must be seconds from 0 (no deadline) to {MAX_TIMEOUT}")
    return value


MAX_TIMEOUT = 86400
"""The longest ``--data-timeout`` (a day), as phase5's."""


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog=PROG,
        description="Write WebDataset shards (standard tar files) from an image folder, for phase5's --data-dir.",
    )
    parser.add_argument("src", metavar="SRC", help="an image folder; class sub-folders give each sample a .cls")
    parser.add_argument("out", metavar="OUT_PATTERN", help="shard names with a zero-padded number: d/x-%%06d.tar")
    parser.add_argument(
        "--max-count", type=whole_number(1), default=DEFAULT_MAX_COUNT, help="samples a shard (default 10000; 0: any)"
    )
    parser.add_argument(
        "--max-bytes", type=whole_number(RECORD), default=DEFAULT_MAX_BYTES, help="bytes a shard (default 1e9; 0: any)"
    )
    parser.add_argument("--data-timeout", type=seconds, default=600.0, help="seconds a read may stall (default 600)")
    parser.add_argument("--follow-links", action="store_true", help="follow links leading outside SRC (as phase5)")
    return parser


def spans(counts: list[int]) -> list[tuple[int, int]]:
    """``(first sample, samples)`` of each shard."""
    starts = [0]
    for n in counts[:-1]:
        starts.append(starts[-1] + n)
    return list(zip(starts, counts))


@contextmanager
def new_folders(folder: Path) -> Iterator[None]:
    """``folder`` made with its missing parents; within, a failure removes the folders made (when empty)."""
    made = [p for p in [folder, *folder.parents] if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"OUT_PATTERN: cannot create {folder} ({err.strerror or err})") from None
    try:
        yield
    except BaseException:
        for path in made:
            with suppress(OSError):
                path.rmdir()
        raise


def refuse_existing(pattern: Pattern) -> None:
    """``UsageError`` when ``pattern``'s folder holds shards of its name."""
    names = pattern.existing()
    if names:
        raise UsageError(
            f"OUT_PATTERN: {pattern.folder} holds {len(names)} shard(s) of that name already ({names[0]}); "
            "shards are never overwritten: move them away or write elsewhere"
        )


def run(argv: Sequence[str] | None) -> str:
    """Check everything, plan, write, publish: the summary line."""
    opts = build_parser().parse_args(argv)
    limits = Limits(opts.max_count, opts.max_bytes)
    if not limits.count and not limits.size:
        raise UsageError("--max-count 0 --max-bytes 0: at least one limit is needed")
    pattern = parse_pattern(opts.out)
    src = check_path(opts.src, "SRC", PathKind.FOLDER)
    refuse_existing(pattern)
    source = open_source(src, opts.data_timeout, opts.follow_links)
    counts = plan_shards([source.cost(i) for i in range(len(source))], limits)
    if len(str(len(counts) - 1)) > pattern.width:
        raise UsageError(f"OUT_PATTERN {opts.out}: {len(counts)} shards need more than {pattern.width} digits")
    refuse_existing(pattern)
    planned = sum(shard_bytes(sum(source.cost(i) for i in range(start, start + n))) for start, n in spans(counts))
    with new_folders(pattern.folder):
        free = shutil.disk_usage(pattern.folder).free
        if free < planned:
            raise OSError(errno.ENOSPC, f"{planned / 1e6:.1f} MB needed in {pattern.folder}, {free / 1e6:.1f} MB free")
        total = write_shards(source, pattern, counts, opts.data_timeout)
    labels = f"{len(source.listing.classes)} classes in .cls" if source.labelled else "no labels: no .cls"
    over = sum(limits.size > 0 and shard_bytes(source.cost(i)) > limits.size for i in range(len(source)))
    note = f" ({over} of them one image larger than --max-bytes)" if over else ""
    return (
        f"{PROG}: {len(source)} images of {src} ({labels}) in {len(counts)} shards{note}, {total / 1e6:.1f} MB; "
        f"train on them with --data-dir '{pattern.braces(len(counts))}'"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """The command: its exit status (the module docstring)."""
    try:
        with interruptible():
            print(run(argv), flush=True)
        return 0
    except SystemExit as done:  # argparse: --help, or a flag it refused in one line
        return done.code if isinstance(done.code, int) else EXIT_USAGE
    except UsageError as err:
        print(f"{PROG}: error: {err}; nothing written", file=sys.stderr)
        return EXIT_USAGE
    except Stalled as err:
        print(f"{PROG}: error: {err}; nothing written", file=sys.stderr)
        return EXIT_DATA
    except Interrupted as stop:
        print(f"{PROG}: stopped by {stop}; nothing written", file=sys.stderr)
        return 128 + stop.signum
    except OSError as err:
        print(f"{PROG}: error: cannot write the shards ({err.strerror or err}); nothing written", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    raise SystemExit(main())
