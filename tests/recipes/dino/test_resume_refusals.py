"""phase5 refuses, before anything is written, a resume its network cannot take (issue 20): colour files
joining a grayscale run change the input channels, which --accept-data-change cannot accept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import DINO_SMALL
from PIL import Image

from lrsched.errors import UsageError
from lrsched.recipes.dino.checkpoint import check_channels
from lrsched.recipes.dino.main import main


def images(root: Path, n: int, channels: int, prefix: str, seed: int) -> Path:
    """``n`` 40x40 PNGs (grayscale or RGB) in two class folders."""
    rng = np.random.default_rng(seed)
    shape = (40, 40) if channels == 1 else (40, 40, 3)
    for i in range(n):
        folder = root / f"class{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(folder / f"{prefix}{i:03d}.png")
    return root


def tree(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def test_colour_files_joining_a_grayscale_run_are_refused_naming_both_channel_counts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = images(tmp_path / "images", 24, 1, "gray", 0)
    out = tmp_path / "run"
    flags = [*DINO_SMALL, "--batch-size", "8", "--data-dir", str(data), "--output-dir", str(out), "--workers", "0"]
    flags += ["--max-steps", "6", "--warmup-steps", "1"]
    with monkeypatch.context() as env:
        env.setenv("LRSCHED_STOP_AT_STEP", "2")
        assert main(flags) == 0
    images(data, 40, 3, "rgb", 1)  # colour files join: the data now has 3 channels
    before = tree(out)
    capsys.readouterr()
    assert main([*flags, "--resume", "latest", "--accept-data-change"]) == 2
    err = capsys.readouterr().err.strip()
    checkpoint = out / "checkpoints" / "step-00000002.pt"
    assert err == (
        f"phase5_big_run.py: error: --resume {checkpoint}: the checkpoint's network takes 1-channel (grayscale) "
        f"images, but --data-dir {data} now has 3-channel (colour) images; --accept-data-change cannot change "
        "a network's input channels: resume on data of the checkpoint's kind, or start a new run"
    )
    assert tree(out) == before


def test_check_channels_reads_the_count_from_the_weights_or_the_fingerprint() -> None:
    state = {"student": {"backbone.patch_embed.weight": torch.zeros(8, 3, 4, 4)}}
    check_channels(state, 3, "ck.pt", "d")
    with pytest.raises(UsageError, match=r"takes 3-channel \(colour\) images, but --data-dir d now has 1-channel"):
        check_channels(state, 1, "ck.pt", "d")
    with pytest.raises(UsageError, match=r"takes 1-channel \(grayscale\) images, .* now has 4-channel images"):
        check_channels({"student": {}, "data": {"fingerprint": {"channels": 1}}}, 4, "ck.pt", "d")
    check_channels({"student": {}}, 3, "ck.pt", "d")  # nothing to compare: not refused here
