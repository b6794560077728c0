"""Paths typed on a command line, checked before anything uses them: one line naming the flag.

``check_path(value, flag, kind)`` refuses, as a ``UsageError`` (exit status 2), what no later
``open`` or ``stat`` could use, instead of the traceback those would raise:

- an empty path; a name (one component) longer than ``NAME_MAX`` (255) bytes; a whole path
  longer than ``PATH_MAX - 1`` (4095) bytes;
- a folder on the way that cannot be entered (no search permission: the line names it);
- a file on the way where a folder must be (``a/file.csv/b``), a symbolic link loop;
- for ``FOLDER``: something that exists and is not a folder; for ``FILE``: a folder;
- an existing file or folder the program would read but cannot (no read permission).

What does not exist yet is not refused here (an output folder is created; a missing input is
said by the program, which knows what it wanted). Root passes every permission check, so the
permission rules are tested as an unprivileged user.
"""

from __future__ import annotations

import enum
import errno
import os
import stat
from pathlib import Path

from lrsched.errors import UsageError

NAME_MAX = 255
"""Bytes in one file or folder name (Linux, macOS, Windows file systems alike)."""
PATH_MAX = 4096
"""Bytes in a whole path, its terminating zero included (Linux)."""


class PathKind(enum.Enum):
    """What a flag's path must be when it exists."""

    FILE = "a file"
    FOLDER = "a folder"
    EITHER = "a file or a folder"
    """Either kind, when readable (a flag that takes a folder or a file, the program says which it wants)."""


def check_path(value: str | os.PathLike[str], flag: str, kind: PathKind) -> Path:
    """``value`` as a ``Path`` once usable as ``kind`` (see the module docstring); ``UsageError`` otherwise."""
    path = Path(value)
    where = f"{flag} {value}"
    if str(value) == "":
        raise UsageError(f"{flag}: an empty path")
    _check_lengths(path, where)
    try:
        st = os.stat(path)
    except OSError as err:
        _check_missing(path, where, err)
        return path
    _check_kind(path, st, where, kind)
    return path


def _check_lengths(path: Path, where: str) -> None:
    """No name over ``NAME_MAX`` bytes, no path over ``PATH_MAX - 1``."""
    for part in path.parts:
        size = len(os.fsencode(part))
        if size > NAME_MAX and part != path.anchor:
            shown = part[:24] + "..."
            raise UsageError(f"{_short(where)}: the name {shown} is {size} bytes; a name may have at most {NAME_MAX}")
    size = len(os.fsencode(str(path)))
    if size >= PATH_MAX:
        raise UsageError(f"{_short(where)}: the path is {size} bytes; a path may have at most {PATH_MAX - 1}")


def _short(text: str, keep: int = 200) -> str:
    """``text`` cut to ``keep`` characters and ``...`` when longer: an error line stays readable."""
    return text if len(text) <= keep else text[:keep] + "..."


def _check_missing(path: Path, where: str, err: OSError) -> None:
    """``os.stat`` failed: fine when the path just does not exist yet under a usable folder."""
    if err.errno == errno.ENOENT:
        return
    if err.errno == errno.EACCES:
        raise UsageError(f"{where}: cannot enter the folder {_closed_folder(path)} (permission denied)")
    if err.errno == errno.ENOTDIR:
        raise UsageError(f"{where}: {_file_on_the_way(path)} is a file, not a folder")
    if err.errno == errno.ELOOP:
        raise UsageError(f"{where}: a symbolic link loop")
    if err.errno == errno.ENAMETOOLONG:
        raise UsageError(f"{where}: too long once its links are followed (ENAMETOOLONG)")
    raise UsageError(f"{where}: unusable ({os.strerror(err.errno or 0)})")


def _check_kind(path: Path, st: os.stat_result, where: str, kind: PathKind) -> None:
    """An existing path: the kind the flag needs, and readable."""
    is_dir = stat.S_ISDIR(st.st_mode)
    if kind is PathKind.FOLDER and not is_dir:
        raise UsageError(f"{where}: is a file, not a folder")
    if kind is PathKind.FILE and is_dir:
        raise UsageError(f"{where}: is a folder, not a file")
    needed = os.R_OK | os.X_OK if is_dir else os.R_OK
    if not os.access(path, needed):
        raise UsageError(f"{where}: cannot read {'the folder' if is_dir else 'the file'} (permission denied)")


def _ancestors(path: Path) -> list[Path]:
    """The folders on the way to ``path``, from the first: ``a``, ``a/b`` for ``a/b/c``."""
    absolute = path if path.is_absolute() else Path.cwd() / path
    return list(reversed(absolute.parents))


def _closed_folder(path: Path) -> Path:
    """The first folder on the way that cannot be entered (the path itself when none is found)."""
    for folder in _ancestors(path):
        if not os.access(folder, os.X_OK):
            return folder
    return path


def _file_on_the_way(path: Path) -> Path:
    """The first component on the way that exists and is not a folder."""
    for folder in [*_ancestors(path)[1:], path]:
        try:
            if not stat.S_ISDIR(os.stat(folder).st_mode):
                return folder
        except OSError:
            continue
    return path
