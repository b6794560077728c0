"""The ``lrsched`` command: show or plot the plan a set of program flags resolves to.

``lrsched show`` and ``lrsched plot`` take the flags of both programs, from the one
flag table in ``lrsched.args``, plus the run size. Any train.py-only flag (or
``--steps_per_epoch``) makes it train.py's plan; otherwise it is phase5_big_run.py's.
Bad input: one line ``lrsched: error: ...``, exit status 2, nothing written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn, overload

from lrsched import args, render
from lrsched.schedules import Schedule
from lrsched.strategy import STRATEGIES, Plan, UsageError

PROG = "lrsched"
TRAIN = "train.py"
PHASE5 = "phase5_big_run.py"
OPEN_PREVIEW = 1000
"""An open-ended plan is previewed up to step ``W + max(W, OPEN_PREVIEW)`` unless ``--steps`` says otherwise."""
LATER_STEPS = (1_000, 1_000_000)
"""Steps after the warm-up shown for an open-ended plan (the LR is held there)."""
FINETUNE_ONLY = (*(n for n in args.FINETUNE_FLAGS if n not in args.PRETRAIN_FLAGS), "steps_per_epoch")
"""Flags that make ``show``/``plot`` use train.py's plan."""


class CommandParser(args.ArgumentParser):
    """The shared one-line parser, whose errors always start ``lrsched: error:`` (subcommands too)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{PROG}: error: {message}\n")


class Series(Sequence[float]):
    """``schedule(0), ..., schedule(last)`` computed on demand: cheap for a million steps."""

    def __init__(self, schedule: Schedule, last: int) -> None:
        self.schedule = schedule
        self.last = last

    def __len__(self) -> int:
        return self.last + 1

    @overload
    def __getitem__(self, index: int) -> float: ...
    @overload
    def __getitem__(self, index: slice) -> list[float]: ...
    def __getitem__(self, index: int | slice) -> float | list[float]:
        if isinstance(index, slice):
            return [self.schedule(t) for t in range(*index.indices(len(self)))]
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        return self.schedule(index % len(self))


# --- parser ---------------------------------------------------------------------------------


def compare_names(text: str) -> list[str]:
    """``auto,linear`` -> ``["auto", "linear"]``; an unknown name gets the nearest suggestion."""
    names = [part.strip() for part in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"{text!r}: empty name in the comma-separated list")
    return list(dict.fromkeys(args.strategy_name(name) for name in names))


def _add_plan_flags(parser: argparse.ArgumentParser) -> None:
    """Every schedule flag of both programs, once each, plus the run size."""
    args.add_schedule_flags(parser, args.PRETRAIN_FLAGS, f"{PHASE5} flags")
    finetune = [n for n in args.FINETUNE_FLAGS if n not in args.PRETRAIN_FLAGS]
    args.add_schedule_flags(parser, finetune, f"{TRAIN} flags (any of them selects train.py's plan)")
    size = parser.add_argument_group("run size")
    args.add_flag(
        size,
        "steps_per_epoch",
        type=args.positive_int,
        metavar="N",
        help="optimizer updates per epoch, ceil(batches / accumulation); selects train.py's plan",
    )
    args.add_flag(
        size,
        "steps",
        type=args.positive_int,
        metavar="K",
        help=f"open-ended plan only: list K values, steps 0..K-1 (default steps 0..W + max(W, {OPEN_PREVIEW}))",
    )


def build_parser() -> CommandParser:
    """The ``lrsched`` parser with its ``show`` and ``plot`` subcommands."""
    parser = CommandParser(
        prog=PROG,
        allow_abbrev=False,
        description="Show or plot the learning-rate plan that train.py or phase5_big_run.py flags resolve to.",
    )
    sub = parser.add_subparsers(dest="command", metavar="{show,plot}", parser_class=CommandParser)
    show = sub.add_parser(
        "show",
        allow_abbrev=False,
        help="print the plan, the LR at key steps and a terminal chart",
        description="Print the resolved plan (each value with its source), the LR at key steps and a chart.",
    )
    _add_plan_flags(show)
    show.add_argument(
        "--json",
        action="store_true",
        help='print one JSON object {"plan": {...}, "lr": [lr(0), ..., lr(T)]} instead',
    )
    plot = sub.add_parser(
        "plot",
        allow_abbrev=False,
        help="draw the plan (or several strategies) to an image",
        description="Draw the resolved plan with matplotlib; --compare overlays train.py strategies.",
    )
    _add_plan_flags(plot)
    plot.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        metavar="FILE.png",
        help="image to write (.png, .svg or .pdf); replaced only when the new one is complete",
    )
    plot.add_argument(
        "--compare",
        type=compare_names,
        metavar="NAMES",
        help=f"comma-separated train.py strategies to overlay, from {','.join(STRATEGIES)}",
    )
    return parser


# --- plan -----------------------------------------------------------------------------------


def _given(ns: argparse.Namespace, name: str) -> bool:
    value = getattr(ns, name, None)
    return value is not None and value is not False


def _finetune_trigger(ns: argparse.Namespace) -> str | None:
    """The first given flag that selects train.py's plan, as typed in its docs, or None."""
    if getattr(ns, "compare", None):
        return "--compare"
    for name in FINETUNE_ONLY:
        if _given(ns, name):
            return args.spellings(name)[-1]
    return None


