"""Stopping on request: SIGINT or SIGTERM sets a flag; the loop saves a checkpoint and exits 0."""

from __future__ import annotations

import signal
from types import FrameType
from typing import Any


class StopRequest:
    """While installed, SIGINT and SIGTERM ask the loop to stop at the next step boundary."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = signal.Signals(signum).name

    def __enter__(self) -> StopRequest:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
