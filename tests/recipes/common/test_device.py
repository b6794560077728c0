"""Precision on any machine: the one seam (``runs_bf16_natively``) stubbed as a CPU with and without
native bf16; what the plan says and what ``--bf16`` does in both programs (fp32 with one line where
bf16 would be emulated, unless ``LRSCHED_FORCE_BF16=1``)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from helpers import DINO_SMALL, FASHION

from lrsched.recipes.common import device as D

CPU = torch.device("cpu")


@pytest.fixture
def autocasts(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[torch.dtype]]:
    """The dtypes of every ``torch.autocast`` the programs open (recorded, then opened as asked)."""
    opened: list[torch.dtype] = []
    real = torch.autocast

    def recording(device_type: str, dtype: torch.dtype | None = None, **kw: object) -> torch.autocast:
        opened.append(dtype or torch.float32)
        return real(device_type, dtype=dtype, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(torch, "autocast", recording)
    monkeypatch.delenv(D.FORCE_BF16, raising=False)
    yield opened


def cpu_kind(monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    monkeypatch.setattr(D, "cpu_has_native_bf16", lambda: native)


def matmul_dtype(native: bool, monkeypatch: pytest.MonkeyPatch) -> torch.dtype:
    cpu_kind(monkeypatch, native)
    with D.autocast(CPU, True):
        return (torch.ones(2, 2) @ torch.ones(2, 2)).dtype


def test_bf16_is_used_only_where_it_is_native(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(D.FORCE_BF16, raising=False)
    assert matmul_dtype(True, monkeypatch) == torch.bfloat16
    assert matmul_dtype(False, monkeypatch) == torch.float32
    monkeypatch.setenv(D.FORCE_BF16, "1")
    assert matmul_dtype(False, monkeypatch) == torch.bfloat16


def test_without_bf16_nothing_is_autocast(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu_kind(monkeypatch, True)
    with D.autocast(CPU, False):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


@pytest.mark.parametrize(
    ("native", "requested", "forced", "says"),
    [
        (True, True, False, "bf16 autocast (native here)"),
        (True, False, False, "fp32 (this CPU runs bf16 natively: --bf16 would use it)"),
        (False, False, False, "fp32 (this CPU has no native bf16 (AVX512-BF16/AMX): --bf16 would run fp32)"),
        (
            False,
            True,
            False,
            "fp32: --bf16 ignored, this CPU has no native bf16 (AVX512-BF16/AMX) (set LRSCHED_FORCE_BF16=1",
        ),
        (False, True, True, "bf16 autocast, forced by LRSCHED_FORCE_BF16=1"),
    ],
)
def test_precision_text_names_the_kind_of_cpu_and_what_bf16_does(
    monkeypatch: pytest.MonkeyPatch, native: bool, requested: bool, forced: bool, says: str
) -> None:
    cpu_kind(monkeypatch, native)
    if forced:
        monkeypatch.setenv(D.FORCE_BF16, "1")
    else:
        monkeypatch.delenv(D.FORCE_BF16, raising=False)
    assert D.precision_text(CPU, requested).startswith(says)


def test_cuda_asks_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    for answer in (True, False):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda answer=answer: answer)
        assert D.runs_bf16_natively(torch.device("cuda")) is answer


def test_the_cpu_answer_reads_its_instruction_set() -> None:
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    if flags:
        assert D.cpu_has_native_bf16() == ("avx512_bf16" in flags or "amx_bf16" in flags)


@pytest.mark.parametrize("native", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_train_py_bf16_on_both_kinds_of_cpu(
    native: bool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    autocasts: list[torch.dtype],
    capsys: pytest.CaptureFixture[str],
) -> None:
    from recipes.finetune.finetune_helpers import TINY, run_train

    cpu_kind(monkeypatch, native)
    argv = ["--num_epochs", "1", "--bf16", "--max_train_samples", "4", "--per_device_train_batch_size", "2", *TINY]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert run_train([*argv, "--output_dir", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    device_line = next(line for line in out.splitlines() if line.strip().startswith("device"))
    if native:
        assert "bf16 autocast (native here)" in device_line and autocasts and set(autocasts) == {torch.bfloat16}
    else:
        assert "fp32: --bf16 ignored, this CPU has no native bf16" in device_line and autocasts == []
    assert out.index(device_line) < out.index("epoch 1 step")  # said before training
    assert "note 00" not in out  # the design notes' numbers are not the user's business


@pytest.mark.skipif(not FASHION.is_dir(), reason="Fashion-MNIST missing: apt-get install dataset-fashion-mnist")
@pytest.mark.slow
@pytest.mark.parametrize("native", [False, True])
def test_phase5_bf16_on_both_kinds_of_cpu(
    native: bool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    autocasts: list[torch.dtype],
    capsys: pytest.CaptureFixture[str],
) -> None:
    from lrsched.recipes.dino.main import main

    cpu_kind(monkeypatch, native)
    argv = [*DINO_SMALL, "--bf16", "--max-steps", "2", "--warmup-steps", "1", "--no-knn"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert main([*argv, "--output-dir", str(tmp_path / "run")]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    if native:
        assert "bf16 autocast (native here)" in first and set(autocasts) == {torch.bfloat16}
    else:
        assert "fp32: --bf16 ignored, this CPU has no native bf16" in first and autocasts == []
