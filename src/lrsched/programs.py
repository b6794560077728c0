"""The programs ``lrsched show``/``plot`` know, found through entry points, and which one a command line is for.

A program makes itself known by an entry point in the group ``lrsched.programs`` that names a
``Program``; this project's two programs declare theirs in pyproject.toml, and any installed package
can add one (docs/design.md section 9). The library itself names no program: what a program's flags
mean, its defaults and its plan live in the program's own package.

A command line is for the program whose own flags it types (flags no other program has); with
none typed it is for the ``fallback`` program. Own flags of two programs on one line are refused.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from lrsched import flags
from lrsched.errors import UsageError
from lrsched.strategy import Plan

GROUP = "lrsched.programs"
"""The entry-point group a program declares itself in (``[project.entry-points."lrsched.programs"]``)."""


@dataclass(frozen=True)
class Shown:
    """A program's plan for a command line, and which of its ``other_flags`` the plan read (not noted)."""

    plan: Plan
    read: frozenset[str] = frozenset()


PlanFunction = Callable[[Mapping[str, Any]], Shown]
"""A program's plan from the values the user typed (``flags.typed_values``: a name absent is not given)."""


@dataclass(frozen=True)
class Program:
    """What ``lrsched show`` needs to know of a program to read its command line and plan it.

    ``name``: how plans and messages name it (``plan for <name>``). ``schedule_flags``: the
    entries of ``lrsched.flags.FLAGS`` it takes. ``plan``: its ``PlanFunction``. ``flags``: flags of
    its own that ``show`` parses (name -> ``add_argument`` keywords, e.g. the run size).
    ``other_flags``: its remaining flags, name -> number of values (0: a switch), accepted so that a
    command line can be pasted and noted as not used. ``dashed``: its messages spell flags
    ``--warmup-steps`` rather than ``--warmup_steps``. ``fallback``: it plans a command line that
    types no program's own flag. ``defaults``: its default for a schedule flag, as ``--help`` says it
    (``"default 1e-6"``). ``shared``: flags it reads that other programs take too and that never select
    it (nor stop being another program's own flag): a program added beside others leaves their lines
    where they were.
    """

    name: str
    schedule_flags: tuple[str, ...]
    plan: PlanFunction
    flags: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    other_flags: Mapping[str, int] = field(default_factory=dict)
    dashed: bool = False
    fallback: bool = False
    defaults: Mapping[str, str] = field(default_factory=dict)
    shared: frozenset[str] = frozenset()

    def names(self) -> tuple[str, ...]:
        """Every flag it takes, in order: schedule flags, its own, the others."""
        return tuple(dict.fromkeys((*self.schedule_flags, *self.flags, *self.other_flags)))

    def spell(self, name: str) -> str:
        """``name`` as this program's messages spell it."""
        return flags.spelled(name, self.dashed)


def installed() -> tuple[Program, ...]:
    """Every ``Program`` declared in the entry-point group ``GROUP``, ordered by entry-point name.

    The one place programs are found: a test may stand a toy program in here. Raises ``UsageError``
    when an entry point does not name a ``Program``.
    """
    found = []
    for point in sorted(entry_points(group=GROUP), key=lambda p: p.name):
        program = point.load()
        if not isinstance(program, Program):
            raise UsageError(f"entry point {point.name} = {point.value}: is not an lrsched.programs.Program")
        found.append(program)
    return tuple(found)


def own_flags(program: Program, programs: Sequence[Program]) -> tuple[str, ...]:
    """The flags of ``program`` that no other of ``programs`` takes (``shared`` ones aside): typing one selects it."""
    others = {name for p in programs if p is not program for name in p.names() if name not in p.shared}
    return tuple(n for n in program.names() if n not in others and n not in program.shared)


def redefining(programs: Sequence[Program], argv: Sequence[str]) -> Program | None:
    """The program whose own flag ``argv`` types (token by token: ``--name`` or ``--name=...``) when its
    ``flags`` define a schedule flag of another program its own way (HF's ``--warmup_steps 0.1``, a
    ratio): the parser then takes that program's definition. ``None`` otherwise."""
    for program in programs:
        others = {n for p in programs if p is not program for n in p.schedule_flags}
        if program.fallback or not others & set(program.flags):
            continue
        spellings = [s for n in own_flags(program, programs) for s in flags.spellings(n)]
        if any(t == s or t.startswith(s + "=") for t in argv for s in spellings):
            return program
    return None


