"""The plan of an HF ``Trainer`` run: HF's arguments read as the strategy's keywords, what was typed, notes.

``lrsched.hf`` holds the classes a script names; this module holds what they decide (docs/hf.md):

- ``typed_names``: which values the user typed (the command line ``HfArgumentParser`` parsed, or the
  keywords given to the arguments' constructor); a default that a class brings (HF's 5e-5, TRL's 2e-5)
  is never typed, a typed value always is;
- ``resolve_plan``: the strategy's plan (``lrsched.strategy.resolve_finetune``) for the run size the
  Trainer trains, with a note or a one-line ``UsageError`` for every HF setting it does not follow;
- ``plan_text`` and ``write_plan_json``: the plan printed and kept in the output folder.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
from collections.abc import Callable, Iterable
from fractions import Fraction
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

from transformers import HfArgumentParser, TrainingArguments

from lrsched import flags
from lrsched.adoption import describe
from lrsched.atomic import atomic_write
from lrsched.errors import UsageError
from lrsched.schedules import AnySchedule, Replanned
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
TYPED = "_lrsched_typed"
"""The attribute where an arguments object keeps what was typed: ``(covered, typed)`` name sets."""
C = TypeVar("C", bound=type)
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
HF_TYPED = ("learning_rate", "num_train_epochs", "lr_scheduler_type", "lr_scheduler_kwargs")
"""HF's arguments whose being typed changes the plan (or refuses it)."""


# --- given means typed --------------------------------------------------------------------------


def _typed_in_argv(parser: argparse.ArgumentParser, argv: list[str]) -> frozenset[str]:
    """The ``dest`` of every option ``argv`` sets: ``lrsched.flags.typed_names``, the one rule of what was typed."""
    return flags.typed_names(parser, argv)


def _typed_at_construction(cls: type, args: tuple[Any, ...], kwargs: dict[str, Any], caller: FrameType | None) -> Any:
    """``(covered, typed)``: built by ``HfArgumentParser.parse_args_into_dataclasses``, every option of its
    parser is covered and the typed ones are those its command line sets; otherwise (in code, or by
    ``parse_dict``/``parse_json_file``, which pass only the keys given) the class's own fields are
    covered and the typed ones are those passed. A copy made by ``dataclasses.replace`` keeps its
    original's record, plus the fields it changes."""
    if caller is not None and caller.f_code is HfArgumentParser.parse_args_into_dataclasses.__code__:
        parser, argv = caller.f_locals["self"], caller.f_locals["args"]
        argv = sys.argv[1:] if argv is None else list(argv)
        covered = frozenset(a.dest for a in parser._actions)
        return covered, _typed_in_argv(parser, argv)
    obj = caller.f_locals.get("obj") if caller is not None else None
    if caller is not None and caller.f_code is dataclasses.replace.__code__ and hasattr(obj, TYPED):
        changes = frozenset(k for k, v in kwargs.items() if v is not getattr(obj, k))  # replace passes the rest as is
        covered, typed = getattr(obj, TYPED)
        return covered | changes, typed | changes
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    return frozenset(names), frozenset(names[: len(args)]) | frozenset(kwargs)


def record_typed(cls: C) -> C:
    """Make ``cls``'s constructor record what was typed (see ``typed_names``); returns ``cls``."""
    init: Callable[..., None] = cls.__init__  # type: ignore[misc]

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        object.__setattr__(self, TYPED, _typed_at_construction(type(self), args, kwargs, sys._getframe(1)))
        init(self, *args, **kwargs)

    __init__.__doc__, __init__.__wrapped__ = init.__doc__, init  # type: ignore[attr-defined]
    cls.__init__ = __init__  # type: ignore[misc]
    return cls


def typed_names(*sources: object, names: Iterable[str]) -> frozenset[str]:
    """Which of ``names`` the user typed, by what ``sources`` (arguments objects) recorded.

    A name covered by a record is typed when the record says so, even at a class's default
    (``--learning_rate 5e-5`` typed is a peak); a name no record covers (arguments built by a class
    that records nothing, e.g. a plain ``TrainingArguments`` in code) is typed when its value differs
    from its class's default, so a default a class brings (TRL's learning rate 2e-5) never is.
    """
    typed: set[str] = set()
    covered: set[str] = set()
    for source in sources:
        record = getattr(source, TYPED, None)
        if record is not None:
            covered |= record[0]
            typed |= record[1]
    for name in names:
        if name not in covered and any(_differs_from_default(source, name) for source in sources):
            typed.add(name)
    return frozenset(typed & set(names))


def _differs_from_default(obj: object, name: str) -> bool:
    if not dataclasses.is_dataclass(obj):
        return False
    for f in dataclasses.fields(obj):
        if f.name == name:
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            return bool(getattr(obj, name) != default)
    return False


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


def warmup_keywords(args: TrainingArguments) -> dict[str, Any]:
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


