"""Tests for lrsched.hf_program: ``lrsched show`` with an HF Trainer script's flags plans what StrategyTrainer does."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

pytest.importorskip("transformers")
from hf_common import COMMON, Tokens, show, tiny_model
from transformers import HfArgumentParser

from lrsched import cli, programs
from lrsched.hf import StrategyTrainer, StrategyTrainingArguments
from lrsched.hf_plan import resolve_plan

CASES = [
    (["--num_train_epochs", "1"], 100),
    (["--num_train_epochs", "3"], 100),
    (["--num_train_epochs", "10"], 40),
    (["--num_train_epochs", "3", "--warmup_steps", "0.1"], 100),
    (["--num_train_epochs", "2", "--warmup_steps", "0.07"], 300),
    (["--warmup_steps", "7"], 100),
    (["--max_steps", "25"], 100),
    (["--num_train_epochs", "2", "--gradient_accumulation_steps", "3"], 100),
    (["--num_train_epochs", "2", "--learning_rate", "5e-5"], 100),
    (["--num_train_epochs", "2", "--per_device_train_batch_size", "16", "--dataloader_drop_last"], 100),
    (["--num_train_epochs", "4", "--lr_strategy", "wsd", "--decay_ratio", "0.3", "--min_lr", "1e-6"], 100),
]


def trainer_plan(argv: list[str], n: int, out: Path) -> tuple[dict[str, object], list[float], int]:
    """The plan StrategyTrainer resolves for the same command line: its real dataloader's length."""
    (args,) = HfArgumentParser(StrategyTrainingArguments).parse_args_into_dataclasses(
        [*COMMON, "--output_dir", str(out), *argv]
    )
    trainer = StrategyTrainer(model=tiny_model(), args=args, train_dataset=Tokens(n))
    batches = len(trainer.get_train_dataloader())
    plan = resolve_plan(args, args, batches)
    total = plan.schedule.total
    assert total is not None
    return plan.to_json(), [plan.schedule(t) for t in range(total + 1)], batches


@pytest.mark.parametrize(("argv", "n"), CASES)
def test_show_plans_what_the_trainer_plans(argv: list[str], n: int, tmp_path: Path) -> None:
    want_plan, want_lr, _ = trainer_plan(argv, n, tmp_path)
    got = show(*argv, "--train_examples", str(n))
    sizing = [note for note in got["plan"]["notes"] if note.startswith("sized as")]
    assert len(sizing) == 1
    got["plan"]["notes"].remove(sizing[0])
    assert got["plan"] == want_plan
    assert got["lr"] == want_lr


def test_steps_per_epoch_gives_the_updates_directly(tmp_path: Path) -> None:
    argv = ["--num_train_epochs", "3", "--gradient_accumulation_steps", "3"]
    want_plan, want_lr, batches = trainer_plan(argv, 100, tmp_path)
    got = show("--num_train_epochs", "3", "--steps_per_epoch", str(math.ceil(batches / 3)))
    assert (got["plan"], got["lr"]) == (want_plan, want_lr)


def test_the_sizing_note_counts_the_dataloader() -> None:
    notes = show("--num_train_epochs", "2", "--train_examples", "100", "--gradient_accumulation_steps", "3")
    assert (
        "sized as the Trainer's dataloader: 100 training examples, batch 8, 1 process -> 13 batches per process, "
        "accumulation 3 -> 5 updates per epoch"
    ) in notes["plan"]["notes"]


@pytest.mark.parametrize(
    ("argv", "program"),
    [
        (["--steps_per_epoch", "100", "--lr_strategy", "cosine"], "train.py"),
        (["--num_epochs", "3", "--steps_per_epoch", "100", "--per_device_train_batch_size", "8"], "train.py"),
        (["--lr-ref-batch", "256", "--warmup-steps", "10"], "phase5_big_run.py"),
        (["--num_train_epochs", "3", "--steps_per_epoch", "100", "--lr_strategy", "cosine"], "HF Trainer script"),
    ],
)
def test_lines_go_to_their_program(argv: list[str], program: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["show", *argv]) == 0
    assert capsys.readouterr().out.startswith(f"plan for {program}\n")


def test_the_trainer_program_leaves_the_others_own_flags_as_they_were() -> None:
    known = programs.installed()
    without = [p for p in known if p.name != "HF Trainer script"]
    assert len(without) == len(known) - 1
    for program in without:
        assert programs.own_flags(program, known) == programs.own_flags(program, without)


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--num_train_epochs", "2", "--train_examples", "9", "--warmup_steps", "1.5"], "--warmup_steps 1.5: must be"),
        (["--num_train_epochs", "2"], "--train_examples: required"),
        (["--num_train_epochs", "0", "--train_examples", "9"], "--num_train_epochs"),
        (["--train_examples", "9", "--lr_scheduler_type", "cosine"], "--lr_scheduler_type cosine:"),
        (["--num_train_epochs", "2", "--train_examples", "9", "--num_epochs", "3"], "is HF Trainer script's flag"),
        (["--steps_per_epoch", "5", "--warmup_steps", "0.1"], "'0.1' is not an integer"),
        (["--train_examples", "3", "--dataloader_drop_last"], "fewer than one batch"),
    ],
)
def test_bad_input_is_one_line(argv: list[str], says: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["show", *argv]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and says in err
