"""recipes/common/stopping.py: SIGINT, SIGTERM and SIGHUP, recorded in the loop, raised outside it."""

from __future__ import annotations

import os
import signal

import pytest

from lrsched.recipes.common.stopping import STOP_SIGNALS, Stopped, StopRequest


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
