"""train.py's learning-rate plan: its schedule flags, their defaults and help, and the plan they resolve to.

``PROGRAM`` makes train.py known to ``lrsched show``/``plot`` through the entry point declared in
pyproject.toml (group ``lrsched.programs``). Light on purpose: no torch, so ``lrsched show`` stays
small; sizing a run from its data imports the data reader only when it is needed.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any

from lrsched import flags
from lrsched.programs import Program, Shown, typed_text
from lrsched.strategy import Plan, count, epoch_size, resolve_finetune

NAME = "train.py"
SCHEDULE_FLAGS = (
    *("num_epochs", "learning_rate", "lr_strategy", "scale_lr_for_short_training", "cosine_restarts"),
    *("warmup_ratio", "warmup_steps", "num_cycles", "min_lr", "max_steps", "decay_ratio", "decay_type"),
)
DEFAULTS: dict[str, Any] = {"num_epochs": Fraction(3), "lr_strategy": "auto"}
"""Schedule flags left unset that resolve to one value (the others resolve in the plan, with a source)."""
SCHEDULE_HELP = {
    "num_epochs": "epochs, a number > 0 (default 3)",
    "warmup_steps": "linear warm-up steps from 0 to the peak (default: from --warmup_ratio or the auto row)",
    "min_lr": "floor at the end of the decay (default 0)",
    "max_steps": "total optimizer updates (default: epochs x updates per epoch)",
    "warmup_ratio": "warm-up as a fraction of total steps, in [0, 1): ceil(R x total), exact for the decimal "
    "typed (default: the auto row's)",
}
"""train.py's --help for the schedule flags whose default is its own."""
DEFAULT_TEXT = {
    "num_epochs": "default 3",
    "warmup_steps": "default: from --warmup_ratio or the auto row",
    "warmup_ratio": "default: the auto row's",
    "min_lr": "default 0",
    "max_steps": "default: epochs x updates per epoch",
}
"""train.py's defaults as ``lrsched show --help`` states them beside other programs'."""
NAMES = flags.flag_names()
"""How train.py's messages and plan sources name the policy's keywords (``--num_epochs``, ...)."""
ACCUMULATION_FLAG = "--gradient_accumulation_steps"


def plan(given: Mapping[str, Any], steps_per_epoch: int | None) -> Plan:
    """train.py's plan from its typed schedule flags (a name absent: not given) and the run size."""
    return resolve_finetune(
        epochs=given.get("num_epochs", DEFAULTS["num_epochs"]),
        steps_per_epoch=steps_per_epoch,
        max_steps=given.get("max_steps"),
        strategy=given.get("lr_strategy", DEFAULTS["lr_strategy"]),
        learning_rate=given.get("learning_rate"),
        scale_lr_for_short_training=given.get("scale_lr_for_short_training", False),
        cosine_restarts=given.get("cosine_restarts", False),
        warmup_ratio=given.get("warmup_ratio"),
        warmup_steps=given.get("warmup_steps"),
        num_cycles=given.get("num_cycles"),
        min_lr=given.get("min_lr"),
        decay_ratio=given.get("decay_ratio"),
        decay_type=given.get("decay_type"),
        names=NAMES,
    )


def plan_from_args(args: argparse.Namespace, steps_per_epoch: int | None) -> Plan:
    """``plan`` for train.py's parsed flags (``flags.given``: what was typed)."""
    return plan(flags.given(args, SCHEDULE_FLAGS), steps_per_epoch)


# --- lrsched show ------------------------------------------------------------------------------

