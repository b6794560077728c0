"""Liveness of the data path: a deadline on every wait, and workers that never outlive their parent.

The rule (docs/design.md, "Liveness"): a wait for data (a training batch, a k-NN batch, the images
decoded at start; for the folder's listing, each entry) ends with ``Stalled`` once it has lasted
``--data-timeout`` seconds *of time the process could run*; the deadline bounds the whole wait,
however many reads inside it block.

``deadline`` ticks every ``tick(seconds)`` seconds (SIGALRM) and counts the time between ticks,
but at most ``MAX_TICKS_COUNTED`` ticks' worth for one gap: a gap longer than that means the
process was not running (stopped by SIGSTOP or Ctrl-Z, a suspended machine), and that time is not
the data's fault. Once the count reaches ``seconds`` every tick raises ``Stalled`` again, so a
read that swallows one exception (or a second blocked read after it) cannot outlast the deadline
by more than a tick. Formally, with tick times ``t_1 < t_2 < ...`` from the start ``t_0``::

    counted(k) = sum_{i <= k} min(t_i - t_{i-1}, MAX_TICKS_COUNTED * tick)
    Stalled at every t_k with counted(k) >= seconds

``watched_context`` starts DataLoader workers that ask the kernel to SIGKILL them when their
parent dies (Linux ``prctl(PR_SET_PDEATHSIG)``), as their first instruction, and leave at once
when the parent is already gone (it died between ``fork`` and that instruction).
"""

from __future__ import annotations

import ctypes
import multiprocessing
import multiprocessing.context
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from lrsched.recipes.common.faults import DataFailure

MAX_TICK = 1.0
"""Seconds between two ticks of a deadline at most (a deadline of ``s`` seconds ticks every ``min(1, s / 4)``)."""
MAX_TICKS_COUNTED = 2
"""A gap between two ticks counts for at most this many ticks: longer, the process was not running."""
PR_SET_PDEATHSIG = 1
"""``prctl`` option (linux/prctl.h): the signal the kernel sends a process when its parent thread exits."""


class Stalled(DataFailure):
    """A wait for data outlasted its deadline (``deadline``); never taken for one unreadable image."""


def tick(seconds: float) -> float:
    """The interval between two ticks of a ``seconds`` deadline: ``min(MAX_TICK, seconds / 4)``."""
    return min(MAX_TICK, seconds / 4)


class RunnableClock:
    """Seconds a wait has lasted, counted tick by tick, each gap at most ``MAX_TICKS_COUNTED`` ticks."""

    def __init__(self, interval: float, now: float) -> None:
        self.interval, self.last, self.counted = interval, now, 0.0

    def advance(self, now: float) -> float:
        """Count the gap since the last tick (capped: time stopped does not count); the total."""
        self.counted += min(now - self.last, MAX_TICKS_COUNTED * self.interval)
        self.last = now
        return self.counted

    def progress(self) -> None:
        """The wait moved on (a long job, such as listing a folder, finished one more piece): count from 0."""
        self.counted = 0.0


@contextmanager
def deadline(seconds: float, message: Callable[[], str]) -> Iterator[RunnableClock]:
    """Within: ``Stalled(message())`` at every tick once ``seconds`` of runnable time have passed
    since the start or the last ``progress()`` of the clock it yields.

    No deadline for 0, off the main thread, or where the platform has no interval timer (SIGALRM
    interrupts a blocked read, so the wait cannot hide in one). Not nested: one wait at a time.
    """
    interval = tick(seconds) if seconds > 0 else MAX_TICK
    clock = RunnableClock(interval, time.monotonic())
    usable = seconds > 0 and hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable:
        yield clock
        return

    def on_tick(signum: int, frame: FrameType | None) -> None:
        if clock.advance(time.monotonic()) >= seconds:
            raise Stalled(message())

    previous = signal.signal(signal.SIGALRM, on_tick)
    signal.setitimer(signal.ITIMER_REAL, interval, interval)
    try:
        yield clock
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# --- workers that die with their parent ------------------------------------------------------------


def die_with_parent(parent: int) -> None:
    """In a child of ``parent``: be SIGKILLed when it dies (Linux), and leave now if it is gone already.

    Elsewhere (no ``prctl``) only the second half holds; torch's own check of the parent follows.
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:
        os._exit(0)


class WatchedForkProcess(multiprocessing.context.ForkProcess):
    """A forked process whose first instruction is ``die_with_parent`` (its parent's pid taken at creation)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.parent_pid = os.getpid()

    def run(self) -> None:
        die_with_parent(self.parent_pid)
        super().run()


class WatchedForkContext(multiprocessing.context.ForkContext):
    """``fork``, with ``WatchedForkProcess`` for processes."""

    Process = WatchedForkProcess


def watched_context() -> multiprocessing.context.BaseContext | None:
    """The context DataLoader workers start from: ``WatchedForkContext`` where ``fork`` is the start method
    (Linux), else None (the platform's default, where workers rely on torch's own check of their parent)."""
    forking = multiprocessing.get_start_method(allow_none=True) in (None, "fork") and hasattr(os, "fork")
    return WatchedForkContext() if forking and sys.platform.startswith("linux") else None
