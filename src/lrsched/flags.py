"""The one argparse definition of every schedule flag, with no program's defaults, and what was typed.

A program picks the flags it takes (``add_schedule_flags``) and states its own defaults and help;
``typed_names`` decides, for any parser, which values the user typed. Every flag accepts both
spellings (``--warmup-steps`` and ``--warmup_steps``). Bad input gives one line naming the flag,
the value and the rule, and exit status 2.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import difflib
import math
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from fractions import Fraction
from typing import Any, NoReturn

from lrsched.errors import ScheduleError, UsageError
from lrsched.schedules import DECAY_TYPES, MAX_STEPS
from lrsched.strategy import STRATEGIES, Plan


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
        high = "2**53" if self.high == MAX_STEPS else f"{self.high:g}"
        return f"in {'(' if self.low_open else '['}{self.low:g}, {high}{']' if self.high_closed else ')'}"


positive_float = Checked(number, 0, low_open=True)
nonnegative_float = Checked(number, 0)
positive_fraction = Checked(exact_decimal, 0, low_open=True)
unit_ratio = Checked(exact_decimal, 0, 1)
decay_ratio = Checked(exact_decimal, 0, 1, low_open=True, high_closed=True)
nonnegative_int = Checked(integer, 0)
positive_int = Checked(integer, 1)
step_count = Checked(integer, 0, MAX_STEPS, high_closed=True)
"""A number of steps: every integer up to 2**53 is exact in a float64 schedule."""
positive_step_count = Checked(integer, 1, MAX_STEPS, high_closed=True)


def strategy_name(text: str) -> str:
    if text in STRATEGIES:
        return text
    close = difflib.get_close_matches(text, STRATEGIES, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise argparse.ArgumentTypeError(f"unknown strategy '{text}'; {hint}(choose from {', '.join(STRATEGIES)})")


# name -> add_argument keywords. No defaults: a flag not typed parses to None (a switch to False), and
# each program states its own default in its help and applies it when it resolves its plan.
FLAGS: dict[str, dict[str, Any]] = {
    "lr": dict(type=positive_float, metavar="LR", help="peak learning rate"),
    "warmup_steps": dict(type=step_count, metavar="W", help="linear warm-up steps from 0 to the peak"),
    "min_lr": dict(type=nonnegative_float, metavar="LR", help="floor at the end of the decay"),
    "max_steps": dict(type=positive_step_count, metavar="T", help="total optimizer updates"),
    "replan": dict(
        action="store_true",
        help="on resume, accept new schedule flags: decay from the current LR, or re-warm to a new peak, no jump",
    ),
    "decay_ratio": dict(
        type=decay_ratio,
        metavar="R",
        help="wsd: decay over the last ceil(R x total) steps, R in (0, 1] (default 0.2)",
    ),
    "decay_type": dict(choices=DECAY_TYPES, help="wsd: form of the final decay (default cosine)"),
    "num_epochs": dict(type=positive_fraction, metavar="E", help="epochs, a number > 0"),
    "learning_rate": dict(type=positive_float, metavar="LR", help="peak LR (default: auto by epochs)"),
    "lr_strategy": dict(
        type=strategy_name,
        metavar="{" + ",".join(STRATEGIES) + "}",
        help="LR shape, one of " + ", ".join(STRATEGIES) + ": auto picks constant (E <= 1), linear (E < 4) "
        "or cosine; wsd: warmup-stable-decay (default auto)",
    ),
    "scale_lr_for_short_training": dict(
        action="store_true",
        help="below 4 epochs, scale --learning_rate by x0.6 (E <= 1) or x0.8 and warm up 5%%",
    ),
    "cosine_restarts": dict(action="store_true", help="same as --lr_strategy cosine_restarts"),
    "warmup_ratio": dict(
        type=unit_ratio,
        metavar="R",
        help="warm-up as a fraction of total steps, in [0, 1): ceil(R x total), exact for the decimal typed",
    ),
    "num_cycles": dict(
        type=positive_float,
        metavar="C",
        help="cycles of cosine_restarts (default: 0.5, 1 or 2 by epochs)",
    ),
}
SAME_VALUE = (("lr", "learning_rate"),)
"""Pairs of flags that set the same value (the peak) under two names, for a hint when one is refused."""


def spellings(name: str) -> list[str]:
    """``warmup_steps`` -> ``["--warmup-steps", "--warmup_steps"]``; ``lr`` -> ``["--lr"]``."""
    dashed = f"--{name.replace('_', '-')}"
    return [dashed] if "_" not in name else [dashed, f"--{name}"]


def spelled(name: str, dashed: bool) -> str:
    """The flag as a message spells it: ``--warmup-steps`` (``dashed``) or ``--warmup_steps``."""
    forms = spellings(name)
    return forms[0] if dashed else forms[-1]


KEYWORD_FLAGS = {"epochs": "num_epochs", "strategy": "lr_strategy"}
"""The policies' keywords whose flag in ``FLAGS`` has another name; every other keyword is its flag's name."""
POLICY_KEYWORDS = (
    *("epochs", "steps_per_epoch", "max_steps", "strategy", "learning_rate", "lr", "scale_lr_for_short_training"),
    *("cosine_restarts", "warmup_ratio", "warmup_steps", "num_cycles", "min_lr", "decay_ratio", "decay_type"),
)
"""The keywords of ``resolve_finetune`` and ``resolve_steps`` that a plan's sources and messages name."""


