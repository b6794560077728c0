"""What a shard set made by ``make_shards`` looks like, as pure functions: the shards' names
(``Pattern``), which samples go in which shard (``plan_shards``) and one sample's tar members.

Sizes follow the tar format (POSIX ustar): a member takes a 512-byte header and its data padded to
whole 512-byte blocks, ``512 + 512 * ceil(size / 512)`` bytes; a file ends with two zero blocks and
is padded to a whole 10,240-byte record. So a shard of members' bytes ``m`` is
``10240 * ceil((m + 1024) / 10240)`` bytes, known before it is written.
"""

from __future__ import annotations

import os
import re
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lrsched.errors import UsageError
from lrsched.paths import PathKind, check_path

BLOCK = 512
"""A tar block: every header is one, every member's data is padded to a whole number of them."""
RECORD = tarfile.RECORDSIZE
"""A tar file is padded to a whole number of 10,240-byte records (20 blocks)."""
PATTERN = re.compile(r"%0([1-9][0-9]?)d")


@dataclass(frozen=True)
class Pattern:
    """``OUT_PATTERN`` split at its number: ``folder / (prefix + "%0{width}d" % i + suffix)``."""

    folder: Path
    prefix: str
    width: int
    suffix: str

    def name(self, i: int) -> str:
        return f"{self.prefix}{i:0{self.width}d}{self.suffix}"

    def braces(self, count: int) -> str:
        """The brace pattern of shards ``0 .. count - 1`` (what phase5's ``--data-dir`` takes)."""
        last = f"{count - 1:0{self.width}d}"
        return str(self.folder / f"{self.prefix}{{{0:0{self.width}d}..{last}}}{self.suffix}")

    def existing(self) -> list[str]:
        """Names in ``folder`` of this pattern (any number of digits), sorted."""
        match = re.compile(re.escape(self.prefix) + r"[0-9]+" + re.escape(self.suffix))
        try:
            return sorted(n for n in os.listdir(self.folder) if match.fullmatch(n))
        except FileNotFoundError:
            return []
        except OSError as err:
            raise UsageError(f"OUT_PATTERN: cannot list {self.folder} ({err.strerror or err})") from None


def parse_pattern(text: str) -> Pattern:
    """``OUT_PATTERN``: one zero-padded number (``%06d``) in the file name, which ends with ``.tar``."""
    path = check_path(text, "OUT_PATTERN", PathKind.FILE)
    numbers = PATTERN.findall(path.name)
    if "%" in PATTERN.sub("", path.name) or len(numbers) != 1:
        raise UsageError(
            f"OUT_PATTERN {text}: the file name needs one zero-padded shard number such as %06d "
            "(so the shards sort by name), and no other %"
        )
    if "%" in str(path.parent):
        raise UsageError(f"OUT_PATTERN {text}: a % only in the file name (%06d), not in its folder")
    if not path.name.endswith(".tar"):
        raise UsageError(f"OUT_PATTERN {text}: shards are plain tar files: the name ends with .tar")
    if any(c in text for c in "{}*?[]"):
        raise UsageError(f"OUT_PATTERN {text}: no {{}}*?[] in it (--data-dir would read them as a pattern)")
    prefix, suffix = PATTERN.split(path.name)[::2]
    pattern = Pattern(path.parent, prefix, int(numbers[0]), suffix)
    check_path(pattern.folder, "OUT_PATTERN", PathKind.FOLDER)
    return pattern


# --- the plan: which samples go in which shard ------------------------------------------------


def member_bytes(size: int) -> int:
    """What a member of ``size`` bytes takes in a tar file: ``512 + 512 * ceil(size / 512)``."""
    return BLOCK + -(-size // BLOCK) * BLOCK


def shard_bytes(members: int) -> int:
    """A tar file's size from its members' bytes: two zero blocks, then padding to a 10,240-byte record."""
    return -(-(members + 2 * BLOCK) // RECORD) * RECORD


@dataclass(frozen=True)
class Limits:
    """At most ``count`` samples and ``size`` bytes a shard (0: no limit of that kind)."""

    count: int
    size: int

    def fits(self, samples: int, members: int, sample: int) -> bool:
        """Whether a shard of ``samples`` samples and ``members`` bytes takes one more of ``sample`` bytes."""
        if samples == 0:
            return True
        if self.count and samples + 1 > self.count:
            return False
        return not self.size or shard_bytes(members + sample) <= self.size


def plan_shards(costs: Sequence[int], limits: Limits) -> list[int]:
    """Samples per shard, in order, for samples of ``costs`` bytes (their members' bytes)."""
    counts: list[int] = []
    samples = members = 0
    for cost in costs:
        if not limits.fits(samples, members, cost):
            counts.append(samples)
            samples = members = 0
        samples, members = samples + 1, members + cost
    return [*counts, samples] if samples else counts


def key_width(n: int) -> int:
    """Digits of the sample keys of ``n`` samples: at least 6, enough for ``n - 1``."""
    return max(6, len(str(max(n - 1, 0))))


# --- one sample's tar members --------------------------------------------------------------------


def header(name: str, size: int) -> tarfile.TarInfo:
    """A ustar header with nothing of the machine or the moment in it."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o444
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


def members(key: str, suffix: str, data: bytes, label: int | None) -> list[tuple[str, bytes]]:
    """Sample ``key``'s members, sorted by extension: ``KEY.EXT`` (the image) and ``KEY.cls`` when labelled."""
    found = [(f"{key}.{suffix}", data)]
    if label is not None:
        found.append((f"{key}.cls", str(label).encode("ascii")))
    return sorted(found)
