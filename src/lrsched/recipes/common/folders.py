"""Output folder paths: usable (a folder, or one that can be created), writable in fact, and printable
whatever bytes their names hold."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
import sys
from pathlib import Path

from lrsched.recipes.common.runlock import RunDirError


def printable(text: str) -> str:
    """``text`` (a path or a folder name) as valid Unicode for a figure's title.

    A name that is not UTF-8 reaches Python as surrogate escapes (``os.fsdecode``), which text
    renderers refuse: they become U+FFFD. ``$`` is escaped, so that matplotlib never reads a name
    as mathematics."""
    clean = "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in text)
    return clean.replace("$", r"\$")


def print_any_path() -> None:
    """Let stdout print any path: a folder name that is not UTF-8 goes out as its own bytes.

    Under a UTF-8 locale Python's stdout is strict, and printing such a name (held as surrogate
    escapes) would raise; stderr already escapes what it cannot encode. A program calls this once
    at its start."""
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure is not None and getattr(sys.stdout, "errors", None) == "strict":
        reconfigure(errors="surrogateescape")


def check_output_path(path: Path, output_flag: str = "--output-dir") -> None:
    """The folder exists as a folder, or can be created: no symlink loop, no file in the way, writable."""
    probe = path
    while True:
        try:
            st = os.stat(probe)
        except OSError as err:
            if err.errno == errno.ENOENT and probe.parent != probe:
                probe = probe.parent
                continue
            if err.errno == errno.ELOOP:
                raise RunDirError(f"{output_flag} {path}: a symbolic link loop ({probe})") from None
            if err.errno == errno.ENOTDIR:
                raise RunDirError(f"{output_flag} {path}: a path under a file, not a folder") from None
            raise RunDirError(f"{output_flag} {path}: unusable ({os.strerror(err.errno or 0)})") from None
        break
    if not stat.S_ISDIR(st.st_mode):
        where = "exists and is not a directory" if probe == path else f"{probe} is a file, not a folder"
        raise RunDirError(f"{output_flag} {path}: {where}")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise RunDirError(f"{output_flag} {path}: {probe} is not writable")
    failure = write_probe(probe)
    if failure is not None:
        reason = os.strerror(failure.errno or 0) if failure.errno else type(failure).__name__
        raise RunDirError(f"{output_flag} {path}: cannot write in {probe} ({reason}); choose another folder")


def write_probe(folder: Path) -> OSError | None:
    """Whether a file can be created in ``folder``: None when it can, else the error.

    ``os.access`` trusts the mode bits, which root and special file systems (``/proc``, ``/sys``,
    read-only mounts) do not honour, so a real file is tried: an unnamed one (``O_TMPFILE``, never
    visible) where the file system supports it, else a hidden one removed at once.
    """
    try:
        os.close(os.open(folder, os.O_WRONLY | getattr(os, "O_TMPFILE", 0) | os.O_CLOEXEC, 0o600))
        if hasattr(os, "O_TMPFILE"):
            return None
    except OSError as err:
        if err.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            return err
    name = folder / f".lrsched-write-probe-{secrets.token_hex(4)}"
    try:
        os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    except OSError as err:
        return err
    with contextlib.suppress(OSError):
        name.unlink()
    return None
