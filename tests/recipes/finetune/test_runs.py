"""Real, tiny train.py runs: MiniLM on the tweet corpus (or small user files), on the CPU.

What they check: the log holds one row per optimizer update with exactly the plan's LR;
gradient accumulation counts updates; a resumed run continues with the same LRs, batches
and weights; two torchrun processes agree; a non-finite loss stops the run with status 3.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import TRAIN_ENTRY, child_env

from lrsched.recipes.common.checkpoint import load_checkpoint
from lrsched.recipes.common.runlog import read_log

from .finetune_helpers import TINY, assert_log_follows_plan, outputs, run_train, schedule_from_plan

SMALL = ["--max_train_samples", "24", "--per_device_train_batch_size", "8", *TINY]  # 3 updates per epoch


@pytest.mark.parametrize(
    ("command", "shape"),
    [
        ("--num_epochs 10", "cosine"),
        pytest.param("--num_epochs 3", "linear", marks=pytest.mark.slow),
        pytest.param("--num_epochs 2 --lr_strategy cosine_restarts", "cosine_restarts", marks=pytest.mark.slow),
    ],
)
def test_seed_command_trains_with_the_plans_lrs(tmp_path: Path, command: str, shape: str) -> None:
    out = tmp_path / "run"
    assert run_train([*command.split(), *SMALL, "--max_steps", "4", "--output_dir", str(out)]) == 0
    plan, rows, ev = outputs(out)
    assert (plan["shape"], plan["total_steps"], plan["warmup_steps"]) == (shape, 4, 1)
    assert_log_follows_plan(out)
    assert [int(r["epoch"]) for r in rows] == [1, 1, 1, 2]  # 3 updates per epoch, then a partial one
    assert [h["step"] for h in ev["validation"]] == [3, 4]  # after epoch 1 and at the end
    for result in [*ev["validation"], ev["test"]]:
        assert 0 <= result["accuracy"] <= 1 and 0 <= result["macro_f1"] <= 1
    assert ev["best"]["accuracy"] == max(h["accuracy"] for h in ev["validation"])
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "args.json").read_text())["max_steps"] == 4  # JSON types, not strings
    config = json.loads((out / "best" / "config.json").read_text())
    assert list(config["id2label"].values()) == ["negative", "neutral", "positive"]
    last = load_checkpoint(out / "checkpoints" / "step-00000004.pt", "train.py")
    assert last["step"] == 4 and set(last["schedules"]) == {"lr"} and "step" not in last["schedules"]["lr"]


def test_bf16_run(tmp_path: Path) -> None:
    out = tmp_path / "bf16"
    argv = ["--num_epochs", "1", "--bf16", "--max_train_samples", "4", "--per_device_train_batch_size", "2"]
    assert run_train([*argv, *TINY, "--max_eval_samples", "4", "--max_steps", "2", "--output_dir", str(out)]) == 0
    assert_log_follows_plan(out)
    _, rows, _ = outputs(out)
    assert json.loads((out / "args.json").read_text())["bf16"] is True
    assert all(0 < float(r["loss"]) < 10 for r in rows)


def write_jsonl(path: Path, n: int, offset: int = 0) -> Path:
    rows = [
        {"text": f"message {i}: {'great' if i % 2 else 'awful'} day", "label": "pos" if i % 2 else "neg"}
        for i in range(offset, offset + n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_accumulation_counts_updates_and_the_schedule_ends_at_the_last_update(tmp_path: Path) -> None:
    # 20 examples, batch 2 -> 10 batches; A = 3 -> updates of 3, 3, 3 and 1 batches: 4 per epoch
    train, val = write_jsonl(tmp_path / "t.jsonl", 20), write_jsonl(tmp_path / "v.jsonl", 4, offset=100)
    out = tmp_path / "acc"
    argv = ["--num_epochs", "1", "--lr_strategy", "linear", "--train_file", str(train), "--validation_file", str(val)]
    argv += ["--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "3", "--output_dir", str(out)]
    assert run_train([*argv, *TINY]) == 0
    plan, rows, ev = outputs(out)
    assert plan["total_steps"] == 4 and [int(r["step"]) for r in rows] == [0, 1, 2, 3]
    assert_log_follows_plan(out)
    schedule = schedule_from_plan(plan)
    assert float(rows[-1]["lr"]) > 0 and schedule(4) == 0.0  # the last update is the last LR above the floor
    last = load_checkpoint(out / "checkpoints" / "step-00000004.pt", "train.py")
    assert last["step"] == 4 and set(last["schedules"]) == {"lr"} and "step" not in last["schedules"]["lr"]
    assert all(g["lr"] == 0.0 for g in last["optimizer"]["param_groups"])  # the schedule has reached its end
    assert ev["labels"] == ["neg", "pos"] and ev["test"] is None


@pytest.fixture(scope="module")
def base_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run: 1 epoch of 4 updates, checkpoints at steps 2 and 4."""
    out = tmp_path_factory.mktemp("resume") / "base"
    argv = ["--num_epochs", "1", "--max_train_samples", "32", "--per_device_train_batch_size", "8"]
    assert run_train([*argv, *TINY, "--save_steps", "2", "--output_dir", str(out)]) == 0
    return out


