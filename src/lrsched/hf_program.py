"""``lrsched show``/``plot`` for a script built on ``StrategyTrainer`` (HF ``Trainer``, TRL ``SFTTrainer``).

``PROGRAM`` (entry point ``transformers-trainer`` in the group ``lrsched.programs``, pyproject.toml)
reads such a script's command line by HF's own flag names (``--num_train_epochs``, ``--warmup_steps``
as steps or a ratio, ...) plus the run size, and plans it with ``lrsched.hf_resolve.resolve_plan``, the
function ``StrategyTrainer`` itself calls: the same shape, peak, warm-up, total, sources and notes.
No torch, no transformers: the fields that function reads are given by ``ScriptArguments``.

Run size (docs/hf.md): ``--steps_per_epoch U`` directly, or ``--train_examples N`` sized as the
Trainer's dataloader is: ``B = ceil(N / b)`` batches (``floor`` with ``--dataloader_drop_last``), split
over ``P`` processes (``--processes``) into ``ceil(B / P)`` each (``floor`` with drop-last), then
``ceil(B_p / A)`` updates per epoch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lrsched import flags
from lrsched.errors import UsageError
from lrsched.hf_resolve import STRATEGY_FIELDS, resolve_plan
from lrsched.programs import Program, Shown, typed_text
from lrsched.strategy import count, updates_per_epoch

NAME = "HF Trainer script"
HF_DEFAULTS: dict[str, Any] = {
    "learning_rate": 5e-5,
    "num_train_epochs": 3.0,
    "warmup_steps": 0.0,
    "per_device_train_batch_size": 8,
    "gradient_accumulation_steps": 1,
    "processes": 1,
}
"""``TrainingArguments``' defaults for the fields the plan reads (transformers 5), and one process."""
SCHEDULE_FLAGS = (
    *("learning_rate", "lr_strategy", "scale_lr_for_short_training", "cosine_restarts", "num_cycles"),
    *("min_lr", "decay_ratio", "decay_type", "max_steps"),
)


@dataclass(frozen=True)
class ScriptArguments:
    """The ``TrainingArguments`` fields ``resolve_plan`` reads, as the script would hold them."""

    learning_rate: float
    num_train_epochs: float
    max_steps: int
    warmup_steps: float
    gradient_accumulation_steps: int
    lr_scheduler_type: str = "linear"
    lr_scheduler_kwargs: dict[str, Any] = field(default_factory=dict)
    arguments_class: str = "StrategyTrainingArguments"


@dataclass(frozen=True)
class StrategyValues:
    """``StrategyArguments``' fields as the script would hold them (its defaults when not typed)."""

    lr_strategy: str = "auto"
    scale_lr_for_short_training: bool = False
    cosine_restarts: bool = False
    num_cycles: float | None = None
    min_lr: float | None = None
    decay_ratio: str | None = None
    decay_type: str | None = None


def dataloader_batches(examples: int, batch: int, processes: int, drop_last: bool) -> int:
    """The batches of one process's epoch: ``B = ceil(N / b)`` (``floor`` when dropping the last), then
    ``ceil(B / P)`` per process (``floor`` when dropping the last), as accelerate shards the batches."""
    total = examples // batch if drop_last else -(-examples // batch)
    return total // processes if drop_last else -(-total // processes)


def _batches(given: Mapping[str, Any], accumulation: int) -> tuple[int | None, int, list[str]]:
    """``(batches, accumulation, notes)`` for ``resolve_plan``: from ``--steps_per_epoch`` (1 batch per
    update), else from ``--train_examples``; ``None`` without either (then ``--max_steps`` is required)."""
    size = {k: given.get(k, HF_DEFAULTS.get(k)) for k in ("per_device_train_batch_size", "processes")}
    if "steps_per_epoch" in given:
        unused = typed_text(given, [*SIZE_GIVEN, "gradient_accumulation_steps"], dashed=False)
        why = f"--steps_per_epoch {given['steps_per_epoch']} gives the updates per epoch"
        return given["steps_per_epoch"], 1, [f"not used: {', '.join(unused)}; {why}"] if unused else []
    if "train_examples" not in given:
        if "max_steps" not in given:
            raise UsageError("--train_examples: required to size the plan (or --steps_per_epoch U, or --max_steps T)")
        return None, accumulation, []
    n, b, p = given["train_examples"], size["per_device_train_batch_size"], size["processes"]
    drop = bool(given.get("dataloader_drop_last", False))
    batches = dataloader_batches(n, b, p, drop)
    if batches == 0:
        raise UsageError(f"--train_examples {n}: fewer than one batch of {b} per process with --dataloader_drop_last")
    note = (
        f"sized as the Trainer's dataloader: {count(n, 'training example')}, batch {b}, {count(p, 'process')}"
        f"{', drop last' if drop else ''} -> {batches} batches per process, accumulation {accumulation} "
        f"-> {count(updates_per_epoch(batches, accumulation), 'update')} per epoch"
    )
    return batches, accumulation, [note]


