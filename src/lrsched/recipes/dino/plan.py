"""phase5's learning-rate plan: its schedule flags, their defaults and help, and the plan they resolve to.

Warm-up + cosine to ``--min-lr`` at ``--max-steps``, or the peak held without it; ``--decay-ratio``
or ``--decay-type`` select warmup-stable-decay; ``--lr-ref-batch`` scales ``--lr`` by the global
batch (DINO's rule). ``PROGRAM`` makes phase5 known to ``lrsched show``/``plot`` through the entry
point declared in pyproject.toml (group ``lrsched.programs``). Light on purpose: no torch.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping
from typing import Any

from lrsched import flags
from lrsched.errors import UsageError
from lrsched.programs import Program, Shown
from lrsched.step_plan import StepDefaults, resolve_steps
from lrsched.strategy import Plan

NAME = "phase5_big_run.py"
SCHEDULE_FLAGS = ("lr", "warmup_steps", "warmup_ratio", "min_lr", "max_steps", "replan", "decay_ratio", "decay_type")
"""phase5's entries of lrsched's flag table; ``--lr-ref-batch`` is its own (``LR_REF_BATCH``)."""
DEFAULTS = StepDefaults(peak=5e-4, warmup_steps=2500, min_lr=1e-6)
BATCH_SIZE = 64
"""phase5's default ``--batch-size`` (images per step on each process)."""
LR_REF_BATCH = dict(
    type=flags.positive_int,
    metavar="N",
    help="DINO's rule: --lr is for a global batch of N; the peak is lr x batch-size x processes / N "
    "(default: --lr is the peak, as typed)",
)
"""``--lr-ref-batch``: phase5's own schedule flag (the batch rule is DINO's), ``add_argument`` keywords."""
SCHEDULE_HELP = {
    "lr": "peak learning rate (default 5e-4)",
    "warmup_steps": "linear warm-up steps from 0 to the peak (default 2500)",
    "min_lr": "floor at the end of the decay (default 1e-6)",
    "max_steps": "total optimizer updates (default none: open-ended, the LR held after warm-up)",
    "decay_ratio": "select wsd: hold the peak, then decay over the last ceil(R x --max-steps) steps, "
    "R in (0, 1] (default with --decay-type: 0.2)",
    "decay_type": "select wsd with this form of the final decay (default cosine)",
    "warmup_ratio": "warm-up as a fraction of --max-steps, in [0, 1): ceil(R x T), exact for the decimal "
    "typed; needs --max-steps, not with --warmup-steps (default: none, --warmup-steps counts)",
}
"""phase5's --help for the schedule flags whose default or meaning is its own."""
DEFAULT_TEXT = {
    "lr": "default 5e-4",
    "warmup_steps": "default 2500",
    "min_lr": "default 1e-6",
    "max_steps": "default none: open-ended",
}
"""phase5's defaults as ``lrsched show --help`` states them beside other programs'."""
NAMES = flags.flag_names(dashed=True)
"""How phase5's messages and plan sources name the keywords (``--warmup-steps``, ...)."""
SHAPE_SOURCE = "phase5_big_run.py: warm-up + cosine"


def add_schedule_flags(parser: argparse.ArgumentParser, title: str) -> None:
    """phase5's schedule flags with its own help, ``--lr-ref-batch`` among them."""
    group = parser.add_argument_group(title)
    flags.add_schedule_flags(group, SCHEDULE_FLAGS, help=SCHEDULE_HELP)
    flags.add_flag(group, "lr_ref_batch", **LR_REF_BATCH)


def plan(given: Mapping[str, Any], batch_size: int, processes: int) -> Plan:
    """phase5's plan from its typed schedule flags (a name absent: not given); with ``--lr-ref-batch``
    the peak is scaled by the global batch, ``batch_size x processes``."""
    resolved = resolve_steps(
        defaults=DEFAULTS,
        lr=given.get("lr"),
        warmup_steps=given.get("warmup_steps"),
        min_lr=given.get("min_lr"),
        max_steps=given.get("max_steps"),
        decay_ratio=given.get("decay_ratio"),
        decay_type=given.get("decay_type"),
        warmup_ratio=given.get("warmup_ratio"),
        names=NAMES,
        shape_source=SHAPE_SOURCE,
    )
    if "lr_ref_batch" not in given:
        return resolved
    return batch_scaled(resolved, given["lr_ref_batch"], batch_size, processes)


def plan_from_args(args: argparse.Namespace, processes: int) -> Plan:
    """``plan`` for phase5's parsed flags (``flags.given``: what was typed) on ``processes`` processes."""
    return plan(flags.given(args, (*SCHEDULE_FLAGS, "lr_ref_batch")), args.batch_size, processes)


def batch_scaled(plan: Plan, reference: int, batch: int, processes: int) -> Plan:
    """DINO's rule: ``peak = lr x batch x processes / reference``, its source saying so."""
    peak = plan.schedule.base * batch * processes / reference
    if peak < plan.schedule.final:
        raise UsageError(f"--lr-ref-batch {reference}: makes the peak {peak:g}, below --min-lr {plan.schedule.final:g}")
    how = f"{plan.source('peak')} x {batch * processes}/{reference} (global batch / --lr-ref-batch)"
    sources = tuple((k, how if k == "peak" else v) for k, v in plan.sources)
    return dataclasses.replace(plan, schedule=dataclasses.replace(plan.schedule, base=peak), sources=sources)


# --- lrsched show ------------------------------------------------------------------------------

OTHER_FLAGS = {
    **dict.fromkeys(("weight_decay", "seed", "device", "output_dir"), 1),
    "bf16": 0,
    **dict.fromkeys(("weight_decay_end", "momentum_teacher", "teacher_temp", "warmup_teacher_temp"), 1),
    **dict.fromkeys(("warmup_teacher_temp_steps", "freeze_last_layer_steps", "clip_grad", "layer_decay"), 1),
    **dict.fromkeys(("center_momentum", "koleo_weight", "student_temp", "preset", "out_dim", "global_size"), 1),
    **dict.fromkeys(("local_size", "local_crops", "data_dir", "workers", "batch_size", "eval_every"), 1),
    **dict.fromkeys(("knn_train_samples", "knn_test_samples", "knn_features", "resume", "save_every"), 1),
    **dict.fromkeys(("keep_checkpoints", "recipe"), 1),
    **dict.fromkeys(("global_crops_scale", "local_crops_scale"), 2),
    **dict.fromkeys(("data_timeout",), 1),
    **dict.fromkeys(("accept_data_change", "follow_links", "no_knn"), 0),
}
"""phase5's flags that do not change its LR plan (``--batch-size`` does under ``--lr-ref-batch``): name ->
number of values (0: a switch). Those it shares with train.py first, so a note lists them as before."""


def show_plan(given: Mapping[str, Any]) -> Shown:
    """phase5's plan for a command line pasted into ``lrsched show``: one process, the typed batch size."""
    batch = int(given.get("batch_size", BATCH_SIZE))
    resolved = plan(given, batch, processes=1)
    return Shown(resolved, read=frozenset({"batch_size"}) if "lr_ref_batch" in given else frozenset())


PROGRAM = Program(
    name=NAME,
    schedule_flags=SCHEDULE_FLAGS,
    plan=show_plan,
    flags={"lr_ref_batch": LR_REF_BATCH},
    other_flags=OTHER_FLAGS,
    dashed=True,
    fallback=True,
    defaults=DEFAULT_TEXT,
)
"""phase5 as ``lrsched show`` knows it (entry point ``phase5_big_run.py`` in the group ``lrsched.programs``)."""
