"""Note 004's strategy in an existing HF ``Trainer`` script: three lines change (docs/hf.md).

```python
from lrsched.hf import StrategyTrainer, StrategyTrainingArguments           # 1. added

parser = HfArgumentParser((ModelArguments, DataArguments, StrategyTrainingArguments))  # 2. was TrainingArguments
...
trainer = StrategyTrainer(model=model, args=training_args, ...)             # 3. was Trainer
```

``StrategyTrainingArguments`` is ``TrainingArguments`` plus the strategy flags of ``StrategyArguments``
(``--lr_strategy``, ``--scale_lr_for_short_training``, ``--cosine_restarts``, ``--num_cycles``,
``--min_lr``, ``--decay_ratio``, ``--decay_type``); a script may instead read ``StrategyArguments``
next to ``TrainingArguments`` and pass it as ``StrategyTrainer(..., strategy=strategy_args)``.

The plan is train.py's (``lrsched.flags.finetune_plan``, the function train.py and ``lrsched show``
call) with the run size the Trainer trains: ``updates_per_epoch = ceil(B / A)`` for ``B`` batches
of this process's dataloader (after the Trainer shards it over the ``W`` processes, as train.py
counts them) and ``A = gradient_accumulation_steps``; ``total = --max_steps`` when ``> 0``, else
``ceil(E * updates_per_epoch)`` exactly for the ``E = --num_train_epochs`` typed. HF's own
arguments are read as train.py's flags of the same name:

- ``--learning_rate``: given unless it is HF's default 5e-5, which counts as not given (auto's peak);
  ``learning_rate_given=True`` makes 5e-5 an explicit peak;
- ``--warmup_steps W``: ``W >= 1`` is train.py's ``--warmup_steps W``, ``0 < W < 1`` its
  ``--warmup_ratio W`` (exact decimal), 0 (HF's default) auto's ratio;
- ``--lr_scheduler_type`` is not used (the plan says so when it is not HF's default).
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import Trainer, TrainingArguments
from transformers.trainer_utils import has_length

from lrsched import flags
from lrsched.errors import UsageError
from lrsched.strategy import Plan, updates_per_epoch
from lrsched.torch_sched import ScheduledLR

HF_DEFAULT_LR = 5e-5
"""``TrainingArguments.learning_rate``'s default: taken as "not given", so ``auto`` picks the peak."""
STRATEGY_FIELDS = (
    "lr_strategy",
    "scale_lr_for_short_training",
    "cosine_restarts",
    "num_cycles",
    "min_lr",
    "decay_ratio",
    "decay_type",
)


def _help(name: str) -> dict[str, Any]:
    """The field's ``--help``, from the one flag table (``lrsched.flags.FLAGS``; argparse's ``%%`` kept)."""
    return {"help": str(flags.FLAGS[name]["help"])}


@dataclass
class StrategyArguments:
    """The strategy flags as ``HfArgumentParser`` reads them; each value is checked by the rule of
    ``lrsched.flags.FLAGS`` when the plan is resolved (a bad one is a ``UsageError`` naming the flag).

    Not frozen: ``StrategyTrainingArguments`` joins it to HF's (non-frozen) ``TrainingArguments``.
    """

    lr_strategy: str = field(default="auto", metadata=_help("lr_strategy"))
    scale_lr_for_short_training: bool = field(default=False, metadata=_help("scale_lr_for_short_training"))
    cosine_restarts: bool = field(default=False, metadata=_help("cosine_restarts"))
    num_cycles: float | None = field(default=None, metadata=_help("num_cycles"))
    min_lr: float | None = field(default=None, metadata=_help("min_lr"))
    decay_ratio: str | None = field(default=None, metadata=_help("decay_ratio"))
    decay_type: str | None = field(default=None, metadata=_help("decay_type"))


@dataclass
class StrategyTrainingArguments(TrainingArguments, StrategyArguments):
    """HF's ``TrainingArguments`` with the strategy flags: one class to name in ``HfArgumentParser``."""


def _checked(name: str, value: object) -> object:
    """``value`` through the rule of ``flags.FLAGS[name]`` (a number > 0, an exact decimal, a choice...)."""
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


def _typed(x: float) -> str:
    """The decimal a float was typed as (its shortest repr: ``0.07``), which the flag rules read exactly."""
    return repr(float(x))


def _warmup(args: TrainingArguments) -> tuple[int | None, str | None]:
    """HF's ``warmup_steps`` (``>= 1`` steps, ``(0, 1)`` a ratio; ``warmup_ratio`` in transformers 4) as
    train.py's ``(--warmup_steps, --warmup_ratio)``; ``(None, None)`` when 0: auto's ratio."""
    steps, ratio = float(args.warmup_steps), float(getattr(args, "warmup_ratio", 0.0) or 0.0)
    if steps >= 1:
        if not steps.is_integer():
            raise UsageError(f"--warmup_steps {steps:g}: must be a whole number of steps, or a ratio in (0, 1)")
        return int(steps), None
    if steps > 0:
        return None, _typed(steps)
    return None, (_typed(ratio) if ratio > 0 else None)


