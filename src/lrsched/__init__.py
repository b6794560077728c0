"""lrsched: learning-rate strategies for PyTorch runs of any length.

Pure math in ``lrsched.schedules``; how a checkpoint describes and adopts it in
``lrsched.adoption``; the run-length policy in ``lrsched.strategy``, a plan counted in steps in
``lrsched.step_plan``;
the shared flags in ``lrsched.flags``; scheduled param-group fields and the ``LRScheduler``
adapter in ``lrsched.torch_sched``. Every shape is one function and one row of ``SHAPE_TABLE``.
"""

from lrsched.errors import ScheduleError, UsageError
from lrsched.schedules import SHAPE_TABLE, SHAPES, Replanned, Schedule, ShapeRow, replan
from lrsched.step_plan import StepDefaults, resolve_steps
from lrsched.strategy import Plan, resolve_finetune

__all__ = [
    "SHAPES",
    "SHAPE_TABLE",
    "Plan",
    "Replanned",
    "Schedule",
    "ScheduleError",
    "ShapeRow",
    "StepDefaults",
    "UsageError",
    "replan",
    "resolve_finetune",
    "resolve_steps",
]
__version__ = "0.1.0"