RUN_SIZE: dict[str, dict[str, Any]] = {
    "train_file": dict(type=Path, metavar="FILE"),
    "validation_file": dict(type=Path, metavar="FILE"),
    "text_column": dict(metavar="NAME"),
    "label_column": dict(metavar="NAME"),
    "max_train_samples": dict(type=flags.positive_int, metavar="N"),
    "per_device_train_batch_size": dict(type=flags.positive_int, metavar="N"),
    "gradient_accumulation_steps": dict(type=flags.positive_int, metavar="A"),
}
"""train.py's flags that fix its run size, read as train.py reads them (tests/test_cli.py checks them)."""
RUN_SIZE_DEFAULTS = {"text_column": "text", "label_column": "label", "per_device_train_batch_size": 32}
RUN_SIZE_DEFAULTS |= {"gradient_accumulation_steps": 1}
"""train.py's defaults for ``RUN_SIZE`` flags (tests/test_cli.py checks them against its parser)."""
STEPS_PER_EPOCH = dict(
    type=flags.positive_int,
    metavar="N",
    help="optimizer updates per epoch, ceil(batches / accumulation); selects train.py's plan "
    "(default: from train.py's data, batch and accumulation flags, as train.py sizes a 1-process run)",
)
OTHER_FLAGS = {
    **dict.fromkeys(("test_file", "max_eval_samples", "max_test_samples", "max_seq_length", "model"), 1),
    **dict.fromkeys(("per_device_eval_batch_size", "weight_decay", "max_grad_norm", "seed", "device"), 1),
    **dict.fromkeys(("output_dir", "save_steps", "save_total_limit", "resume_from_checkpoint", "save_strategy"), 1),
    **dict.fromkeys(("metric_for_best_model", "greater_is_better"), 1),
    **dict.fromkeys(("bf16", "overwrite_output_dir", "disable_tqdm", "no_group_by_length"), 0),
}
"""train.py's flags that do not change its LR plan: name -> number of values (0: a switch)."""


def show_plan(given: Mapping[str, Any]) -> Shown:
    """train.py's plan for a command line pasted into ``lrsched show``, sized as train.py sizes it."""
    steps_per_epoch, notes = _steps_per_epoch(given)
    resolved = plan(given, steps_per_epoch)
    return Shown(resolved.with_notes(notes), read=frozenset(RUN_SIZE))


def _steps_per_epoch(given: Mapping[str, Any]) -> tuple[int | None, list[str]]:
    """Updates per epoch: ``--steps_per_epoch``, else from train.py's data as train.py computes it.

    With ``--max_steps`` neither is needed (it sets the total); a typed size flag then gets a note.
    """
    size_flags = typed_text(given, RUN_SIZE, dashed=False)
    if "max_steps" in given:
        unused = typed_text(given, ["steps_per_epoch", *RUN_SIZE], dashed=False)
        why = f"--max_steps {given['max_steps']} sets the total (the auto row still comes from --num_epochs)"
        return None, [f"not used: {', '.join(unused)}; {why}"] if unused else []
    if "steps_per_epoch" in given:
        why = f"--steps_per_epoch {given['steps_per_epoch']} gives the updates per epoch"
        return given["steps_per_epoch"], [f"not used: {', '.join(size_flags)}; {why}"] if size_flags else []
    return _data_steps_per_epoch(given)


def _data_steps_per_epoch(given: Mapping[str, Any]) -> tuple[int, list[str]]:
    """train.py's ``ceil(B / A)`` for one process, ``B = ceil(examples / batch)``, from its data flags."""
    from lrsched.recipes.finetune.sizing import train_examples  # reads the data: only when sized from it

    size = {**RUN_SIZE_DEFAULTS, **{k: v for k, v in given.items() if k in RUN_SIZE}}
    n = train_examples(size)
    batch, accum = int(size["per_device_train_batch_size"]), int(size["gradient_accumulation_steps"])
    _, upe = epoch_size(n, batch, accum, accumulation_flag=ACCUMULATION_FLAG)
    note = (
        f"sized as train.py sizes it: {count(n, 'training example')}, batch {batch}, accumulation {accum}, "
        f"1 process -> {count(upe, 'update')} per epoch (under torchrun pass --steps_per_epoch)"
    )
    return upe, [note]


PROGRAM = Program(
    name=NAME,
    schedule_flags=SCHEDULE_FLAGS,
    plan=show_plan,
    flags={"steps_per_epoch": STEPS_PER_EPOCH, **{k: {**v, "help": argparse.SUPPRESS} for k, v in RUN_SIZE.items()}},
    other_flags=OTHER_FLAGS,
    defaults=DEFAULT_TEXT,
)
"""train.py as ``lrsched show`` knows it (entry point ``train.py`` in the group ``lrsched.programs``)."""
