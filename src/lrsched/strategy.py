"""The run-length policy (docs/design.md section 4) and the ``Plan`` every resolved schedule is.

A ``Plan`` is a ``Schedule`` plus, for every value in it, where that value came
from (a flag, a default, or the ``auto`` row), and notes for the reader. The policy is a
plain function of keyword values (``resolve_finetune``); the caller names its flags (``FlagNames``).
Step counts are computed exactly from the decimals the user typed (``Fraction``):
10% of 70 steps is 7.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any

from lrsched.errors import UsageError as UsageError  # re-exported: raised by this module
from lrsched.schedules import DEFAULT_DECAY_RATIO, MAX_STEPS, SHAPES, DecayType, Schedule, Shape, decay_steps

FlagNames = Mapping[str, str]
"""How the caller's command line names each keyword of a policy, for the plan's sources and messages:
``{"epochs": "--num_epochs", "learning_rate": "--learning_rate"}``; a keyword left out is named as itself."""

Strategy = str
STRATEGIES: tuple[Strategy, ...] = ("auto", *SHAPES)
"""``auto`` (the run-length row's shape) and every shape of ``lrsched.schedules.SHAPE_TABLE``."""


@dataclass(frozen=True)
class Row:
    """One row of the run-length table: what ``auto`` chooses for a number of epochs."""

    label: str
    shape: Shape
    lr: float
    warmup_ratio: Fraction
    scaled_warmup_ratio: Fraction
    cycles: float


ROWS = (
    Row("E <= 1", "constant", 3e-5, Fraction(5, 100), Fraction(5, 100), 0.5),
    Row("1 < E < 4", "linear", 4e-5, Fraction(10, 100), Fraction(5, 100), 1.0),
    Row("E >= 4", "cosine", 5e-5, Fraction(10, 100), Fraction(10, 100), 2.0),
)


def row_for(epochs: Fraction) -> Row:
    """The table row for ``epochs``: ``<= 1``, ``< 4``, or ``>= 4``."""
    if epochs <= 1:
        return ROWS[0]
    return ROWS[1] if epochs < 4 else ROWS[2]


@dataclass(frozen=True)
class Plan:
    """A resolved schedule and the source of each of its values."""

    schedule: Schedule
    sources: tuple[tuple[str, str], ...]
    notes: tuple[str, ...] = field(default=())

    @property
    def shape(self) -> Shape:
        return self.schedule.shape

    @property
    def cycles(self) -> float | None:
        return self.schedule.cycles if self.schedule.shape == "cosine_restarts" else None

    def source(self, key: str) -> str:
        return dict(self.sources)[key]

    def with_notes(self, notes: Sequence[str]) -> Plan:
        """This plan with ``notes`` added after its own."""
        return replace(self, notes=(*self.notes, *notes)) if notes else self

    def to_json(self) -> dict[str, Any]:
        """The stable machine form: see README, "lrsched show --json"."""
        s = self.schedule
        return {
            "shape": s.shape,
            "base_lr": s.base,
            "min_lr": s.final,
            "warmup_steps": s.warmup,
            "total_steps": s.total,
            "cycles": self.cycles,
            "decay_steps": s.decay if s.shape == "wsd" else None,
            "decay_type": s.decay_type if s.shape == "wsd" else None,
            "sources": dict(self.sources),
            "notes": list(self.notes),
        }

    def shown_shape(self) -> tuple[str, str]:
        """What the LR does and why: the shape and its source, or for an open-ended plan ``constant``.

        An open-ended plan holds the peak after its warm-up whatever shape was asked for; ``shape``
        (and ``to_json``'s ``"shape"``) stays the shape asked for, the one a ``--max-steps`` would give.
        """
        if self.schedule.total is None and self.shape != "constant":
            return "constant", f"open-ended: {self.shape} needs --max-steps"
        return self.shape, dict(self.sources).get("shape", "")

    @property
    def shape_text(self) -> str:
        """``shown_shape`` in one phrase: ``linear``, or ``constant (open-ended: cosine needs --max-steps)``."""
        shape, why = self.shown_shape()
        return shape if shape == self.shape else f"{shape} ({why})"

    def lines(self) -> list[str]:
        """The plan as people read it: one value per line, each with its source.

        A plan without cycles (any shape but ``cosine_restarts``) has no cycles line; an open-ended
        plan's shape line says that it holds the peak (``shown_shape``).
        """
        sources = dict(self.sources)
        rows = [("shape", *self.shown_shape())]
        rows += [(key, value, sources.get(key, "")) for key, value in self._values().items()]
        out = [f"  {key:<7} {value:<16} ({source})" for key, value, source in rows]
        return out + [f"  note: {note}" for note in self.notes]

    def _values(self) -> dict[str, str]:
        """Every printed value but the shape, as text."""
        s = self.schedule
        values = {
            "peak": f"{s.base:g}",
            "min_lr": f"{s.final:g}",
            "warmup": count(s.warmup, "step"),
            "total": "open-ended" if s.total is None else count(s.total, "step"),
        }
        if self.cycles is not None:
            values["cycles"] = f"{self.cycles:g}"
        if s.shape == "wsd":
            values["decay"] = self._decay_text()
        return values

    def _decay_text(self) -> str:
        s = self.schedule
        if s.total is None or s.decay is None:
            return "at --max-steps"
        return count(s.decay, "step")


def count(n: float | Fraction | str, noun: str, plural: str | None = None) -> str:
    """A count with its noun, singular only for exactly one: ``1 step``, ``2 steps``, ``1.5 epochs``.

    ``n`` may be a number or its text as printed (``"2.5"``); ``noun`` is the singular (``"warm-up step"``),
    ``plural`` the plural when it is not ``noun + "s"`` (``"batches"``).
    """
    return f"{n} {noun}" if str(n) == "1" else f"{n} {plural or noun + 's'}"


def updates_per_epoch(batches: int, accumulation: int) -> int:
    """``ceil(B / A)``: a last partial accumulation still makes an update."""
    return -(-batches // accumulation)


def batches_per_epoch(examples: int, batch: int, processes: int = 1) -> int:
    """``B``, the batches of an epoch on each process: ``ceil(ceil(examples / processes) / batch)``."""
    share = -(-examples // processes)
    return -(-share // batch)


def epoch_size(
    examples: int, batch: int, accumulation: int, processes: int = 1, accumulation_flag: str = "accumulation"
) -> tuple[int, int]:
    """``(B, ceil(B / A))``: each process's batches and optimizer updates per epoch (docs/design.md section 2).

    Raises ``UsageError`` naming ``accumulation_flag`` (the caller's flag for ``A``) when ``A`` exceeds
    the batches of an epoch.
    """
    batches = batches_per_epoch(examples, batch, processes)
    if accumulation > batches:
        raise UsageError(
            f"{accumulation_flag} {accumulation}: larger than the {count(batches, 'batch', 'batches')} "
            f"of an epoch ({count(examples, 'example')}, batch {batch}, {count(processes, 'process', 'processes')})"
        )
    return batches, updates_per_epoch(batches, accumulation)


def pct(ratio: Fraction) -> str:
    """``Fraction(7, 100)`` -> ``"7%"``."""
    return f"{float(ratio * 100):g}%"


def fmt_num(x: Fraction) -> str:
    """An exact decimal as typed: ``Fraction(5, 2)`` -> ``"2.5"``."""
    return f"{float(x):g}"


def resolve_finetune(
    *,
    epochs: Fraction,
    steps_per_epoch: int | None = None,
    max_steps: int | None = None,
    strategy: Strategy = "auto",
    learning_rate: float | None = None,
    scale_lr_for_short_training: bool = False,
    cosine_restarts: bool = False,
    warmup_ratio: Fraction | None = None,
    warmup_steps: int | None = None,
    num_cycles: float | None = None,
    min_lr: float | None = None,
    decay_ratio: Fraction | None = None,
    decay_type: DecayType | None = None,
    names: FlagNames | None = None,
) -> Plan:
    """The run-length policy (docs/design.md section 4): shape, peak, warm-up, cycles and floor by the
    number of epochs, each with a source. ``None`` means not given (the row's value, or the default).

    ``total = max_steps`` when given, else ``ceil(epochs * steps_per_epoch)``; the warm-up is
    ``warmup_steps``, else ``ceil(warmup_ratio * total)``, else the row's ratio. A value that changes
    nothing for the resolved shape (cycles without ``cosine_restarts``, ...) gets a note. ``names``
    says how the caller's command line names each keyword (``FlagNames``), for sources and messages.
    """
    flag = Namer(names or {})
    if epochs <= 0:
        raise UsageError(f"{flag('epochs')} {fmt_num(epochs)}: must be > 0")
    row, e = row_for(epochs), count(fmt_num(epochs), "epoch")  # "1 epoch", "2.5 epochs"
    sources: dict[str, str] = {}
    notes: list[str] = []
    shape = _shape(strategy, cosine_restarts, row, e, flag, sources)
    short = epochs < 4
    peak = _peak(learning_rate, scale_lr_for_short_training and short, row, e, flag, sources)
    if scale_lr_for_short_training:
        notes += _scale_note(row, e, short, learning_rate, warmup_steps, warmup_ratio, flag)
    total = _total(epochs, steps_per_epoch, max_steps, e, flag, sources)
    warmup = _warmup(warmup_steps, warmup_ratio, scale_lr_for_short_training and short, row, total, flag, sources)
    if warmup_steps is not None and warmup_ratio is not None:
        notes.append(
            f"{flag('warmup_ratio')} {fmt_num(warmup_ratio)} changes nothing: "
            f"{flag('warmup_steps')} {warmup_steps} is used"
        )
    cycles = _cycles(shape, num_cycles, row, e, flag, sources, notes)
    decay, kind = wsd_decay(shape, decay_ratio, decay_type, total, warmup, flag, sources, notes)
    floor = 0.0 if min_lr is None else min_lr
    sources["min_lr"] = "default" if min_lr is None else f"{flag('min_lr')} {min_lr:g}"
    check_floor(floor, peak, flag("min_lr"))
    if min_lr is not None and shape == "constant":
        notes.append(f"{flag('min_lr')} {min_lr:g} changes nothing: constant holds the peak")
    schedule = Schedule(
        shape, base=peak, final=floor, warmup=warmup, total=total, cycles=cycles, decay=decay, decay_type=kind
    )
    return Plan(schedule, tuple(sources.items()), tuple(notes))


class Namer:
    """``FlagNames`` as a function: a keyword -> the caller's flag for it, or the keyword itself."""

    def __init__(self, names: FlagNames) -> None:
        self.names = names

    def __call__(self, keyword: str) -> str:
        return self.names.get(keyword, keyword)


def _shape(strategy: Strategy, cosine_restarts: bool, row: Row, e: str, flag: Namer, sources: dict[str, str]) -> Shape:
    """The strategy's shape (``auto``: the row's); ``cosine_restarts`` means that strategy, alone or with auto."""
    restarts, chosen = flag("cosine_restarts"), flag("strategy")
    if cosine_restarts and strategy not in ("auto", "cosine_restarts"):
        raise UsageError(f"{restarts}: conflicts with {chosen} {strategy} (it means {chosen} cosine_restarts)")
    if cosine_restarts:
        sources["shape"] = f"{restarts} (same as {chosen} cosine_restarts)"
        return "cosine_restarts"
    if strategy == "auto":
        sources["shape"] = f"auto: {e} -> {row.shape}"
        return row.shape
    sources["shape"] = f"{chosen} {strategy}"
    return strategy


def _peak(learning_rate: float | None, scaled: bool, row: Row, e: str, flag: Namer, sources: dict[str, str]) -> float:
    """The typed peak (times row LR / 5e-5 when ``scaled``), else the row's."""
    if learning_rate is None:
        sources["peak"] = f"auto: {e} -> {row.lr:g}"
        return row.lr
    if scaled:
        factor = row.lr / ROWS[-1].lr  # the full-length row's peak, 5e-5
        scale = flag("scale_lr_for_short_training")
        sources["peak"] = f"{flag('learning_rate')} {learning_rate:g} x{factor:g}, {scale}"
        return learning_rate * factor
    sources["peak"] = f"{flag('learning_rate')} {learning_rate:g}"
    return learning_rate


def _total(
    epochs: Fraction,
    steps_per_epoch: int | None,
    max_steps: int | None,
    e: str,
    flag: Namer,
    sources: dict[str, str],
) -> int:
    """``max_steps`` when given, else ``ceil(epochs * steps_per_epoch)``, exactly."""
    if max_steps is not None:
        sources["total"] = f"{flag('max_steps')} {max_steps}"
        total = max_steps
    elif steps_per_epoch is not None:
        if steps_per_epoch < 1:
            raise UsageError(f"{flag('steps_per_epoch')} {steps_per_epoch}: must be >= 1 (no batches to train on?)")
        total = math.ceil(epochs * steps_per_epoch)
        sources["total"] = f"{e} x {count(steps_per_epoch, 'update')}"
    else:
        raise UsageError(f"{flag('steps_per_epoch')}: required (or {flag('max_steps')}) to size the run")
    if total < 1:
        raise UsageError(f"{flag('max_steps')} {total}: must be >= 1")
    if total > MAX_STEPS:
        raise UsageError(f"{sources['total']} = {total:,} steps: a run is at most 2**53 = {MAX_STEPS:,} steps")
    return total


def _warmup(
    warmup_steps: int | None,
    warmup_ratio: Fraction | None,
    scaled: bool,
    row: Row,
    total: int,
    flag: Namer,
    sources: dict[str, str],
) -> int:
    """``warmup_steps``, else ``ceil(ratio * total)`` for the typed ratio or the row's; ``W < T``."""
    if warmup_steps is not None:
        warmup, sources["warmup"] = warmup_steps, f"{flag('warmup_steps')} {warmup_steps}"
        named, hint = f"{flag('warmup_steps')} {warmup_steps}", ""
    else:
        if warmup_ratio is not None:
            ratio, how = warmup_ratio, f"{flag('warmup_ratio')} {fmt_num(warmup_ratio)}"
        elif scaled:
            ratio, how = row.scaled_warmup_ratio, f"auto, {flag('scale_lr_for_short_training')}"
        else:
            ratio, how = row.warmup_ratio, "auto"
        warmup = math.ceil(ratio * total)
        sources["warmup"] = f"{how}: {pct(ratio)} of {total}"
        if warmup_ratio is not None:
            named, hint = how, ""
        else:
            named = f"{flag('warmup_ratio')} ({how} {pct(ratio)})"
            hint = f"; pass {flag('warmup_steps')} 0 or train longer"
    if warmup >= total:
        raise UsageError(
            f"{named}: gives {count(warmup, 'warm-up step')}, must be fewer than the {count(total, 'total step')}{hint}"
        )
    return warmup


def _scale_note(
    row: Row,
    e: str,
    short: bool,
    learning_rate: float | None,
    warmup_steps: int | None,
    warmup_ratio: Fraction | None,
    flag: Namer,
) -> list[str]:
    """A note when scaling for short training changes nothing, and why; none when it changes something.

    It scales a typed peak below 4 epochs (x row LR / 5e-5) and, below 4 epochs, replaces auto's
    warm-up ratio by the row's scaled one (which equals the plain one at ``E <= 1``: 5%).
    """
    nothing = f"{flag('scale_lr_for_short_training')} changes nothing"
    if not short:
        return [f"{nothing} at {e} (only below 4)"]
    if learning_rate is not None:
        return []
    auto_warmup = warmup_steps is None and warmup_ratio is None
    if auto_warmup and row.scaled_warmup_ratio != row.warmup_ratio:
        return []
    lr_why = f"it scales only an explicit {flag('learning_rate')} (the peak is auto's {row.lr:g})"
    if auto_warmup:
        warm_why = f"auto's warm-up at {row.label} is {pct(row.warmup_ratio)} with it or without"
    else:
        warm_why = "the warm-up comes from " + flag("warmup_steps" if warmup_steps is not None else "warmup_ratio")
    return [f"{nothing} at {e}: {lr_why}, and {warm_why}"]


def _cycles(
    shape: Shape,
    num_cycles: float | None,
    row: Row,
    e: str,
    flag: Namer,
    sources: dict[str, str],
    notes: list[str],
) -> float:
    """The typed cycles, else the row's; 1 (unused) for any shape but ``cosine_restarts``, with a note if typed."""
    if num_cycles is None and shape != "cosine_restarts":
        sources["cycles"] = "n/a: only cosine_restarts has cycles"
        return 1.0
    if num_cycles is None:
        sources["cycles"] = f"auto: {e} -> {row.cycles:g}"
        return row.cycles
    sources["cycles"] = f"{flag('num_cycles')} {num_cycles:g}"
    if shape == "cosine_restarts":
        return num_cycles
    notes.append(
        f"{flag('num_cycles')} {num_cycles:g} changes nothing: only cosine_restarts has cycles (the shape is {shape})"
    )
    return 1.0


def wsd_decay(
    shape: Shape,
    ratio: Fraction | None,
    kind: DecayType | None,
    total: int | None,
    warmup: int,
    flag: Namer,
    sources: dict[str, str],
    notes: list[str],
) -> tuple[int | None, DecayType]:
    """``wsd``'s decay steps ``D = ceil(ratio * T)`` (default ratio 0.2) and form; a note for other shapes."""
    ratio_flag, type_flag = flag("decay_ratio"), flag("decay_type")
    if shape != "wsd":
        typed = [f"{ratio_flag} {fmt_num(ratio)}"] if ratio is not None else []
        typed += [f"{type_flag} {kind}"] if kind is not None else []
        if typed:
            notes.append(f"{', '.join(typed)} changes nothing: only wsd has a final decay (the shape is {shape})")
        return None, "cosine"
    form: DecayType = kind or "cosine"
    r = DEFAULT_DECAY_RATIO if ratio is None else ratio
    how = f"{ratio_flag} {fmt_num(r)}" if ratio is not None else f"{ratio_flag} (default {fmt_num(r)})"
    if total is None:
        sources["decay"] = f"{how} of the {flag('max_steps')} a resume gives, {form}"
        return None, form
    d = decay_steps(r, total)
    if d > total - warmup:
        raise UsageError(
            f"{how}: gives {count(d, 'decay step')}, more than the {count(total - warmup, 'step')} after the warm-up"
        )
    sources["decay"] = f"{how}: {pct(r)} of {total}, {form} from step {total - d}"
    return d, form


def check_floor(floor: float, peak: float, flag: str) -> None:
    """Refuse a floor outside ``[0, peak]``, naming ``flag``."""
    if not 0 <= floor <= peak:
        raise UsageError(f"{flag} {floor:g}: must be between 0 and the peak LR {peak:g}")
