"""Multi-crop augmentation as batched tensor ops on the training device (no torchvision).

For a batch of ``B`` uint8 images this makes 2 global crops and ``N`` local crops per image
(DINO): random resized crop + horizontal flip through one affine grid per crop
(``F.affine_grid`` + ``F.grid_sample``), brightness/contrast jitter, random grayscale (RGB
only), Gaussian blur and solarisation, then normalisation. All random parameters come from
a CPU ``torch.Generator`` seeded by the caller (from ``(seed, step, rank)``), so the crops
of a step are reproducible on any device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

GLOBAL_SCALE = (0.4, 1.0)
"""Area fraction of the image a global crop covers (DINO's default for ViT)."""
LOCAL_SCALE = (0.1, 0.4)
"""Area fraction for local crops (DINO: 0.05-0.4; 0.1 keeps something visible at 28px)."""
RATIO = (3 / 4, 4 / 3)
"""Aspect ratio range of a crop, sampled log-uniformly."""


@dataclass(frozen=True)
class CropSpec:
    """One view type: output size, area range and the probabilities of blur and solarisation."""

    size: int
    scale: tuple[float, float]
    blur_p: float
    solarize_p: float


@dataclass(frozen=True)
class Crops:
    """Global crops ``(2B, C, G, G)`` (view 1 of each image, then view 2) and local ``(N*B, C, L, L)``."""

    global_crops: torch.Tensor
    local_crops: torch.Tensor


def _uniform(g: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


def resized_crop_grid(g: torch.Generator, n: int, spec: CropSpec) -> torch.Tensor:
    """Affine matrices ``(n, 2, 3)`` mapping the output grid to a random crop, flipped with p=0.5.

    Area fraction ``s ~ U(scale)``, aspect ``r = exp(U(log 3/4, log 4/3))``; the crop spans
    ``w = sqrt(s r)`` and ``h = sqrt(s / r)`` of the image (clamped to 1), centred at
    ``(cx, cy) ~ U(-(1 - w), 1 - w) x U(-(1 - h), 1 - h)`` in [-1, 1] coordinates:
    ``theta = [[flip * w, 0, cx], [0, h, cy]]``.
    """
    s = _uniform(g, n, *spec.scale)
    r = torch.exp(_uniform(g, n, math.log(RATIO[0]), math.log(RATIO[1])))
    w, h = (s * r).sqrt().clamp(max=1.0), (s / r).sqrt().clamp(max=1.0)
    cx, cy = (2 * torch.rand(n, generator=g) - 1) * (1 - w), (2 * torch.rand(n, generator=g) - 1) * (1 - h)
    flip = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = flip * w, cx
    theta[:, 1, 1], theta[:, 1, 2] = h, cy
    return theta


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


class MultiCrop:
    """Makes DINO's views of a batch: ``2`` global crops and ``local_crops`` local crops.

    Global view 1 is always blurred, view 2 blurred with p=0.1 and solarised with p=0.2,
    local views blurred with p=0.5 (DINO's recipe). Colour: with p=0.8 brightness and
    contrast factors in [0.6, 1.4] (``x <- mean + c (x - mean)``, then ``x <- b x``); RGB
    images turn grayscale with p=0.2.
    """

    def __init__(
        self,
        global_size: int,
        local_size: int,
        local_crops: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        global_scale: tuple[float, float] = GLOBAL_SCALE,
        local_scale: tuple[float, float] = LOCAL_SCALE,
    ) -> None:
        self.views = [
            CropSpec(global_size, global_scale, 1.0, 0.0),
            CropSpec(global_size, global_scale, 0.1, 0.2),
            *[CropSpec(local_size, local_scale, 0.5, 0.0)] * local_crops,
        ]
        self.mean = torch.tensor(mean).view(1, -1, 1, 1)
        self.std = torch.tensor(std).view(1, -1, 1, 1)

    def view(self, images: torch.Tensor, spec: CropSpec, g: torch.Generator) -> torch.Tensor:
        """One augmented view of every image in ``images`` (float in [0, 1], on the device)."""
        b, c = images.shape[:2]
        theta = resized_crop_grid(g, b, spec).to(images.device, images.dtype)
        grid = F.affine_grid(theta, [b, c, spec.size, spec.size], align_corners=False)
        x = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        x = self._colour(x, g)
        # Blur radius scales with the crop: sigma in [0.1, 2] px at 224px (DINO), at least 0.5 px at most.
        top = max(0.5, 2.0 * spec.size / 224)
        blur = (torch.rand(b, generator=g) < spec.blur_p).float() * _uniform(g, b, 0.1, top)
        if bool((blur > 0).any()):
            x = gaussian_blur(x, blur)
        solar = (torch.rand(b, generator=g) < spec.solarize_p).to(x.device).view(b, 1, 1, 1)
        x = torch.where(solar & (x >= 0.5), 1.0 - x, x)
        return (x - self.mean.to(x.device, x.dtype)) / self.std.to(x.device, x.dtype)

    def _colour(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        b, c = x.shape[:2]
        on = (torch.rand(b, generator=g) < 0.8).float()
        bright = 1 + on * _uniform(g, b, -0.4, 0.4)
        contrast = 1 + on * _uniform(g, b, -0.4, 0.4)
        gray = torch.rand(b, generator=g) < 0.2
        bright, contrast = bright.to(x).view(b, 1, 1, 1), contrast.to(x).view(b, 1, 1, 1)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = ((x - mean) * contrast + mean) * bright
        if c == 3:
            x = torch.where(gray.to(x.device).view(b, 1, 1, 1), x.mean(dim=1, keepdim=True).expand_as(x), x)
        return x.clamp(0.0, 1.0)

    def __call__(self, images: torch.Tensor, g: torch.Generator) -> Crops:
        """``images`` uint8 ``(B, C, H, W)`` on the device -> global and local crops."""
        x = images.float().div_(255)
        views = [self.view(x, spec, g) for spec in self.views]
        local = torch.cat(views[2:]) if len(views) > 2 else x.new_zeros(0, x.shape[1], 1, 1)
        return Crops(torch.cat(views[:2]), local)


def eval_view(images: torch.Tensor, size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """Whole images for evaluation: resized to ``size`` (bilinear) and normalised."""
    x = images.float().div_(255)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    m = torch.tensor(mean, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s
