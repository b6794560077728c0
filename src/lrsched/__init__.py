"""lrsched: learning-rate strategies for PyTorch runs of any length.

Pure math in ``lrsched.schedules``; how a checkpoint describes and adopts it in
``lrsched.adoption``; the run-length policy in ``lrsched.strategy``, a plan counted in steps in
``lrsched.step_plan``;
the shared flags in ``lrsched.flags``; the torch adapter in ``lrsched.torch_sched``.
"""

from lrsched.errors import ScheduleError, UsageError
from lrsched.schedules import SHAPES, Replanned, Schedule, replan
from lrsched.step_plan import StepDefaults, resolve_steps
from lrsched.strategy import Plan, resolve_finetune

__all__ = [
    "SHAPES",
    "Plan",
    "Replanned",
    "Schedule",
    "ScheduleError",
    "StepDefaults",
    "UsageError",
    "replan",
    "resolve_finetune",
    "resolve_steps",
]
__version__ = "0.1.0"
