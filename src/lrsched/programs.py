"""The two programs' command lines as ``lrsched show``/``plot`` read them: which program, and its plan.

Any train.py-only flag (or ``--steps_per_epoch``) makes it train.py's plan; otherwise it is
phase5_big_run.py's. Every typed flag either changes the plan or gets a note saying why not.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from lrsched import flags
from lrsched.errors import UsageError
from lrsched.strategy import Plan, count, epoch_size

TRAIN = "train.py"
PHASE5 = "phase5_big_run.py"

# The programs' other flags, name -> number of values (0: a switch). ``lrsched show`` accepts them so a
# command line can be pasted as typed; tests/test_cli.py checks these tables against the programs' parsers
# (imported there: importing them here would load torch, and ``lrsched show`` stays under 200 MB).
TRAIN_OTHER = {
    **dict.fromkeys(("train_file", "validation_file", "test_file", "text_column", "label_column"), 1),
    **dict.fromkeys(("max_train_samples", "max_eval_samples", "max_test_samples", "max_seq_length", "model"), 1),
    **dict.fromkeys(("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"), 1),
    **dict.fromkeys(("weight_decay", "max_grad_norm", "seed", "device", "output_dir", "save_steps"), 1),
    **dict.fromkeys(("save_total_limit", "resume_from_checkpoint", "save_strategy"), 1),
    **dict.fromkeys(("bf16", "overwrite_output_dir", "disable_tqdm", "no_group_by_length"), 0),
}
PHASE5_OTHER = {
    **dict.fromkeys(("weight_decay", "weight_decay_end", "momentum_teacher", "teacher_temp"), 1),
    **dict.fromkeys(("warmup_teacher_temp", "warmup_teacher_temp_steps", "freeze_last_layer_steps"), 1),
    **dict.fromkeys(("clip_grad", "layer_decay", "center_momentum", "koleo_weight", "student_temp", "preset"), 1),
    **dict.fromkeys(("out_dim", "global_size", "local_size", "local_crops", "data_dir", "workers"), 1),
    **dict.fromkeys(("batch_size", "seed", "eval_every", "knn_train_samples", "knn_test_samples", "knn_features"), 1),
    **dict.fromkeys(("output_dir", "resume", "save_every", "keep_checkpoints", "device"), 1),
    **dict.fromkeys(("global_crops_scale", "local_crops_scale"), 2),
    **dict.fromkeys(("data_timeout",), 1),
    **dict.fromkeys(("bf16", "accept_data_change", "follow_links", "no_knn"), 0),
}
RUN_SIZE: dict[str, dict[str, Any]] = {
    "train_file": dict(type=Path, metavar="FILE"),
    "validation_file": dict(type=Path, metavar="FILE"),
    "text_column": dict(metavar="NAME"),
    "label_column": dict(metavar="NAME"),
    "max_train_samples": dict(type=flags.positive_int, metavar="N"),
    "per_device_train_batch_size": dict(type=flags.positive_int, metavar="N"),
    "gradient_accumulation_steps": dict(type=flags.positive_int, metavar="A"),
}
"""train.py flags that fix its run size: used as train.py uses them when ``show`` sizes a run from its data."""
TRAIN_DEFAULTS = {"text_column": "text", "label_column": "label", "per_device_train_batch_size": 32}
TRAIN_DEFAULTS |= {"gradient_accumulation_steps": 1}
"""train.py's defaults for ``RUN_SIZE`` flags (checked against its parser by the tests)."""
TRAIN_ONLY = tuple(n for n in TRAIN_OTHER if n not in PHASE5_OTHER)
PHASE5_ONLY = ("lr", *(n for n in PHASE5_OTHER if n not in TRAIN_OTHER))
FINETUNE_ONLY = (*(n for n in flags.FINETUNE_FLAGS if n not in flags.PRETRAIN_FLAGS), "steps_per_epoch", *TRAIN_ONLY)
"""Flags that make ``show``/``plot`` use train.py's plan."""


def given(ns: argparse.Namespace, name: str) -> bool:
    """Whether ``--name`` was typed (a switch that is on, or a value)."""
    value = getattr(ns, name, None)
    return value is not None and value is not False


def _finetune_trigger(ns: argparse.Namespace) -> str | None:
    """The first given flag that selects train.py's plan, as typed in its docs, or None."""
    if getattr(ns, "compare", None):
        return "--compare"
    for name in FINETUNE_ONLY:
        if given(ns, name):
            return flags.spellings(name)[-1]
    return None


def resolve(ns: argparse.Namespace) -> tuple[str, Plan]:
    """The program whose plan the flags describe, and that plan, with a note for each typed flag it ignores.

    Raises ``UsageError``.
    """
    if ns.replan:
        raise UsageError(
            "--replan: only for resuming phase5_big_run.py; lrsched plans a run from step 0, "
            "give the new horizon with --max-steps instead"
        )
    trigger = _finetune_trigger(ns)
    if trigger is None:
        plan = flags.pretrain_plan(ns)
        used = ("batch_size",) if ns.lr_ref_batch is not None else ()  # sizes the peak under --lr-ref-batch
        others = [n for n in (*TRAIN_OTHER, *PHASE5_OTHER) if n not in used]
        return PHASE5, _noted(plan, _ignored(ns, others, PHASE5))
    _refuse_phase5_flags(ns, trigger)
    steps_per_epoch, notes = _steps_per_epoch(ns)
    plan = flags.finetune_plan(ns, steps_per_epoch)
    return TRAIN, _noted(plan, [*notes, *_ignored(ns, [n for n in TRAIN_OTHER if n not in RUN_SIZE], TRAIN)])


