"""How ``StrategyTrainer`` plans a run from HF's arguments: pure, no torch, no transformers.

One implementation for both users: ``lrsched.hf_plan`` (a real ``TrainingArguments``, its dataloader's
length) and ``lrsched show``'s HF Trainer program (the same fields, typed on its command line). ``args``
is any object with ``TrainingArguments``' fields read here: ``learning_rate``, ``num_train_epochs``,
``max_steps``, ``warmup_steps`` (and transformers 4's ``warmup_ratio``), ``gradient_accumulation_steps``,
``lr_scheduler_type``, ``lr_scheduler_kwargs``. Notes name the arguments' class (``arguments_name``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from fractions import Fraction
from typing import Any

from lrsched import flags
from lrsched.errors import UsageError
from lrsched.strategy import Plan, count, resolve_finetune, updates_per_epoch

STRATEGY_FIELDS = (
    "lr_strategy",
    "scale_lr_for_short_training",
    "cosine_restarts",
    "num_cycles",
    "min_lr",
    "decay_ratio",
    "decay_type",
)
HF_NAMES = {
    "epochs": "--num_train_epochs",
    "steps_per_epoch": "updates per epoch",
    "max_steps": "--max_steps",
    "strategy": "--lr_strategy",
    "learning_rate": "--learning_rate",
    "warmup_steps": "--warmup_steps",
    "warmup_ratio": "--warmup_steps",
    **{name: f"--{name}" for name in STRATEGY_FIELDS},
}
"""How an HF script's command line names each keyword of the policy: for the plan's sources and messages."""


def arguments_name(args: Any) -> str:
    """The arguments' class as notes name it: ``args.arguments_class`` when given (a preview of a
    script's flags), else the class of ``args`` (``StrategyTrainingArguments``)."""
    return str(getattr(args, "arguments_class", None) or type(args).__name__)


# --- HF's arguments as the strategy's keywords ----------------------------------------------------


def checked(name: str, value: object) -> Any:
    """``value`` through the rule of the flag table (``lrsched.flags.FLAGS[name]``): a ``UsageError`` naming it."""
    if value is None or isinstance(value, bool):
        return value
    spec, text = flags.FLAGS[name], str(value)
    if "choices" in spec and text not in spec["choices"]:
        raise UsageError(f"--{name} {text}: must be one of {', '.join(spec['choices'])}")
    if "type" not in spec:
        return text
    try:
        return spec["type"](text)
    except argparse.ArgumentTypeError as err:
        rule = str(err).removeprefix(f"{text}: ")  # the rules' messages start with the value
        raise UsageError(f"--{name} {text}: {rule}") from None


def _decimal(x: float) -> str:
    """The decimal a float was typed as (its shortest repr: ``0.07``), which the flag rules read exactly."""
    return repr(float(x))


def warmup_keywords(args: Any) -> dict[str, Any]:
    """HF's ``--warmup_steps W`` (a float in transformers 5): ``W >= 1`` steps (a whole number), ``0 < W < 1``
    a ratio of the total (the decimal typed, exact), 0 (HF's default) the auto row's ratio.
    transformers 4's ``--warmup_ratio`` field is read when it exists (transformers 5 has none)."""
    steps, ratio = float(args.warmup_steps), float(getattr(args, "warmup_ratio", 0.0) or 0.0)
    if steps >= 1:
        if not steps.is_integer():
            raise UsageError(f"--warmup_steps {steps:g}: must be a whole number of steps, or a ratio in (0, 1)")
        return {"warmup_steps": int(steps), "warmup_ratio": None}
    if steps > 0:
        return {"warmup_steps": None, "warmup_ratio": checked("warmup_ratio", _decimal(steps))}
    return {"warmup_steps": None, "warmup_ratio": checked("warmup_ratio", _decimal(ratio)) if ratio > 0 else None}


HF_SCHEDULERS = {
    "linear": "--lr_strategy linear",
    "cosine": "--lr_strategy cosine",
    "cosine_with_restarts": "--lr_strategy cosine_restarts --num_cycles C",
    "constant": "--lr_strategy constant --warmup_steps 0",
    "constant_with_warmup": "--lr_strategy constant",
    "cosine_with_min_lr": "--lr_strategy cosine --min_lr LR",
    "warmup_stable_decay": "--lr_strategy wsd --decay_ratio R --decay_type T",
}
"""HF's ``--lr_scheduler_type`` values and the strategy flags that say the same, named in its refusal."""
HF_SCHEDULER_KWARGS = {
    "num_cycles": "--num_cycles",
    "min_lr": "--min_lr",
    "min_lr_rate": "--min_lr",
    "num_decay_steps": "--decay_ratio",
    "decay_type": "--decay_type",
}


