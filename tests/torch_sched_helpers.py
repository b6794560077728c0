"""What the torch_sched tests share: a small model, optimizers with multipliers, a training step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from lrsched.schedules import Schedule

MULTS = (1.0, 0.5, 0.1)  # lr_mult of three param groups
SCHED = Schedule("cosine", base=0.1, final=0.001, warmup=5, total=40)


def make_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))


def make_optimizer(model: nn.Module, base: float, groups: int) -> torch.optim.Optimizer:
    """SGD with ``groups`` param groups, group ``i`` at ``lr = base * MULTS[i]`` with ``lr_mult = MULTS[i]``."""
    params = list(model.parameters())
    if groups == 1:
        return torch.optim.SGD(params, lr=base, momentum=0.9)
    chunks = [params[:2], params[2:3], params[3:]]
    return torch.optim.SGD(
        [{"params": p, "lr": base * m, "lr_mult": m} for p, m in zip(chunks, MULTS)],
        lr=base,
        momentum=0.9,
    )


def train_step(model: nn.Module, opt: torch.optim.Optimizer, sched: Any, t: int) -> None:
    g = torch.Generator().manual_seed(1000 + t)
    x = torch.randn(5, 4, generator=g)
    loss = model(x).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    sched.step()


def lrs(opt: torch.optim.Optimizer) -> list[float]:
    return [group["lr"] for group in opt.param_groups]


def save(path: Path, model: nn.Module, opt: torch.optim.Optimizer, sched: Any) -> None:
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict()}, path)
