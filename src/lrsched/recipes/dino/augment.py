"""DINO's multi-crop, in two parts: geometry in the DataLoader workers, colour on the device.

``Geometry`` runs per image in a worker process: from the decoded image at its own
resolution it cuts 2 global and ``N`` local random resized crops (DINO's
``RandomResizedCrop``: area fraction and aspect ratio ranges, bicubic, horizontal flip) and
returns them as uint8, channels last. Its random numbers come from ``random.Random(seed)``
with a seed the caller derives from ``(seed, step, rank, sample)``, so the crops of a sample
do not depend on which worker made them.

``Photometric`` runs batched on the training device: brightness/contrast jitter, saturation and
hue jitter and random grayscale (RGB only), Gaussian blur, solarisation, normalisation, with a
``torch.Generator`` the caller seeds from ``(seed, step, rank)``.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

GLOBAL_SCALE = (0.4, 1.0)
"""Area fraction of the image a global crop covers (DINO's default for ViT)."""
LOCAL_SCALE = (0.1, 0.4)
"""Area fraction for local crops (DINO: 0.05-0.4; 0.1 keeps something visible at 28px)."""
RATIO = (3 / 4, 4 / 3)
"""Aspect ratio range of a crop, sampled log-uniformly."""


def crop_box(rng: random.Random, width: int, height: int, scale: tuple[float, float]) -> tuple[int, int, int, int]:
    """A random crop ``(left, top, w, h)`` of a ``width x height`` image (DINO's RandomResizedCrop).

    Up to 10 tries: area ``a = width * height * U(scale)``, aspect ``r = exp(U(log 3/4, log 4/3))``,
    ``w = round(sqrt(a r))``, ``h = round(sqrt(a / r))``; the first that fits is placed uniformly.
    Otherwise the largest centred crop whose aspect is within the range.
    """
    area = width * height
    lo, hi = math.log(RATIO[0]), math.log(RATIO[1])
    for _ in range(10):
        target = area * (scale[0] + (scale[1] - scale[0]) * rng.random())
        aspect = math.exp(lo + (hi - lo) * rng.random())
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            left = min(int(rng.random() * (width - w + 1)), width - w)
            top = min(int(rng.random() * (height - h + 1)), height - h)
            return left, top, w, h
    w, h = width, height
    if width / height < RATIO[0]:
        h = round(width / RATIO[0])
    elif width / height > RATIO[1]:
        w = round(height * RATIO[1])
    return (width - w) // 2, (height - h) // 2, w, h


def _pixels(img: Any, channels: int) -> torch.Tensor:
    """A PIL image as a uint8 tensor ``(H, W, C)`` (shares the array's memory)."""
    import numpy as np

    return torch.from_numpy(np.array(img, dtype=np.uint8).reshape(img.height, img.width, channels))


@dataclass(frozen=True)
class Geometry:
    """The geometric part of DINO's multi-crop, per image, in a worker process."""

    global_size: int
    local_size: int
    local_crops: int
    channels: int
    global_scale: tuple[float, float] = GLOBAL_SCALE
    local_scale: tuple[float, float] = LOCAL_SCALE

    def crop(self, img: Any, rng: random.Random, size: int, scale: tuple[float, float]) -> torch.Tensor:
        """One random resized crop of ``img`` at ``size x size`` (bicubic), flipped with p=0.5."""
        from PIL import Image

        left, top, w, h = crop_box(rng, img.width, img.height, scale)
        out = img.resize((size, size), Image.Resampling.BICUBIC, box=(left, top, left + w, top + h))
        if rng.random() < 0.5:
            out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return _pixels(out, self.channels)

    def __call__(self, img: Any, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Global crops ``(2, G, G, C)`` and local crops ``(N, L, L, C)``, uint8."""
        rng = random.Random(seed)
        g = torch.stack([self.crop(img, rng, self.global_size, self.global_scale) for _ in range(2)])
        local = [self.crop(img, rng, self.local_size, self.local_scale) for _ in range(self.local_crops)]
        size, c = self.local_size, self.channels
        return g, torch.stack(local) if local else torch.empty(0, size, size, c, dtype=torch.uint8)


def center_view(img: Any, size: int, channels: int) -> torch.Tensor:
    """A whole image for evaluation: shorter side resized to ``size`` (bicubic), centre crop, ``(size, size, C)``."""
    from PIL import Image

    scale = size / min(img.width, img.height)
    w, h = max(size, round(img.width * scale)), max(size, round(img.height * scale))
    if (w, h) != (img.width, img.height):
        img = img.resize((w, h), Image.Resampling.BICUBIC)
    left, top = (w - size) // 2, (h - size) // 2
    if (w, h) != (size, size):
        img = img.crop((left, top, left + size, top + size))
    return _pixels(img, channels)


# --- the photometric part, batched on the device ------------------------------------------------


@dataclass(frozen=True)
class Crops:
    """Global crops ``(2B, C, G, G)`` (view 1 of each image, then view 2) and local ``(N*B, C, L, L)``."""

    global_crops: torch.Tensor
    local_crops: torch.Tensor


def _uniform(g: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


LUMA = (0.299, 0.587, 0.114)
"""ITU-R 601 weights of R, G, B in a grayscale value (as PIL and torchvision)."""


def luma(x: torch.Tensor) -> torch.Tensor:
    """The grayscale ``(B, 1, H, W)`` of RGB images ``(B, 3, H, W)``: ``0.299 R + 0.587 G + 0.114 B``."""
    weights = torch.tensor(LUMA, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * weights).sum(dim=1, keepdim=True)


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """RGB images moved away from (``factor > 1``) or towards (``< 1``) their grayscale, per image:
    ``x <- clamp(gray + factor (x - gray), 0, 1)``."""
    gray = luma(x)
    return (gray + factor.to(x).view(-1, 1, 1, 1) * (x - gray)).clamp(0.0, 1.0)


HUE_OFFSETS = (5.0, 3.0, 1.0)
"""Where R, G and B sit on the six-sector colour circle, for ``shift_hue``."""


def shift_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """RGB images in [0, 1] with every pixel's hue turned by ``shift`` (per image, in turns: 1 is a full
    circle), HSV saturation and value kept (``colorsys``'s HSV).

    With ``v = max``, chroma ``d = max - min`` and the hue in sectors ``H = 6 h`` (red 0, green 2,
    blue 4), channel ``n`` (R 5, G 3, B 1) of the turned pixel is ``v - d clamp(min(k, 4 - k), 0, 1)``
    with ``k = (n + H + 6 shift) mod 6``; ``H`` is ``(G - B) / d``, ``2 + (B - R) / d`` or
    ``4 + (R - G) / d`` as R, G or B is the largest.
    """
    v = x.amax(dim=1, keepdim=True)
    d = v - x.amin(dim=1, keepdim=True)
    below = (v - x).div_(torch.where(d > 0, d, torch.ones_like(d)))  # (max - channel) / chroma
    red, green, blue = below.unbind(dim=1)
    top, r, g = v.squeeze(1), x[:, 0], x[:, 1]
    sectors = torch.where(top == r, blue - green, torch.where(top == g, 2.0 + red - blue, 4.0 + green - red))
    offsets = torch.tensor(HUE_OFFSETS, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    k = (offsets + 6.0 * shift.to(x).view(-1, 1, 1, 1)).add(sectors.unsqueeze(1)).remainder_(6.0)
    k = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    return k.mul_(d).neg_().add_(v)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur with a per-image ``sigma`` (pixels; 0 leaves the image as is).

    ``k(d) = exp(-d^2 / (2 sigma^2)) / sum``, radius ``ceil(3 * max sigma)``, reflect padding.
    """
    b, c, hgt, wid = x.shape
    radius = max(1, math.ceil(3 * float(sigma.max())))
    radius = min(radius, (min(hgt, wid) - 1))
    d = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    s = sigma.to(x.device, x.dtype).clamp_min(1e-6)[:, None]
    kernel = torch.exp(-(d[None, :] ** 2) / (2 * s**2))
    kernel = kernel / kernel.sum(dim=1, keepdim=True)
    kernel = kernel.repeat_interleave(c, dim=0)  # (b*c, k)
    y = x.reshape(1, b * c, hgt, wid)
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="reflect"), kernel[:, None, None, :], groups=b * c)
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="reflect"), kernel[:, None, :, None], groups=b * c)
    return y.reshape(b, c, hgt, wid)


