"""lrsched.hf in TRL's ``SFTTrainer`` with peft LoRA: a 2-layer Llama from a config, a tokenizer built in memory.

The model, tokenizer and data are examples/hf_lora_sft.py's; the trainer is built here as the example
builds it (the three changed lines), with an update log. The example itself runs as a script too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("trl")
pytest.importorskip("peft")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded (TRL's telemetry included)
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
import torch
from datasets import Dataset
from hf_common import REPO, UpdateLog, load_example, show, without_words
from peft.optimizers import create_loraplus_optimizer
from transformers import HfArgumentParser

from lrsched.hf import StrategySFTConfig, StrategySFTTrainer

example = load_example("hf_lora_sft")

COMMON = ["--use_cpu", "--bf16", "false", "--report_to", "none", "--disable_tqdm", "true", "--seed", "0"]
COMMON += ["--save_strategy", "no", "--logging_steps", "1000", "--dataloader_num_workers", "0"]


def config(out: Path, *argv: str) -> Any:
    (args,) = HfArgumentParser(StrategySFTConfig).parse_args_into_dataclasses(
        [*COMMON, "--output_dir", str(out), *argv]
    )
    return args


def sft(
    out: Path, argv: list[str], n: int, *, loraplus: float = 0.0, resume: str | None = None
) -> tuple[Any, UpdateLog]:
    """``SFTTrainer`` with the strategy on ``n`` lines of code, LoRA rank 4 (LoRA+ with ``loraplus``)."""
    args = config(out, *argv)
    texts = example.code_lines(n)
    tokenizer = example.char_tokenizer(example.code_lines(64))
    model = example.lora(example.tiny_causal_lm(len(tokenizer)), 4)
    optimizer = None
    if loraplus:
        optimizer = create_loraplus_optimizer(
            model, torch.optim.AdamW, lr=args.learning_rate, loraplus_lr_ratio=loraplus
        )
    log = UpdateLog()
    trainer = StrategySFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_dict({"text": texts}),
        processing_class=tokenizer,
        callbacks=[log],
        optimizers=(optimizer, None),
    )
    trainer.train(resume_from_checkpoint=resume)
    return trainer, log


def check_against_show(trainer: Any, log: UpdateLog, *show_argv: str) -> None:
    """Every update's LR (each group's) is ``lrsched show``'s for the same plan, one scheduler step per update."""
    expected = show(*show_argv)
    assert without_words(trainer.plan.to_json()) == without_words(expected["plan"])
    total = expected["plan"]["total_steps"]
    assert trainer.state.global_step == total and [t for t, _ in log.seen] == list(range(total))
    assert log.first_lrs() == pytest.approx(expected["lr"][:total], rel=1e-12, abs=1e-18)


@pytest.mark.parametrize("epochs", ["1", "2", "3", "5", "10"])
def test_auto_at_each_number_of_epochs(epochs: str, tmp_path: Path) -> None:
    """16 lines, batch 8: 2 updates an epoch; TRL's default learning rate is not typed, auto's row is the peak."""
    trainer, log = sft(tmp_path, ["--num_train_epochs", epochs, "--per_device_train_batch_size", "8"], 16)
    check_against_show(trainer, log, "--num_epochs", epochs, "--steps_per_epoch", "2")
    assert trainer.plan.schedule.base in (3e-5, 4e-5, 5e-5) and trainer.args.learning_rate == 2e-5


RUNS = {
    "cosine_restarts": (
        "--num_train_epochs 4 --lr_strategy cosine_restarts --num_cycles 1.5 --min_lr 1e-6 --warmup_steps 0.15",
        "--num_epochs 4 --lr_strategy cosine_restarts --num_cycles 1.5 --min_lr 1e-6 --warmup_ratio 0.15",
    ),
    "wsd, max_steps": (
        "--max_steps 9 --num_train_epochs 3 --lr_strategy wsd --decay_ratio 0.3 --warmup_steps 2 --learning_rate 1e-3",
        "--max_steps 9 --num_epochs 3 --lr_strategy wsd --decay_ratio 0.3 --warmup_steps 2 --learning_rate 1e-3",
    ),
    "linear, typed 2e-5 (TRL's default)": (
        "--num_train_epochs 2 --lr_strategy linear --learning_rate 2e-5",
        "--num_epochs 2 --lr_strategy linear --learning_rate 2e-5",
    ),
}


@pytest.mark.parametrize("name", list(RUNS))
def test_explicit_shapes(name: str, tmp_path: Path) -> None:
    argv, show_argv = RUNS[name]
    trainer, log = sft(tmp_path, [*argv.split(), "--per_device_train_batch_size", "8"], 24)  # 3 updates an epoch
    check_against_show(trainer, log, *show_argv.split(), "--steps_per_epoch", "3")


def test_accumulation_with_a_partial_last_window(tmp_path: Path) -> None:
    """40 lines, batch 8: 5 batches; accumulation 2: windows of 2, 2, 1: 3 updates an epoch."""
    argv = ["--num_train_epochs", "2", "--per_device_train_batch_size", "8", "--gradient_accumulation_steps", "2"]
    trainer, log = sft(tmp_path, argv, 40)
    assert trainer.plan.source("total") == "2 epochs x 3 updates"
    check_against_show(trainer, log, "--num_epochs", "2", "--steps_per_epoch", "3")


