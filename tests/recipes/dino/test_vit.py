"""The ViT's attention under CPU bf16 autocast: the explicit products in place of SDPA's slow bf16 backward."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lrsched.recipes.dino.vit import PRESETS, ViT, attention


def _qkv(seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(4, 2, 17, 24, generator=g, requires_grad=True) for _ in range(3)]


def test_attention_is_sdpa_outside_cpu_autocast() -> None:
    q, k, v = _qkv(0)
    assert torch.equal(attention(q, k, v), F.scaled_dot_product_attention(q, k, v))


def test_attention_under_cpu_bf16_autocast_matches_fp32_values_and_gradients() -> None:
    q, k, v = _qkv(1)
    expected = F.scaled_dot_product_attention(q, k, v)
    (expected * torch.arange(24.0)).sum().backward()
    grads = [t.grad.clone() for t in (q, k, v) if t.grad is not None]
    for t in (q, k, v):
        t.grad = None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attention(q, k, v)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), expected, atol=3e-2, rtol=3e-2)
    (out.float() * torch.arange(24.0)).sum().backward()
    for t, grad in zip((q, k, v), grads, strict=True):
        assert t.grad is not None
        assert float((t.grad - grad).abs().max()) <= 0.02 * float(grad.abs().max())  # bf16: about 0.5% here


def test_vit_under_cpu_bf16_autocast_stays_close_to_fp32() -> None:
    torch.manual_seed(0)
    vit = ViT(PRESETS["micro"], channels=1)
    images = torch.randn(3, 1, 28, 28)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = vit(images).float()
    torch.testing.assert_close(low, vit(images), atol=0.1, rtol=0.05)
