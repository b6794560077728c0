"""recipes/common/rundir.py: a folder holds one run (run.json), locked by one process at a time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import child_env

from lrsched.recipes.common import checkpoint as ckpt
from lrsched.recipes.common.rundir import (
    RUN_FILE,
    Asked,
    Decision,
    Folder,
    OnDisk,
    RunInfo,
    check_run_dir,
    claim_run_dir,
    decide,
    read_run,
)
from lrsched.recipes.common.runlock import LOCK_FILE, RunDirError, acquire_lock, release_lock

FILES = ("log.csv", "checkpoints", "plan.json")
PROG = Folder("prog", FILES, "--out", "--resume", "--overwrite")


def tree(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def make_run(out: Path, steps: tuple[int, ...] = (2,), program: str = "prog") -> str:
    """A run in ``out`` with checkpoints at ``steps``; returns its id."""
    with claim_run_dir(out, Folder(program, FILES, "--out", "--resume", "--overwrite")) as rd:
        (out / "log.csv").write_text("step\n0\n1\n")
        for step in steps:
            ckpt.save_checkpoint({"step": step}, ckpt.step_path(out / "checkpoints", step), program, run_id=rd.run_id)
        return rd.run_id


def test_a_new_run_writes_its_id_and_holds_the_lock(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b"
    with claim_run_dir(out, PROG) as rd:
        info = json.loads((out / RUN_FILE).read_text())
        assert info["id"] == rd.run_id and info["program"] == "prog" and rd.new
        assert (out / LOCK_FILE).read_text().split()[0] == str(os.getpid())
        with pytest.raises(RunDirError) as err:  # another open file description: flock refuses it too
            acquire_lock(out, "prog", "--out")
        assert f"in use by another process (pid {os.getpid()})" in str(err.value)
    release_lock(acquire_lock(out, "prog"))  # released at the end of the block


def test_a_second_process_is_refused_at_once_naming_the_holder(tmp_path: Path) -> None:
    out = tmp_path / "run"
    code = (
        "import sys; from pathlib import Path\n"
        "from lrsched.recipes.common.rundir import claim_run_dir, Folder, RunDirError\n"
        "try:\n"
        "    with claim_run_dir(Path(sys.argv[1]), Folder('prog')): pass\n"
        "except RunDirError as e:\n"
        "    print(e); sys.exit(2)\n"
    )
    with claim_run_dir(out, PROG):
        before = tree(out)
        proc = subprocess.run(
            [sys.executable, "-c", code, str(out)], capture_output=True, text=True, env=child_env(), timeout=60
        )
        assert proc.returncode == 2, proc.stderr
        assert proc.stdout.strip().splitlines() == [
            f"--output-dir {out}: in use by another process (pid {os.getpid()}); "
            "wait for it to end or stop it, or choose another folder"
        ]
        assert tree(out) == before


def test_resuming_another_runs_checkpoint_into_a_run_folder_is_refused_naming_both(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    id_a, id_b = make_run(a), make_run(b)
    path = ckpt.step_path(a / "checkpoints", 2)
    state = ckpt.load_checkpoint(path, "prog")
    before = tree(b)
    with pytest.raises(RunDirError) as err, claim_run_dir(b, PROG, state, resume_path=path):
        pass
    line = str(err.value)
    assert "\n" not in line and id_a in line and id_b in line and str(b) in line and str(path) in line
    assert tree(b) == before
    with claim_run_dir(b, PROG, state, resume_path=path, overwrite=True) as rd:  # explicit replace
        assert rd.run_id == id_a and not (b / "log.csv").exists()


def test_resuming_into_a_new_folder_continues_the_same_run(tmp_path: Path) -> None:
    a = tmp_path / "a"
    id_a = make_run(a)
    path = ckpt.step_path(a / "checkpoints", 2)
    with claim_run_dir(tmp_path / "c", PROG, ckpt.load_checkpoint(path, "prog"), resume_path=path) as rd:
        assert rd.run_id == id_a
    info = read_run(tmp_path / "c")
    assert info is not None and info.resumed_from == str(path)
    with claim_run_dir(a, PROG, ckpt.load_checkpoint(path, "prog"), resume_path=path) as rd:
        assert rd.run_id == id_a and not rd.new


def test_a_fresh_start_over_a_run_with_checkpoints_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "run"
    run_id = make_run(out)
    with pytest.raises(RunDirError, match=f"holds run {run_id} .* pass --resume latest to continue it"):
        check_run_dir(out, PROG)


def test_a_run_that_never_saved_restarts_cleanly(tmp_path: Path) -> None:
    out = tmp_path / "run"
    old = make_run(out, steps=())
    with claim_run_dir(out, PROG) as rd:
        assert rd.run_id != old and rd.cleared and not (out / "log.csv").exists()


def test_files_of_an_older_run_without_run_json_are_refused_unless_overwritten(tmp_path: Path) -> None:
    out = tmp_path / "old"
    out.mkdir()
    (out / "log.csv").write_text("old\n")
    with pytest.raises(RunDirError, match=r"holds files of a run without run.json \(log.csv"):
        check_run_dir(out, PROG)
    (out / "notes.txt").write_text("mine\n")
    with claim_run_dir(out, PROG, overwrite=True):
        pass
    assert sorted(p.name for p in out.iterdir()) == sorted([LOCK_FILE, "notes.txt", RUN_FILE])


def test_a_run_of_another_program_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "run"
    make_run(out, program="other")
    with pytest.raises(RunDirError, match="not a prog run"):
        check_run_dir(out, PROG, overwrite=True)


def test_unusable_paths_are_one_line_and_create_nothing(tmp_path: Path) -> None:
    (tmp_path / "loop1").symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(tmp_path / "loop1")
    (tmp_path / "file").write_text("x")
    before = tree(tmp_path)
    cases = [
        (tmp_path / "loop1" / "run", "a symbolic link loop"),
        (tmp_path / "file" / "run", "a path under a file"),
        (tmp_path / "file", "exists and is not a directory"),
    ]
    for path, message in cases:
        with pytest.raises(RunDirError, match=message), claim_run_dir(path, PROG):
            pass
    assert tree(tmp_path) == before


def test_a_live_runs_folder_is_reported_in_use_before_anything_about_its_contents(tmp_path: Path) -> None:
    out = tmp_path / "live"
    make_run(out)
    with claim_run_dir(out, PROG, ckpt.load_checkpoint(ckpt.step_path(out / "checkpoints", 2), "prog")):
        for resume in (None, {"run_id": "someone-else"}):
            with pytest.raises(RunDirError, match=rf"in use by another process \(pid {os.getpid()}\)"):
                check_run_dir(out, PROG, resume)


def test_a_forked_child_does_not_keep_the_lock_after_the_parent_releases_it(tmp_path: Path) -> None:
    """DataLoader workers are forked: a killed parent's folder must not stay locked by them."""
    import os
    import signal as sig

    from lrsched.recipes.common.runlock import check_not_in_use

    fd = acquire_lock(tmp_path, "phase5_big_run")
    ready, started = os.pipe()
    child = os.fork()
    if child == 0:  # the child lives on, as a worker would after its parent died
        import time

        os.write(started, b"x")  # the fork hooks have run by now
        time.sleep(30)
        os._exit(0)
    try:
        assert os.read(ready, 1) == b"x"
        release_lock(fd)
        check_not_in_use(tmp_path)  # free, though the child still runs
    finally:
        os.kill(child, sig.SIGKILL)
        os.waitpid(child, 0)
        os.close(ready)
        os.close(started)


