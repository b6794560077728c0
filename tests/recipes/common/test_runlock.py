"""run.lock says in plain words what a leftover file with a dead pid means."""

from __future__ import annotations

import os
from pathlib import Path

from lrsched.recipes.common.runlock import LOCK_FILE, acquire_lock, check_not_in_use, release_lock


def test_a_released_lock_file_says_it_is_a_leftover(tmp_path: Path) -> None:
    release_lock(acquire_lock(tmp_path, "train.py"))
    pid_line, note = (tmp_path / LOCK_FILE).read_text().splitlines()
    assert pid_line.split()[:2] == [str(os.getpid()), "train.py"]
    assert "once it has ended" in note and "nothing is locked" in note and "leftover" in note
    check_not_in_use(tmp_path)  # the leftover file locks nothing
    release_lock(acquire_lock(tmp_path, "train.py"))