def test_a_typed_learning_rate_is_the_peak_trl_s_default_is_not(tmp_path: Path) -> None:
    argv = ["--num_train_epochs", "3", "--per_device_train_batch_size", "8"]
    typed, _ = sft(tmp_path / "typed", [*argv, "--learning_rate", "5e-5"], 16)
    untyped, _ = sft(tmp_path / "untyped", argv, 16)
    assert typed.plan.schedule.base == 5e-5 and untyped.plan.schedule.base == 4e-5
    assert any("2e-05 is StrategySFTConfig's default, not typed" in note for note in untyped.plan.notes)


def test_loraplus_groups_keep_their_ratio(tmp_path: Path) -> None:
    """peft's LoRA+ optimizer at TRL's 2e-5 with ratio 16 (and its embedding group at 1e-6): the A matrices
    follow the plan, the B ones 16 x it, the embeddings 0.05 x it."""
    argv = ["--num_train_epochs", "2", "--per_device_train_batch_size", "8"]
    trainer, log = sft(tmp_path, argv, 16, loraplus=16)
    check_against_show(trainer, log, "--num_epochs", "2", "--steps_per_epoch", "2")
    for _, lrs in log.seen[1:]:  # lr(0) = 0 in the warm-up
        assert sorted({round(lr / lrs[0], 12) for lr in lrs}) == [0.05, 1.0, 16.0]
    assert not any("own LRs" in note for note in trainer.plan.notes)


def test_resume_continues_bitwise_adapters_included(tmp_path: Path) -> None:
    argv = ["--num_train_epochs", "2", "--per_device_train_batch_size", "8", "--learning_rate", "1e-2"]
    argv += ["--save_strategy", "steps", "--save_steps", "3"]
    whole, whole_log = sft(tmp_path, argv, 24)  # 6 updates, a checkpoint at 3 and 6
    resumed, resumed_log = sft(tmp_path, argv, 24, resume=str(tmp_path / "checkpoint-3"))
    assert resumed_log.seen == whole_log.seen[3:]
    for (name, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_replan_on_resume_re_warms_without_a_jump(tmp_path: Path) -> None:
    """2 epochs (auto: linear, 4e-5) resumed at update 3 with 4 epochs (auto: cosine, 5e-5) and --replan:
    update 3 uses the old plan's LR, then a re-warm to the new peak, as plan.json lists."""
    argv = ["--per_device_train_batch_size", "8", "--save_strategy", "steps", "--save_steps", "3"]
    _, before = sft(tmp_path, [*argv, "--num_train_epochs", "2"], 24)  # 3 updates an epoch
    longer = [*argv, "--num_train_epochs", "4", "--replan"]
    after, log = sft(tmp_path, longer, 24, resume=str(tmp_path / "checkpoint-3"))
    assert [t for t, _ in log.seen] == list(range(3, 12)) and log.seen[0][1] == before.seen[3][1]
    kept = json.loads((tmp_path / "plan.json").read_text())
    assert kept["replanned"].startswith("from step 3:") and after.plan.schedule.base == 5e-5
    assert log.first_lrs() == pytest.approx(kept["lr"][3:12], rel=1e-12, abs=1e-18)
    assert max(log.first_lrs()) == pytest.approx(5e-5, rel=1e-12)


def test_the_example_script_runs_offline(tmp_path: Path) -> None:
    """examples/hf_lora_sft.py as a user runs it: the plan printed once, plan.json and the adapter written."""
    argv = [str(REPO / "examples" / "hf_lora_sft.py"), "--output_dir", str(tmp_path), *COMMON]
    argv += ["--num_train_epochs", "2", "--per_device_train_batch_size", "16", "--loraplus_lr_ratio", "16"]
    done = subprocess.run([sys.executable, *argv], env=_env(), capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("plan for HF Trainer") == 1 and "(2 epochs x 4 updates)" in done.stdout
    assert json.loads((tmp_path / "plan.json").read_text())["plan"]["total_steps"] == 8
    assert (tmp_path / "adapter_model.safetensors").is_file()


@pytest.mark.slow
def test_the_example_under_torchrun_with_two_processes(tmp_path: Path) -> None:
    """2 CPU processes (gloo): exit 0, the plan printed once; 70 lines at batch 16 are 5 batches, 3 a process
    (the last padded), so 3 updates an epoch: the plan ``lrsched show --processes 2 --train_examples 70``
    previews, field for field."""
    from test_hf import _free_port

    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port())]
    cmd += [str(REPO / "examples" / "hf_lora_sft.py"), "--output_dir", str(tmp_path), *COMMON]
    size = ["--num_train_epochs", "2", "--per_device_train_batch_size", "16"]
    cmd += [*size, "--examples", "70"]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("plan for HF Trainer") == 1 and "(2 epochs x 3 updates)" in done.stdout
    assert "the batches of each of 2 process(es)" in done.stdout
    kept = json.loads((tmp_path / "plan.json").read_text())  # written by the main process
    assert kept["run"]["processes"] == 2 and kept["plan"]["total_steps"] == 6
    preview = show(*size, "--processes", "2", "--train_examples", "70")
    assert without_words(preview["plan"]) == without_words(kept["plan"])


def _env() -> dict[str, str]:
    from helpers import child_env

    return child_env(HF_HUB_DISABLE_TELEMETRY="1", PYTHONPATH=f"{REPO / 'src'}")
