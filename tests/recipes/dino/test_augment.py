"""Multi-crop: the geometric part (per image, in workers) and the photometric part (batched)."""

from __future__ import annotations

import colorsys
import math
import random

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from lrsched.recipes.dino import augment
from lrsched.recipes.dino.augment import (
    RATIO,
    Geometry,
    Photometric,
    adjust_saturation,
    center_view,
    crop_box,
    gaussian_blur,
    luma,
    shift_hue,
)


@given(
    width=st.integers(1, 2000),
    height=st.integers(1, 2000),
    lo=st.floats(0.01, 1.0),
    seed=st.integers(0, 2**32),
)
def test_crop_box_stays_inside_and_keeps_area_and_aspect(width: int, height: int, lo: float, seed: int) -> None:
    left, top, w, h = crop_box(random.Random(seed), width, height, (lo, 1.0))
    assert left >= 0 and top >= 0 and w > 0 and h > 0 and left + w <= width and top + h <= height
    if width >= 100 and height >= 100 and 0.8 <= width / height <= 1.25:
        # tries fit: the area fraction is within the range (up to rounding) and the aspect within 3/4..4/3
        assert w * h >= lo * width * height * 0.95
        assert RATIO[0] * 0.95 <= w / h <= RATIO[1] * 1.05


def test_crop_box_falls_back_to_the_largest_centred_crop_for_extreme_shapes() -> None:
    assert crop_box(random.Random(0), 1000, 10, (0.9, 1.0)) == (493, 0, 13, 10)
    assert crop_box(random.Random(0), 10, 1000, (0.9, 1.0)) == (0, 493, 10, 13)


def test_geometry_is_a_pure_function_of_the_seed() -> None:
    img = Image.fromarray(torch.randint(0, 256, (350, 400, 3), dtype=torch.uint8).numpy())
    geo = Geometry(64, 32, 3, channels=3)
    g1, l1 = geo(img, 7)
    g2, l2 = geo(img, 7)
    g3, _ = geo(img, 8)
    assert g1.shape == (2, 64, 64, 3) and l1.shape == (3, 32, 32, 3) and g1.dtype == torch.uint8
    assert torch.equal(g1, g2) and torch.equal(l1, l2) and not torch.equal(g1, g3)
    assert Geometry(64, 32, 0, channels=3)(img, 7)[1].shape == (0, 32, 32, 3)


def test_a_full_crop_is_the_bicubic_resize_or_its_mirror() -> None:
    img = Image.fromarray(torch.randint(0, 256, (40, 40), dtype=torch.uint8).numpy())
    geo = Geometry(20, 10, 0, channels=1, global_scale=(1.0, 1.0))
    crops, _ = geo(img, 0)
    full = torch.from_numpy(__import__("numpy").array(img.resize((20, 20), Image.Resampling.BICUBIC)))
    for view in crops[..., 0]:
        assert torch.equal(view, full) or torch.equal(view, full.flip(1))


def test_center_view_resizes_the_shorter_side_and_crops_the_centre() -> None:
    img = Image.fromarray(torch.arange(60 * 30, dtype=torch.int32).remainder(256).to(torch.uint8).view(30, 60).numpy())
    view = center_view(img, 15, 1)
    assert view.shape == (15, 15, 1)
    same = center_view(img.crop((15, 0, 45, 30)), 30, 1)
    assert torch.equal(same[..., 0], torch.from_numpy(__import__("numpy").array(img.crop((15, 0, 45, 30)))))


