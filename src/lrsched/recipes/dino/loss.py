"""The DINO loss: cross-entropy between a centred, sharpened teacher and the student.

For teacher crop ``q`` (global crops only) and student crop ``v != q`` (all crops):

- teacher: ``P_t = softmax((g_t(x_q) - c) / tau_t)``, ``tau_t`` from the temperature schedule;
- student: ``log P_s = log_softmax(g_s(x_v) / tau_s)``;
- ``loss = mean over pairs (q, v), v != q, of  mean over the batch of  -sum_k P_t[k] log P_s[k]``.

The centre ``c`` is an EMA of the teacher's batch-mean logits (averaged over ranks):
``c <- m_c * c + (1 - m_c) * mean(g_t)``, ``m_c = 0.9`` by default. Centering stops one
prototype from dominating; sharpening (a low ``tau_t``) stops the uniform collapse.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


class DINOLoss(nn.Module):
    """Holds the centre (a buffer, saved with checkpoints) and the student temperature."""

    center: torch.Tensor

    def __init__(self, out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9) -> None:
        super().__init__()
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def forward(
        self, student: torch.Tensor, teacher: torch.Tensor, global_crops: int, teacher_temp: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``student`` ``(n_crops * B, K)``, ``teacher`` ``(global_crops * B, K)`` -> (loss, teacher entropy).

        The entropy ``-sum_k P_t log P_t`` (mean over samples) is a collapse signal: near 0, one
        prototype wins; near ``log K``, the teacher is uniform.
        """
        student_logp = F.log_softmax(student.float() / self.student_temp, dim=-1)
        teacher_p = F.softmax((teacher.float() - self.center) / teacher_temp, dim=-1).detach()
        s_chunks = student_logp.chunk(student.shape[0] // (teacher.shape[0] // global_crops))
        t_chunks = teacher_p.chunk(global_crops)
        total, pairs = student.new_zeros((), dtype=torch.float32), 0
        for q, tp in enumerate(t_chunks):
            for v, slp in enumerate(s_chunks):
                if v != q:
                    total = total + (-(tp * slp).sum(dim=-1)).mean()
                    pairs += 1
        entropy = -(teacher_p * teacher_p.clamp_min(1e-12).log()).sum(dim=-1).mean()
        self.update_center(teacher.detach().float())
        return total / pairs, entropy.detach()

    @torch.no_grad()
    def update_center(self, teacher: torch.Tensor) -> None:
        """``c <- m_c * c + (1 - m_c) * mean over the global batch of the teacher logits``."""
        batch_sum = teacher.sum(dim=0, keepdim=True)
        count = torch.tensor(float(teacher.shape[0]), device=teacher.device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(batch_sum)
            dist.all_reduce(count)
        self.center.mul_(self.center_momentum).add_(batch_sum / count, alpha=1 - self.center_momentum)


def koleo(features: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """KoLeo regulariser (DINOv2): spreads features over the sphere.

    With ``x_i`` the L2-normalised features of a batch and ``d_i = min_{j != i} ||x_i - x_j||``,
    ``koleo = -mean_i log(d_i + eps)``: small when every feature is far from its nearest neighbour.
    """
    x = F.normalize(features.float(), dim=-1)
    with torch.no_grad():
        dots = x @ x.T
        dots.fill_diagonal_(-2.0)
        nearest = dots.argmax(dim=1)
    distance = (x - x[nearest]).norm(dim=-1)
    return -(distance + eps).log().mean()
