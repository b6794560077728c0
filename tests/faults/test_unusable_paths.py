"""Every path flag of every command refuses an unusable path in one line, exit status 2 (issue 30):
a name over 255 bytes, a folder that cannot be entered (as an unprivileged user: root enters every
folder), a file where a folder must be. Nothing is written, no traceback.

The permission cases run in a forked child that drops to ``nobody`` (``os.setuid``) with the
programs already imported: this machine's Python lives under ``/root``, which ``nobody`` cannot
enter, so a fresh non-root interpreter could not start.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from fault_helpers import call_main

from lrsched.errors import UsageError
from lrsched.paths import NAME_MAX, PathKind, check_path

LONG = "n" * (NAME_MAX + 1)
NOBODY = 65534
PHASE5, TRAIN, PLOT = "phase5_big_run.py", "train.py", "lrsched"

FLAGS: list[tuple[str, str, str, str]] = [
    # program, flag, kind (folder/file/output), file name suffix
    (PHASE5, "--data-dir", "folder", ""),
    (PHASE5, "--output-dir", "folder", ""),
    (PHASE5, "--resume", "file", ".pt"),
    (TRAIN, "--train_file", "file", ".csv"),
    (TRAIN, "--validation_file", "file", ".csv"),
    (TRAIN, "--test_file", "file", ".csv"),
    (TRAIN, "--model", "folder", ""),
    (TRAIN, "--output_dir", "folder", ""),
    (TRAIN, "--resume_from_checkpoint", "file", ".pt"),
    (PLOT, "--output", "file", ".png"),
]


def command(program: str, flag: str, value: Path, out: Path) -> tuple[str, list[str]]:
    """The command line giving ``value`` to ``flag`` (the other flags valid, the output in ``out``)."""
    if program == PLOT:
        return "lrsched", ["plot", "--max-steps", "100", "-o", str(value)]
    argv = [flag, str(value)]
    if flag == "--validation_file" or flag == "--test_file":
        argv = ["--train_file", str(out.parent / "good.csv"), *argv]
    output = "--output-dir" if program == PHASE5 else "--output_dir"
    if flag != output:
        argv += [output, str(out)]
    return program, argv


def refuse(program: str, argv: list[str], flag: str, says: str) -> None:
    status, stdout, stderr = call_main(program, argv)
    assert status == 2, (status, stderr[-2000:])
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{program}: error: {flag} "), stderr[-2000:]
    assert says in lines[0] and "Traceback" not in stderr and stdout == ""


@pytest.fixture
def place(tmp_path: Path) -> Path:
    (tmp_path / "good.csv").write_text("text,label\n" + "".join(f"t{i},{i % 2}\n" for i in range(20)))
    (tmp_path / "afile").write_text("a file\n")
    return tmp_path


@pytest.mark.parametrize(("program", "flag", "kind", "suffix"), FLAGS)
def test_a_name_over_255_bytes_is_one_line_exit_2(place: Path, program: str, flag: str, kind: str, suffix: str) -> None:
    out = place / "out"
    name, argv = command(program, flag, place / f"{LONG}{suffix}", out)
    refuse(name, argv, flag, f"is {NAME_MAX + 1 + len(suffix)} bytes; a name may have at most {NAME_MAX}")
    assert sorted(p.name for p in place.iterdir()) == ["afile", "good.csv"]


@pytest.mark.parametrize(("program", "flag", "kind", "suffix"), FLAGS)
def test_a_path_through_a_file_is_one_line_exit_2(place: Path, program: str, flag: str, kind: str, suffix: str) -> None:
    name, argv = command(program, flag, place / "afile" / f"x{suffix}", place / "out")
    refuse(name, argv, flag, f"{place / 'afile'} is a file, not a folder")


@pytest.mark.parametrize(("program", "flag", "kind", "suffix"), [f for f in FLAGS if f[2] == "folder"])
def test_a_file_where_a_folder_is_needed_is_one_line_exit_2(
    place: Path, program: str, flag: str, kind: str, suffix: str
) -> None:
    name, argv = command(program, flag, place / "afile", place / "out")
    refuse(name, argv, flag, "is a file, not a folder")


def as_nobody(check: object, *args: object) -> dict[str, object]:
    """``check(*args)`` in a forked child running as ``nobody``; what it returned (a JSON dict)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop root, run the check, report, leave without cleanup
        os.close(read_end)
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            result = check(*args)  # type: ignore[operator]
        except BaseException as err:
            result = {"error": f"{type(err).__name__}: {err}"}
        os.write(write_end, json.dumps(result).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    return json.loads(data)  # type: ignore[no-any-return]


def run_program(program: str, argv: list[str]) -> dict[str, object]:
    status, stdout, stderr = call_main(program, argv)
    return {"status": status, "stdout": stdout, "stderr": stderr}


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="drops to nobody with os.setuid: needs root to start")