def test_photometric_views_keep_order_and_are_reproducible() -> None:
    g_px = torch.randint(0, 256, (5, 2, 28, 28, 3), dtype=torch.uint8)
    l_px = torch.randint(0, 256, (5, 4, 12, 12, 3), dtype=torch.uint8)
    photo = Photometric((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    a = photo(g_px, l_px, torch.Generator().manual_seed(1))
    b = photo(g_px, l_px, torch.Generator().manual_seed(1))
    assert a.global_crops.shape == (10, 3, 28, 28) and a.local_crops.shape == (20, 3, 12, 12)
    assert torch.equal(a.global_crops, b.global_crops) and torch.equal(a.local_crops, b.local_crops)
    # local crop j of image i lands at row j * B + i: the photometric change is per image, so
    # its correlation with the source pixels stays high
    src = l_px[2, 3].permute(2, 0, 1).float().flatten()
    out = a.local_crops[3 * 5 + 2].flatten()
    assert torch.corrcoef(torch.stack([src, out]))[0, 1] > 0.5


def test_gaussian_blur_preserves_mean_and_smooths() -> None:
    x = torch.rand(2, 1, 16, 16)
    y = gaussian_blur(x, torch.tensor([1.0, 1e-3]))
    assert y[0].var() < x[0].var()
    torch.testing.assert_close(y[1], x[1], atol=1e-5, rtol=0)
    assert y[0].mean() == pytest.approx(float(x[0].mean()), abs=0.02)
    assert math.isfinite(float(y.sum()))


def _corner_pixels() -> torch.Tensor:
    """Random RGB pixels plus the edge cases of HSV: black, white, grays, pure and mixed primaries."""
    x = torch.rand(4, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    edges = [(0, 0, 0), (1, 1, 1), (0.5, 0.5, 0.5), (1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (0, 1, 1), (1, 0, 1)]
    for k, rgb in enumerate(edges):
        x[k % 4, :, 5, k % 6] = torch.tensor(rgb)
    return x


@pytest.mark.parametrize("turns", [(0.0, 0.1, -0.1, 0.5), (0.05, -0.05, 1.0, -0.999), (0.0, 0.1, -0.1, 1 / 6)])
def test_shift_hue_matches_colorsys_on_every_pixel(turns: tuple[float, ...]) -> None:
    """Oracle: Python's ``colorsys`` round trip, RGB -> HSV, hue turned, -> RGB, pixel by pixel."""
    x = _corner_pixels()
    y = shift_hue(x, torch.tensor(turns))
    for k, i, j in ((k, i, j) for k in range(4) for i in range(6) for j in range(6)):
        h, s, v = colorsys.rgb_to_hsv(*x[k, :, i, j].double().tolist())
        expected = colorsys.hsv_to_rgb((h + turns[k]) % 1.0, s, v)
        assert y[k, :, i, j].tolist() == pytest.approx(expected, abs=2e-6)


@given(shift=st.floats(-1.0, 1.0), seed=st.integers(0, 2**16))
def test_shift_hue_keeps_value_and_grays(shift: float, seed: int) -> None:
    """Invariants: the max channel (HSV value) is kept, gray pixels stay as they are, output in [0, 1]."""
    x = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(seed))
    x[1] = x[1, :1].expand(3, 4, 4)  # image 1 is gray
    y = shift_hue(x, torch.full((2,), shift))
    torch.testing.assert_close(y.max(dim=1).values, x.max(dim=1).values, atol=1e-6, rtol=0)
    torch.testing.assert_close(y[1], x[1], atol=1e-6, rtol=0)
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0


def test_adjust_saturation_blends_with_the_luma_gray() -> None:
    x = _corner_pixels()
    gray = luma(x)
    primaries = torch.stack([gray[3, 0, 5, 3], gray[0, 0, 5, 4], gray[1, 0, 5, 5]])  # red, green, blue pixels
    torch.testing.assert_close(primaries, torch.tensor([0.299, 0.587, 0.114]))
    torch.testing.assert_close(adjust_saturation(x, torch.ones(4)), x)
    torch.testing.assert_close(adjust_saturation(x, torch.zeros(4)), gray.expand_as(x))
    half = adjust_saturation(x, torch.full((4,), 0.5))  # a convex blend: no clamping, the gray is kept
    torch.testing.assert_close(luma(half), gray, atol=1e-6, rtol=0)
    torch.testing.assert_close(half, (x + gray) / 2)


def test_rgb_views_get_hue_jitter() -> None:
    """Pure red crops come out in several hues (DINO's ColorJitter hue 0.1: up to orange and to pink)."""
    red = torch.zeros(64, 2, 8, 8, 3, dtype=torch.uint8)
    red[..., 0] = 200
    photo = Photometric((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    views = photo(red, torch.zeros(64, 0, 4, 4, 3, dtype=torch.uint8), torch.Generator().manual_seed(0))
    first = views.global_crops[:64, :, 0, 0]  # view 1: blurred, never solarised; one pixel per image
    green_over_blue = first[:, 1] - first[:, 2]  # 0 without hue: the other jitters move G and B alike
    assert float(green_over_blue.max()) > 0.05  # turned towards orange
    assert float(green_over_blue.min()) < -0.05  # and towards pink
    assert int((green_over_blue.abs() < 1e-6).sum()) >= 5  # grayscale (p=0.2) or no jitter (p=0.2)


def test_blur_tap_by_tap_matches_the_grouped_convolution() -> None:
    """RGB on a CPU sums tap by tap; one channel at a time goes through ``conv2d``: the same blur."""
    x = torch.rand(3, 3, 20, 17, generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor([0.0, 0.7, 2.0])
    by_taps = gaussian_blur(x, sigma)
    by_conv = gaussian_blur(x.reshape(9, 1, 20, 17), sigma.repeat_interleave(3)).reshape(3, 3, 20, 17)
    torch.testing.assert_close(by_taps, by_conv, atol=1e-6, rtol=0)
    assert torch.equal(by_taps[0], x[0])  # sigma 0: the image as it is


def _whole_batch_one_channel(px: torch.Tensor, g: torch.Generator, blur_p: float, solarize_p: float) -> torch.Tensor:
    """A one-channel view as earlier versions made it: every step on the whole batch at once."""
    x = px.movedim(-1, -3).float().div_(255)
    b, size = x.shape[0], x.shape[-1]
    on = (torch.rand(b, generator=g) < 0.8).float()
    bright = (1 + on * (-0.4 + 0.8 * torch.rand(b, generator=g))).view(b, 1, 1, 1)
    contrast = (1 + on * (-0.4 + 0.8 * torch.rand(b, generator=g))).view(b, 1, 1, 1)
    torch.rand(b, generator=g)  # grayscale: RGB only
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (((x - mean) * contrast + mean) * bright).clamp(0.0, 1.0)
    top = max(0.5, 2.0 * size / 224)
    sigma = (torch.rand(b, generator=g) < blur_p).float() * (0.1 + (top - 0.1) * torch.rand(b, generator=g))
    x = gaussian_blur(x, sigma) if bool((sigma > 0).any()) else x
    x = torch.where((torch.rand(b, generator=g) < solarize_p).view(b, 1, 1, 1) & (x >= 0.5), 1.0 - x, x)
    return (x - 0.5) / 0.25


@pytest.mark.parametrize("chunk_pixels", [1, 3 * 28 * 28, 1 << 17])
def test_one_channel_views_are_bitwise_the_whole_batch_computation(
    chunk_pixels: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """However the CPU groups the images, one-channel views (Fashion-MNIST runs) stay those of earlier versions."""
    monkeypatch.setattr(augment, "CPU_CHUNK_PIXELS", chunk_pixels)
    g_px = torch.randint(0, 256, (7, 2, 28, 28, 1), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    l_px = torch.randint(0, 256, (7, 3, 16, 16, 1), dtype=torch.uint8, generator=torch.Generator().manual_seed(4))
    for seed in range(4):
        views = Photometric((0.5,), (0.25,))(g_px, l_px, torch.Generator().manual_seed(seed))
        g = torch.Generator().manual_seed(seed)
        ref = [_whole_batch_one_channel(g_px[:, 0], g, 1.0, 0.0), _whole_batch_one_channel(g_px[:, 1], g, 0.1, 0.2)]
        local = _whole_batch_one_channel(l_px.transpose(0, 1).reshape(21, 16, 16, 1), g, 0.5, 0.0)
        assert torch.equal(views.global_crops, torch.cat(ref)) and torch.equal(views.local_crops, local)


def test_rgb_views_do_not_depend_on_how_the_cpu_groups_the_images(monkeypatch: pytest.MonkeyPatch) -> None:
    g_px = torch.randint(0, 256, (6, 2, 40, 40, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))
    l_px = torch.randint(0, 256, (6, 4, 16, 16, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(6))
    photo, views = Photometric((0.5, 0.4, 0.3), (0.2, 0.25, 0.3)), []
    for chunk_pixels in (1, 2 * 40 * 40, 1 << 20):
        monkeypatch.setattr(augment, "CPU_CHUNK_PIXELS", chunk_pixels)
        views.append(photo(g_px, l_px, torch.Generator().manual_seed(0)))
    for other in views[1:]:
        assert torch.equal(other.global_crops, views[0].global_crops)
        assert torch.equal(other.local_crops, views[0].local_crops)


def test_views_the_accelerator_way_match_the_cpu_way(monkeypatch: pytest.MonkeyPatch) -> None:
    """Off a CPU: one group of images, blur by ``conv2d`` over all of a view when any is blurred."""
    g_px = torch.randint(0, 256, (5, 2, 32, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(7))
    l_px = torch.randint(0, 256, (5, 4, 16, 16, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(8))
    photo = Photometric((0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    cpu = photo(g_px, l_px, torch.Generator().manual_seed(1))
    monkeypatch.setattr(augment, "_blurs_by_taps", lambda x: False)
    monkeypatch.setattr(augment, "_chunks", lambda b, pixels, device: [(0, b)])
    other = photo(g_px, l_px, torch.Generator().manual_seed(1))
    torch.testing.assert_close(other.global_crops, cpu.global_crops, atol=1e-5, rtol=0)
    torch.testing.assert_close(other.local_crops, cpu.local_crops, atol=1e-5, rtol=0)