def base_argv(out: Path, *extra: str) -> list[str]:
    argv = ["--num_epochs", "1", "--max_train_samples", "32", "--per_device_train_batch_size", "8", *TINY]
    return [*argv, "--output_dir", str(out), *extra]


def test_resume_mid_epoch_gives_the_same_lrs_batches_and_weights(base_run: Path, tmp_path: Path) -> None:
    resumed = tmp_path / "resumed"
    mid = base_run / "checkpoints" / "step-00000002.pt"
    assert run_train(base_argv(resumed, "--resume_from_checkpoint", str(mid))) == 0
    _, full_rows, full_eval = outputs(base_run)
    _, rows, ev = outputs(resumed)
    assert [r["step"] for r in rows] == ["2", "3"]
    for key in ("lr", "loss", "grad_norm"):  # same LR, same batches and dropout -> the same losses
        assert [r[key] for r in rows] == [r[key] for r in full_rows[2:]]
    assert ev["validation"] == full_eval["validation"] and ev["test"] == full_eval["test"]
    a = load_checkpoint(base_run / "checkpoints" / "step-00000004.pt", "train.py")
    b = load_checkpoint(resumed / "checkpoints" / "step-00000004.pt", "train.py")
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert not all(torch.equal(a["model"][k], load_checkpoint(mid, "train.py")["model"][k]) for k in a["model"])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--lr_strategy", "linear"], "schedule differs (shape: 'constant' -> 'linear'"),
        (["--seed", "1"], "these flags cannot change on resume: --seed 42 -> 1"),
        (
            ["--no_group_by_length"],
            "on resume: --no_group_by_length/--max_seq_length 'tokens up to --max_seq_length 128' -> None",
        ),
        (
            ["--max_seq_length", "64"],
            "--max_seq_length 'tokens up to --max_seq_length 128' -> 'tokens up to --max_seq_length 64'",
        ),
    ],
)
def test_resume_with_another_plan_or_run_is_refused(
    base_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    out = tmp_path / "other"
    ckpt = str(base_run / "checkpoints" / "step-00000002.pt")
    assert run_train(base_argv(out, "--resume_from_checkpoint", ckpt, *extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and err[0].startswith("train.py: error: --resume_from_checkpoint")
    assert not out.exists()


def test_latest_resumes_in_place(base_run: Path, tmp_path: Path) -> None:
    """``latest`` in a finished run's directory: nothing left to train, the report is rewritten."""
    before = (base_run / "log.csv").read_text()
    assert run_train(base_argv(base_run, "--resume_from_checkpoint", "latest")) == 0
    assert (base_run / "log.csv").read_text() == before


def test_non_finite_loss_stops_with_status_3_and_keeps_the_last_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "nan"
    # an absurd LR: the first update makes the weights ~1e30, the next forward pass overflows
    argv = ["--learning_rate", "1e30", "--warmup_steps", "0", "--save_steps", "1", "--max_train_samples", "8"]
    argv += ["--per_device_train_batch_size", "4", "--num_epochs", "2", *TINY, "--output_dir", str(out)]
    assert run_train(argv) == 3
    err = capsys.readouterr().err
    assert "train.py: error: training loss is nan at step 1; stopped before that update" in err
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000001.pt"]
    assert load_checkpoint(out / "checkpoints" / "step-00000001.pt", "train.py")["step"] == 1
    assert [r["step"] for r in read_log(out / "log.csv")] == ["0"]


def test_two_torchrun_processes_count_updates_and_agree(tmp_path: Path) -> None:
    # 40 examples over 2 ranks = 20 each; batch 4 -> 5 batches per rank; A = 2 -> 3 updates per epoch
    out = tmp_path / "ddp"
    argv = ["--num_epochs", "1", "--max_train_samples", "40", "--per_device_train_batch_size", "4"]
    argv += ["--gradient_accumulation_steps", "2", *TINY, "--output_dir", str(out)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(TRAIN_ENTRY), *argv]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=child_env(), check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    plan, rows, ev = outputs(out)
    assert plan["total_steps"] == 3 and "1 epoch x 3 updates" in plan["sources"]["total"]
    assert_log_follows_plan(out)
    assert [r["step"] for r in rows] == ["0", "1", "2"]
    ranks = ev["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1] and {r["step"] for r in ranks} == {3}
    assert ranks[0]["weights_sum"] == ranks[1]["weights_sum"]
    assert proc.stdout.count("plan for train.py") == 1  # rank 0 alone prints


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_exits_0_and_latest_finishes_the_run(tmp_path: Path) -> None:
    out = tmp_path / "stop"
    argv = ["--num_epochs", "1", "--max_train_samples", "16", "--per_device_train_batch_size", "2"]
    argv += [*TINY, "--output_dir", str(out)]
    proc = subprocess.Popen(
        [sys.executable, str(TRAIN_ENTRY), *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    log = out / "log.csv"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not (log.exists() and len(read_log(log)) >= 1):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 0, stderr[-2000:]
    stopped = [p.name for p in (out / "checkpoints").iterdir()]
    assert len(stopped) == 1 and "stopped by SIGTERM at step" in stderr + stdout
    step = int(stopped[0][5:13])
    assert 1 <= step < 8 and len(read_log(log)) == step
    assert run_train([*argv, "--resume_from_checkpoint", "latest"]) == 0
    assert_log_follows_plan(out)
