"""The DINO projection head and the student/teacher network built from backbone + head."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lrsched.recipes.dino.vit import ViT


class DINOHead(nn.Module):
    """MLP ``dim -> hidden -> hidden -> bottleneck`` (GELU), L2 normalisation, then a
    weight-normalised last layer with its norm fixed to 1:

    ``logits = normalize(z) @ (V / ||V||_row)^T`` with ``V`` of shape ``(out_dim, bottleneck)``,
    i.e. ``weight_norm`` with ``g = 1`` frozen (DINO's ``norm_last_layer=True``).
    """

    def __init__(self, dim: int, hidden: int, bottleneck: int, out_dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden),
            nn.GELU(),
            nn.Linear(hidden, hidden),
            nn.GELU(),
            nn.Linear(hidden, bottleneck),
        )
        self.last_layer = nn.Linear(bottleneck, out_dim, bias=False)
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.last_layer.weight, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = F.normalize(self.mlp(x), dim=-1)
        return F.linear(z, F.normalize(self.last_layer.weight, dim=1))


class DINONet(nn.Module):
    """Backbone + head over crops of several resolutions in one forward.

    ``forward([global_crops, local_crops])``: each tensor holds crops of one resolution, which
    pass through the backbone together; the CLS features are concatenated in order and go
    through the head once; both are returned. One forward per step keeps DistributedDataParallel simple.
    """

    def __init__(self, backbone: ViT, head: DINOHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, crops: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(CLS features, head logits)``, rows in the order of ``crops``."""
        features = torch.cat([self.backbone(x) for x in crops if x.shape[0] > 0])
        return features, self.head(features)
