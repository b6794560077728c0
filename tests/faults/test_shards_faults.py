"""phase5 on WebDataset shards keeps every guarantee of a folder (issue 31 item 2): real processes, real shards.

A shard that vanishes, is cut short or holds an unreadable image follows the bad-data policy; a shard whose
read blocks ends the run at --data-timeout, saved; a changed shard set is refused on resume unless
--accept-data-change; a kill and a resume with another worker count, and two ranks under torchrun, give the
run an uninterrupted one gives.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from fault_helpers import log_rows, wait_rows
from helpers import DINO_ENTRY, PYTHON, child_env, read_rows, wait_for
from recipes.dino.test_shards import make_shards

from lrsched.recipes.common.checkpoint import latest_checkpoint, load_checkpoint
from lrsched.recipes.common.exits import EXIT_DATA, EXIT_USAGE
from lrsched.recipes.common.faults import STOP_AT
from lrsched.recipes.dino.flags import PROGRAM_ID

SHARD_RUN = [
    *("--preset", "micro", "--batch-size", "8", "--local-crops", "1", "--global-size", "32", "--local-size", "16"),
    *("--knn-train-samples", "20", "--knn-test-samples", "10", "--eval-every", "0", "--seed", "0"),
    *("--warmup-steps", "2", "--workers", "1"),
]
"""A phase5 run on shards with one worker, a few seconds to start (the folder tests' run)."""
TORCHRUN = Path(PYTHON).with_name("torchrun")


def start(data: Path | str, out: Path, *extra: str, **env: str) -> subprocess.Popen[str]:
    cmd = [PYTHON, str(DINO_ENTRY), *SHARD_RUN, "--data-dir", str(data), "--output-dir", str(out), *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(**env))


def ended(proc: subprocess.Popen[str], within: float) -> tuple[int, str, str]:
    """Exit status, stdout and stderr (the test fails if the process takes more than ``within`` s)."""
    try:
        out, err = proc.communicate(timeout=within)
    except subprocess.TimeoutExpired:
        proc.kill()  # a hang must fail the test, not outlive it
        proc.communicate()
        raise
    return proc.returncode, out, err


def saved_step(out: Path) -> int:
    path = latest_checkpoint(out / "checkpoints")
    assert path is not None
    return int(load_checkpoint(path, PROGRAM_ID)["step"])


def metrics(out: Path) -> dict[str, object]:
    return dict(json.loads((out / "metrics.json").read_text()))


@pytest.fixture
def shards(tmp_path: Path) -> Path:
    """60 labelled samples in 6 shards of 10: a step of 8 meets a given shard within a few steps."""
    make_shards(tmp_path / "shards", 60)
    return tmp_path / "shards"


# --- the bad-data policy ----------------------------------------------------------------------------


def _break(shard: Path, how: str, member: str = "000022.jpg") -> None:
    if how == "vanishes":
        shard.unlink()
    elif how == "is cut short":
        os.truncate(shard, shard.stat().st_size // 2)
    else:  # holds an unreadable image: ``member`` overwritten in place (the shard keeps its size)
        import tarfile

        with tarfile.open(shard) as tar:
            start = next(m.offset_data for m in tar if m.name == member)
        with open(shard, "r+b") as f:
            f.seek(start)
            f.write(b"no longer an image" * 8)


SLOW_HERE = pytest.mark.slow  # 15-50 s each at load 7; the fast counterpart is named beside each
BREAKS = [
    pytest.param("vanishes", marks=SLOW_HERE),  # fast: test_shards.py's shard gone, resized or holding a bad image
    pytest.param("is cut short", marks=SLOW_HERE),
    "holds an unreadable image",
]


@pytest.mark.parametrize("how", BREAKS)
def test_a_shard_that_breaks_mid_run_is_replaced_counted_once_per_sample_and_named(
    shards: Path, tmp_path: Path, how: str
) -> None:
    out, broken = tmp_path / "run", shards / "train-000002.tar"
    proc = start(shards / "train-{000000..000005}.tar", out, "--max-steps", "30")
    wait_rows(proc, out, 1)
    _break(broken, how)
    status, stdout, err = ended(proc, 300)
    assert status == 0, err
    found = metrics(out)
    bad = found["unreadable_files"]
    assert isinstance(bad, list) and bad and found["skipped_images"] == len(bad) == len(set(bad))
    assert all(name.startswith(f"{broken}/") for name in bad)  # <shard>/<member>: the samples of that shard
    if how == "holds an unreadable image":
        assert bad == [f"{broken}/000022.jpg"]
    assert f"skipped {len(bad)} unreadable image(s), each replaced by the next readable one: {bad[0]}" in (stdout + err)
    assert "Traceback" not in err


@SLOW_HERE  # fast: test_data_path's images deleted mid-run (the same limit, 100 in a row)
def test_a_large_shard_that_vanishes_stops_the_run_saved_exit_4(tmp_path: Path) -> None:
    """The 120 samples of a vanished shard come in a row: past 100 in a row the data went away, as for a folder."""
    data, out = tmp_path / "big", tmp_path / "run"
    make_shards(data, 240, per_shard=120, classes=0)
    proc = start(data, out)
    wait_rows(proc, out, 2)
    (data / "train-000000.tar").unlink()
    status, _, err = ended(proc, 120)
    assert status == EXIT_DATA, err
    last = err.strip().splitlines()[-1]
    assert "the data went away" in last and "stopped at step" in last and "Traceback" not in err
    step = saved_step(out)
    assert step == log_rows(out) >= 2
    assert str(metrics(out)["status"]).startswith(f"failed at step {step}")


@pytest.mark.parametrize("workers", ["0", pytest.param("1", marks=SLOW_HERE)])
def test_a_shard_whose_read_blocks_ends_the_run_at_its_deadline_saved(
    shards: Path, tmp_path: Path, workers: str
) -> None:
    out = tmp_path / "run"
    proc = start(shards, out, "--data-timeout", "2", "--workers", workers)
    wait_rows(proc, out, 1)
    blocked = shards / "train-000003.tar"
    blocked.unlink()
    os.mkfifo(blocked)  # opening it blocks in the kernel: no writer ever comes
    started = time.monotonic()
    status, _, err = ended(proc, 120)
    assert status == EXIT_DATA, err
    assert time.monotonic() - started < 60
    step = saved_step(out)
    assert err.strip().splitlines()[-1] == (
        "phase5_big_run.py: error: the data path failed: --data-timeout 2: no training batch from the data path "
        f"for 2 s; stopped at step {step}; checkpoint {out / 'checkpoints' / f'step-{step:08d}.pt'}"
    )


# --- start-up and resume ----------------------------------------------------------------------------


def test_a_folder_mixing_images_and_shards_is_one_line_exit_2_nothing_written(shards: Path, tmp_path: Path) -> None:
    (shards / "stray.jpg").write_bytes(b"a stray image file")
    out = tmp_path / "run"
    status, _, err = ended(start(shards, out), 120)
    assert status == EXIT_USAGE
    assert err.strip() == (
        f"phase5_big_run.py: error: --data-dir {shards}: holds both .tar shards and images (first: stray.jpg); "
        "a data folder is one or the other"
    )
    assert not out.exists()


@SLOW_HERE  # fast: test_shards.py's added, removed or resized shard and index tests
def test_a_changed_shard_set_is_refused_on_resume_unless_accepted_and_its_index_never_rebuilt_silently(
    shards: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    status, _, err = ended(start(shards, out, "--max-steps", "6", **{STOP_AT: "2"}), 240)
    assert status == 0, err
    index = (out / "data_index.tsv").read_text()
    assert len(index.splitlines()) == 1 + 60 and index.splitlines()[1] == "0\ttrain-000000.tar/000000.jpg"
    make_shards(shards, 10, first=6, seed=1)  # a seventh shard
    log = (out / "log.csv").read_text()
    status, _, err = ended(start(shards, out, "--max-steps", "6", "--resume", "latest"), 240)
    assert status == EXIT_USAGE
    assert err.strip() == (
        f"phase5_big_run.py: error: --data-dir {shards}: not the data of the checkpoint (shards 6 -> 7; "
        "files 60 -> 70); pass --accept-data-change to continue on the data as it is now"
    )
    assert (out / "log.csv").read_text() == log and (out / "data_index.tsv").read_text() == index
    (out / "data_index.tsv").write_text(index.replace("\n1\ttrain-000000.tar/000001.jpg\n", "\n0\tx/y.jpg\n"))
    status, _, err = ended(start(shards, out, "--max-steps", "6", "--resume", "latest", "--accept-data-change"), 240)
    assert status == EXIT_USAGE and "not a data index this program can read" in err  # damaged: refused
    (out / "data_index.tsv").write_text(index)
    status, _, err = ended(start(shards, out, "--max-steps", "6", "--resume", "latest", "--accept-data-change"), 240)
    assert status == 0, err
    assert len(read_rows(out / "log.csv")) == 6
    assert len((out / "data_index.tsv").read_text().splitlines()) == 1 + 70  # rewritten once accepted


@SLOW_HERE  # fast: test_data_path's test_a_resume_keeps_the_files_known_unreadable (the same code)
def test_a_resume_keeps_the_samples_known_unreadable(tmp_path: Path) -> None:
    """A resume reads the start-up sample again (each must be readable), so the bad one lies outside it."""
    from lrsched.recipes.dino.data import _sample
    from lrsched.recipes.dino.shards import list_shards

    data, out = tmp_path / "many", tmp_path / "run"
    paths = make_shards(data, 300, classes=0)
    outside = min(set(range(300)) - set(_sample(list_shards(paths))))
    broken, member = paths[outside // 10], f"{outside:06d}.jpg"
    proc = start(data, out, "--workers", "0", "--max-steps", "80", **{STOP_AT: "40"})
    wait_rows(proc, out, 1)
    _break(broken, "holds an unreadable image", member)  # met once in each epoch of 37 steps after this one
    status, stdout, err = ended(proc, 300)
    assert status == 0 and (stdout + err).count("cannot read image") == 1, err
    assert f"cannot read image {broken}/{member} (cannot identify image file)" in stdout + err
    again = start(data, out, "--workers", "0", "--max-steps", "80", "--resume", "latest")
    status, stdout, err = ended(again, 300)
    assert status == 0, err
    assert metrics(out)["unreadable_files"] == [f"{broken}/{member}"] and metrics(out)["skipped_images"] == 1
    assert "cannot read image" not in stdout + err  # known from the checkpoint: met again, not reported again


# --- kills, workers, ranks (slow) -----------------------------------------------------------------


def _weights(out: Path) -> dict[str, torch.Tensor]:
    state = load_checkpoint(latest_checkpoint(out / "checkpoints") or Path("missing"), PROGRAM_ID)
    return {**{f"s.{k}": v for k, v in state["student"].items()}, **{f"t.{k}": v for k, v in state["teacher"].items()}}


@pytest.mark.slow  # two runs of 16 steps and a resume: about 40 s
def test_sigkill_then_a_resume_with_another_worker_count_is_bitwise_the_uninterrupted_run(
    shards: Path, tmp_path: Path
) -> None:
    flags = ["--max-steps", "16", "--save-every", "4", "--keep-checkpoints", "10", "--workers", "2"]
    status, _, err = ended(start(shards, tmp_path / "whole", *flags), 600)
    assert status == 0, err
    out = tmp_path / "killed"
    proc = start(shards, out, *flags)
    if not wait_for(proc, lambda: (out / "checkpoints" / "step-00000008.pt").exists(), 300, poll=0.1):
        proc.kill()
        raise AssertionError(proc.communicate()[1])
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    status, _, err = ended(start(shards, out, *flags, "--workers", "0", "--resume", "latest"), 600)
    assert status == 0, err
    a, b = read_rows(tmp_path / "whole" / "log.csv"), read_rows(out / "log.csv")
    assert [r["step"] for r in b] == [str(t) for t in range(16)]
    assert [r["loss"] for r in a] == [r["loss"] for r in b]
    wa, wb = _weights(tmp_path / "whole"), _weights(out)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.slow
@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun not beside this Python")
def test_torchrun_two_ranks_on_shards_agree_on_every_lr_and_the_weights(shards: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    cmd = [str(TORCHRUN), "--standalone", "--nproc_per_node", "2", str(DINO_ENTRY), *SHARD_RUN]
    cmd += ["--data-dir", str(shards), "--max-steps", "4", "--output-dir", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=child_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = metrics(out)["ranks"]
    assert isinstance(ranks, list) and [r["rank"] for r in ranks] == [0, 1]
    assert ranks[0]["lr_trace"] == ranks[1]["lr_trace"] and ranks[0]["weights"] == ranks[1]["weights"]


@pytest.mark.slow
@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun not beside this Python")
def test_torchrun_ranks_that_listed_different_shards_refuse_to_start(tmp_path: Path) -> None:
    seen = [tmp_path / f"rank{r}" for r in (0, 1)]
    for r, directory in enumerate(seen):
        make_shards(directory / "images", 40 + 10 * r)  # rank 1 sees one shard more
    out = tmp_path / "run"
    child = Path(__file__).parent.parent / "recipes" / "dino" / "per_rank_data_dir.py"
    cmd = [str(TORCHRUN), "--standalone", "--nproc_per_node", "2", str(child), *map(str, seen), *SHARD_RUN]
    cmd += ["--max-steps", "4", "--output-dir", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=child_env(), timeout=600)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("phase5_big_run.py: error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    assert "--data-dir images: process 1 saw other data than process 0 (shards 4 -> 5; files 40 -> 50)" in errors[0]
    assert not out.exists()
