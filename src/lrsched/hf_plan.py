"""The plan of an HF ``Trainer`` run: HF's arguments read as the strategy's keywords, what was typed, notes.

``lrsched.hf`` holds the classes a script names; this module holds what they decide (docs/hf.md):

- ``typed_names``: which values the user typed (the command line ``HfArgumentParser`` parsed, or the
  keywords given to the arguments' constructor); a default that a class brings (HF's 5e-5, TRL's 2e-5)
  is never typed, a typed value always is;
- ``resolve_plan`` (from the torch-free ``lrsched.hf_resolve``, which ``lrsched show`` shares): the
  strategy's plan for the run size the Trainer trains, with a note or a one-line ``UsageError`` for
  every HF setting it does not follow;
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
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

from transformers import HfArgumentParser, TrainingArguments

from lrsched import flags
from lrsched.adoption import describe
from lrsched.atomic import atomic_write
from lrsched.hf_resolve import (  # the pure resolution, shared with lrsched show's HF Trainer program
    HF_NAMES,
    HF_SCHEDULER_KWARGS,
    HF_SCHEDULERS,
    STRATEGY_FIELDS,
    check_arguments,
    checked,
    hf_schedule_notes,
    warmup_keywords,
)
from lrsched.hf_resolve import resolve_plan as _resolve
from lrsched.schedules import AnySchedule, Replanned
from lrsched.strategy import Plan, updates_per_epoch

__all__ = [
    "HF_NAMES",
    "HF_SCHEDULERS",
    "HF_SCHEDULER_KWARGS",
    "STRATEGY_FIELDS",
    "check_arguments",
    "checked",
    "hf_schedule_notes",
    "resolve_plan",
    "warmup_keywords",
]

TYPED = "_lrsched_typed"
"""The attribute where an arguments object keeps what was typed: ``(covered, typed)`` name sets."""
C = TypeVar("C", bound=type)
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


def resolve_plan(
    strategy: object,
    args: TrainingArguments,
    batches: int | None,
    *,
    typed: frozenset[str] | None = None,
    trainer_steps: int | None = None,
) -> Plan:
    """``lrsched.hf_resolve.resolve_plan``, with ``typed`` by default ``typed_names(strategy, args)``."""
    if typed is None:
        typed = typed_names(strategy, args, names=HF_TYPED)
    return _resolve(strategy, args, batches, typed=typed, trainer_steps=trainer_steps)


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
