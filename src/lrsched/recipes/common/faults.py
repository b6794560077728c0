"""A non-finite loss, and the test hooks that provoke faults: one definition for both programs.

``NonFiniteLoss`` is raised by a training loop before the update of a step whose loss (or
gradient norm) is NaN or infinite; the program then exits with ``exits.EXIT_NONFINITE``, the last good
checkpoint untouched.

The fault tests steer a run through two environment variables, each read the same way
(``hook_step``: an integer, anything else means unset):

- ``LRSCHED_INJECT_NAN_AT_STEP=k`` (``INJECT_NAN``): the loss of step ``k`` is taken as NaN;
- ``LRSCHED_STOP_AT_STEP=k`` (``STOP_AT``, phase5): behave as if SIGTERM arrived once ``k`` steps are done;
- ``LRSCHED_FAIL_AT_STEP=k`` (``FAIL_AT``, phase5): a MemoryError before step ``k``;
- ``LRSCHED_STALL_DATA_AT_STEP=k`` (``STALL_AT``, phase5): the batch of step ``k`` never arrives.
"""

from __future__ import annotations

import os
import re

INJECT_NAN = "LRSCHED_INJECT_NAN_AT_STEP"
"""Test hook: the loss of this step is made NaN (fault tests of the non-finite-loss stop)."""
STOP_AT = "LRSCHED_STOP_AT_STEP"
"""Test hook: behave as if SIGTERM arrived once this many steps are done."""
FAIL_AT = "LRSCHED_FAIL_AT_STEP"
"""Test hook (phase5): a MemoryError before step ``k`` starts, as an unexpected error anywhere in the loop."""
STALL_AT = "LRSCHED_STALL_DATA_AT_STEP"
"""Test hook (phase5): the data workers never deliver the batch of step ``k`` (a stalled data path)."""


class NonFiniteLoss(RuntimeError):
    """The loss or gradient norm of a step is NaN or infinite; nothing of that step was applied or saved."""


def hook_step(name: str) -> int | None:
    """The step the test hook ``name`` names, or None when it is unset or not an integer."""
    value = os.environ.get(name, "")
    return int(value) if value.strip().lstrip("-").isdigit() else None


class DataFailure(RuntimeError):
    """The data path failed: no batch before the deadline, the images went away, or a worker died or raised."""


def one_line(err: BaseException, with_type: bool = True) -> str:
    """An exception in one line: ``Type: message`` (or the message alone). A worker's error arrives with
    the worker's traceback in its message, whose last line is ``module.Type: message``."""
    name = type(err).__name__
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    text = re.sub(rf"^[\w.]*\b{name}: ", "", lines[-1]) if lines else ""
    if not with_type:
        return text or name
    return f"{name}: {text}" if text else name
