"""Stopping on request: SIGINT, SIGTERM or SIGHUP, anywhere in a run.

While a ``StopRequest`` is installed, the three signals never kill the program:

- in *immediate* mode (before the model exists: reading data, loading the model) the handler
  raises ``Stopped`` at once; nothing has been written yet, so the program just exits;
- in *deferred* mode (``defer()``, once there is a state worth saving) the handler only records
  the signal (``requested``). The training loop looks at it between steps; code outside the
  loop (evaluation, the final report) calls ``check()`` at safe points, which raises
  ``Stopped``. The program catches ``Stopped``, saves the latest state and exits 0.

Checks never happen in the middle of a file write, so a stop never leaves a half-written file.
SIGHUP (a closed terminal or ssh session) is treated like SIGTERM.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import torch

from lrsched.recipes.common.distributed import World, any_rank

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Stopped(BaseException):
    """A stop request honoured outside the training loop (a BaseException, like KeyboardInterrupt,
    so that no ``except Exception`` in between swallows it)."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name


def _detach_terminal() -> None:
    """After SIGHUP the terminal may be gone: send stdout/stderr that went to it to /dev/null,
    so that the progress bar or a message cannot fail the save that follows."""
    try:
        fds = [fd for fd in (1, 2) if os.isatty(fd)]
        if fds:
            null = os.open(os.devnull, os.O_WRONLY)
            for fd in fds:
                os.dup2(null, fd)
            os.close(null)
    except OSError:
        pass


class StopRequest:
    """While installed, SIGINT, SIGTERM and SIGHUP ask the run to stop (see the module docstring)."""

    def __init__(self, *, immediate: bool = False) -> None:
        self.requested: str | None = None
        self.immediate = immediate
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            _detach_terminal()
        self.requested = signal.Signals(signum).name
        if self.immediate:
            raise Stopped(self.requested)

    def defer(self) -> None:
        """From now on a signal is only recorded; ``check()`` or the loop acts on it."""
        self.immediate = False

    def check(self) -> None:
        """Raise ``Stopped`` if a signal has arrived."""
        if self.requested is not None:
            raise Stopped(self.requested)

    @contextmanager
    def interruptible(self) -> Iterator[None]:
        """Within: a signal raises ``Stopped`` at once, for waits (a batch from the workers) that
        leave nothing half-done, so a stalled data path cannot hold a stop back."""
        self.check()
        before, self.immediate = self.immediate, True
        try:
            yield
        finally:
            self.immediate = before

    def __enter__(self) -> StopRequest:
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def stop_together(stop: StopRequest, world: World, device: torch.device) -> None:
    """A point every rank passes: ``Stopped`` on all of them when any rank got a signal (a collective)."""
    if any_rank(stop.requested is not None, world, device):
        raise Stopped(stop.requested or "a signal to another rank")