def _strategy(given: Mapping[str, Any]) -> StrategyValues:
    """The typed strategy flags as ``StrategyArguments`` holds them (a ratio as its decimal text)."""
    values = {k: given[k] for k in STRATEGY_FIELDS if k in given}
    if "decay_ratio" in values:
        values["decay_ratio"] = repr(float(values["decay_ratio"]))
    return StrategyValues(**values)


def show_plan(given: Mapping[str, Any]) -> Shown:
    """The plan ``StrategyTrainer`` resolves for the script's typed flags and the run size."""
    accumulation = given.get("gradient_accumulation_steps", HF_DEFAULTS["gradient_accumulation_steps"])
    batches, accumulation, notes = _batches(given, accumulation)
    args = ScriptArguments(
        learning_rate=given.get("learning_rate", HF_DEFAULTS["learning_rate"]),
        num_train_epochs=given.get("num_train_epochs", HF_DEFAULTS["num_train_epochs"]),
        max_steps=given.get("max_steps", -1),
        warmup_steps=given.get("warmup_steps", HF_DEFAULTS["warmup_steps"]),
        gradient_accumulation_steps=accumulation,
        lr_scheduler_type=given.get("lr_scheduler_type", "linear"),
    )
    typed = frozenset(given) & {"learning_rate", "num_train_epochs", "lr_scheduler_type"}
    plan = resolve_plan(_strategy(given), args, batches, typed=typed)
    return Shown(plan.with_notes(notes), read=frozenset(OWN_FLAGS) | frozenset(SIZE_FLAGS))


def hf_warmup(text: str) -> float:
    """HF's ``--warmup_steps``: a number >= 0 (``W >= 1`` steps, ``0 < W < 1`` a ratio; checked by the plan)."""
    return float(flags.nonnegative_float(text))


def _exact_float(text: str) -> float:
    """``--num_train_epochs``: a number > 0 (HF reads a float)."""
    return float(flags.positive_float(text))


SIZE_GIVEN = ("train_examples", "per_device_train_batch_size", "processes", "dataloader_drop_last")
"""The flags that size the plan from the dataset (not read with ``--steps_per_epoch``)."""
OWN_FLAGS: dict[str, dict[str, Any]] = {
    "num_train_epochs": dict(type=_exact_float, metavar="E", help="HF's epochs, a number > 0 (default 3.0)"),
    "warmup_steps": dict(
        type=hf_warmup, metavar="W", help="HF's warm-up: W >= 1 steps, 0 < W < 1 a ratio of the total (default 0)"
    ),
    "lr_scheduler_type": dict(metavar="NAME", help="HF's schedule: refused when typed, the strategy sets it"),
    "train_examples": dict(
        type=flags.positive_int, metavar="N", help="the training examples of the dataset, to size the plan"
    ),
    "processes": dict(type=flags.positive_int, metavar="P", help="processes (torchrun --nproc_per_node, default 1)"),
    "dataloader_drop_last": dict(action="store_true", help="HF's: drop each process's last incomplete batch"),
}
"""The flags only this program takes (typing one selects it), as ``add_argument`` keywords."""
SIZE_FLAGS: dict[str, dict[str, Any]] = {
    "per_device_train_batch_size": dict(type=flags.positive_int, metavar="N", help="HF's batch (default 8)"),
    "gradient_accumulation_steps": dict(type=flags.positive_int, metavar="A", help="HF's (default 1)"),
    "steps_per_epoch": dict(type=flags.positive_int, metavar="N", help="updates per epoch, ceil(batches / A)"),
}
"""Run-size flags other programs take too: read here, but they never select this program."""

PROGRAM = Program(
    name=NAME,
    schedule_flags=SCHEDULE_FLAGS,
    plan=show_plan,
    flags={**OWN_FLAGS, **SIZE_FLAGS},
    shared=frozenset((*SCHEDULE_FLAGS, *SIZE_FLAGS)),
)
"""An HF Trainer script as ``lrsched show`` knows it (docs/hf.md, "Preview with lrsched show")."""
