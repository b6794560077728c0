"""Hostile and broken checkpoints: refused with one line, exit 2, and no code in them runs.

The checkpoints are real files on disk: a real phase5_big_run.py checkpoint (made by a 2-step
run), cut short or overwritten with random bytes; pickles whose ``__reduce__`` would create a
marker file when loaded (in torch's zip format and as a plain pickle); a checkpoint of the other
program; and a real checkpoint resumed with a different schedule without ``--replan``.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch
from fault_helpers import DINO_PROGRAM, DINO_SMALL, TRAIN_PROGRAM, TRAIN_SMALL, call_main, tree
from helpers import FASHION, needs_data

from lrsched.recipes.common.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

DINO_ARGS = [*DINO_SMALL, "--max-steps", "2", "--warmup-steps", "1", "--save-every", "1"]
SENTINEL = b"keep me\n"


class Evil:
    """Loading a pickle of this calls ``open(marker, "w")``: the marker file appears if code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def dino_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real phase5_big_run.py checkpoint at step 2 (a 2-step run)."""
    if not FASHION.is_dir():
        pytest.skip("Fashion-MNIST missing")
    out = tmp_path_factory.mktemp("dino") / "run"
    status, _, err = call_main(DINO_PROGRAM, [*DINO_ARGS, "--output-dir", str(out)])
    assert status == 0, err
    return out / "checkpoints" / "step-00000002.pt"


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory, dino_ckpt: Path) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("hostile")
    data = dino_ckpt.read_bytes()
    files = {
        "truncated": data[: len(data) // 2],
        "truncated-to-header": data[:64],
        "one-byte-flipped-in-the-middle": data[: len(data) // 2]
        + bytes([data[len(data) // 2] ^ 0xFF])
        + data[1 + len(data) // 2 :],
        "random-bytes": os.urandom(len(data) // 4),
        "empty": b"",
    }
    paths = {}
    for name, content in files.items():
        (d / f"{name}.pt").write_bytes(content)
        paths[name] = d / f"{name}.pt"
    marker = d / "MARKER-code-ran"
    for program in (DINO_PROGRAM, TRAIN_PROGRAM):  # right header, but a payload that would run code
        torch.save({"format": 1, "program": program, "step": 1, "student": Evil(marker)}, d / f"evil-zip-{program}.pt")
        paths[f"evil-zip-{program}"] = d / f"evil-zip-{program}.pt"
    with (d / "evil-plain.pt").open("wb") as f:
        pickle.dump({"format": 1, "program": DINO_PROGRAM, "x": Evil(marker)}, f)
    paths["evil-plain-pickle"] = d / "evil-plain.pt"
    paths["marker"] = marker
    return paths


BROKEN = ["truncated", "truncated-to-header", "random-bytes", "empty", "evil-zip", "evil-plain-pickle"]


def _file(hostile: dict[str, Path], name: str, program: str) -> Path:
    return hostile[f"evil-zip-{program}"] if name == "evil-zip" else hostile[name]


@needs_data
@pytest.mark.parametrize("program", [DINO_PROGRAM, TRAIN_PROGRAM])
@pytest.mark.parametrize("name", BROKEN)
def test_the_loader_refuses_without_running_code(hostile: dict[str, Path], name: str, program: str) -> None:
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(_file(hostile, name, program), program, "--resume")
    message = str(err.value)
    assert "\n" not in message and message.startswith("--resume ") and "not a loadable checkpoint" in message
    assert not hostile["marker"].exists(), "loading the checkpoint ran code"


@needs_data
def test_a_flipped_byte_is_refused_by_the_checksum(hostile: dict[str, Path]) -> None:
    """Torch's zip format checks no checksum of tensor bytes; lrsched's SHA-256 trailer does."""
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(hostile["one-byte-flipped-in-the-middle"], DINO_PROGRAM)
    assert "\n" not in str(err.value) and "damaged (its SHA-256 checksum does not match" in str(err.value)
    assert not hostile["marker"].exists()


def program_argv(program: str, out: Path, ckpt: Path, tmp: Path) -> list[str]:
    if program == DINO_PROGRAM:
        return [*DINO_ARGS, "--output-dir", str(out), "--resume", str(ckpt)]
    csv = tmp / "train.csv"
    csv.write_text("text,label\n" + "".join(f"text {i} {'a' if i % 2 else 'b'},{i % 2}\n" for i in range(24)))
    argv = ["--train_file", str(csv), "--num_epochs", "1", "--per_device_train_batch_size", "4", *TRAIN_SMALL]
    return [*argv, "--output_dir", str(out), "--resume_from_checkpoint", str(ckpt)]


@needs_data
@pytest.mark.parametrize("program", [DINO_PROGRAM, TRAIN_PROGRAM])
@pytest.mark.parametrize("name", [*BROKEN, "other-program"])
def test_the_programs_refuse_with_one_line_and_exit_2(
    hostile: dict[str, Path], dino_ckpt: Path, tmp_path: Path, name: str, program: str
) -> None:
    if name == "other-program":
        if program == DINO_PROGRAM:
            ckpt = save_checkpoint({"step": 1, "model": {"w": torch.zeros(2)}}, tmp_path / "train.pt", TRAIN_PROGRAM)
        else:
            ckpt = dino_ckpt
    else:
        ckpt = _file(hostile, name, program)
    out = tmp_path / "out"
    out.mkdir()
    (out / "sentinel.txt").write_bytes(SENTINEL)
    status, _, err = call_main(program, program_argv(program, out, ckpt, tmp_path))
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 1, err[-2000:]
    prog = "phase5_big_run.py" if program == DINO_PROGRAM else "train.py"
    assert lines[0].startswith(f"{prog}: error: --resume") and str(ckpt) in lines[0], lines[0]
    expected = "a checkpoint of" if name == "other-program" else "not a loadable checkpoint"
    assert expected in lines[0], lines[0]
    assert tree(out) == {"sentinel.txt": SENTINEL}
    assert not hostile["marker"].exists()


@needs_data
@pytest.mark.parametrize(
    ("extra", "differences"),
    [
        (["--max-steps", "5"], ["lr.total: 2 -> 5", "weight_decay.total: 2 -> 5"]),
        (["--lr", "1e-3"], ["lr.base: 0.0005 -> 0.001"]),
        (["--min-lr", "0", "--teacher-temp", "0.05"], ["lr.final", "teacher_temp.base"]),
    ],
)
def test_another_schedule_without_replan_lists_the_differences(
    dino_ckpt: Path, tmp_path: Path, extra: list[str], differences: list[str]
) -> None:
    out = tmp_path / "out"
    before = dino_ckpt.read_bytes()
    status, _, err = call_main(DINO_PROGRAM, [*DINO_ARGS, *extra, "--output-dir", str(out), "--resume", str(dino_ckpt)])
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 1, err[-2000:]
    assert "the schedule flags differ from the checkpoint's" in lines[0] and "--replan" in lines[0]
    for d in differences:
        assert d in lines[0], lines[0]
    assert not out.exists() and dino_ckpt.read_bytes() == before