def as_float(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 ``(..., H, W, C)`` -> float ``(..., C, H, W)`` in [0, 1]."""
    return pixels.movedim(-1, -3).float().div_(255)


class Photometric:
    """The colour part of DINO's views, on a batch: global view 1 always blurred, view 2 blurred
    with p=0.1 and solarised with p=0.2, local views blurred with p=0.5.

    Colour: with p=0.8 brightness and contrast factors in [0.6, 1.4] (``x <- mean + c (x - mean)``,
    then ``x <- b x``) and, for RGB, a saturation factor in [0.8, 1.2] and a hue shift in [-0.1, 0.1]
    turns (DINO's ``ColorJitter(0.4, 0.4, 0.2, 0.1)``, in this fixed order where torchvision shuffles
    the four); RGB images turn grayscale (``luma``) with p=0.2. Blur sigma is drawn in
    ``[0.1, max(0.5, 2 size / 224)]`` pixels (DINO: [0.1, 2] at 224 px). Then ``(x - mean) / std``.
    """

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        self.mean = torch.tensor(mean).view(1, -1, 1, 1)
        self.std = torch.tensor(std).view(1, -1, 1, 1)

    def view(self, x: torch.Tensor, g: torch.Generator, blur_p: float, solarize_p: float) -> torch.Tensor:
        """One view of every image of ``x`` (float ``(B, C, H, W)`` in [0, 1] on the device)."""
        b = x.shape[0]
        x = self._colour(x, g)
        top = max(0.5, 2.0 * x.shape[-1] / 224)
        blur = (torch.rand(b, generator=g) < blur_p).float() * _uniform(g, b, 0.1, top)
        if bool((blur > 0).any()):
            x = gaussian_blur(x, blur)
        solar = (torch.rand(b, generator=g) < solarize_p).to(x.device).view(b, 1, 1, 1)
        x = torch.where(solar & (x >= 0.5), 1.0 - x, x)
        return self.normalise(x)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.device, x.dtype)) / self.std.to(x.device, x.dtype)

    def _colour(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        b, c = x.shape[:2]
        on = (torch.rand(b, generator=g) < 0.8).float()
        bright = 1 + on * _uniform(g, b, -0.4, 0.4)
        contrast = 1 + on * _uniform(g, b, -0.4, 0.4)
        gray = torch.rand(b, generator=g) < 0.2
        bright, contrast = bright.to(x).view(b, 1, 1, 1), contrast.to(x).view(b, 1, 1, 1)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (((x - mean) * contrast + mean) * bright).clamp(0.0, 1.0)
        if c == 3:  # drawn after the rest, so one-channel images see the same random numbers as before
            saturation = 1 + on * _uniform(g, b, -0.2, 0.2)
            hue = on * _uniform(g, b, -0.1, 0.1)
            x = shift_hue(adjust_saturation(x, saturation), hue)
            x = torch.where(gray.to(x.device).view(b, 1, 1, 1), luma(x).expand_as(x), x)
        return x

    def __call__(self, global_px: torch.Tensor, local_px: torch.Tensor, g: torch.Generator) -> Crops:
        """uint8 crops from ``Geometry`` batched (``(B, 2, G, G, C)``, ``(B, N, L, L, C)``) -> views."""
        x = as_float(global_px)
        views = [self.view(x[:, 0], g, 1.0, 0.0), self.view(x[:, 1], g, 0.1, 0.2)]
        b, n, size, _, c = local_px.shape
        local = as_float(local_px).transpose(0, 1).reshape(n * b, c, size, size)
        local = self.view(local, g, 0.5, 0.0) if n else local
        return Crops(torch.cat(views), local)
