"""The run-length policy (docs/design.md section 4) and the plans both programs resolve to.

A ``Plan`` is a ``Schedule`` plus, for every value in it, where that value came
from (a flag, a default, or the ``auto`` row), and notes for the reader.
Step counts are computed exactly from the decimals the user typed (``Fraction``):
10% of 70 steps is 7.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal

from lrsched.errors import UsageError as UsageError  # re-exported: raised by this module
from lrsched.schedules import DEFAULT_DECAY_RATIO, DecayType, Schedule, Shape, decay_steps

Strategy = Literal["auto", "constant", "linear", "cosine", "cosine_restarts", "wsd"]
STRATEGIES: tuple[Strategy, ...] = ("auto", "constant", "linear", "cosine", "cosine_restarts", "wsd")


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


def epoch_size(examples: int, batch: int, accumulation: int, processes: int = 1) -> tuple[int, int]:
    """``(B, ceil(B / A))``: each process's batches and optimizer updates per epoch (docs/design.md section 2).

    Raises ``UsageError`` when ``--gradient_accumulation_steps`` exceeds the batches of an epoch.
    """
    batches = batches_per_epoch(examples, batch, processes)
    if accumulation > batches:
        raise UsageError(
            f"--gradient_accumulation_steps {accumulation}: larger than the {count(batches, 'batch', 'batches')} "
            f"of an epoch ({count(examples, 'example')}, batch {batch}, {count(processes, 'process', 'processes')})"
        )
    return batches, updates_per_epoch(batches, accumulation)


def _pct(ratio: Fraction) -> str:
    return f"{float(ratio * 100):g}%"


def _fmt_num(x: Fraction) -> str:
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
) -> Plan:
    """train.py's plan (note 004): shape, peak, warm-up, cycles and floor, each with a source.

    ``total = max_steps`` when given, else ``ceil(epochs * steps_per_epoch)``. ``wsd`` takes
    the row's peak and warm-up and decays over the last ``ceil(decay_ratio * total)`` steps.
    A flag that changes nothing for the resolved shape (``--num_cycles`` without
    ``cosine_restarts``, ``--decay_ratio`` without ``wsd``, ...) gets a note.
    """
    if epochs <= 0:
        raise UsageError(f"--num_epochs {_fmt_num(epochs)}: must be > 0")
    row = row_for(epochs)
    e = count(_fmt_num(epochs), "epoch")  # "1 epoch", "2.5 epochs"
    sources: dict[str, str] = {}
    notes: list[str] = []

    if cosine_restarts and strategy not in ("auto", "cosine_restarts"):
        raise UsageError(
            f"--cosine_restarts: conflicts with --lr_strategy {strategy} (it means --lr_strategy cosine_restarts)"
        )
    shape: Shape
    if cosine_restarts:
        shape, sources["shape"] = "cosine_restarts", "--cosine_restarts (legacy flag)"
    elif strategy == "auto":
        shape, sources["shape"] = row.shape, f"auto: {e} -> {row.shape}"
    else:
        shape, sources["shape"] = strategy, f"--lr_strategy {strategy}"

    short = epochs < 4
    factor = row.lr / ROWS[-1].lr  # the full-length row's peak, 5e-5
    if learning_rate is None:
        peak, sources["peak"] = row.lr, f"auto: {e} -> {row.lr:g}"
    elif scale_lr_for_short_training and short:
        peak = learning_rate * factor
        sources["peak"] = f"--learning_rate {learning_rate:g} x{factor:g}, --scale_lr_for_short_training"
    else:
        peak, sources["peak"] = learning_rate, f"--learning_rate {learning_rate:g}"
    if scale_lr_for_short_training:
        notes += _scale_note(row, e, short, learning_rate, warmup_steps, warmup_ratio)

    if max_steps is not None:
        total, sources["total"] = max_steps, f"--max_steps {max_steps}"
    elif steps_per_epoch is not None:
        if steps_per_epoch < 1:
            raise UsageError(f"--steps_per_epoch {steps_per_epoch}: must be >= 1 (no batches to train on?)")
        total = math.ceil(epochs * steps_per_epoch)
        sources["total"] = f"{e} x {count(steps_per_epoch, 'update')}"
    else:
        raise UsageError("--steps_per_epoch: required (or --max_steps) to size the run")
    if total < 1:
        raise UsageError(f"--max_steps {total}: must be >= 1")

    if warmup_steps is not None:
        warmup, sources["warmup"] = warmup_steps, f"--warmup_steps {warmup_steps}"
        flag, hint = f"--warmup_steps {warmup_steps}", ""
    else:
        if warmup_ratio is not None:
            ratio, how = warmup_ratio, f"--warmup_ratio {_fmt_num(warmup_ratio)}"
        elif scale_lr_for_short_training and short:
            ratio, how = row.scaled_warmup_ratio, "auto, --scale_lr_for_short_training"
        else:
            ratio, how = row.warmup_ratio, "auto"
        warmup = math.ceil(ratio * total)
        sources["warmup"] = f"{how}: {_pct(ratio)} of {total}"
        if warmup_ratio is not None:
            flag, hint = how, ""
        else:
            flag, hint = f"--warmup_ratio ({how} {_pct(ratio)})", "; pass --warmup_steps 0 or train longer"
    if warmup >= total:
        raise UsageError(
            f"{flag}: gives {count(warmup, 'warm-up step')}, must be fewer than the {count(total, 'total step')}{hint}"
        )

    if warmup_steps is not None and warmup_ratio is not None:
        notes.append(f"--warmup_ratio {_fmt_num(warmup_ratio)} changes nothing: --warmup_steps {warmup_steps} is used")
    cycles = _cycles(shape, num_cycles, row, e, sources, notes)
    decay, kind = _wsd_decay(shape, decay_ratio, decay_type, total, warmup, "_", sources, notes)
    floor = 0.0 if min_lr is None else min_lr
    sources["min_lr"] = "default" if min_lr is None else f"--min_lr {min_lr:g}"
    _check_floor(floor, peak, "--min_lr")
    if min_lr is not None and shape == "constant":
        notes.append(f"--min_lr {min_lr:g} changes nothing: constant holds the peak")
    schedule = Schedule(
        shape, base=peak, final=floor, warmup=warmup, total=total, cycles=cycles, decay=decay, decay_type=kind
    )
    return Plan(schedule, tuple(sources.items()), tuple(notes))


def _scale_note(
    row: Row,
    e: str,
    short: bool,
    learning_rate: float | None,
    warmup_steps: int | None,
    warmup_ratio: Fraction | None,
) -> list[str]:
    """A note when ``--scale_lr_for_short_training`` changes nothing, and why; none when it changes something.

    It scales an explicit ``--learning_rate`` below 4 epochs (x row LR / 5e-5) and, below 4 epochs,
    replaces auto's warm-up ratio by the row's scaled one (which equals the plain one at ``E <= 1``: 5%).
    """
    flag = "--scale_lr_for_short_training changes nothing"
    if not short:
        return [f"{flag} at {e} (only below 4)"]
    if learning_rate is not None:
        return []
    auto_warmup = warmup_steps is None and warmup_ratio is None
    if auto_warmup and row.scaled_warmup_ratio != row.warmup_ratio:
        return []
    lr_why = f"it scales only an explicit --learning_rate (the peak is auto's {row.lr:g})"
    if auto_warmup:
        warm_why = f"auto's warm-up at {row.label} is {_pct(row.warmup_ratio)} with it or without"
    else:
        warm_why = "the warm-up comes from " + ("--warmup_steps" if warmup_steps is not None else "--warmup_ratio")
    return [f"{flag} at {e}: {lr_why}, and {warm_why}"]


def _cycles(
    shape: Shape, num_cycles: float | None, row: Row, e: str, sources: dict[str, str], notes: list[str]
) -> float:
    """``--num_cycles``, else the row's; 1 (unused) for any shape but ``cosine_restarts``, with a note if typed."""
    if num_cycles is None and shape != "cosine_restarts":
        sources["cycles"] = "n/a: only cosine_restarts has cycles"
        return 1.0
    if num_cycles is None:
        sources["cycles"] = f"auto: {e} -> {row.cycles:g}"
        return row.cycles
    sources["cycles"] = f"--num_cycles {num_cycles:g}"
    if shape == "cosine_restarts":
        return num_cycles
    notes.append(f"--num_cycles {num_cycles:g} changes nothing: only cosine_restarts has cycles (the shape is {shape})")
    return 1.0


