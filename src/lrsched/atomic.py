"""Atomic file writes: the one way run files, checkpoints and figures are written (library and programs alike).

``atomic_write(path)`` opens a temporary file ``.<name>.<random>.tmp`` beside ``path``, and when
the block ends without an error moves it over ``path`` (``os.replace``): a reader, a kill or a
full disk sees the old file or the new one, never half of one. On any error (a signal's
exception included) the temporary file is removed and ``path`` is as it was.

``durable=True`` also fsyncs the file before the rename and the folder after it, so the new
file survives a power cut (checkpoints, ``run.json``, the data index).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def fsync_dir(directory: Path) -> None:
    """Make a rename or a new file in ``directory`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike[str],
    mode: str = "w",
    *,
    durable: bool = False,
    permissions: int = 0o666,
    **open_args: Any,
) -> Iterator[IO[Any]]:
    """A file object to write ``path``'s new contents to (``mode``: ``"w"``, ``"wb"`` or ``"w+b"``).

    The file is created with ``permissions`` less the umask (as ``open`` would); ``open_args``
    (``encoding``, ``newline``, ``errors``) go to ``open``.
    """
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), permissions)
    try:
        with os.fdopen(fd, mode, **open_args) as f:
            yield f
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(target.parent)
