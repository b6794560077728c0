"""Both programs and their output folders (issue 20): a folder that cannot be written is refused in one
line before anything is written, and any name the file system accepts (not UTF-8 too) works end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import DINO_ENTRY, DINO_SMALL, TRAIN_ENTRY, child_env, read_rows
from PIL import Image

from lrsched.recipes.common.folders import printable, write_probe
from lrsched.recipes.common.rundir import Folder, check_run_dir
from lrsched.recipes.common.runlock import RunDirError
from lrsched.recipes.dino.main import main as phase5
from lrsched.recipes.finetune.main import main as train

UNWRITABLE = [p for p in ("/proc/self/fd", "/sys/kernel") if os.path.isdir(p)]
"""Folders that exist and cannot take a file, even for root (mode bits say otherwise to root)."""
NOT_UTF8 = os.fsdecode(b"run-\xff\xfe name")
"""A folder name that is valid bytes on Linux but not UTF-8 (a str with surrogate escapes)."""
TRAIN_TINY = ["--max_eval_samples", "8", "--per_device_eval_batch_size", "8", "--disable_tqdm", "--device", "cpu"]
TRAIN_ONE_EPOCH = ["--num_epochs", "1", "--max_train_samples", "8", "--per_device_train_batch_size", "4", *TRAIN_TINY]
"""2 updates, validation and a checkpoint at step 2, a test of 8 tweets."""


def image_folder(root: Path, n: int = 24) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / f"class{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")
    return root


def phase5_flags(data: Path, out: Path | str, *extra: str) -> list[str]:
    flags = [*DINO_SMALL, "--batch-size", "8", "--workers", "0", "--data-dir", str(data), "--output-dir", str(out)]
    return [*flags, "--max-steps", "2", "--warmup-steps", "1", *extra]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return image_folder(tmp_path_factory.mktemp("images"))


# ---------------------------------------------------------------- unwritable folders


@pytest.mark.skipif(not UNWRITABLE, reason="no /proc or /sys here")
@pytest.mark.parametrize("folder", UNWRITABLE)
def test_an_existing_folder_that_takes_no_file_is_refused_by_the_check(folder: str) -> None:
    assert write_probe(Path(folder)) is not None
    with pytest.raises(RunDirError, match=rf"^--out {folder}: cannot write in {folder} \(.+\); choose another folder$"):
        check_run_dir(Path(folder), Folder("prog", output_flag="--out"))
    with pytest.raises(RunDirError, match=rf"^--out {folder}/sub: cannot write in {folder} "):
        check_run_dir(Path(folder) / "sub", Folder("prog", output_flag="--out"))


def test_the_write_probe_leaves_nothing_behind(tmp_path: Path) -> None:
    assert write_probe(tmp_path) is None and list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes in a folder of mode 555")
def test_a_read_only_folder_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o555)
    with pytest.raises(RunDirError, match="not writable"):
        check_run_dir(folder, Folder("prog", output_flag="--out"))


@pytest.mark.skipif(not UNWRITABLE, reason="no /proc or /sys here")
@pytest.mark.parametrize("folder", UNWRITABLE)
def test_train_py_refuses_an_unwritable_output_dir_in_one_line(folder: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert train([*TRAIN_ONE_EPOCH, "--output_dir", folder]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"train.py: error: --output_dir {folder}: cannot write in {folder} (")


@pytest.mark.skipif(not UNWRITABLE, reason="no /proc or /sys here")
@pytest.mark.parametrize("folder", UNWRITABLE)
def test_phase5_refuses_an_unwritable_output_dir_in_one_line(
    folder: str, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert phase5(phase5_flags(data, folder)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"phase5_big_run.py: error: --output-dir {folder}: cannot write in {folder} (")


# ---------------------------------------------------------------- names that are not UTF-8


def test_printable_makes_any_name_a_title() -> None:
    assert printable(NOT_UTF8) == "run-\ufffd\ufffd name" and printable("a$b$c") == r"a\$b\$c"


def run_bytes(entry: Path, args: list[str], **env: str) -> subprocess.CompletedProcess[bytes]:
    """A program as a user starts it from a shell: its arguments as bytes (a name need not be UTF-8)."""
    cmd = [sys.executable, str(entry), *args]
    return subprocess.run(
        [os.fsencode(c) for c in cmd], capture_output=True, env=child_env(**env), timeout=600, check=False
    )


def test_phase5_runs_resumes_and_draws_in_a_folder_whose_name_is_not_utf8(tmp_path: Path, data: Path) -> None:
    out = tmp_path / NOT_UTF8
    flags = phase5_flags(data, out)
    flags[flags.index("--max-steps") + 1] = "4"
    first = run_bytes(DINO_ENTRY, flags, LRSCHED_STOP_AT_STEP="2")  # stops as on SIGTERM, after step 2
    assert first.returncode == 0, first.stderr.decode(errors="replace")[-3000:]
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-00000002.pt"]
    again = run_bytes(DINO_ENTRY, [*flags, "--resume", "latest"])
    assert again.returncode == 0, again.stderr.decode(errors="replace")[-3000:]
    assert len(read_rows(out / "log.csv")) == 4 and b"Traceback" not in again.stderr
    assert (out / "curves.png").stat().st_size > 0


def test_train_py_runs_and_resumes_in_a_folder_whose_name_is_not_utf8(tmp_path: Path) -> None:
    out = tmp_path / NOT_UTF8
    # PYTHONIOENCODING: stdout strict, as under a UTF-8 locale (a C.UTF-8 one escapes)
    proc = run_bytes(TRAIN_ENTRY, [*TRAIN_ONE_EPOCH, "--output_dir", str(out)], PYTHONIOENCODING="utf-8")
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    assert os.fsencode(str(out)) in proc.stdout  # the folder printed as its own bytes
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000002.pt"]
    for folder in ("best", "last"):
        names = {p.name for p in (out / folder).iterdir()}
        assert {"config.json", "model.safetensors", "tokenizer.json"} <= names, (folder, names)
    assert (out / "curves.png").stat().st_size > 0
    report = json.loads((out / "eval.json").read_text())
    assert report["best"]["step"] == 2 and report["test"] is not None
    assert train([*TRAIN_ONE_EPOCH, "--output_dir", str(out), "--resume_from_checkpoint", "latest"]) == 0
