"""The one argparse definition of every schedule flag, shared by ``lrsched``, train.py and
phase5_big_run.py, and the step from parsed flags to a ``Plan``.

Every flag accepts both spellings (``--warmup-steps`` and ``--warmup_steps``). Bad input
gives one line naming the flag, the value and the rule, and exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from fractions import Fraction
from typing import Any, NoReturn

from lrsched.errors import ScheduleError, UsageError
from lrsched.schedules import DECAY_TYPES
from lrsched.strategy import STRATEGIES, Plan, resolve_finetune, resolve_pretrain


class ArgumentParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line: ``prog: error: message``, status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


@contextmanager
def usage_errors(prog: str) -> Iterator[None]:
    """Turn a ``UsageError`` or ``ScheduleError`` raised inside into one line and exit status 2."""
    try:
        yield
    except (UsageError, ScheduleError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def number(text: str) -> float:
    """A finite float."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r}: must be a finite number")
    return value


def exact_decimal(text: str) -> Fraction:
    """A finite number kept exact: ``2.5`` epochs stays 5/2, ``0.07`` is 7/100, not a nearby float."""
    number(text)
    return Fraction(text.strip())


def integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


@dataclasses.dataclass(frozen=True)
class Checked:
    """An argparse ``type``: ``parse`` the text, then require ``low <= value < high``.

    ``low_open`` makes the lower bound strict (``value > low``), ``high_closed`` admits ``high``.
    A value outside gives ``"<text>: must be <rule>"``, e.g. ``0: must be > 0``, ``1: must be in [0, 1)``.
    """

    parse: Callable[[str], Any]
    low: float
    high: float = math.inf
    low_open: bool = False
    high_closed: bool = False

    def __call__(self, text: str) -> Any:
        value = self.parse(text)
        above = value > self.low if self.low_open else value >= self.low
        below = value <= self.high if self.high_closed else value < self.high
        if not (above and below):
            raise argparse.ArgumentTypeError(f"{text}: must be {self.rule}")
        return value

    @property
    def rule(self) -> str:
        if math.isinf(self.high):
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{']' if self.high_closed else ')'}"


positive_float = Checked(number, 0, low_open=True)
nonnegative_float = Checked(number, 0)
positive_fraction = Checked(exact_decimal, 0, low_open=True)
unit_ratio = Checked(exact_decimal, 0, 1)
decay_ratio = Checked(exact_decimal, 0, 1, low_open=True, high_closed=True)
nonnegative_int = Checked(integer, 0)
positive_int = Checked(integer, 1)


