"""The ``lrsched`` command: show or plot the plan a program's command line resolves to.

``lrsched show`` and ``lrsched plot`` take the flags of every installed program (``lrsched.programs``:
each declares itself by an entry point), so that a command line can be pasted as typed, plus the run
size; the flags typed decide which program's plan it is. Bad input: one line ``lrsched: error: ...``,
exit status 2, nothing written. Memory does not grow with the plan's length: values are computed as
they are printed, and ``--json`` streams its list.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import IO, Any, NoReturn, overload

from lrsched import flags, programs, render
from lrsched.errors import UsageError
from lrsched.paths import PathKind, check_path
from lrsched.programs import Program
from lrsched.schedules import Schedule
from lrsched.strategy import STRATEGIES, Plan, count

PROG = "lrsched"
OPEN_PREVIEW = 1000
"""An open-ended plan is previewed up to step ``W + max(W, OPEN_PREVIEW)`` unless ``--steps`` says otherwise."""
LATER_STEPS = (1_000, 1_000_000)
"""Steps after the warm-up shown for an open-ended plan (the LR is held there)."""
MAX_VALUES = 10**7
"""``show --json`` lists at most this many values; a longer plan needs ``--every N``."""


class CommandParser(flags.ArgumentParser):
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
    return list(dict.fromkeys(flags.strategy_name(name) for name in names))


def _add_plan_flags(parser: argparse.ArgumentParser, known: Sequence[Program], first: Program | None = None) -> None:
    """The flags of every program in ``known``, once each (``first``'s definition first: see
    ``programs.redefining``), the run size, and their other flags (hidden)."""
    added: set[str] = set()
    for program in sorted(known, key=lambda p: (p is not first, not p.fallback)):
        why = "" if program.fallback else f" (any of them selects {program.name}'s plan)"
        group = parser.add_argument_group(f"{program.name} flags{why}")
        names = [n for n in program.schedule_flags if n not in added]
        flags.add_schedule_flags(group, names, help={n: _schedule_help(n, known) for n in names})
        added.update(program.schedule_flags)
        for name, keywords in program.flags.items():
            if name not in added:
                flags.add_flag(group, name, **keywords)
                added.add(name)
    size = parser.add_argument_group("run size")
    flags.add_flag(
        size,
        "steps",
        type=flags.positive_int,
        metavar="K",
        help=f"open-ended plan only: list K values, steps 0..K-1 (default steps 0..W + max(W, {OPEN_PREVIEW}))",
    )
    hidden = [n for p in known for n, k in p.flags.items() if k.get("help") == argparse.SUPPRESS]
    other = parser.add_argument_group(
        "the programs' other flags",
        "accepted so that a command line can be pasted; noted as not changing the LR plan"
        + (f", except {', '.join(flags.spelled(n, False) for n in hidden)}, which size a plan" if hidden else ""),
    )
    for name, nargs in {n: k for p in known for n, k in p.other_flags.items()}.items():
        if name in added:
            continue
        if nargs == 0:
            flags.add_flag(other, name, action="store_true", help=argparse.SUPPRESS)
        else:
            flags.add_flag(other, name, nargs=None if nargs == 1 else nargs, metavar="X", help=argparse.SUPPRESS)


def _schedule_help(name: str, known: Sequence[Program]) -> str:
    """The table's help for ``name`` with each program's default: ``floor ... (<program>: default 0)``."""
    said = [f"{p.name}: {p.defaults[name]}" for p in known if name in p.defaults]
    text = str(flags.FLAGS[name].get("help", ""))
    return f"{text} ({'; '.join(said)})" if said else text


def build_parser(known: Sequence[Program] | None = None, first: Program | None = None) -> CommandParser:
    """The ``lrsched`` parser with its ``show`` and ``plot`` subcommands, for the ``known`` programs
    (default: every installed one, ``programs.installed``); a flag two programs define is ``first``'s."""
    known = programs.installed() if known is None else known
    names = " or ".join(p.name for p in known) or "a program's"
    parser = CommandParser(
        prog=PROG,
        allow_abbrev=False,
        description=f"Show or plot the learning-rate plan that {names} flags resolve to.",
    )
    sub = parser.add_subparsers(dest="command", metavar="{show,plot}", parser_class=CommandParser)
    show = sub.add_parser(
        "show",
        allow_abbrev=False,
        help="print the plan, the LR at key steps and a terminal chart",
        description="Print the resolved plan (each value with its source), the LR at key steps and a chart.",
    )
    _add_plan_flags(show, known, first)
    show.add_argument(
        "--json",
        action="store_true",
        help='print one JSON object {"plan": {...}, "lr": [lr(0), ..., lr(T)]} instead, streamed '
        f"(at most {MAX_VALUES:,} values: a longer plan needs --every)",
    )
    show.add_argument(
        "--every",
        type=flags.positive_int,
        metavar="N",
        help='list lr(0), lr(N), lr(2N), ... and always the last step (T); with --json also "steps": [...]',
    )
    plot = sub.add_parser(
        "plot",
        allow_abbrev=False,
        help="draw the plan (or several strategies) to an image",
        description="Draw the resolved plan with matplotlib; --compare overlays strategies (--lr_strategy).",
    )
    _add_plan_flags(plot, known, first)
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
        help=f"comma-separated strategies to overlay, from {','.join(STRATEGIES)}; selects the plan of the "
        "program that takes --lr_strategy",
    )
    return parser


