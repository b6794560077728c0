"""A plain Vision Transformer (ViT) backbone with ``F.scaled_dot_product_attention``.

Our own implementation (docs/design.md section 10: no timm, no torchvision). Pre-norm blocks:
``x = x + Attn(LN(x))``, ``x = x + MLP(LN(x))``; the output is the final-norm CLS token.
The position embedding is learned for the global crop's patch grid and resized
(bicubic) for other crop sizes, so global and local crops share one network.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class Preset:
    """A model size, the crop sizes it trains on and its DINO head."""

    depth: int
    dim: int
    heads: int
    patch: int
    global_size: int
    local_size: int
    head_hidden: int
    head_bottleneck: int
    out_dim: int
    mlp_ratio: float = 4.0


PRESETS: dict[str, Preset] = {
    # CPU sizes for Fashion-MNIST's 28px images: patch 4 -> a 7x7 grid for global crops.
    "micro": Preset(2, 48, 2, 4, 28, 16, 128, 64, 256),
    "tiny": Preset(4, 96, 3, 4, 28, 16, 512, 128, 2048),
    # The DINO paper's sizes (224px global, 96px local crops, patch 16, 65536 prototypes).
    "vit_tiny": Preset(12, 192, 3, 16, 224, 96, 2048, 256, 65536),
    "vit_small": Preset(12, 384, 6, 16, 224, 96, 2048, 256, 65536),
    "vit_base": Preset(12, 768, 12, 16, 224, 96, 2048, 256, 65536),
}


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``softmax(Q K^T / sqrt(d)) V`` over the last two dimensions: ``F.scaled_dot_product_attention``, except
    under bf16 autocast on a CPU, where its flash-attention backward runs several times slower than fp32
    (a ViT step at 0.56x fp32's speed): there the two products in bf16, the softmax in fp32."""
    if q.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        scores = (q @ k.transpose(-2, -1)).float().mul_(q.shape[-1] ** -0.5)
        return scores.softmax(dim=-1) @ v
    return F.scaled_dot_product_attention(q, k, v)


class Attention(nn.Module):
    """Multi-head self-attention: ``softmax(Q K^T / sqrt(d)) V`` (``attention``), then a projection."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = attention(qkv[0], qkv[1], qkv[2])
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-norm transformer block: attention and a GELU MLP, each with a residual."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """Patch embedding + CLS token + position embedding, ``depth`` blocks, final LayerNorm."""

    def __init__(self, preset: Preset, channels: int) -> None:
        super().__init__()
        if preset.dim % preset.heads:
            raise ValueError(f"dim {preset.dim} is not divisible by heads {preset.heads}")
        self.patch = preset.patch
        self.grid = preset.global_size // preset.patch
        self.dim = preset.dim
        self.depth = preset.depth
        self.patch_embed = nn.Conv2d(channels, preset.dim, kernel_size=preset.patch, stride=preset.patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, preset.dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid**2, preset.dim))
        self.blocks = nn.ModuleList(Block(preset.dim, preset.heads, preset.mlp_ratio) for _ in range(preset.depth))
        self.norm = nn.LayerNorm(preset.dim, eps=1e-6)
        self._init_weights()

    def _init_weights(self) -> None:
        """Truncated normal (std 0.02) for linear weights and embeddings; zero biases; LN (1, 0)."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def position(self, h: int, w: int) -> torch.Tensor:
        """The position embedding for an ``h x w`` patch grid (bicubic resize of the learned grid)."""
        cls, grid = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        if (h, w) == (self.grid, self.grid):
            return self.pos_embed
        grid = grid.reshape(1, self.grid, self.grid, self.dim).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)
        return torch.cat([cls, grid.permute(0, 2, 3, 1).reshape(1, h * w, self.dim)], dim=1)

    def tokens(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> normalised tokens ``(B, 1 + patches, dim)``, the CLS token first."""
        x = self.patch_embed(images)
        h, w = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.position(h, w)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> CLS features ``(B, dim)``."""
        return self.tokens(images)[:, 0]

    def features(self, images: torch.Tensor, kind: str = "cls") -> torch.Tensor:
        """Features for evaluation: ``cls`` ``(B, dim)``, or ``cls+patch``, the CLS token concatenated with
        the mean of the patch tokens ``(B, 2 dim)`` (as DINO's linear evaluation offers)."""
        x = self.tokens(images)
        return x[:, 0] if kind == "cls" else torch.cat([x[:, 0], x[:, 1:].mean(dim=1)], dim=1)

    def layer_id(self, name: str) -> int:
        """0 for embeddings, ``i + 1`` for block ``i``, ``depth + 1`` for the final norm."""
        if name.startswith(("patch_embed", "cls_token", "pos_embed")):
            return 0
        if name.startswith("blocks."):
            return int(name.split(".")[1]) + 1
        return self.depth + 1
