"""Weighted k-NN evaluation of frozen features (DINO's protocol).

For a test feature ``f`` (L2-normalised), take its ``k`` nearest training features by
cosine similarity ``s_i``; class ``c`` gets the vote ``sum_{i in top-k, y_i = c} exp(s_i / T)``,
and the prediction is the class with the largest vote (``k = 20``, ``T = 0.07``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

K = 20
TEMPERATURE = 0.07


@torch.no_grad()
def knn_top1(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    k: int = K,
    temperature: float = TEMPERATURE,
    chunk: int = 1024,
) -> float:
    """Top-1 accuracy of the weighted k-NN classifier (features need not be normalised)."""
    train = F.normalize(train_features.float(), dim=1)
    test = F.normalize(test_features.float(), dim=1)
    classes = int(max(train_labels.max(), test_labels.max())) + 1
    k = min(k, train.shape[0])
    correct = 0
    for start in range(0, test.shape[0], chunk):
        sim = test[start : start + chunk] @ train.T
        top, idx = sim.topk(k, dim=1)
        votes = torch.zeros(sim.shape[0], classes, device=sim.device)
        votes.scatter_add_(1, train_labels.to(sim.device)[idx], (top / temperature).exp())
        pred = votes.argmax(dim=1).cpu()
        correct += int((pred == test_labels[start : start + chunk].cpu()).sum())
    return correct / test.shape[0]


def subset(n: int, limit: int, seed: int = 0) -> torch.Tensor:
    """``limit`` indices of ``n`` (all when ``limit`` is 0 or >= n), one fixed random draw."""
    if limit <= 0 or limit >= n:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:limit].sort().values