def strategy_name(text: str) -> str:
    if text in STRATEGIES:
        return text
    close = difflib.get_close_matches(text, STRATEGIES, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise argparse.ArgumentTypeError(f"unknown strategy '{text}'; {hint}(choose from {', '.join(STRATEGIES)})")


# name -> add_argument keywords. Defaults are None: the resolver fills in each program's
# default and records that it was one.
FLAGS: dict[str, dict[str, Any]] = {
    # note 000, phase5_big_run.py
    "lr": dict(type=positive_float, metavar="LR", help="peak learning rate (default 5e-4)"),
    "warmup_steps": dict(
        type=nonnegative_int,
        metavar="W",
        help="linear warm-up steps from 0 to the peak (phase5 default 2500; train.py: from the ratio)",
    ),
    "min_lr": dict(
        type=nonnegative_float,
        metavar="LR",
        help="floor at the end of the decay (phase5 default 1e-6; train.py default 0)",
    ),
    "max_steps": dict(
        type=positive_int,
        metavar="T",
        help="total optimizer updates; phase5 without it: open-ended, LR held after warm-up",
    ),
    "replan": dict(
        action="store_true",
        help="on resume, accept new schedule flags: decay from the current LR, or re-warm to a new peak, no jump",
    ),
    # both programs: the wsd shape (warmup-stable-decay)
    "decay_ratio": dict(
        type=decay_ratio,
        metavar="R",
        help="wsd: decay over the last ceil(R x total) steps, R in (0, 1] (default 0.2); phase5: selects wsd",
    ),
    "lr_ref_batch": dict(
        type=positive_int,
        metavar="N",
        help="phase5, DINO's rule: --lr is for a global batch of N; the peak is lr x batch-size x processes / N "
        "(default: --lr is the peak, as typed)",
    ),
    "decay_type": dict(
        choices=DECAY_TYPES,
        help="wsd: form of the final decay (default cosine); phase5: selects wsd",
    ),
    # note 004, train.py
    "num_epochs": dict(type=positive_fraction, metavar="E", help="epochs, a number > 0 (default 3)"),
    "learning_rate": dict(type=positive_float, metavar="LR", help="peak LR (default: auto by epochs)"),
    "lr_strategy": dict(
        type=strategy_name,
        metavar="{" + ",".join(STRATEGIES) + "}",
        help="LR shape; auto picks constant (E <= 1), linear (E < 4) or cosine; wsd: warmup-stable-decay "
        "(default auto)",
    ),
    "scale_lr_for_short_training": dict(
        action="store_true",
        help="below 4 epochs, scale --learning_rate by x0.6 (E <= 1) or x0.8 and warm up 5%%",
    ),
    "cosine_restarts": dict(action="store_true", help="legacy: same as --lr_strategy cosine_restarts"),
    "warmup_ratio": dict(
        type=unit_ratio,
        metavar="R",
        help="warm-up as a fraction of total steps, in [0, 1): ceil(R x total), exact for the decimal typed; "
        "phase5: needs --max-steps, not with --warmup-steps",
    ),
    "num_cycles": dict(
        type=positive_float,
        metavar="C",
        help="cycles of cosine_restarts (default: 0.5, 1 or 2 by epochs)",
    ),
}

PRETRAIN_FLAGS = (
    "lr",
    "warmup_steps",
    "warmup_ratio",
    "min_lr",
    "max_steps",
    "replan",
    "decay_ratio",
    "decay_type",
    "lr_ref_batch",
)
PRETRAIN_BATCH_SIZE = 64
"""phase5_big_run.py's default --batch-size (images per step on each process)."""
FINETUNE_FLAGS = (
    "num_epochs",
    "learning_rate",
    "lr_strategy",
    "scale_lr_for_short_training",
    "cosine_restarts",
    "warmup_ratio",
    "warmup_steps",
    "num_cycles",
    "min_lr",
    "max_steps",
    "decay_ratio",
    "decay_type",
)


def spellings(name: str) -> list[str]:
    """``warmup_steps`` -> ``["--warmup-steps", "--warmup_steps"]``; ``lr`` -> ``["--lr"]``."""
    dashed = f"--{name.replace('_', '-')}"
    return [dashed] if "_" not in name else [dashed, f"--{name}"]


def add_flag(parser: argparse.ArgumentParser | argparse._ArgumentGroup, name: str, **kwargs: Any) -> None:
    """Add one flag under both spellings, ``dest`` its underscore name."""
    parser.add_argument(*spellings(name), dest=name, **kwargs)


PROGRAM_HELP: dict[str, dict[str, str]] = {
    "phase5": {
        "warmup_steps": "linear warm-up steps from 0 to the peak (default 2500)",
        "min_lr": "floor at the end of the decay (default 1e-6)",
        "max_steps": "total optimizer updates (default none: open-ended, the LR held after warm-up)",
        "decay_ratio": "select wsd: hold the peak, then decay over the last ceil(R x --max-steps) steps, "
        "R in (0, 1] (default with --decay-type: 0.2)",
        "decay_type": "select wsd with this form of the final decay (default cosine)",
        "warmup_ratio": "warm-up as a fraction of --max-steps, in [0, 1): ceil(R x T), exact for the decimal "
        "typed; needs --max-steps, not with --warmup-steps",
        "lr_ref_batch": "DINO's rule: --lr is for a global batch of N; the peak is lr x batch-size x processes / N "
        "(default: --lr is the peak, as typed)",
    },
    "train": {
        "warmup_steps": "linear warm-up steps from 0 to the peak (default: from --warmup_ratio or the auto row)",
        "min_lr": "floor at the end of the decay (default 0)",
        "max_steps": "total optimizer updates (default: epochs x updates per epoch)",
        "decay_ratio": "wsd: decay over the last ceil(R x total) steps, R in (0, 1] (default 0.2)",
        "decay_type": "wsd: form of the final decay (default cosine)",
        "warmup_ratio": "warm-up as a fraction of total steps, in [0, 1): ceil(R x total), exact for the decimal "
        "typed (default: the auto row's)",
    },
}
"""Help that differs by program: ``FLAGS``' help speaks of both (``lrsched`` serves both), each program's
``--help`` states only its own defaults."""


def add_schedule_flags(
    parser: argparse.ArgumentParser, names: Sequence[str], title: str = "schedule", program: str | None = None
) -> None:
    """Add the named schedule flags (from ``FLAGS``) once each; ``program`` (``"phase5"`` or ``"train"``)
    takes that program's help from ``PROGRAM_HELP``."""
    group = parser.add_argument_group(title)
    own = PROGRAM_HELP[program] if program is not None else {}
    for name in names:
        add_flag(group, name, **{**FLAGS[name], **({"help": own[name]} if name in own else {})})


FINETUNE_DEFAULTS: dict[str, Any] = {"num_epochs": Fraction(3), "lr_strategy": "auto"}
"""train.py's defaults for schedule flags left unset (the others resolve in its plan, with a source)."""


def finetune_plan(args: argparse.Namespace, steps_per_epoch: int | None) -> Plan:
    """train.py's plan from its parsed flags and the run size (updates per epoch)."""
    return resolve_finetune(
        epochs=args.num_epochs if args.num_epochs is not None else FINETUNE_DEFAULTS["num_epochs"],
        steps_per_epoch=steps_per_epoch,
        max_steps=args.max_steps,
        strategy=args.lr_strategy or FINETUNE_DEFAULTS["lr_strategy"],
        learning_rate=args.learning_rate,
        scale_lr_for_short_training=args.scale_lr_for_short_training,
        cosine_restarts=args.cosine_restarts,
        warmup_ratio=args.warmup_ratio,
        warmup_steps=args.warmup_steps,
        num_cycles=args.num_cycles,
        min_lr=args.min_lr,
        decay_ratio=args.decay_ratio,
        decay_type=args.decay_type,
    )


LR_LIMIT = 1e36
"""The largest peak LR: AdamW's float32 arithmetic (lr / bias correction, lr x weight decay) overflows above."""


def check_peak(plan: Plan, flag: str) -> None:
    """Refuse a peak LR above ``LR_LIMIT`` (one line naming ``flag``), before anything is built."""
    if plan.schedule.base > LR_LIMIT:
        raise UsageError(
            f"{flag} {plan.schedule.base:g}: must be at most {LR_LIMIT:g} (AdamW's float32 arithmetic overflows above)"
        )


def pretrain_plan(args: argparse.Namespace) -> Plan:
    """phase5_big_run.py's plan from its parsed flags (``--batch-size`` and ``WORLD_SIZE`` for ``--lr-ref-batch``)."""
    plan = resolve_pretrain(
        lr=args.lr,
        warmup_steps=args.warmup_steps,
        min_lr=args.min_lr,
        max_steps=args.max_steps,
        decay_ratio=getattr(args, "decay_ratio", None),
        decay_type=getattr(args, "decay_type", None),
        warmup_ratio=getattr(args, "warmup_ratio", None),
    )
    if getattr(args, "lr_ref_batch", None) is None:
        return plan
    batch = int(getattr(args, "batch_size", None) or PRETRAIN_BATCH_SIZE)
    return batch_scaled(plan, args.lr_ref_batch, batch, int(os.environ.get("WORLD_SIZE", "1")))


def batch_scaled(plan: Plan, reference: int, batch: int, processes: int) -> Plan:
    """DINO's rule: ``peak = lr x batch x processes / reference``, its source saying so."""
    peak = plan.schedule.base * batch * processes / reference
    if peak < plan.schedule.final:
        raise UsageError(f"--lr-ref-batch {reference}: makes the peak {peak:g}, below --min-lr {plan.schedule.final:g}")
    how = f"{plan.source('peak')} x {batch * processes}/{reference} (global batch / --lr-ref-batch)"
    sources = tuple((k, how if k == "peak" else v) for k, v in plan.sources)
    return dataclasses.replace(plan, schedule=dataclasses.replace(plan.schedule, base=peak), sources=sources)


def json_value(value: Any) -> Any:
    """A parsed flag value as JSON holds it: switches stay booleans, numbers numbers (an exact decimal
    ``Fraction`` an int when whole, else a float), paths strings, lists lists."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Fraction):
        return int(value) if value.denominator == 1 else float(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    return str(value)


def args_json(args: argparse.Namespace, defaults: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The parsed flags as a run's ``args.json`` should hold them: JSON types (``true``, ``1``, not
    ``"True"``, ``"1"``), and a flag left unset as the default it resolved to (``defaults``, e.g.
    ``FINETUNE_DEFAULTS``: ``lr_strategy`` ``"auto"``, not ``null``); ``null`` only where nothing was
    given and the default is not one value (it comes from the plan, which ``plan.json`` holds)."""
    defaults = defaults or {}
    values = {k: defaults[k] if v is None and k in defaults else v for k, v in vars(args).items()}
    return {k: json_value(v) for k, v in sorted(values.items())}
