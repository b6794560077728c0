"""recipes/common/stopping.py: SIGINT, SIGTERM and SIGHUP, recorded in the loop, raised outside it; a closed
output asks for a stop."""

from __future__ import annotations

import errno
import io
import os
import signal
import subprocess
import sys

import pytest

from lrsched.recipes.common.stopping import (
    CLOSED_OUTPUT,
    STOP_SIGNALS,
    GuardedOutput,
    Stopped,
    StopRequest,
    guarded_output,
)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_deferred_signal_is_recorded_and_check_raises(sig: signal.Signals) -> None:
    with StopRequest() as stop:
        os.kill(os.getpid(), sig)
        assert stop.requested == sig.name
        with pytest.raises(Stopped) as err:
            stop.check()
    assert err.value.signal_name == sig.name


def test_immediate_mode_raises_at_once_then_defer_only_records() -> None:
    with StopRequest(immediate=True) as stop:
        with pytest.raises(Stopped):
            os.kill(os.getpid(), signal.SIGHUP)
            for _ in range(10**6):  # the handler runs between bytecodes: never gets far
                pass
        stop.requested = None
        stop.defer()
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested == "SIGTERM"


def test_the_previous_handlers_come_back() -> None:
    before = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    with StopRequest():
        assert all(signal.getsignal(sig) != before[sig] for sig in STOP_SIGNALS)
    assert {sig: signal.getsignal(sig) for sig in STOP_SIGNALS} == before


def test_stopped_is_not_an_exception_that_except_exception_swallows() -> None:
    assert not issubclass(Stopped, Exception) and issubclass(Stopped, BaseException)


def test_a_closed_pipe_goes_to_dev_null_and_asks_for_a_stop_once() -> None:
    read_end, write_end = os.pipe()
    stream = io.TextIOWrapper(os.fdopen(write_end, "wb"), encoding="utf-8")
    os.close(read_end)  # the reader exited (`| head`)
    with StopRequest() as stop:
        guarded = GuardedOutput(stream, lambda: stop.request(CLOSED_OUTPUT))
        assert guarded.write("a line\n") == 7
        guarded.flush()  # EPIPE here: the stream now writes to /dev/null
        guarded.write("more\n")
        guarded.flush()
        assert stop.requested == CLOSED_OUTPUT
        assert os.path.samefile(f"/proc/self/fd/{stream.fileno()}", os.devnull)
    stream.close()


def test_a_closed_output_in_immediate_mode_raises_stopped_and_not_once_reporting() -> None:
    with StopRequest(immediate=True) as stop, guarded_output(stop):
        with pytest.raises(Stopped) as err:
            stop.request(CLOSED_OUTPUT)
        assert err.value.signal_name == CLOSED_OUTPUT
    reporting = StopRequest()
    reporting.output_stops = False  # the skeleton's setting once the training is over
    with reporting, guarded_output(reporting):
        assert isinstance(sys.stdout, GuardedOutput)
        sys.stdout._on_gone()
        assert reporting.requested is None
    assert not isinstance(sys.stdout, GuardedOutput)


def test_other_write_errors_are_not_swallowed() -> None:
    class Failing(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        GuardedOutput(Failing(), lambda: None).write("x")


TEARDOWN_CHILD = """
import os, signal, sys, time
from lrsched.recipes.common.stopping import StopRequest


class SignalledInTheTeardown:
    '''Collected when CPython tears the modules down: after the exit functions, after it reset the
    signals that had a Python handler to their default action.'''

    def __del__(self, kill=os.kill, pid=os.getpid(), sig=signal.{sig}, sleep=time.sleep):
        kill(pid, sig)
        sleep(0.2)  # a signal with its default action ends the process here


with StopRequest() as stop:
    stop.quiet_from_now_on(3)
in_the_teardown = SignalledInTheTeardown()
sys.exit(3)
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_signal_in_the_interpreters_teardown_leaves_the_exit_status(sig: signal.Signals) -> None:
    """Once the status is known, a signal during the interpreter's own finalization does not kill the
    process (phase5 died of SIGINT, status -2, when a Ctrl-C came after CPython reset the handlers)."""
    code = TEARDOWN_CHILD.replace("{sig}", sig.name)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 3, done.stderr[-2000:]
    assert done.stderr == ""
