"""A non-finite loss (injected with LRSCHED_INJECT_NAN_AT_STEP): the run stops with status 3 and a
message naming the step; the last good checkpoint loads, and resuming from it finishes the run."""

from __future__ import annotations

from pathlib import Path

import pytest
from fault_helpers import (
    DINO,
    DINO_PROGRAM,
    DINO_SMALL,
    TRAIN,
    TRAIN_PROGRAM,
    TRAIN_SMALL,
    call_main,
    load_every_checkpoint,
    read_columns,
    step_files,
)
from helpers import FASHION, run_program

from lrsched.schedules import Schedule


@pytest.mark.skipif(not FASHION.is_dir(), reason="Fashion-MNIST missing")
def test_dino_nan_at_step_3_stops_keeps_step_2_and_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    argv = [*DINO_SMALL, "--max-steps", "6", "--warmup-steps", "1", "--save-every", "2", "--output-dir", str(out)]
    monkeypatch.setenv("LRSCHED_INJECT_NAN_AT_STEP", "3")
    status, _, err = call_main(DINO_PROGRAM, argv)
    assert status == 3, err[-2000:]
    assert "non-finite loss (nan) at step 3" in err and "last good checkpoint" in err and "step-00000002.pt" in err
    assert "Traceback" not in err
    assert [p.name for p in step_files(out)] == ["step-00000002.pt"]
    assert [int(s["step"]) for s in load_every_checkpoint(out, DINO_PROGRAM)] == [2]
    assert [r[0] for r in read_columns(out, ("step",))] == ["0", "1", "2"]  # step 3 was never applied
    monkeypatch.delenv("LRSCHED_INJECT_NAN_AT_STEP")
    status, _, err = call_main(DINO_PROGRAM, [*argv, "--resume", "latest"])
    assert status == 0, err[-2000:]
    rows = read_columns(out, ("step", "lr"))
    lr = Schedule("cosine", base=5e-4, final=1e-6, warmup=1, total=6)
    assert [int(s) for s, _ in rows] == list(range(6))
    assert [float(v) for _, v in rows] == pytest.approx([lr(t) for t in range(6)], rel=1e-12)
    assert int(load_every_checkpoint(out, DINO_PROGRAM)[-1]["step"]) == 6


@pytest.mark.skipif(not FASHION.is_dir(), reason="Fashion-MNIST missing")
@pytest.mark.slow
def test_dino_nan_in_a_real_process_is_one_clear_line(tmp_path: Path) -> None:
    out = tmp_path / "run"
    argv = [*DINO_SMALL, "--max-steps", "4", "--warmup-steps", "1", "--save-every", "1", "--output-dir", str(out)]
    proc = run_program(DINO, argv, LRSCHED_INJECT_NAN_AT_STEP="2")
    assert proc.returncode == 3
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert errors == [
        f"phase5_big_run.py: error: non-finite loss (nan) at step 2; "
        f"last good checkpoint: {out / 'checkpoints' / 'step-00000002.pt'}"
    ]
    assert "Traceback" not in proc.stderr
    assert [int(s["step"]) for s in load_every_checkpoint(out, DINO_PROGRAM)] == [1, 2]


@pytest.mark.slow
def test_train_nan_at_step_2_stops_keeps_step_2_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    argv = ["--num_epochs", "1", "--max_train_samples", "16", "--per_device_train_batch_size", "4", *TRAIN_SMALL]
    argv += ["--save_steps", "1", "--save_total_limit", "5", "--output_dir", str(out)]
    proc = run_program(TRAIN, argv, LRSCHED_INJECT_NAN_AT_STEP="2")
    assert proc.returncode == 3, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    last = out / "checkpoints" / "step-00000002.pt"
    assert errors == [
        f"train.py: error: training loss is nan at step 2; stopped before that update; last good checkpoint: {last}"
    ]
    assert "Traceback" not in proc.stderr
    assert [int(s["step"]) for s in load_every_checkpoint(out, TRAIN_PROGRAM)] == [1, 2]
    assert [r[0] for r in read_columns(out, ("step",))] == ["0", "1"]
    proc = run_program(TRAIN, [*argv, "--resume_from_checkpoint", "latest"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [r[0] for r in read_columns(out, ("step",))] == ["0", "1", "2", "3"]
    assert int(load_every_checkpoint(out, TRAIN_PROGRAM)[-1]["step"]) == 4