def flag_names(dashed: bool = False, **renamed: str) -> dict[str, str]:
    """``FlagNames`` for this table's flags: each policy keyword -> its flag as typed (``"epochs"`` ->
    ``"--num_epochs"``, or ``"--num-epochs"`` when ``dashed``); ``renamed`` gives a caller's own flag
    for a keyword (``epochs="--num_train_epochs"``)."""
    names = {key: spelled(KEYWORD_FLAGS.get(key, key), dashed) for key in POLICY_KEYWORDS}
    return {**names, **renamed}


def add_flag(parser: argparse.ArgumentParser | argparse._ArgumentGroup, name: str, **kwargs: Any) -> None:
    """Add one flag under both spellings, ``dest`` its underscore name."""
    parser.add_argument(*spellings(name), dest=name, **kwargs)


def add_schedule_flags(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    names: Sequence[str],
    title: str = "schedule",
    help: Mapping[str, str] | None = None,
) -> None:
    """Add the named flags of ``FLAGS`` once each, in a group called ``title``.

    ``help`` replaces a flag's help where the program says more (its own default, e.g.
    ``"floor at the end of the decay (default 1e-6)"``).
    """
    group = parser.add_argument_group(title) if isinstance(parser, argparse.ArgumentParser) else parser
    own = help or {}
    for name in names:
        add_flag(group, name, **{**FLAGS[name], **({"help": own[name]} if name in own else {})})


def _every_parser(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """The parser and its subcommands' parsers."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                yield from _every_parser(sub)


def _every_action(parser: argparse.ArgumentParser) -> Iterator[argparse.Action]:
    """The actions of the parser and of its subcommands' parsers."""
    for each in _every_parser(parser):
        yield from each._actions


def typed_names(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None = None, passed: Iterable[str] = ()
) -> frozenset[str]:
    """The names whose values the user typed: given means typed, even when the value equals a default.

    ``argv`` is the command line ``parser`` reads (``None``: ``sys.argv[1:]``), for any argparse parser,
    ``HfArgumentParser`` included (a dataclass field's default, HF's or TRL's, is never typed);
    ``passed`` adds the keyword names a caller gave the arguments' constructor in code
    (``TrainingArguments(learning_rate=5e-5)``). The command line is read again with every default
    suppressed (on a copy of ``parser``), so what remains is what was typed. Call it after the parse
    succeeded: ``typed_names(parser, argv)`` -> ``frozenset({"learning_rate", "num_train_epochs"})``.
    """
    # the caller's parser keeps its defaults, even if another thread parses; choices are shared, not
    # copied (HfArgumentParser's --log_level choices are a dict_keys, which deepcopy cannot copy)
    shared = {
        id(action.choices): action.choices
        for action in _every_action(parser)
        if action.choices is not None and not isinstance(action, argparse._SubParsersAction)
    }
    quiet = copy.deepcopy(parser, shared)
    for action in _every_action(quiet):
        action.default = argparse.SUPPRESS
    for each in _every_parser(quiet):
        each._defaults = {}  # set_defaults() values are not typed either
    parsed, _ = quiet.parse_known_args(argv, argparse.Namespace())
    return frozenset(vars(parsed)) | frozenset(passed)


def typed_values(args: argparse.Namespace | Mapping[str, Any], typed: Iterable[str]) -> dict[str, Any]:
    """The values of the ``typed`` names (``typed_names``) in ``args``: a policy's keyword values, absent
    meaning not given."""
    values = vars(args) if isinstance(args, argparse.Namespace) else args
    return {name: values[name] for name in typed if name in values}


def given(args: argparse.Namespace | Mapping[str, Any], names: Iterable[str]) -> dict[str, Any]:
    """The typed values among ``names`` of a namespace parsed with ``add_schedule_flags``/``add_flag`` flags
    that declare no default: there None (a switch False) is the parser's mark of "not typed", so this is
    ``typed_values(args, typed_names(parser, argv))`` for those names (a test checks that they agree)."""
    values = vars(args) if isinstance(args, argparse.Namespace) else args
    return {n: values[n] for n in names if values.get(n) is not None and values.get(n) is not False}


LR_LIMIT = 1e36
"""The largest peak LR: AdamW's float32 arithmetic (lr / bias correction, lr x weight decay) overflows above."""


def check_peak(plan: Plan, flag: str) -> None:
    """Refuse a peak LR above ``LR_LIMIT`` (one line naming ``flag``), before anything is built."""
    if plan.schedule.base > LR_LIMIT:
        raise UsageError(
            f"{flag} {plan.schedule.base:g}: must be at most {LR_LIMIT:g} (AdamW's float32 arithmetic overflows above)"
        )


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
    ``"True"``, ``"1"``), and a flag left unset as the default it resolved to (``defaults``, the
    program's: ``lr_strategy`` ``"auto"``, not ``null``); ``null`` only where nothing was given and the
    default is not one value (it comes from the plan, which ``plan.json`` holds)."""
    defaults = defaults or {}
    values = {k: defaults[k] if v is None and k in defaults else v for k, v in vars(args).items()}
    return {k: json_value(v) for k, v in sorted(values.items())}
