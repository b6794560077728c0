"""The DINO networks and their optimizer groups: student and teacher, AdamW groups, the EMA."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from lrsched.recipes.dino.head import DINOHead, DINONet
from lrsched.recipes.dino.vit import Preset, ViT


def build_networks(preset: Preset, channels: int, seed: int) -> tuple[DINONet, DINONet]:
    """Student (backbone + head) and the teacher: a copy that only the EMA updates."""
    torch.manual_seed(seed)
    student = DINONet(
        ViT(preset, channels),
        DINOHead(preset.dim, preset.head_hidden, preset.head_bottleneck, preset.out_dim),
    )
    teacher = copy.deepcopy(student)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return student, teacher


def param_groups(net: DINONet, lr: float, weight_decay: float, layer_decay: float) -> list[dict[str, Any]]:
    """AdamW groups keyed by ``(lr_mult, wd_mult)``.

    ``wd_mult = 0`` for biases, norms (1-D parameters), the CLS token and position embedding;
    ``lr_mult = layer_decay ** (depth + 1 - layer_id)`` for backbone parameters, 1 for the head.
    A group starts at ``lr * lr_mult`` and ``weight_decay * wd_mult``; the schedulers scale them.
    """
    backbone = net.backbone
    top = backbone.depth + 1
    groups: dict[tuple[float, float], dict[str, Any]] = {}
    for name, param in net.named_parameters():
        inner = name.split(".", 1)[1]
        layer = backbone.layer_id(inner) if name.startswith("backbone.") else top
        no_wd = param.ndim <= 1 or name.endswith(".bias") or inner in ("cls_token", "pos_embed")
        key = (layer_decay ** (top - layer), 0.0 if no_wd else 1.0)
        if key not in groups:
            groups[key] = {
                "params": [],
                "name": f"layer{layer}" + ("-no_wd" if no_wd else ""),
                "lr_mult": key[0],
                "wd_mult": key[1],
                "lr": lr * key[0],
                "weight_decay": weight_decay * key[1],
            }
        groups[key]["params"].append(param)
    return list(groups.values())


def reference_group(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The group whose LR and weight decay are the schedules' own values (``lr_mult = wd_mult = 1``)."""
    return next(g for g in optimizer.param_groups if g["lr_mult"] == 1.0 and g["wd_mult"] == 1.0)


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """``teacher <- m * teacher + (1 - m) * student``, parameter by parameter."""
    t_params = [p.detach() for p in teacher.parameters()]
    s_params = [p.detach() for p in student.parameters()]
    torch._foreach_mul_(t_params, momentum)
    torch._foreach_add_(t_params, s_params, alpha=1.0 - momentum)


# --- will a step fit? -----------------------------------------------------------------------------

FLOAT = 4
KEPT_PER_TOKEN = 6
"""Floats per token, width unit and block that backward needs at the least (LN output, Q, K, V, ...)."""


def parameter_count(preset: Preset, channels: int) -> int:
    """Weights of the student: patch embedding, ``depth`` blocks (``(4 + 2 mlp_ratio) dim^2``), the head."""
    d, hidden = preset.dim, int(preset.dim * preset.mlp_ratio)
    tokens = 1 + (preset.global_size // preset.patch) ** 2
    backbone = channels * preset.patch**2 * d + tokens * d + preset.depth * (4 * d * d + 2 * d * hidden)
    head = d * preset.head_hidden + preset.head_hidden**2 + preset.head_hidden * preset.head_bottleneck
    return backbone + head + preset.head_bottleneck * preset.out_dim


def step_bytes_lower_bound(
    preset: Preset, channels: int, batch: int, local_crops: int, bf16: bool = False
) -> dict[str, int]:
    """What one training step holds at the least, by part (bytes); the real need is larger.

    - weights: student, teacher, gradient and AdamW's two moments: 5 copies of the parameters;
    - views: ``batch (2 G^2 + N L^2) C`` floats;
    - activations: ``batch x tokens x dim x depth x KEPT_PER_TOKEN`` floats kept for backward,
      tokens ``= 2 (1 + (G/p)^2) + N (1 + (L/p)^2)`` (2 bytes a float under ``bf16``, else 4);
    - logits: ``batch (2 + N) out_dim`` floats for the student, twice that for softmax and gradient.
    """
    g, loc, p = preset.global_size, preset.local_size, preset.patch
    tokens = 2 * (1 + (g // p) ** 2) + local_crops * (1 + (loc // p) ** 2)
    return {
        "weights": 5 * parameter_count(preset, channels) * FLOAT,
        "views": batch * (2 * g * g + local_crops * loc * loc) * channels * FLOAT,
        "activations": batch * tokens * preset.dim * preset.depth * KEPT_PER_TOKEN * (2 if bf16 else FLOAT),
        "logits": 3 * batch * (2 + local_crops) * preset.out_dim * FLOAT,
    }
