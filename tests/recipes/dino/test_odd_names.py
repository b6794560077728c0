"""phase5_big_run.py end to end on a folder whose file names hold TABs, newlines, bytes that are not
UTF-8 and leading dashes, with a symbolic link to ``/`` in it: the run, ``--resume latest`` and the
refusal of an index that does not parse."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import DINO_SMALL, read_rows

from lrsched.recipes.common.checkpoint import latest_checkpoint, load_checkpoint
from lrsched.recipes.dino.files import read_index
from lrsched.recipes.dino.flags import PROGRAM_ID
from lrsched.recipes.dino.main import main

from .dino_helpers import make_image_folder

ODD = ("tab\tin.jpg", "new\nline.jpg", os.fsdecode(b"not-utf8-\xfe.jpg"), "-leading-dash.jpg", '"quote.jpg')


def odd_folder(root: Path) -> Path:
    """24 JPEGs in 2 class folders, the first five renamed to ``ODD`` names, plus a link to ``/``."""
    make_image_folder(root, 24, classes=2, sizes=(40, 60))
    for i, name in enumerate(ODD):
        (root / f"class{i % 2}" / f"img{i:07d}.jpg").rename(root / f"class{i % 2}" / name)
    os.symlink("/", root / "class0" / "everything")
    return root


def run(out: Path, *extra: str, stop_at: int | None = None) -> int:
    """phase5 on the CPU without workers; ``stop_at``: stop as if SIGTERM came after that step."""
    with pytest.MonkeyPatch.context() as env:
        if stop_at is not None:
            env.setenv("LRSCHED_STOP_AT_STEP", str(stop_at))
        return main([*DINO_SMALL, "--output-dir", str(out), "--workers", "0", *extra])


def test_odd_file_names_train_resume_and_keep_the_index(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    images = odd_folder(tmp_path / "images")
    flags = ["--data-dir", str(images), "--max-steps", "4", "--warmup-steps", "1", "--save-every", "0"]
    out = tmp_path / "run"
    assert run(out, *flags, stop_at=2) == 0
    assert "did not follow 1 symbolic links that lead outside the folder" in capsys.readouterr().err
    index = (out / "data_index.tsv").read_bytes()
    assert index.count(b"\n") == 1 + 24
    fingerprint = read_index(out / "data_index.tsv")
    state = load_checkpoint(latest_checkpoint(out / "checkpoints") or Path("missing"), PROGRAM_ID)
    assert fingerprint == state["data"]["fingerprint"] and fingerprint["files"] == [24]

    assert run(out, *flags, "--resume", "latest", stop_at=3) == 0
    assert (out / "data_index.tsv").read_bytes() == index  # the fingerprint did not change: not rewritten

    log_before = (out / "log.csv").read_bytes()
    (out / "data_index.tsv").write_bytes(index.replace(b'"class0/tab\\tin.jpg"', b"class0/tab\tin.jpg"))
    capsys.readouterr()
    assert run(out, *flags, "--resume", "latest") == 2
    warning, err = capsys.readouterr().err.strip().splitlines()  # the walk's warning, then the refusal
    assert warning.startswith("warning: --data-dir") and "line 13: a path with a TAB" in err
    assert err.startswith(f"phase5_big_run.py: error: {out / 'data_index.tsv'}: not a data index this program can read")
    assert (out / "log.csv").read_bytes() == log_before

    (out / "data_index.tsv").unlink()  # as the message says: moved aside, it is written again
    assert run(out, *flags, "--resume", "latest") == 0
    assert (out / "data_index.tsv").read_bytes() == index and len(read_rows(out / "log.csv")) == 4