@needs_root
@pytest.mark.parametrize(("program", "flag", "kind", "suffix"), FLAGS)
def test_a_folder_the_user_cannot_enter_is_one_line_exit_2(
    tmp_path: Path, program: str, flag: str, kind: str, suffix: str
) -> None:
    tmp_path.chmod(0o755)
    for parent in tmp_path.parents:  # pytest's base folder is private to root: let nobody through
        if parent == Path("/tmp"):
            break
        parent.chmod(parent.stat().st_mode | 0o111)
    (tmp_path / "good.csv").write_text("text,label\n" + "".join(f"t{i},{i % 2}\n" for i in range(20)))
    (tmp_path / "good.csv").chmod(0o644)
    closed = tmp_path / "closed"
    (closed / "inner").mkdir(parents=True)
    closed.chmod(0o700)  # root's alone
    writable = tmp_path / "free"
    writable.mkdir(mode=0o777)
    writable.chmod(0o777)
    name, argv = command(program, flag, closed / "inner" / f"x{suffix}", writable / "out")
    result = as_nobody(run_program, name, argv)
    assert "error" not in result, result
    stderr = str(result["stderr"])
    assert result["status"] == 2 and result["stdout"] == "", stderr[-2000:]
    assert stderr.strip().splitlines() == [
        f"{name}: error: {flag} {closed / 'inner' / f'x{suffix}'}: cannot enter the folder {closed} (permission denied)"
    ]
    assert not (writable / "out").exists()


@needs_root
def test_an_unreadable_file_and_folder_are_refused_as_nobody(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    for parent in tmp_path.parents:
        if parent == Path("/tmp"):
            break
        parent.chmod(parent.stat().st_mode | 0o111)
    secret = tmp_path / "secret.csv"
    secret.write_text("text,label\n")
    secret.chmod(0o600)
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    private.chmod(0o700)

    def both() -> dict[str, object]:
        said = {}
        for path, kind in ((secret, PathKind.FILE), (private, PathKind.FOLDER)):
            try:
                check_path(path, "--flag", kind)
            except UsageError as err:
                said[kind.name] = str(err)
        return said

    assert as_nobody(both) == {
        "FILE": f"--flag {secret}: cannot read the file (permission denied)",
        "FOLDER": f"--flag {private}: cannot read the folder (permission denied)",
    }


def test_the_check_itself(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    assert check_path(tmp_path / "new" / "deeper", "--out", PathKind.FOLDER) == tmp_path / "new" / "deeper"
    assert check_path(str(tmp_path / "f"), "--in", PathKind.FILE) == tmp_path / "f"
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    cases = {
        "": "--x: an empty path",
        str(tmp_path / "f"): "is a file, not a folder",
        str(loop / "a"): "a symbolic link loop",
        "/" + "/".join(["d" * 200] * 21): "the path is 4221 bytes; a path may have at most 4095",
    }
    for value, says in cases.items():
        with pytest.raises(UsageError) as err:
            check_path(value, "--x", PathKind.FOLDER)
        assert says in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(UsageError, match="is a folder, not a file"):
        check_path(tmp_path, "--in", PathKind.FILE)
