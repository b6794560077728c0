"""What the lrsched.hf tests share: tiny models built from a config, data, an update log, ``lrsched show``.

Nothing is downloaded: the models are random, the tokenizer is built in memory.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from transformers import BertConfig, BertForSequenceClassification, TrainerCallback

from lrsched import cli

REPO = Path(__file__).resolve().parents[1]

VOCAB, LENGTH = 50, 8
COMMON = ["--use_cpu", "--report_to", "none", "--disable_tqdm", "true", "--seed", "0", "--dataloader_num_workers", "0"]


def tiny_model(seed: int = 0) -> BertForSequenceClassification:
    """A 2-layer, 8-wide BERT from a config. No dropout: runs compare bitwise."""
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=8,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=LENGTH,
        num_labels=2,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return BertForSequenceClassification(config)


class Tokens(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """``n`` random token sequences with labels, the same for a given ``n``."""

    def __init__(self, n: int) -> None:
        g = torch.Generator().manual_seed(n)
        self.ids = torch.randint(1, VOCAB, (n, LENGTH), generator=g)
        self.labels = torch.randint(0, 2, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


class UpdateLog(TrainerCallback):
    """Before each optimizer update: the scheduler's step ``t`` and the LR of every param group."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, list[float]]] = []

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        groups = kwargs["optimizer"].param_groups
        self.seen.append((kwargs["lr_scheduler"].last_epoch, [float(g["lr"]) for g in groups]))

    def first_lrs(self) -> list[float]:
        return [lrs[0] for _, lrs in self.seen]


def show(*argv: str) -> dict[str, Any]:
    """``lrsched show --json`` for the same run, as a user types it."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["show", *argv, "--json"]) == 0
    data: dict[str, Any] = json.loads(out.getvalue())
    return data


def without_words(plan: dict[str, Any]) -> dict[str, Any]:
    """A plan's JSON without its sources and notes (which name each program's own flags)."""
    return {k: v for k, v in plan.items() if k not in ("notes", "sources")}


def load_example(name: str) -> ModuleType:
    """``examples/<name>.py`` as a module (its ``main`` is not run)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "examples" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
