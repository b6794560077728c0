"""recipes/common/checkpoint.py: atomic writes, the newest step, pruning, one-line refusals."""

from __future__ import annotations

import errno
import os
import pickle
import re
from pathlib import Path
from typing import Any

import pytest
import torch

from lrsched.recipes.common import checkpoint as ckpt
from lrsched.recipes.common.distributed import World
from lrsched.recipes.common.runlog import RunLog, read_log


def test_save_then_load_round_trips_tensors_and_plain_data(tmp_path: Path) -> None:
    path = ckpt.save_checkpoint({"step": 7, "w": torch.arange(4.0)}, tmp_path / "c.pt", "prog")
    state = ckpt.load_checkpoint(path, "prog")
    assert state["step"] == 7 and state["program"] == "prog"
    assert torch.equal(state["w"], torch.arange(4.0))
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary file left


def test_a_failed_write_leaves_the_previous_checkpoint_intact(tmp_path: Path) -> None:
    path = ckpt.save_checkpoint({"step": 1}, tmp_path / "c.pt", "prog")
    with pytest.raises((pickle.PicklingError, AttributeError)):
        ckpt.save_checkpoint({"step": 2, "bad": lambda: None}, path, "prog")
    assert ckpt.load_checkpoint(path, "prog")["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "not a loadable checkpoint"), (b"\x80\x04garbage", "not a loadable checkpoint")],
)
def test_unreadable_files_are_one_line_errors(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "c.pt"
    path.write_bytes(content)
    with pytest.raises(ckpt.CheckpointError, match=message) as err:
        ckpt.load_checkpoint(path, "prog", "--resume")
    assert "\n" not in str(err.value) and str(err.value).startswith("--resume ")


def test_another_programs_checkpoint_and_a_missing_file_are_refused(tmp_path: Path) -> None:
    path = ckpt.save_checkpoint({"step": 1}, tmp_path / "c.pt", "train.py")
    with pytest.raises(ckpt.CheckpointError, match=re.escape("of 'train.py', not of 'phase5_big_run.py'")):
        ckpt.load_checkpoint(path, "phase5_big_run.py")
    with pytest.raises(ckpt.CheckpointError, match="no such checkpoint"):
        ckpt.load_checkpoint(tmp_path / "missing.pt", "train.py")


def test_latest_is_the_highest_step_and_prune_keeps_the_newest(tmp_path: Path) -> None:
    assert ckpt.latest_checkpoint(tmp_path) is None
    for step in (5, 40, 12):
        ckpt.save_checkpoint({"step": step}, ckpt.step_path(tmp_path, step), "prog")
    assert ckpt.latest_checkpoint(tmp_path) == ckpt.step_path(tmp_path, 40)
    ckpt.prune_checkpoints(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000012.pt", "step-00000040.pt"]


def test_resume_latest_without_checkpoints_names_the_flag(tmp_path: Path) -> None:
    with pytest.raises(ckpt.CheckpointError, match=r"^--resume latest: no checkpoint"):
        ckpt.resolve_resume("latest", tmp_path, "--resume")
    assert ckpt.resolve_resume(None, tmp_path, "--resume") is None


# ---------------------------------------------------------------- format 2: checksum, run id, durability


def _big(tmp_path: Path) -> Path:
    return ckpt.save_checkpoint({"step": 3, "w": torch.arange(100_000.0)}, tmp_path / "c.pt", "prog", run_id="r1")


def test_the_run_id_is_recorded_and_plain_torch_load_still_reads_the_file(tmp_path: Path) -> None:
    path = _big(tmp_path)
    assert ckpt.load_checkpoint(path, "prog")["run_id"] == "r1"
    plain = torch.load(path, weights_only=True)
    assert plain["format"] == ckpt.CHECKPOINT_FORMAT and torch.equal(plain["w"], torch.arange(100_000.0))


@pytest.mark.parametrize("where", [0.1, 0.5, 0.9, -150])
def test_64_zeroed_bytes_anywhere_are_refused_in_one_line(tmp_path: Path, where: float) -> None:
    path = _big(tmp_path)
    data = bytearray(path.read_bytes())
    at = int(len(data) * where) if where > 0 else len(data) + int(where)
    data[at : at + 64] = bytes(64)
    path.write_bytes(bytes(data))
    with pytest.raises(ckpt.CheckpointError) as err:
        ckpt.load_checkpoint(path, "prog", "--resume")
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"--resume {path}: ")
    assert "damaged" in message or "not a loadable checkpoint" in message
    if where == 0.5:  # tensor bytes: only the checksum can tell
        assert "damaged (its SHA-256 checksum does not match its contents)" in message


def test_a_format_1_checkpoint_is_refused_with_a_clear_line(tmp_path: Path) -> None:
    path = tmp_path / "old.pt"
    torch.save({"format": 1, "program": "prog", "step": 3}, path)
    with pytest.raises(ckpt.CheckpointError, match=r"checkpoint format 1 \(an older lrsched\); this version reads"):
        ckpt.load_checkpoint(path, "prog", "--resume")


def test_the_folder_is_fsynced_after_the_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        target = Path(os.readlink(f"/proc/self/fd/{fd}"))
        events.append("fsync dir" if target.is_dir() else "fsync file")
        real_fsync(fd)

    def replace(a: object, b: object) -> None:
        events.append("rename")
        real_replace(a, b)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    ckpt.save_checkpoint({"step": 1}, tmp_path / "c.pt", "prog")
    assert events == ["fsync file", "rename", "fsync dir"]


def test_a_full_disk_is_one_line_and_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = ckpt.save_checkpoint({"step": 1, "w": torch.ones(1000)}, tmp_path / "c.pt", "prog")
    before = path.read_bytes()
    real_init = ckpt._HashingWriter.__init__

    class FullDisk:
        """The temporary file on a disk that fills up after 500 bytes."""

        def __init__(self, f: Any) -> None:
            self.f, self.written = f, 0

        def write(self, data: bytes) -> int:
            if self.written + len(data) > 500:
                raise OSError(errno.ENOSPC, "No space left on device")
            self.written += len(data)
            return int(self.f.write(data))

        def __getattr__(self, name: str) -> Any:
            return getattr(self.f, name)

    def init(self: ckpt._HashingWriter, f: Any) -> None:
        real_init(self, FullDisk(f))

    monkeypatch.setattr(ckpt._HashingWriter, "__init__", init)
    with pytest.raises(ckpt.DiskFull) as err:
        ckpt.save_checkpoint({"step": 2, "w": torch.zeros(1000)}, path, "prog")
    assert ckpt.is_disk_full(err.value) and err.value.filename == str(path)
    assert "No space left on device" in str(err.value) and "\n" not in str(err.value)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_set_aside_future_moves_later_steps_out_of_latests_reach(tmp_path: Path) -> None:
    for step in (2, 4, 6):
        ckpt.save_checkpoint({"step": step}, ckpt.step_path(tmp_path, step), "prog")
    assert ckpt.set_aside_future(tmp_path, 6) is None
    moved = ckpt.set_aside_future(tmp_path, 2)
    assert moved == tmp_path / "abandoned-after-step-00000002"
    assert sorted(p.name for p in moved.iterdir()) == ["step-00000004.pt", "step-00000006.pt"]
    assert ckpt.latest_checkpoint(tmp_path) == ckpt.step_path(tmp_path, 2)
    ckpt.save_checkpoint({"step": 4}, ckpt.step_path(tmp_path, 4), "prog")
    assert ckpt.set_aside_future(tmp_path, 2) == tmp_path / "abandoned-after-step-00000002-2"
    ckpt.prune_checkpoints(tmp_path, keep=1)  # pruning leaves the set-aside folders alone
    assert (moved / "step-00000006.pt").is_file()


def test_latest_in_a_run_that_never_saved_says_to_start_again(tmp_path: Path) -> None:
    (tmp_path / "log.csv").write_text("step\n")
    with pytest.raises(ckpt.CheckpointError) as err:
        ckpt.resolve_resume("latest", tmp_path, "--resume")
    assert "stopped before its first checkpoint; start it again without --resume" in str(err.value)
    assert "--resume latest to" not in str(err.value)


def test_the_abandoned_future_keeps_its_log_and_a_resume_from_it_reads_that_log(tmp_path: Path) -> None:
    directory = tmp_path / "checkpoints"
    for step in (2, 4, 6):
        ckpt.save_checkpoint({"step": step}, ckpt.step_path(directory, step), "prog")
    log = tmp_path / "log.csv"
    log.write_text("step,loss\n" + "".join(f"{s},{s / 10}\n" for s in range(6)))
    moved = ckpt.set_aside_future(directory, 2)
    assert moved is not None and (moved / "log.csv").read_text() == log.read_text()
    assert os.path.samefile(moved / "log.csv", log)  # a hard link, not a copy
    from_there = moved / "step-00000006.pt"
    assert ckpt.abandoned_step(from_there) == 2 and ckpt.abandoned_step(ckpt.step_path(directory, 2)) is None
    assert ckpt.history_log(from_there, tmp_path) == moved / "log.csv"
    assert ckpt.history_log(ckpt.step_path(directory, 2), tmp_path) == log
    RunLog(tmp_path, ["step", "loss"], resume_step=2).close()  # the run cuts its own log back: a new file
    assert [r["step"] for r in read_log(log)] == ["0", "1"] and len(read_log(moved / "log.csv")) == 6
    history = ckpt.history_log(from_there, tmp_path)
    RunLog(tmp_path, ["step", "loss"], resume_step=6, history=history).close()
    assert [r["step"] for r in read_log(log)] == ["0", "1", "2", "3", "4", "5"]


# ---------------------------------------------------------------- the identity, the step, the schedules

IDENTITY = {"seed": ckpt.Fixed(1, "--seed"), "batch": ckpt.Fixed(8, "--batch-size")}


def test_an_unchanged_identity_passes_and_its_values_are_what_a_checkpoint_stores() -> None:
    saved = ckpt.identity_values(IDENTITY)
    assert saved == {"seed": 1, "batch": 8}
    ckpt.refuse_identity_changes(saved, IDENTITY, "--resume c.pt")  # no error


def test_a_changed_identity_is_one_line_naming_each_flag() -> None:
    with pytest.raises(ckpt.UsageError) as err:
        ckpt.refuse_identity_changes({"seed": 0, "batch": 8}, IDENTITY, "--resume c.pt")
    assert str(err.value) == "--resume c.pt: these flags cannot change on resume: --seed 0 -> 1"


def test_a_field_added_to_the_identity_counts_as_none_in_an_older_checkpoint() -> None:
    extended = {**IDENTITY, "shards": ckpt.Fixed("a-{0..3}.tar", "--shards")}
    assert ckpt.identity_changes({"seed": 1, "batch": 8}, extended) == ["--shards None -> 'a-{0..3}.tar'"]


@pytest.mark.parametrize("step", [None, -1, "3", 2.0, True])
def test_a_checkpoint_without_an_integer_step_is_refused(step: object) -> None:
    with pytest.raises(ckpt.CheckpointError, match="no step"):
        ckpt.saved_step({} if step is None else {"step": step}, "--resume c.pt")


def test_schedules_are_read_with_the_one_step() -> None:
    state = {"step": 3, "schedules": {"lr": {"schedule": {"s": 1}, "target": {"s": 2}}}}
    assert ckpt.schedule_states(state, ("lr",), "c") == {"lr": {"step": 3, "schedule": {"s": 1}, "target": {"s": 2}}}


def test_an_older_checkpoint_keeps_a_schedule_under_its_own_key_with_the_same_step() -> None:
    older = {"step": 3, "scheduler": {"step": 3, "schedule": {"s": 1}, "cuts": [1.0]}}
    assert ckpt.schedule_states(older, ("lr",), "c", {"lr": "scheduler"}) == {"lr": {"step": 3, "schedule": {"s": 1}}}
    older["scheduler"]["step"] = 2
    with pytest.raises(ckpt.CheckpointError, match="lr schedule is at step 2, its run at step 3"):
        ckpt.schedule_states(older, ("lr",), "c", {"lr": "scheduler"})


def test_a_missing_schedule_is_refused_in_one_line() -> None:
    with pytest.raises(ckpt.CheckpointError, match="no momentum schedule"):
        ckpt.schedule_states({"step": 0, "schedules": {}}, ("momentum",), "c")


def test_save_step_checkpoint_names_the_file_by_its_step_and_prunes(tmp_path: Path) -> None:
    world = World(rank=0, size=1, local_rank=0)
    for step in (1, 2, 3):
        path = ckpt.save_step_checkpoint({"step": step}, tmp_path, "prog", world, run_id="r", keep=2)
    assert path == tmp_path / "step-00000003.pt"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000002.pt", "step-00000003.pt"]
    assert ckpt.load_checkpoint(path, "prog")["run_id"] == "r"