def _refuse_phase5_flags(ns: argparse.Namespace, trigger: str) -> None:
    for name in PHASE5_ONLY:
        if given(ns, name):
            flag = flags.spellings(name)[0]
            value = f" {_shown(getattr(ns, name))}" if name != "lr" else f" {ns.lr:g}"
            hint = "; use --learning_rate instead" if name == "lr" else ""
            raise UsageError(
                f"{flag}{value}: is phase5_big_run.py's flag, but {trigger} makes this train.py's plan{hint}"
            )


def _shown(value: object) -> str:
    if isinstance(value, list):
        return " ".join(map(str, value))
    return "" if value is True else str(value)


def _typed(ns: argparse.Namespace, names: Iterable[str], dashed: bool = False) -> list[str]:
    """``--flag value`` for each of ``names`` given on the command line (train.py's spelling, or phase5's)."""
    pick = 0 if dashed else -1
    typed = [n for n in dict.fromkeys(names) if given(ns, n)]
    return [f"{flags.spellings(n)[pick]} {_shown(getattr(ns, n))}".rstrip() for n in typed]


def _ignored(ns: argparse.Namespace, names: Iterable[str], program: str) -> list[str]:
    typed = _typed(ns, names, dashed=program == PHASE5)
    return [f"not used for {program}'s LR plan: {', '.join(typed)}"] if typed else []


def _noted(plan: Plan, notes: Sequence[str]) -> Plan:
    return dataclasses.replace(plan, notes=(*plan.notes, *notes)) if notes else plan


def _steps_per_epoch(ns: argparse.Namespace) -> tuple[int | None, list[str]]:
    """Updates per epoch: ``--steps_per_epoch``, else from train.py's data as train.py computes it.

    With ``--max_steps`` neither is needed (it sets the total); a typed size flag then gets a note.
    """
    size_flags = _typed(ns, RUN_SIZE)
    if ns.max_steps is not None:
        unused = _typed(ns, ["steps_per_epoch", *RUN_SIZE])
        why = f"--max_steps {ns.max_steps} sets the total (the auto row still comes from --num_epochs)"
        return None, [f"not used: {', '.join(unused)}; {why}"] if unused else []
    if ns.steps_per_epoch is not None:
        why = f"--steps_per_epoch {ns.steps_per_epoch} gives the updates per epoch"
        return ns.steps_per_epoch, [f"not used: {', '.join(size_flags)}; {why}"] if size_flags else []
    return _data_steps_per_epoch(ns)


ExampleCounter = Callable[[argparse.Namespace], int]
"""A program's training examples, counted from its parsed data flags (``RUN_SIZE``) as the program reads them."""
_COUNTERS: dict[str, ExampleCounter] = {}
COUNTER_MODULES = {TRAIN: "lrsched.recipes.finetune.sizing"}
"""The module that registers each program's ``ExampleCounter`` when imported. The library names it and
imports it only when a plan is sized from data, as an entry point would: the library's import graph
holds no recipe (docs/design.md section 9, tests/test_layers.py)."""


def register_example_counter(program: str, counter: ExampleCounter) -> None:
    """Called by a program's recipe: how ``lrsched show`` counts that program's training examples."""
    _COUNTERS[program] = counter


def example_counter(program: str) -> ExampleCounter:
    """The registered counter of ``program``, importing its ``COUNTER_MODULES`` entry the first time."""
    if program not in _COUNTERS:
        importlib.import_module(COUNTER_MODULES[program])
    return _COUNTERS[program]


def _data_steps_per_epoch(ns: argparse.Namespace) -> tuple[int, list[str]]:
    """train.py's ``ceil(B / A)`` for one process, ``B = ceil(examples / batch)``, from its data flags."""
    n = example_counter(TRAIN)(ns)
    batch = int(str(train_flag(ns, "per_device_train_batch_size")))
    accum = int(str(train_flag(ns, "gradient_accumulation_steps")))
    _, upe = epoch_size(n, batch, accum)
    note = (
        f"sized as train.py sizes it: {count(n, 'training example')}, batch {batch}, accumulation {accum}, "
        f"1 process -> {count(upe, 'update')} per epoch (under torchrun pass --steps_per_epoch)"
    )
    return upe, [note]


def train_flag(ns: argparse.Namespace, name: str) -> object:
    """A ``RUN_SIZE`` flag as train.py reads it: the typed value, else train.py's default (``TRAIN_DEFAULTS``)."""
    value = getattr(ns, name)
    return TRAIN_DEFAULTS.get(name) if value is None else value