def _wsd_decay(
    shape: Shape,
    ratio: Fraction | None,
    kind: DecayType | None,
    total: int | None,
    warmup: int,
    sep: str,
    sources: dict[str, str],
    notes: list[str],
) -> tuple[int | None, DecayType]:
    """``wsd``'s decay steps ``D = ceil(ratio * T)`` (default ratio 0.2) and form; a note for other shapes.

    ``sep`` is the flags' separator as the program spells them (``--decay_ratio`` or ``--decay-ratio``).
    """
    ratio_flag, type_flag = f"--decay{sep}ratio", f"--decay{sep}type"
    if shape != "wsd":
        typed = [f"{ratio_flag} {_fmt_num(ratio)}"] if ratio is not None else []
        typed += [f"{type_flag} {kind}"] if kind is not None else []
        if typed:
            notes.append(f"{', '.join(typed)} changes nothing: only wsd has a final decay (the shape is {shape})")
        return None, "cosine"
    form: DecayType = kind or "cosine"
    r = DEFAULT_DECAY_RATIO if ratio is None else ratio
    how = f"{ratio_flag} {_fmt_num(r)}" if ratio is not None else f"{ratio_flag} (default {_fmt_num(r)})"
    if total is None:
        sources["decay"] = f"{how} of the --max-steps a resume gives, {form}"
        return None, form
    d = decay_steps(r, total)
    if d > total - warmup:
        raise UsageError(
            f"{how}: gives {count(d, 'decay step')}, more than the {count(total - warmup, 'step')} after the warm-up"
        )
    sources["decay"] = f"{how}: {_pct(r)} of {total}, {form} from step {total - d}"
    return d, form