def choose(
    programs: Sequence[Program], values: Mapping[str, Any], triggers: Mapping[str, str] | None = None
) -> Program:
    """The program a command line with the typed ``values`` is for (see the module docstring).

    ``triggers`` names a typed name as the user typed it when that is another flag (``--compare``
    sets ``lr_strategy``). Raises ``UsageError`` for own flags of two programs on one line.
    """
    triggers = triggers or {}
    typed = set(values) | set(triggers)
    picked = [(p, n) for p, n in _first_typed(programs, typed) if not p.fallback]
    if not picked:
        fallback = [p for p in programs if p.fallback]
        if not fallback:
            raise UsageError(f"no program is named by this command line; type a flag of one of {_listed(programs)}")
        return fallback[0]
    chosen, trigger = picked[0]
    said = triggers.get(trigger, chosen.spell(trigger))
    for other, name in _first_typed(programs, typed):
        if other is not chosen:
            value = f" {shown_value(values[name])}".rstrip() if name in values else ""
            raise UsageError(
                f"{other.spell(name)}{value}: is {other.name}'s flag, but {said} makes this {chosen.name}'s plan"
                f"{_instead(name, chosen)}"
            )
    return chosen


def _instead(name: str, program: Program) -> str:
    """``"; use --learning_rate instead"`` when ``program`` takes the value of ``name`` under another name."""
    for pair in flags.SAME_VALUE:
        if name in pair:
            meant = pair[1 - pair.index(name)]
            if meant in program.names():
                return f"; use {program.spell(meant)} instead"
    return ""


def _first_typed(programs: Sequence[Program], typed: set[str]) -> list[tuple[Program, str]]:
    """Each program with an own flag typed, and the first such flag; an own flag that another program
    with an own flag typed shares (``Program.shared``) is that program's to read, not a second choice."""
    typed_own = [(p, [n for n in own_flags(p, programs) if n in typed]) for p in programs]
    candidates = [(p, names) for p, names in typed_own if names]
    found = []
    for program, names in candidates:
        left = [n for n in names if not any(n in q.shared for q, _ in candidates if q is not program)]
        if left:
            found.append((program, left[0]))
    return found


def _listed(programs: Sequence[Program]) -> str:
    return ", ".join(p.name for p in programs) or "(none installed)"


def shown_value(value: object) -> str:
    """A typed value as a note shows it: ``0.4 1`` for a list, nothing for a switch, ``5e-05`` for a float."""
    if isinstance(value, list):
        return " ".join(map(str, value))
    if isinstance(value, float):
        return f"{value:g}"
    return "" if value is True else str(value)


def typed_text(values: Mapping[str, Any], names: Iterable[str], dashed: bool) -> list[str]:
    """``--flag value`` for each of ``names`` in ``values`` (the typed ones), spelled dashed or not."""
    return [
        f"{flags.spelled(n, dashed)} {shown_value(values[n])}".rstrip() for n in dict.fromkeys(names) if n in values
    ]


def resolve(programs: Sequence[Program], values: Mapping[str, Any], compare: str | None = None) -> tuple[Program, Plan]:
    """The program whose plan the typed ``values`` describe, and that plan, with a note naming every
    typed flag of the program that the plan did not read. ``compare``: a strategy name that replaces
    ``lr_strategy`` (``lrsched plot --compare``). Raises ``UsageError``."""
    program = choose(programs, values, {"lr_strategy": "--compare"} if compare is not None else None)
    given = {k: v for k, v in values.items() if k in program.names()}
    shown = program.plan(given if compare is None else {**given, "lr_strategy": compare})
    unread = [n for n in program.other_flags if n in values and n not in shown.read]
    typed_others = typed_text(values, unread, program.dashed)
    note = [f"not used for {program.name}'s LR plan: {', '.join(typed_others)}"] if typed_others else []
    return program, shown.plan.with_notes(note)
