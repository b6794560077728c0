"""train.py's evaluation: loss, accuracy and macro-F1 over a split (sharded across ranks), and eval.json."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from lrsched.recipes.common.device import autocast
from lrsched.recipes.common.distributed import every_rank
from lrsched.recipes.common.runlog import write_json
from lrsched.recipes.common.stopping import StopRequest
from lrsched.recipes.finetune import batches as B
from lrsched.recipes.finetune import data as D
from lrsched.recipes.finetune import metrics
from lrsched.recipes.finetune import model as M
from lrsched.recipes.finetune.state import State


def eval_tokens(run: State, name: str, data: D.Examples) -> B.TokenCache:
    """The token cache of an evaluation split, built on first use."""
    if name not in run.eval_tokens:
        run.eval_tokens[name] = B.TokenCache(run.settings.tokenizer, data.texts, run.settings.args.max_seq_length)
    return run.eval_tokens[name]


@torch.no_grad()
def evaluate(
    run: State,
    model: nn.Module,
    data: D.Examples,
    stop: StopRequest | None = None,
    tokens: B.TokenCache | None = None,
) -> dict[str, float]:
    """Loss, accuracy and macro-F1 over ``data`` (sharded across ranks, then summed).

    With ``tokens`` (``data``'s token cache) the batches are padded from it, longest texts first.
    In a single process a stop request is honoured between batches (``Stopped``); under DDP the
    ranks would disagree on where, so it waits for the next point where they all check."""
    was_training = model.training
    model.eval()
    losses = []
    w = run.world
    lengths = None if tokens is None else tokens.lengths
    pairs = []
    for indices in B.eval_shard(len(data), run.settings.args.per_device_eval_batch_size, w.rank, w.size, lengths):
        if tokens is None:
            enc = M.tokenize(
                run.settings.tokenizer, [data.texts[i] for i in indices], run.settings.args.max_seq_length, run.device
            )
        else:
            enc = B.to_device(tokens.batch(indices), run.device)
        labels = torch.tensor([data.labels[i] for i in indices]).to(run.device, non_blocking=True)
        with autocast(run.device, run.settings.args.bf16):
            logits = model(**enc).logits.float()
        losses.append(F.cross_entropy(logits, labels, reduction="sum"))
        pairs.append(torch.stack([labels, logits.argmax(-1)]))
        if stop is not None and not w.distributed:
            stop.check()
    true, pred = torch.cat(pairs, 1).tolist() if pairs else ([], [])
    conf = torch.tensor(metrics.confusion(true, pred, len(run.settings.splits.label_names)), dtype=torch.float64)
    loss_sum = torch.stack(losses).cpu().double().sum() if losses else torch.zeros((), dtype=torch.float64)
    if w.distributed:
        for tensor in (conf, loss_sum):
            dist.all_reduce(tensor)
    model.train(was_training)
    m = conf.long().tolist()
    return {"loss": float(loss_sum) / len(data), "accuracy": metrics.accuracy(m), "macro_f1": metrics.macro_f1(m)}


def rank_summary(run: State) -> list[dict[str, Any]]:
    """Every rank's step and a checksum of its weights: under DDP they must all agree."""
    mine = {
        "rank": run.world.rank,
        "step": run.t,
        "weights_sum": float(sum(float(p.detach().double().sum()) for p in run.model.parameters())),
    }
    return every_rank(mine, run.world)


def write_eval(run: State, test: dict[str, Any] | None, ranks: list[dict[str, Any]] | None = None) -> None:
    """eval.json: per-epoch validation, the best epoch, the test result and the baselines."""
    if run.world.is_main:
        report = {
            "validation": run.history,
            "best": run.best,
            "test": test,
            "labels": run.settings.splits.label_names,
            "majority_baseline": {
                "validation": metrics.majority_baseline(
                    run.settings.splits.train.labels, run.settings.splits.validation.labels
                ),
                "test": None
                if run.settings.splits.test is None
                else metrics.majority_baseline(run.settings.splits.train.labels, run.settings.splits.test.labels),
            },
            "ranks": ranks,
        }
        write_json(run.settings.output_dir / "eval.json", report)