PRETRAIN_DEFAULTS = {"lr": 5e-4, "warmup_steps": 2500, "min_lr": 1e-6}


def resolve_pretrain(
    *,
    lr: float | None = None,
    warmup_steps: int | None = None,
    min_lr: float | None = None,
    max_steps: int | None = None,
    decay_ratio: Fraction | None = None,
    decay_type: DecayType | None = None,
    warmup_ratio: Fraction | None = None,
) -> Plan:
    """phase5_big_run.py's plan (note 000): warm-up + cosine to ``min_lr``, or warm-up + hold.

    ``--decay-ratio`` (or ``--decay-type``) selects ``wsd`` instead: warm-up, the peak held,
    then a decay over the last ``ceil(decay_ratio * max_steps)`` steps. ``--warmup-ratio R``
    gives ``W = ceil(R * max_steps)``, exact for the decimal typed (7% of 100 is 7); it needs
    ``--max-steps`` and excludes ``--warmup-steps``.
    """
    wsd = decay_ratio is not None or decay_type is not None
    sources: dict[str, str] = {
        "shape": "--decay-ratio/--decay-type: warm-up, hold, decay (wsd)"
        if wsd
        else "phase5_big_run.py: warm-up + cosine (note 000)"
    }

    def pick(name: str, flag: str, value: Any) -> Any:
        if value is None:
            sources[_KEYS[name]] = "default"
            return PRETRAIN_DEFAULTS[name]
        sources[_KEYS[name]] = f"{flag} {value:g}"
        return value

    peak = pick("lr", "--lr", lr)
    if warmup_ratio is None:
        warmup = pick("warmup_steps", "--warmup-steps", warmup_steps)
    else:
        warmup = _ratio_warmup(warmup_ratio, warmup_steps, max_steps)
        sources["warmup"] = f"--warmup-ratio {_fmt_num(warmup_ratio)}: {_pct(warmup_ratio)} of {max_steps}"
    floor = pick("min_lr", "--min-lr", min_lr)
    _check_floor(floor, peak, "--min-lr")
    notes = []
    if max_steps is None:
        sources["total"] = "no --max-steps: open-ended"
        notes.append(f"no --max-steps: holding {peak:g} after warm-up")
    else:
        sources["total"] = f"--max-steps {max_steps}"
        if warmup >= max_steps and warmup_ratio is None:
            raise UsageError(
                f"--warmup-steps {warmup}{'' if warmup_steps is not None else ' (default)'}: must be less than "
                f"--max-steps {max_steps}; or give the warm-up as a fraction of it, --warmup-ratio R "
                f"(e.g. 0.1: {count(math.ceil(Fraction(1, 10) * max_steps), 'step')})"
            )
    sources["cycles"] = "n/a"
    shape: Shape = "wsd" if wsd else "cosine"
    decay, kind = _wsd_decay(shape, decay_ratio, decay_type, max_steps, warmup, "-", sources, notes)
    schedule = Schedule(shape, base=peak, final=floor, warmup=warmup, total=max_steps, decay=decay, decay_type=kind)
    return Plan(schedule, tuple(sources.items()), tuple(notes))


_KEYS = {"lr": "peak", "warmup_steps": "warmup", "min_lr": "min_lr"}


def _ratio_warmup(ratio: Fraction, warmup_steps: int | None, max_steps: int | None) -> int:
    """phase5's ``--warmup-ratio R``: ``W = ceil(R * T)`` with ``T = --max-steps``, exact; ``W < T``."""
    flag = f"--warmup-ratio {_fmt_num(ratio)}"
    if warmup_steps is not None:
        raise UsageError(f"{flag}: give it or --warmup-steps {warmup_steps}, not both")
    if max_steps is None:
        raise UsageError(
            f"{flag}: needs --max-steps (it is a fraction of the total; an open-ended run has none): "
            "give --max-steps, or --warmup-steps"
        )
    warmup = math.ceil(ratio * max_steps)
    if warmup >= max_steps:
        raise UsageError(f"{flag}: gives {count(warmup, 'warm-up step')}, must be fewer than --max-steps {max_steps}")
    return warmup


def _check_floor(floor: float, peak: float, flag: str) -> None:
    if not 0 <= floor <= peak:
        raise UsageError(f"{flag} {floor:g}: must be between 0 and the peak LR {peak:g}")
