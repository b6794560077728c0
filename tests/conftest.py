"""Every test runs torch on one thread (the machine is shared), with no program test hook set.

Hypothesis runs without its per-example deadline: on a shared 2-core machine a slow
example is noise, not a failure.

The thread count is set once per session, before any module fixture runs: a fixture that
trains a reference run must use the same count as the test that resumes it, because a
different count changes the order of float reductions and so the last bits of the loss.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from hypothesis import settings

settings.register_profile("shared-machine", deadline=None)
settings.load_profile("shared-machine")


@pytest.fixture(scope="session", autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def no_test_hooks(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LRSCHED_INJECT_NAN_AT_STEP", "LRSCHED_STOP_AT_STEP"):
        monkeypatch.delenv(name, raising=False)