def flag_namespace(
    strategy: StrategyArguments, args: TrainingArguments, learning_rate_given: bool | None = None
) -> argparse.Namespace:
    """train.py's parsed flags from HF's arguments and the strategy flags (see the module docstring)."""
    given = args.learning_rate != HF_DEFAULT_LR if learning_rate_given is None else learning_rate_given
    warmup_steps, warmup_ratio = _warmup(args)
    values = {name: _checked(name, getattr(strategy, name)) for name in STRATEGY_FIELDS}
    return argparse.Namespace(
        num_epochs=_checked("num_epochs", _typed(args.num_train_epochs)),
        max_steps=args.max_steps if args.max_steps > 0 else None,
        learning_rate=_checked("learning_rate", args.learning_rate) if given else None,
        warmup_steps=warmup_steps,
        warmup_ratio=_checked("warmup_ratio", warmup_ratio),
        **values,
    )


def resolve_plan(
    strategy: StrategyArguments,
    args: TrainingArguments,
    batches: int | None,
    *,
    learning_rate_given: bool | None = None,
    trainer_steps: int | None = None,
) -> Plan:
    """The plan train.py resolves for this run: ``flags.finetune_plan`` with ``ceil(batches / A)`` updates
    per epoch (``batches``: this process's dataloader length). With ``trainer_steps`` (the updates the
    Trainer will make) a note says when that differs from the plan's total. Raises ``UsageError``.
    """
    ns = flag_namespace(strategy, args, learning_rate_given)
    upe = None if batches is None else updates_per_epoch(batches, args.gradient_accumulation_steps)
    if upe is None and ns.max_steps is None:
        raise UsageError("--max_steps: required when the training dataloader has no length")
    plan = flags.finetune_plan(ns, upe)
    flags.check_peak(plan, "--learning_rate")
    return dataclasses.replace(plan, notes=(*plan.notes, *_hf_notes(args, ns, plan, trainer_steps)))


def _hf_notes(args: TrainingArguments, ns: argparse.Namespace, plan: Plan, trainer_steps: int | None) -> list[str]:
    """What a reader of an HF script needs to know: the default LR taken as auto, unused HF settings."""
    notes = []
    if ns.learning_rate is None and args.learning_rate == HF_DEFAULT_LR:
        notes.append(f"--learning_rate is HF's default {HF_DEFAULT_LR:g}: taken as not given (the peak is auto's)")
    kind = str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type))
    if kind != "linear":
        notes.append(f"--lr_scheduler_type {kind} is not used: lrsched's plan sets the schedule")
    total = plan.schedule.total
    if trainer_steps is not None and total is not None and trainer_steps != total:
        notes.append(
            f"the Trainer makes {trainer_steps} updates (its float epochs x updates), the plan ends at {total}: "
            f"{'the end value is held after it' if trainer_steps > total else 'the run stops before it'}"
        )
    return notes


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


def scheduler_for(optimizer: torch.optim.Optimizer, plan: Plan, learning_rate: float) -> ScheduledLR:
    """``ScheduledLR`` peaking at the plan's LR: each group starts at ``plan.base * group lr / learning_rate``.

    HF builds every group at ``--learning_rate``, so each group follows the plan exactly
    (``initial_lr = plan.base``); a group of a custom optimizer keeps its ratio to ``learning_rate``.
    """
    base = plan.schedule.base
    for group in optimizer.param_groups:
        lr = float(group["lr"])
        group["initial_lr"] = base if lr == learning_rate else base * lr / learning_rate
    return ScheduledLR(optimizer, plan.schedule)


class StrategyTrainer(Trainer):
    """A ``Trainer`` whose scheduler is note 004's plan, resolved as train.py resolves it.

    ``strategy``: the strategy flags; by default ``args`` itself when it is a
    ``StrategyTrainingArguments``, else ``StrategyArguments()`` (``auto``). ``plan`` is the plan of
    the last ``train()`` call, printed once, by the main process. The scheduler steps once per update.
    """

    def __init__(
        self,
        *args: Any,
        strategy: StrategyArguments | None = None,
        learning_rate_given: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if strategy is None:
            strategy = self.args if isinstance(self.args, StrategyArguments) else StrategyArguments()
        self.strategy = strategy
        self.learning_rate_given = learning_rate_given
        flag_namespace(strategy, self.args, learning_rate_given)  # a bad flag is refused now, not at train()
        self.plan: Plan | None = None
        self._train_batches: int | None = None

    def get_train_dataloader(self) -> Any:
        """HF's loader (sharded over the processes); its length sizes the plan."""
        loader = super().get_train_dataloader()
        self._train_batches = len(loader) if has_length(loader) else None
        return loader

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None) -> Any:
        """The plan's ``ScheduledLR`` (an existing ``lr_scheduler``, e.g. from ``optimizers=``, is kept)."""
        if self.lr_scheduler is None:
            optimizer = self.optimizer if optimizer is None else optimizer
            if optimizer is None:
                raise UsageError("StrategyTrainer.create_scheduler: no optimizer yet (create_optimizer first)")
            self.plan = resolve_plan(
                self.strategy,
                self.args,
                self._train_batches,
                learning_rate_given=self.learning_rate_given,
                trainer_steps=num_training_steps,
            )
            if self.is_world_process_zero():
                print(plan_text(self.plan, self._train_batches, self.args), flush=True)
            self.lr_scheduler = scheduler_for(optimizer, self.plan, self.args.learning_rate)  # type: ignore[assignment]
            self._created_lr_scheduler = True
        return self.lr_scheduler
