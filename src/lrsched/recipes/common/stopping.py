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

A closed output is a stop too (``guarded_output``): when the reader of stdout or stderr goes
away (``| tee`` or ``| head`` that exited, a terminal that closed), the write that finds it gone
(``EPIPE``, ``EIO``) sends that stream to ``/dev/null`` and asks the run to stop, as a signal
would ("stopped by a closed output"): the state is saved, the report written, exit status 0.

Once the program has its exit status (``StopRequest.quiet_from_now_on``), a further signal (a second Ctrl-C
while torch and the workers shut down) ends the process at once with that status, without a
traceback. From the interpreter's exit functions on, the three signals are ignored
(``ignore_stop_signals``): Python's finalization gives every signal that has a Python handler back its
default action and then tears down the modules (torch's take up to seconds), so a Ctrl-C there would
otherwise kill the process (status -2) instead of letting it end with its status.
"""

from __future__ import annotations

import atexit
import errno
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from types import FrameType
from typing import Any, TextIO

import torch

from lrsched.recipes.common.distributed import World, any_rank

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
CLOSED_OUTPUT = "a closed output"
"""The stop's name when stdout or stderr lost its reader (``guarded_output``)."""
_GONE = (errno.EPIPE, errno.EIO)


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
        self.output_stops = True
        """Whether a closed output asks for a stop (not once the report is being written: it just goes on)."""
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            _detach_terminal()
        self.request(signal.Signals(signum).name)

    def request(self, why: str) -> None:
        """Ask the run to stop (the first reason is kept); in immediate mode, on the main thread, at once."""
        self.requested = self.requested or why
        if self.immediate and threading.current_thread() is threading.main_thread():
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

    def quiet_from_now_on(self, status: int) -> None:
        """The program has its exit status: a stop signal from now on (a second Ctrl-C while the process
        shuts down) flushes what is printed and ends the process with ``status``, without a traceback.
        These handlers stay when the request is uninstalled; at interpreter exit the signals are ignored
        (``ignore_stop_signals``), so that the end of the shutdown cannot be killed by one either."""

        def leave(signum: int, frame: FrameType | None) -> None:
            for stream in (sys.stdout, sys.stderr):
                with suppress(OSError, ValueError):
                    stream.flush()
            os._exit(status)

        for sig in STOP_SIGNALS:
            signal.signal(sig, leave)
        self._previous.clear()
        atexit.unregister(ignore_stop_signals)  # registered once however often the status is set
        atexit.register(ignore_stop_signals)

    def __enter__(self) -> StopRequest:
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def ignore_stop_signals() -> None:
    """SIGINT, SIGTERM and SIGHUP ignored (``quiet_from_now_on`` runs this among the exit functions).

    After the exit functions, CPython's finalization resets every signal with a Python handler to its
    default action (``SIG_DFL``: for these three, death by the signal), then collects and tears down the
    modules, where no Python handler can run any more. A signal it leaves ignored stays ignored, so
    the process still ends with the status the program chose. The status is known and the program's own
    work is done by then; what is left is the library's cleanup."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def stop_together(stop: StopRequest, world: World, device: torch.device) -> None:
    """A point every rank passes: ``Stopped`` on all of them when any rank got a signal (a collective)."""
    if any_rank(stop.requested is not None, world, device):
        raise Stopped(stop.requested or "a signal to another rank")


class GuardedOutput:
    """``sys.stdout`` or ``sys.stderr`` whose reader may go away: a write or flush that finds it gone
    (``EPIPE``: the pipe's reader exited; ``EIO``: the terminal closed) sends the stream's file
    descriptor to ``/dev/null`` and calls ``on_gone`` once, instead of raising."""

    def __init__(self, stream: TextIO, on_gone: Callable[[], None]) -> None:
        self._stream = stream
        self._on_gone = on_gone

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except OSError as err:
            self._gone(err)
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as err:
            self._gone(err)

    def _gone(self, err: OSError) -> None:
        if err.errno not in _GONE:
            raise err
        with suppress(OSError, ValueError):
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, self._stream.fileno())
            os.close(null)
        with suppress(OSError, ValueError):
            self._stream.flush()  # what the buffer still holds goes to /dev/null
        self._on_gone()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextmanager
def guarded_output(stop: StopRequest) -> Iterator[None]:
    """Within: stdout and stderr are ``GuardedOutput``; losing their reader asks ``stop`` to stop."""
    before = sys.stdout, sys.stderr

    def gone() -> None:
        if stop.output_stops:
            stop.request(CLOSED_OUTPUT)

    sys.stdout = GuardedOutput(sys.stdout, gone)
    sys.stderr = GuardedOutput(sys.stderr, gone)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = before