# --- the decision as a table: a pure function of the folder and the request -----------------------

X = RunInfo("x", "prog", "2026-01-01T00:00:00+00:00")
NOTHING, EARLY_CRASH, RUN_X = OnDisk(None, (), False), OnDisk(X, ("log.csv",), False), OnDisk(X, ("log.csv",), True)
OLDER = OnDisk(None, ("log.csv",), True)
OTHER_PROGRAM = OnDisk(RunInfo("y", "other", "2026-01-01T00:00:00+00:00"), (), True)
OF_X, OF_Z = {"run_id": "x"}, {"run_id": "z"}


@pytest.mark.parametrize(
    ("disk", "asked", "expected"),
    [
        (NOTHING, Asked(), Decision(None, clear=False, existing=None)),
        (EARLY_CRASH, Asked(), Decision(None, clear=True, existing=X)),
        (
            RUN_X,
            Asked(),
            "holds run x (prog, created 2026-01-01T00:00:00+00:00) with checkpoints; pass --resume latest",
        ),
        (RUN_X, Asked(overwrite=True), Decision(None, clear=True, existing=X)),
        (OLDER, Asked(), "holds files of a run without run.json (log.csv; an older lrsched?)"),
        (OLDER, Asked(overwrite=True), Decision(None, clear=True, existing=None)),
        (OTHER_PROGRAM, Asked(), "holds a run y (other, created 2026-01-01T00:00:00+00:00), not a prog run"),
        (OTHER_PROGRAM, Asked(OF_X, overwrite=True), "not a prog run"),
        (NOTHING, Asked(OF_Z), Decision("z", clear=False, existing=None)),
        (RUN_X, Asked(OF_X), Decision("x", clear=False, existing=X)),
        (RUN_X, Asked(OF_Z), "a checkpoint of run z, but --out F holds another, run x"),
        (RUN_X, Asked(OF_Z, overwrite=True), Decision("z", clear=True, existing=X)),
        (RUN_X, Asked({"run_id": None}, own_checkpoint=True), Decision("x", clear=False, existing=X)),
        (OLDER, Asked({"run_id": None}, own_checkpoint=True), Decision(None, clear=False, existing=None)),
        (OLDER, Asked(OF_Z), "a checkpoint of run z, but --out F holds files of another run (log.csv)"),
        (OLDER, Asked(OF_Z, overwrite=True), Decision("z", clear=True, existing=None)),
    ],
)
def test_what_a_command_may_do_with_a_folder(disk: OnDisk, asked: Asked, expected: Decision | str) -> None:
    if isinstance(expected, str):
        with pytest.raises(RunDirError) as err:
            decide("--out F", disk, PROG, asked)
        assert expected in str(err.value) and len(str(err.value).splitlines()) == 1
    else:
        assert decide("--out F", disk, PROG, asked) == expected