def hf_schedule_notes(args: TrainingArguments, typed: frozenset[str]) -> list[str]:
    """HF's own schedule settings, which the strategy does not follow: typed, each is refused in one line
    (``UsageError``); brought by the arguments' class (not HF's ``linear``, no keywords), each is noted."""
    notes = []
    kind = str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type))
    if "lr_scheduler_type" in typed:
        say = HF_SCHEDULERS.get(kind, "--lr_strategy with one of its shapes")
        raise UsageError(f"--lr_scheduler_type {kind}: the strategy sets the schedule; give {say} instead")
    if kind != "linear":
        notes.append(f"--lr_scheduler_type {kind} ({type(args).__name__}'s default) is not used: the plan sets the LR")
    given = getattr(args, "lr_scheduler_kwargs", None) or {}
    if given and "lr_scheduler_kwargs" in typed:
        instead = sorted({HF_SCHEDULER_KWARGS[k] for k in given if k in HF_SCHEDULER_KWARGS})
        hint = f"give {', '.join(instead)} instead" if instead else "the strategy takes none"
        raise UsageError(f"--lr_scheduler_kwargs {json.dumps(given)}: not read by the strategy; {hint}")
    if given:
        notes.append(f"--lr_scheduler_kwargs {json.dumps(given)} ({type(args).__name__}'s default) is not used")
    return notes


def _epochs(args: TrainingArguments, typed: frozenset[str], upe: int | None) -> tuple[Fraction, str | None]:
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


def check_arguments(strategy: object, args: TrainingArguments, typed: frozenset[str]) -> None:
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
    args: TrainingArguments,
    batches: int | None,
    *,
    typed: frozenset[str] | None = None,
    trainer_steps: int | None = None,
) -> Plan:
    """The strategy's plan for this run, with ``ceil(batches / A)`` updates per epoch (``batches``: this
    process's dataloader length, ``A = --gradient_accumulation_steps``); ``total = --max_steps`` when
    above 0, else ``ceil(E * updates per epoch)`` exactly for the epochs typed.

    ``typed``: the names typed (default ``typed_names(strategy, args)``). ``trainer_steps``: the updates
    the Trainer will make, noted when that differs from the plan's total. Raises ``UsageError``.
    """
    if typed is None:
        typed = typed_names(strategy, args, names=HF_TYPED)
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
            f"--learning_rate {args.learning_rate:g} is {type(args).__name__}'s default, not typed: "
            "the peak is the plan's"
        )
    total = plan.schedule.total
    if trainer_steps is not None and total is not None and trainer_steps != total:
        notes.append(
            f"the Trainer makes {trainer_steps} updates (its float epochs x updates), the plan ends at {total}: "
            f"{'the end value is held after it' if trainer_steps > total else 'the run stops before it'}"
        )
    return dataclasses.replace(plan, notes=(*plan.notes, *notes))


# --- the plan shown and kept ----------------------------------------------------------------------


def run_size(batches: int | None, args: TrainingArguments) -> dict[str, Any]:
    """The run size the plan was made for (``plan.json``'s ``"run"``)."""
    a = args.gradient_accumulation_steps
    upe = None if batches is None else updates_per_epoch(batches, a)
    return {"batches": batches, "accumulation": a, "processes": args.world_size, "updates_per_epoch": upe}


def plan_text(plan: Plan, batches: int | None, args: TrainingArguments) -> str:
    """The plan as ``lrsched show`` prints it, then the run size."""
    lines = ["plan for HF Trainer (lrsched.hf)", *plan.lines()]
    if batches is not None:
        a = args.gradient_accumulation_steps
        lines.append(
            f"  run: {updates_per_epoch(batches, a)} updates per epoch = ceil({batches} batches / "
            f"{a} accumulation), the batches of each of {args.world_size} process(es)"
        )
    return "\n".join(lines)


LISTED = 10_000
"""``plan.json`` lists the LR of every step up to this many; a longer plan every ``N``-th (and ``"steps"``)."""


def plan_json(plan: Plan, run: dict[str, Any], followed: AnySchedule) -> dict[str, Any]:
    """``lrsched show --json``'s object for ``plan`` (``"plan"`` with sources and notes, ``"lr"``; with
    ``"steps"`` when every ``N``-th step is listed), plus the run size, the schedule followed and, when
    that is a replan, the replan in words; ``"lr"`` is the followed schedule's."""
    total = plan.schedule.total
    last = total if total is not None else plan.schedule.warmup + max(plan.schedule.warmup, 1000)
    every = max(1, math.ceil((last + 1) / LISTED))
    steps = [*range(0, last + 1, every), *([last] if last % every else [])]
    out: dict[str, Any] = {"plan": plan.to_json(), "lr": [followed(t) for t in steps]}
    if every > 1:
        out["steps"] = steps
    replanned = followed.summary() if isinstance(followed, Replanned) else None
    return {**out, "run": run, "schedule": describe(followed), "replanned": replanned}


def write_plan_json(output_dir: str | os.PathLike[str], content: dict[str, Any]) -> Path:
    """``output_dir/plan.json``, written whole or not at all."""
    path = Path(output_dir) / "plan.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, encoding="utf-8") as f:
        json.dump(content, f, indent=1)
        f.write("\n")
    return path