def resolve(ns: argparse.Namespace) -> tuple[str, Plan]:
    """The program whose plan the flags describe, and that plan. Raises ``UsageError``."""
    if ns.replan:
        raise UsageError(
            "--replan: only for resuming phase5_big_run.py; lrsched plans a run from step 0, "
            "give the new horizon with --max-steps instead"
        )
    trigger = _finetune_trigger(ns)
    if trigger is None:
        return PHASE5, args.pretrain_plan(ns)
    if ns.lr is not None:
        raise UsageError(
            f"--lr {ns.lr:g}: is phase5_big_run.py's flag, but {trigger} makes this train.py's plan; "
            "use --learning_rate instead"
        )
    return TRAIN, args.finetune_plan(ns, ns.steps_per_epoch)


def horizon(plan: Plan, steps: int | None) -> int:
    """The last step to list: ``T``; for an open-ended plan ``K - 1`` (``--steps K``), else ``W + max(W, 1000)``."""
    total, warmup = plan.schedule.total, plan.schedule.warmup
    if total is None:
        return steps - 1 if steps is not None else warmup + max(warmup, OPEN_PREVIEW)
    if steps is not None:
        raise UsageError(f"--steps {steps}: only for an open-ended plan; this one ends at step {total}")
    return total


def key_steps(schedule: Schedule) -> list[tuple[int, str]]:
    """The steps worth reading: 0, W-1, W, mid-decay, T-1, T (those that exist, merged)."""
    w, total = schedule.warmup, schedule.total
    picks = [(0, "start")]
    if w > 0:
        picks += [(w - 1, "last warm-up step (W-1)"), (w, "end of warm-up (W)")]
    if total is None:
        picks += [(w + later, "held (open-ended)") for later in LATER_STEPS]
    else:
        picks += [(w + (total - w) // 2, "mid-decay"), (total - 1, "T-1"), (total, "end (T), held after")]
    merged: dict[int, list[str]] = {}
    for step, label in picks:
        merged.setdefault(step, []).append(label)
    return [(step, ", ".join(labels)) for step, labels in sorted(merged.items())]


# --- commands -------------------------------------------------------------------------------


def show_text(program: str, plan: Plan, last: int) -> str:
    """What ``lrsched show`` prints: the plan with sources, the key steps and the chart."""
    schedule = plan.schedule
    lines = [f"plan for {program}", *plan.lines(), "", "lr at key steps:"]
    lines += [f"  step {step:>9}  lr {schedule(step):<11.4g} {label}" for step, label in key_steps(schedule)]
    end = f"T={last}" if schedule.total is not None else f"{last} (open-ended)"
    lines += ["", f"lr, steps 0..{last}:"]
    lines.append(render.terminal_chart(Series(schedule, last), warmup=schedule.warmup or None, end_label=end))
    return "\n".join(lines)


def cmd_show(ns: argparse.Namespace) -> int:
    """``lrsched show``: the plan as text, or as one JSON object with ``--json``."""
    with args.usage_errors(PROG):
        program, plan = resolve(ns)
        last = horizon(plan, ns.steps)
    if ns.json:
        lr = [plan.schedule(t) for t in range(last + 1)]
        print(json.dumps({"plan": plan.to_json(), "lr": lr}))
    else:
        print(show_text(program, plan, last))
    return 0


def check_output(path: Path) -> None:
    """Refuse an output path that cannot be written before anything is computed."""
    if path.suffix.lstrip(".").lower() not in render.FORMATS:
        raise UsageError(f"--output {path}: must end with .{', .'.join(render.FORMATS)}")
    parent = path.parent
    if not parent.is_dir():
        raise UsageError(f"--output {path}: the folder {parent} does not exist")
    if path.is_dir():
        raise UsageError(f"--output {path}: is a folder, give a file name")


def _label(name: str, plan: Plan) -> str:
    if name == "auto":
        return f"auto ({plan.shape})"
    return f"{name} ({plan.cycles:g} cycles)" if plan.cycles is not None else name


def compare_plans(ns: argparse.Namespace, names: Sequence[str]) -> dict[str, Plan]:
    """One train.py plan per strategy name, labelled (``auto`` with what it resolved to)."""
    for flag in ("lr_strategy", "cosine_restarts"):
        if _given(ns, flag):
            raise UsageError(f"--{flag}: --compare sets the strategy of each curve; give one of them, not both")
    plans: dict[str, Plan] = {}
    for name in names:
        _, plan = resolve(argparse.Namespace(**{**vars(ns), "lr_strategy": name}))
        plans[_label(name, plan)] = plan
    return plans


def _title(program: str, plan: Plan) -> str:
    s = plan.schedule
    end = f"{s.total} steps" if s.total is not None else "open-ended (preview)"
    return f"{program}: {s.shape}, peak {s.base:g}, min_lr {s.final:g}, warm-up {s.warmup}, {end}"


def cmd_plot(ns: argparse.Namespace) -> int:
    """``lrsched plot``: draw the plan, or one curve per ``--compare`` strategy, to ``-o``."""
    with args.usage_errors(PROG):
        check_output(ns.output)
        if ns.compare:
            plans = compare_plans(ns, ns.compare)
            first = next(iter(plans.values()))
            s = first.schedule
            title = f"{TRAIN} strategies: peak {s.base:g}, warm-up {s.warmup}, {s.total} steps"
        else:
            program, first = resolve(ns)
            plans, title = {first.shape: first}, _title(program, first)
        last = horizon(first, ns.steps)
    curves = {label: Series(plan.schedule, last) for label, plan in plans.items()}
    try:
        render.plot_schedules(curves, ns.output, title=title, warmup=first.schedule.warmup or None)
    except ImportError as err:
        print(f"{PROG}: error: plot needs matplotlib ({err}); pip install 'lrsched[plot]'", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"{PROG}: error: --output {ns.output}: cannot write: {err.strerror or err}", file=sys.stderr)
        return 2
    print(f"wrote {ns.output} ({len(curves)} curve{'s' if len(curves) > 1 else ''}, steps 0..{last})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``lrsched``; returns the exit status (2 for bad input, after one line on stderr)."""
    parser = build_parser()
    try:
        ns = parser.parse_args(argv)
        if ns.command is None:
            parser.print_help(sys.stderr)
            return 2
        return cmd_show(ns) if ns.command == "show" else cmd_plot(ns)
    except BrokenPipeError:  # `lrsched show ... | head`: the reader left, which is fine
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keeps the interpreter's final flush quiet
        return 0
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else 0 if stop.code is None else 1


if __name__ == "__main__":
    sys.exit(main())