def hf_schedule_notes(args: Any, typed: frozenset[str]) -> list[str]:
    """HF's own schedule settings, which the strategy does not follow: typed, each is refused in one line
    (``UsageError``); brought by the arguments' class (not HF's ``linear``, no keywords), each is noted."""
    notes = []
    kind = str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type))
    if "lr_scheduler_type" in typed:
        say = HF_SCHEDULERS.get(kind, "--lr_strategy with one of its shapes")
        raise UsageError(f"--lr_scheduler_type {kind}: the strategy sets the schedule; give {say} instead")
    if kind != "linear":
        notes.append(f"--lr_scheduler_type {kind} ({arguments_name(args)}'s default) is not used: the plan sets the LR")
    given = getattr(args, "lr_scheduler_kwargs", None) or {}
    if given and "lr_scheduler_kwargs" in typed:
        instead = sorted({HF_SCHEDULER_KWARGS[k] for k in given if k in HF_SCHEDULER_KWARGS})
        hint = f"give {', '.join(instead)} instead" if instead else "the strategy takes none"
        raise UsageError(f"--lr_scheduler_kwargs {json.dumps(given)}: not read by the strategy; {hint}")
    if given:
        notes.append(f"--lr_scheduler_kwargs {json.dumps(given)} ({arguments_name(args)}'s default) is not used")
    return notes


def _epochs(args: Any, typed: frozenset[str], upe: int | None) -> tuple[Fraction, str | None]:
    """The epochs whose row the plan takes, and a note when they were not typed.

    ``--max_steps`` without ``--num_train_epochs``: the epochs those updates train (``max_steps / upe``);
    without a dataloader length, the default epochs, said in the note."""
    epochs = checked("num_epochs", _decimal(args.num_train_epochs))
    if args.max_steps <= 0 or "num_train_epochs" in typed:
        return epochs, None
    if upe is None:
        return epochs, (
            f"--max_steps {args.max_steps} without --num_train_epochs and a dataset without a length: "
            f"the row is for the default {count(f'{float(epochs):g}', 'epoch')}"
        )
    trained = Fraction(args.max_steps, upe)
    return trained, (
        f"--max_steps {args.max_steps} without --num_train_epochs: the row is for the "
        f"{count(f'{float(trained):g}', 'epoch')} it trains ({args.max_steps} updates / {upe} per epoch)"
    )


def check_arguments(strategy: object, args: Any, typed: frozenset[str]) -> None:
    """Refuse a bad argument before any training (one ``UsageError`` naming it): what ``resolve_plan``
    checks that does not depend on the run size."""
    hf_schedule_notes(args, typed)
    values = {name: checked(name, getattr(strategy, name)) for name in STRATEGY_FIELDS}
    warmup_keywords(args)
    resolve_finetune(
        epochs=checked("num_epochs", _decimal(args.num_train_epochs)),
        steps_per_epoch=10**9,  # large enough that no warm-up or decay ratio runs out of steps
        strategy=values.pop("lr_strategy") or "auto",
        learning_rate=checked("learning_rate", args.learning_rate) if "learning_rate" in typed else None,
        **values,
        names=HF_NAMES,
    )


def resolve_plan(
    strategy: object,
    args: Any,
    batches: int | None,
    *,
    typed: frozenset[str],
    trainer_steps: int | None = None,
) -> Plan:
    """The strategy's plan for this run, with ``ceil(batches / A)`` updates per epoch (``batches``: this
    process's dataloader length, ``A = --gradient_accumulation_steps``); ``total = --max_steps`` when
    above 0, else ``ceil(E * updates per epoch)`` exactly for the epochs typed.

    ``typed``: the names typed (``lrsched.hf_plan.typed_names``). ``trainer_steps``: the updates
    the Trainer will make, noted when that differs from the plan's total. Raises ``UsageError``.
    """
    schedule_notes = hf_schedule_notes(args, typed)
    upe = None if batches is None else updates_per_epoch(batches, args.gradient_accumulation_steps)
    max_steps = args.max_steps if args.max_steps > 0 else None
    if upe is None and max_steps is None:
        raise UsageError("--max_steps: required when the training dataloader has no length")
    epochs, epochs_note = _epochs(args, typed, upe)
    values = {name: checked(name, getattr(strategy, name)) for name in STRATEGY_FIELDS}
    given_lr = "learning_rate" in typed
    plan = resolve_finetune(
        epochs=epochs,
        steps_per_epoch=upe,
        max_steps=max_steps,
        strategy=values.pop("lr_strategy") or "auto",
        learning_rate=checked("learning_rate", args.learning_rate) if given_lr else None,
        **warmup_keywords(args),
        **values,
        names=HF_NAMES,
    )
    flags.check_peak(plan, "--learning_rate")
    notes = [*schedule_notes, *([] if epochs_note is None else [epochs_note])]
    if not given_lr:
        notes.append(
            f"--learning_rate {args.learning_rate:g} is {arguments_name(args)}'s default, not typed: "
            "the peak is the plan's"
        )
    total = plan.schedule.total
    if trainer_steps is not None and total is not None and trainer_steps != total:
        notes.append(
            f"the Trainer makes {trainer_steps} updates (its float epochs x updates), the plan ends at {total}: "
            f"{'the end value is held after it' if trainer_steps > total else 'the run stops before it'}"
        )
    return dataclasses.replace(plan, notes=(*plan.notes, *notes))
