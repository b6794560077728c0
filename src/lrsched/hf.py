"""The learning-rate strategy in an existing HF ``Trainer`` or TRL script: three lines change (docs/hf.md).

```python
from lrsched.hf import StrategyTrainer, StrategyTrainingArguments           # 1. added

parser = HfArgumentParser((ModelArguments, DataArguments, StrategyTrainingArguments))  # 2. was TrainingArguments
...
trainer = StrategyTrainer(model=model, args=training_args, ...)             # 3. was Trainer
```

Any ``TrainingArguments`` subclass and any ``Trainer`` subclass take the strategy the same way:
``with_strategy(SFTConfig)`` and ``with_strategy(SFTTrainer)`` (TRL's two are ready-made as
``StrategySFTConfig`` and ``StrategySFTTrainer``). The strategy arguments add ``--lr_strategy``,
``--scale_lr_for_short_training``, ``--cosine_restarts``, ``--num_cycles``, ``--min_lr``,
``--decay_ratio``, ``--decay_type`` and ``--replan``; HF's own arguments are read as the strategy's
(``lrsched.hf_plan``): a value counts as given when it was typed, never because a class defaults it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from transformers import Trainer, TrainingArguments
from transformers.trainer_utils import has_length

from lrsched import hf_plan
from lrsched.errors import ScheduleError, ScheduleMismatch, UsageError
from lrsched.strategy import STRATEGIES, Plan
from lrsched.torch_sched import ScheduledLR

T = TypeVar("T", bound=type)
STRATEGY_FLAGS = (*hf_plan.STRATEGY_FIELDS, "replan")


@hf_plan.record_typed
@dataclass
class StrategyArguments:
    """The strategy's arguments as ``HfArgumentParser`` reads them; each value is checked by the rule of
    the flag table when the plan is resolved (a bad one is a ``UsageError`` naming the flag).

    Not frozen: ``with_strategy`` joins it to HF's (non-frozen) ``TrainingArguments``.
    """

    lr_strategy: str = field(
        default="auto",
        metadata={
            "help": "LR shape: auto picks constant (E <= 1 epoch), linear (E < 4) or cosine; wsd: warm-up, "
            "hold, decay (default auto)",
            "metavar": "{" + ",".join(STRATEGIES) + "}",
        },
    )
    scale_lr_for_short_training: bool = field(
        default=False,
        metadata={"help": "below 4 epochs, scale a typed --learning_rate by x0.6 (E <= 1) or x0.8 and warm up 5%%"},
    )
    cosine_restarts: bool = field(default=False, metadata={"help": "the same as --lr_strategy cosine_restarts"})
    num_cycles: float | None = field(
        default=None, metadata={"help": "cycles of cosine_restarts (default: 0.5, 1 or 2 by epochs)"}
    )
    min_lr: float | None = field(default=None, metadata={"help": "floor at the end of the decay (default 0)"})
    decay_ratio: str | None = field(
        default=None, metadata={"help": "wsd: decay over the last ceil(R x total) steps, R in (0, 1] (default 0.2)"}
    )
    decay_type: str | None = field(
        default=None, metadata={"help": "wsd: form of the final decay: cosine, linear or 1-sqrt (default cosine)"}
    )
    replan: bool = field(
        default=False,
        metadata={
            "help": "on resume with another plan (more epochs, another peak): continue from the checkpoint's "
            "step and LR without a jump (a decay from the current LR, or a re-warm to a new peak)"
        },
    )


_MADE: dict[str, type] = {}
"""Classes made by ``with_strategy``, by name: ``lrsched.hf.<name>`` finds them (pickle does, for
``training_args.bin`` in each checkpoint)."""
_BY_BASE: dict[type, type] = {}


def with_strategy(cls: T) -> T:
    """A strategy version of ``cls``: a ``TrainingArguments`` subclass gets the strategy arguments
    (after its own fields, so ``StrategySFTConfig("my-run")`` is the output folder), a ``Trainer``
    subclass gets the strategy's scheduler (``StrategyTrainerMixin``). Named ``Strategy<cls>``, made
    once per class."""
    if cls in _BY_BASE:
        return _BY_BASE[cls]  # type: ignore[return-value]
    name = f"Strategy{cls.__name__}"
    if issubclass(cls, TrainingArguments):
        made: type = hf_plan.record_typed(dataclass(type(name, (StrategyArguments, cls), {"__doc__": _doc(cls)})))
    elif issubclass(cls, Trainer):
        made = type(name, (StrategyTrainerMixin, cls), {"__doc__": _doc(cls)})
    else:
        raise TypeError(f"with_strategy({cls.__name__}): not a TrainingArguments or Trainer subclass")
    made.__module__, made.__qualname__ = __name__, name
    _MADE[name] = _BY_BASE[cls] = made
    return made  # type: ignore[return-value]


def _doc(cls: type) -> str:
    return f"``{cls.__module__}.{cls.__qualname__}`` with the learning-rate strategy (``lrsched.hf.with_strategy``)."


def __getattr__(name: str) -> type:
    """``StrategySFTConfig`` and ``StrategySFTTrainer`` (TRL's, made when first asked for), and every class
    ``with_strategy`` made."""
    if name in _MADE:
        return _MADE[name]
    if name in ("StrategySFTConfig", "StrategySFTTrainer"):
        import trl

        return with_strategy(getattr(trl, name.removeprefix("Strategy")))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def scheduler_for(optimizer: torch.optim.Optimizer, plan: Plan, reference: float, *, replan: bool) -> ScheduledLR:
    """``ScheduledLR`` on the plan: each group starts at ``plan.base * group lr / reference``.

    HF builds every group at ``--learning_rate`` (the ``reference``), so each follows the plan exactly;
    groups at other LRs (LoRA+, a custom optimizer) keep their ratio to it. ``replan``: a resumed
    checkpoint with another plan is replanned from its step without a jump, else refused.
    """
    base = plan.schedule.base
    for group in optimizer.param_groups:
        lr = float(group["lr"])
        group["initial_lr"] = base if lr == reference else base * lr / reference
    return ScheduledLR(optimizer, plan.schedule, per_group="ratio", on_mismatch="replan" if replan else "error")


def reference_lr(optimizer: torch.optim.Optimizer, learning_rate: float) -> tuple[float, str | None]:
    """The LR the groups' ratios are taken against: ``--learning_rate`` when a group is at it (HF's
    optimizer, peft's LoRA+ optimizer built with it), else the largest group LR, with a note."""
    lrs = [float(group["lr"]) for group in optimizer.param_groups]
    if learning_rate in lrs or not lrs:
        return learning_rate, None
    top = max(lrs)
    shown = ", ".join(f"{lr:g}" for lr in sorted(set(lrs), reverse=True))
    return top, (
        f"the optimizer passed in optimizers= has its own LRs ({shown}), none at --learning_rate "
        f"{learning_rate:g}: its groups keep their ratios to {top:g}, the peak is the plan's"
    )


class StrategyTrainerMixin(Trainer):
    """A ``Trainer`` (any subclass, with ``with_strategy``) whose scheduler is the strategy's plan.

    ``strategy``: the strategy arguments; by default ``args`` itself when it has them, else
    ``StrategyArguments()`` (``auto``). ``plan`` is the plan of the last ``train()``, printed once (by
    the main process) and written to ``<output_dir>/plan.json``. The scheduler steps once per update.
    A scheduler passed in ``optimizers=(opt, sched)`` is used as it is when no strategy argument was
    typed, and refused when one was.
    """

    def __init__(self, *args: Any, strategy: StrategyArguments | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if strategy is None:
            strategy = self.args if isinstance(self.args, StrategyArguments) else StrategyArguments()
        self.strategy = strategy
        self.plan: Plan | None = None
        self._resuming = self._said_own = False
        self._train_batches: int | None = None
        self._typed = hf_plan.typed_names(strategy, self.args, names=(*STRATEGY_FLAGS, *hf_plan.HF_TYPED))
        typed_strategy = [name for name in STRATEGY_FLAGS if name in self._typed]
        if self.lr_scheduler is not None and typed_strategy:
            raise UsageError(
                f"optimizers=(optimizer, scheduler): your scheduler and --{typed_strategy[0]} both set the LR; "
                "pass (optimizer, None) for the strategy's plan, or drop the strategy arguments"
            )
        if self.lr_scheduler is None:  # a bad argument is refused now, not at train()
            hf_plan.check_arguments(strategy, self.args, self._typed)

    def get_train_dataloader(self) -> Any:
        """HF's loader (sharded over the processes); its length sizes the plan."""
        loader = super().get_train_dataloader()
        self._train_batches = len(loader) if has_length(loader) else None
        return loader

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None) -> Any:
        """The plan's ``ScheduledLR``, the plan printed and written to ``plan.json`` by the main process."""
        if self.lr_scheduler is not None:
            if not self._created_lr_scheduler and self.is_world_process_zero() and not self._said_own:
                self._said_own = True
                print("lrsched.hf: the scheduler passed in optimizers= sets the LR (no strategy argument typed)")
            return self.lr_scheduler
        optimizer = self.optimizer if optimizer is None else optimizer
        if optimizer is None:
            raise UsageError("create_scheduler: no optimizer yet (create_optimizer first)")
        plan = hf_plan.resolve_plan(
            self.strategy, self.args, self._train_batches, typed=self._typed, trainer_steps=num_training_steps
        )
        reference, note = reference_lr(optimizer, self.args.learning_rate)
        self.plan = plan if note is None else dataclasses.replace(plan, notes=(*plan.notes, note))
        replan = bool(self.strategy.replan)
        self.lr_scheduler = scheduler_for(optimizer, self.plan, reference, replan=replan)  # type: ignore[assignment]
        self._created_lr_scheduler = True
        if self.is_world_process_zero():
            print(hf_plan.plan_text(self.plan, self._train_batches, self.args), flush=True)
            if not self._resuming:  # a resume keeps it once the checkpoint is adopted (a refusal writes nothing)
                self._keep_plan()
        return self.lr_scheduler

    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any) -> Any:
        """HF's ``train``; a resumed run writes ``plan.json`` only once the checkpoint's schedule is adopted."""
        self._resuming = bool(resume_from_checkpoint)
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def _keep_plan(self) -> None:
        """``<output_dir>/plan.json``: the plan, the run size and the schedule followed (a replan, after one)."""
        sched = self.lr_scheduler
        if self.plan is None or not isinstance(sched, ScheduledLR):
            return
        run = hf_plan.run_size(self._train_batches, self.args)
        hf_plan.write_plan_json(self.args.output_dir, hf_plan.plan_json(self.plan, run, sched.schedule))

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        """HF's resume, the checkpoint's schedule adopted by the library's rule: the same plan continues, another
        is replanned with ``--replan`` (said and kept in ``plan.json``) or refused in one line."""
        try:
            super()._load_optimizer_and_scheduler(checkpoint)
        except ScheduleMismatch as err:
            raise UsageError(
                f"resume_from_checkpoint {checkpoint}: the plan differs from the checkpoint's "
                f"({'; '.join(err.changes)}); pass --replan to continue from its step without a jump"
            ) from None
        except ScheduleError as err:
            raise UsageError(f"--replan from {checkpoint}: {err}") from None
        sched = self.lr_scheduler
        if checkpoint is None or not isinstance(sched, ScheduledLR) or not self.is_world_process_zero():
            return
        if sched.replanned is not None:
            print(f"  replanned at step {sched.last_epoch}: {sched.replanned}", flush=True)
        self._keep_plan()


@dataclass
class StrategyTrainingArguments(StrategyArguments, TrainingArguments):
    """HF's ``TrainingArguments`` with the strategy arguments after its own: one class for ``HfArgumentParser``."""


class StrategyTrainer(StrategyTrainerMixin, Trainer):
    """HF's ``Trainer`` whose scheduler is the strategy's plan (``StrategyTrainerMixin``)."""


hf_plan.record_typed(StrategyTrainingArguments)
_MADE.update(StrategyTrainingArguments=StrategyTrainingArguments, StrategyTrainer=StrategyTrainer)
_BY_BASE.update({TrainingArguments: StrategyTrainingArguments, Trainer: StrategyTrainer})
