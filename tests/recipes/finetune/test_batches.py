"""train.py's batches in the loop: length-grouped by default, a plain permutation with --no_group_by_length,
tokenized once, and the optimizer fused where torch has a fused AdamW for the device."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from lrsched.recipes.common.distributed import World
from lrsched.recipes.common.skeleton import checked
from lrsched.recipes.finetune import batches as B
from lrsched.recipes.finetune import loop
from lrsched.recipes.finetune.flags import parse
from lrsched.recipes.finetune.main import TrainPy
from lrsched.recipes.finetune.state import State

from .finetune_helpers import TINY


def built(tmp_path: Path, *extra: str) -> State:
    argv = ["--num_epochs", "1", "--max_train_samples", "512", "--per_device_train_batch_size", "8", *TINY]
    args = parse([*argv, "--output_dir", str(tmp_path / "run"), *extra])
    return checked(TrainPy(), args, World(), torch.device("cpu"))


def mean_padded(state: State, batches: list[list[int]]) -> float:
    return sum(state.tokens.padded_length(b) for b in batches) / len(batches)


def test_batches_are_length_grouped_by_default_and_a_permutation_with_the_flag(tmp_path: Path) -> None:
    run = built(tmp_path)
    grouped = loop.epoch_batches(run, 0)
    assert grouped is loop.epoch_batches(run, 0)  # once per epoch
    assert grouped == B.rank_batches(512, 8, 42, 0, lengths=run.tokens.lengths)
    assert len(grouped) == run.settings.batches == 64
    assert sorted(i for b in grouped for i in b) == list(range(512))
    assert loop.epoch_batches(run, 1) != grouped
    plain_run = built(tmp_path, "--no-group-by-length")
    plain = loop.epoch_batches(plain_run, 0)
    assert plain == B.rank_batches(512, 8, 42, 0)  # the order of earlier lrsched versions
    assert plain_run.tokens.lengths == run.tokens.lengths
    assert mean_padded(run, grouped) < 0.8 * mean_padded(run, plain)


def test_the_token_cache_holds_the_training_texts_truncated(tmp_path: Path) -> None:
    run = built(tmp_path, "--max_seq_length", "24")
    assert run.tokens.exact and len(run.tokens.lengths) == 512 and max(run.tokens.lengths) == 24
    enc = run.settings.tokenizer(
        run.settings.splits.train.texts[:8], padding=True, truncation=True, max_length=24, return_tensors="pt"
    )
    assert all(torch.equal(run.tokens.batch(range(8))[k], enc[k]) for k in enc)  # type: ignore[arg-type]


def test_adamw_is_fused_where_torch_has_a_fused_kernel(tmp_path: Path) -> None:
    run = built(tmp_path)
    assert all(g["fused"] for g in run.optimizer.param_groups)


def test_one_update_reads_the_device_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The loss and the gradient norm reach the host in one transfer (no .item()/float() per value)."""
    run = built(tmp_path)
    group = loop.epoch_batches(run, 0)[:1]
    reads = []
    real = torch.Tensor.tolist

    def counted(self: torch.Tensor) -> Any:
        reads.append(tuple(self.shape))
        return real(self)

    monkeypatch.setattr(torch.Tensor, "tolist", counted)
    monkeypatch.setattr(torch.Tensor, "item", lambda self: pytest.fail("item() in an update"))
    monkeypatch.setattr(torch.Tensor, "__float__", lambda self: pytest.fail("float() in an update"))
    lr, loss, norm = loop.update(run, group)
    assert reads == [(2,)]
    assert 0 < loss < 5 and norm > 0 and lr == 0.0 and run.t == 1