def horizon(plan: Plan, steps: int | None) -> int:
    """The last step to list: ``T``; for an open-ended plan ``K - 1`` (``--steps K``), else ``W + max(W, 1000)``."""
    total, warmup = plan.schedule.total, plan.schedule.warmup
    if total is None:
        return steps - 1 if steps is not None else warmup + max(warmup, OPEN_PREVIEW)
    if steps is not None:
        raise UsageError(f"--steps {steps}: only for an open-ended plan; this one ends at step {total}")
    return total


def middle_label(schedule: Schedule, step: int) -> str:
    """What the LR does at ``step``, the middle of ``W..T``: decays, is held, or restarts at the peak.

    ``constant`` holds the peak there; ``cosine_restarts`` with ``c`` cycles is in cycle
    ``floor(c p) + 1`` (``p = (t - W) / (T - W)``), and at a whole ``c p`` a new cycle starts at the peak.
    """
    if schedule.shape == "constant":
        return "mid-run, peak held"
    if schedule.shape != "cosine_restarts" or schedule.total is None:
        return "mid-decay"
    done = Fraction(step - schedule.warmup) * Fraction(schedule.cycles) / (schedule.total - schedule.warmup)
    cycle = math.floor(done) + 1
    if done == math.floor(done) and done > 0:
        return f"restart: cycle {cycle} starts at the peak"
    return "mid-decay" if schedule.cycles <= 1 else f"mid-decay of cycle {cycle}"


