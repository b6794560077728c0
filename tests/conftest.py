"""Every test runs torch on one thread (the machine is shared), with no program test hook set."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    for name in ("LRSCHED_INJECT_NAN_AT_STEP", "LRSCHED_STOP_AT_STEP"):
        monkeypatch.delenv(name, raising=False)
    yield
    torch.set_num_threads(before)
