"""lrsched's errors: what a program reports as one line and exit status 2.

``ScheduleError`` is a schedule parameter that breaks a rule (in the library's words:
``warmup=0``); ``UsageError`` is bad input to a program (a flag, a path, a checkpoint), in the
command line's words. The programs print either as ``<prog>: error: <message>`` and exit 2.
"""

from __future__ import annotations


class ScheduleError(ValueError):
    """A parameter that breaks a rule; the message names it, its value and the rule."""


class UsageError(ValueError):
    """Bad input (a flag, a path, a checkpoint): one line naming it and the rule, exit status 2."""


class ScheduleMismatch(UsageError):
    """A saved schedule's target differs from the one asked for, and replanning was not requested.

    ``changes`` lists the differences (``"total: 100 -> 200"``), for callers that word their own message.
    """

    def __init__(self, message: str, changes: list[str]) -> None:
        super().__init__(message)
        self.changes = changes