def key_steps(schedule: Schedule) -> list[tuple[int, str]]:
    """The steps worth reading: 0, W-1, W, the middle of W..T (labelled by ``middle_label``; wsd: the decay's
    start and middle), T-1, T (those that exist, merged)."""
    w, total = schedule.warmup, schedule.total
    picks = [(0, "start")]
    if w > 0:
        picks += [(w - 1, "last warm-up step (W-1)"), (w, "end of warm-up (W)")]
    if total is None:
        picks += [(w + later, "held (open-ended)") for later in LATER_STEPS]
    elif schedule.shape == "wsd" and schedule.decay is not None:
        start = total - schedule.decay
        picks += [(start, "decay starts (T-D)"), (start + schedule.decay // 2, "mid-decay")]
        picks += [(total - 1, "T-1"), (total, "end (T), held after")]
    else:
        middle = w + (total - w) // 2
        picks += [(middle, middle_label(schedule, middle)), (total - 1, "T-1"), (total, "end (T), held after")]
    merged: dict[int, list[str]] = {}
    for step, label in picks:
        merged.setdefault(step, []).append(label)
    return [(step, ", ".join(labels)) for step, labels in sorted(merged.items())]


def listed_steps(last: int, every: int | None) -> Iterator[int]:
    """``0, N, 2N, ...`` up to ``last``, and always ``last`` (every step without ``--every``)."""
    step = every or 1
    yield from range(0, last + 1, step)
    if last % step:
        yield last


def check_listing(last: int, every: int | None) -> None:
    """Refuse a listing of more than ``MAX_VALUES`` values, suggesting an ``--every`` that fits."""
    step = every or 1
    count = -(-(last + 1) // step) + (1 if last % step else 0)
    if count <= MAX_VALUES:
        return
    suggest = 1
    while (last + 1) / suggest > 10_000:
        suggest *= 10
    flag = f"--every {every}" if every else "--json"
    raise UsageError(
        f"{flag}: steps 0..{last} are {count:,} values, more than {MAX_VALUES:,}; "
        f"pass --every {suggest} for {-(-(last + 1) // suggest):,} of them"
    )


# --- commands -------------------------------------------------------------------------------


def show_text(program: str, plan: Plan, last: int, every: int | None = None) -> Iterator[str]:
    """What ``lrsched show`` prints, line by line: the plan with sources, the key steps, the chart.

    With ``every``, also the LR at steps ``0, N, 2N, ..., last``, computed as printed.
    """
    schedule = plan.schedule
    yield from [f"plan for {program}", *plan.lines(), "", "lr at key steps:"]
    yield from [f"  step {step:>9}  lr {schedule(step):<11.4g} {label}" for step, label in key_steps(schedule)]
    if every is not None:
        yield ""
        yield f"lr every {count(every, 'step')}:"
        yield from (f"  step {t:>9}  lr {schedule(t):.6g}" for t in listed_steps(last, every))
    end = f"T={last}" if schedule.total is not None else f"{last} (open-ended)"
    yield ""
    yield f"lr, steps 0..{last}:"
    yield render.terminal_chart(Series(schedule, last), warmup=schedule.warmup or None, end_label=end)


def _json_list(out: IO[str], values: Iterable[str], chunk: int = 8192) -> None:
    """``[v, v, ...]`` written in chunks: memory does not grow with the number of values."""
    out.write("[")
    values = iter(values)
    first = True
    while block := list(itertools.islice(values, chunk)):
        out.write(("" if first else ", ") + ", ".join(block))
        first = False
    out.write("]")


def write_json(out: IO[str], plan: Plan, last: int, every: int | None) -> None:
    """One JSON object ``{"plan": ..., "lr": [...]}`` (and ``"steps": [...]`` with ``every``), streamed."""
    head = json.dumps({"plan": plan.to_json()})
    out.write(head[:-1] + ', "lr": ')
    _json_list(out, (float.__repr__(plan.schedule(t)) for t in listed_steps(last, every)))
    if every is not None:
        out.write(', "steps": ')
        _json_list(out, map(str, listed_steps(last, every)))
    out.write("}\n")


def plan_for(values: Mapping[str, Any], known: Sequence[Program], compare: str | None = None) -> tuple[str, Plan]:
    """The program's name and plan for the typed ``values`` (``programs.resolve``). Raises ``UsageError``."""
    if "replan" in values:
        raise UsageError(
            "--replan: only for resuming a run; lrsched plans a run from step 0, "
            "give the new horizon with --max-steps instead"
        )
    program, plan = programs.resolve(known, values, compare)
    return program.name, plan


def cmd_show(ns: argparse.Namespace, values: Mapping[str, Any], known: Sequence[Program]) -> int:
    """``lrsched show``: the plan as text, or as one JSON object with ``--json``."""
    with flags.usage_errors(PROG):
        program, plan = plan_for(values, known)
        last = horizon(plan, ns.steps)
        if ns.json or ns.every is not None:
            check_listing(last, ns.every)
    if ns.json:
        write_json(sys.stdout, plan, last, ns.every)
    else:
        for line in show_text(program, plan, last, ns.every):
            print(line)
    return 0


def check_output(path: Path) -> None:
    """Refuse an output path that cannot be written before anything is computed."""
    check_path(path, "--output", PathKind.FILE)  # a name too long, a folder that cannot be entered
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
    return f"{name} ({count(f'{plan.cycles:g}', 'cycle')})" if plan.cycles is not None else name


def compare_plans(
    values: argparse.Namespace | Mapping[str, Any], names: Sequence[str], known: Sequence[Program] | None = None
) -> dict[str, Plan]:
    """One plan per strategy name (``--lr_strategy``), labelled (``auto`` with what it resolved to).

    ``values``: the typed values, or the namespace ``lrsched plot`` parsed (where None is not typed).
    """
    typed = flags.given(values, vars(values)) if isinstance(values, argparse.Namespace) else values
    known = programs.installed() if known is None else known
    for flag in ("lr_strategy", "cosine_restarts"):
        if flag in typed:
            raise UsageError(f"--{flag}: --compare sets the strategy of each curve; give one of them, not both")
    plans: dict[str, Plan] = {}
    for name in names:
        _, plan = plan_for(typed, known, compare=name)
        plans[_label(name, plan)] = plan
    return plans


def _drawn_shape(plan: Plan) -> str:
    """The legend's name for the curve drawn: an open-ended plan holds its peak after the warm-up."""
    return plan.schedule.shape if plan.schedule.total is not None else "constant (open-ended)"


def _title(program: str, plan: Plan) -> str:
    s = plan.schedule
    end = count(s.total, "step") if s.total is not None else "open-ended (preview)"
    return f"{program}: {plan.shape_text}, peak {s.base:g}, min_lr {s.final:g}, warm-up {s.warmup}, {end}"


def cmd_plot(ns: argparse.Namespace, values: Mapping[str, Any], known: Sequence[Program]) -> int:
    """``lrsched plot``: draw the plan, or one curve per ``--compare`` strategy, to ``-o``."""
    with flags.usage_errors(PROG):
        check_output(ns.output)
        if ns.compare:
            plans = compare_plans(values, ns.compare, known)
            first = next(iter(plans.values()))
            s = first.schedule
            program = programs.choose(known, values, {"lr_strategy": "--compare"}).name
            title = f"{program} strategies: peak {s.base:g}, warm-up {s.warmup}, {count(s.total or 0, 'step')}"
        else:
            program, first = plan_for(values, known)
            plans, title = {_drawn_shape(first): first}, _title(program, first)
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
    try:
        with flags.usage_errors(PROG):
            known = programs.installed()
            if not known:
                raise UsageError(
                    f"no program is installed in the entry-point group {programs.GROUP} "
                    "(each program declares itself there: docs/cli.md#programs-plug-in)"
                )
        words = sys.argv[1:] if argv is None else list(argv)
        parser = build_parser(known, programs.redefining(known, words))
        ns = parser.parse_args(argv)
        if ns.command is None:
            parser.print_help(sys.stderr)
            return 2
        values = flags.typed_values(ns, flags.typed_names(parser, argv))
        return cmd_show(ns, values, known) if ns.command == "show" else cmd_plot(ns, values, known)
    except BrokenPipeError:  # `lrsched show ... | head`: the reader left, which is fine
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keeps the interpreter's final flush quiet
        return 0
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else 0 if stop.code is None else 1


if __name__ == "__main__":
    sys.exit(main())
