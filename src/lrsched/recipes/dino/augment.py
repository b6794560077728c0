"""DINO's multi-crop, in two parts: geometry in the DataLoader workers, colour on the device.

``Geometry`` runs per image in a worker process: from the decoded image at its own
resolution it cuts 2 global and ``N`` local random resized crops (DINO's
``RandomResizedCrop``: area fraction and aspect ratio ranges, bicubic, horizontal flip) and
returns them as uint8, channels last. Its random numbers come from ``random.Random(seed)``
with a seed the caller derives from ``(seed, step, rank, sample)``, so the crops of a sample
do not depend on which worker made them.

``Photometric`` runs batched, on the training device or, on a CPU, in the workers: brightness/contrast
jitter, saturation and hue jitter and random grayscale (RGB only), Gaussian blur, solarisation,
normalisation, with a ``torch.Generator`` the caller seeds from ``(seed, step, rank)``.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Callable
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
    """A whole image for evaluation: shorter side resized to ``size`` (bicubic), centre crop, ``(size, size, C)``.

    An image at most 16 times longer than wide is resized whole, then cropped. A longer one has
    only its centre square resampled (``resize`` with a box), so memory stays about ``size x size``
    at any aspect ratio; Pillow may then run its two passes in the other order, which moves some
    pixels by a few levels against resizing the whole.
    """
    from PIL import Image

    scale = size / min(img.width, img.height)
    w, h = max(size, round(img.width * scale)), max(size, round(img.height * scale))
    left, top = (w - size) // 2, (h - size) // 2
    if w * h > 16 * size * size:
        sx, sy = img.width / w, img.height / h
        box = (left * sx, top * sy, (left + size) * sx, (top + size) * sy)
        return _pixels(img.resize((size, size), Image.Resampling.BICUBIC, box=box), channels)
    if (w, h) != (img.width, img.height):
        img = img.resize((w, h), Image.Resampling.BICUBIC)
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
    r, g, b = x.split(1, dim=1)
    return (r * LUMA[0]).add_(g, alpha=LUMA[1]).add_(b, alpha=LUMA[2])


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """RGB images moved away from (``factor > 1``) or towards (``< 1``) their grayscale, per image:
    ``x <- clamp(gray + factor (x - gray), 0, 1)``."""
    return _saturate_(x.clone(), factor)


def _saturate_(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``adjust_saturation`` in place."""
    gray = luma(x)
    return x.sub_(gray).mul_(factor.to(x).view(-1, 1, 1, 1)).add_(gray).clamp_(0.0, 1.0)


HUE_OFFSETS = (3.0, 1.0, -1.0)
"""Where R, G and B sit on the six-sector colour circle, relative to the hue, for ``shift_hue``."""


def _sectors(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per pixel of RGB images ``(B, 3, H, W)``: the max ``v``, the chroma ``d = max - min`` and
    ``d H``, with ``H`` the hue in sectors (red 0, green 2, blue 4) as ``colorsys``: ``G - B``,
    ``2 d + B - R`` or ``4 d + R - G`` as R, G or B is the largest (first of equals)."""
    r, g, b = x.unbind(dim=1)
    v, low = torch.maximum(torch.maximum(r, g), b), torch.minimum(torch.minimum(r, g), b)
    d = v - low
    # sign(v - c) is 0 where channel c is the largest, else 1; lerp by 0 or 1 is exact
    later = torch.lerp(torch.add(b - r, d, alpha=2.0), torch.add(r - g, d, alpha=4.0), torch.sign(v - g))
    return v, d, torch.lerp(g - b, later, torch.sign(v - r))


def shift_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """RGB images in [0, 1] with every pixel's hue turned by ``shift`` (per image, in turns: 1 is a full
    circle), HSV saturation and value kept (``colorsys``'s HSV).

    With ``v = max``, chroma ``d`` and ``u = H + 6 shift + o`` (``H`` from ``_sectors``, ``o`` 3, 1, -1 for
    R, G, B), channel ``c`` of the turned pixel is ``(v - d) + d clamp(D(u) - 1, 0, 1)``, ``D(u)`` the
    distance from ``u`` to the nearest multiple of 6, folded with ``abs`` (``|3 - |u - 3||`` while ``u``
    stays within [-4, 10], one more fold for larger turns).
    """
    v, d, dh = _sectors(x)
    folds = 1 if shift.numel() == 0 or float(shift.abs().max()) <= 1 / 6 else 2
    turns = shift.to(x).view(-1, 1, 1)
    if folds == 2:
        turns = turns.remainder(1.0)  # u within [-2, 14)
    h = torch.addcdiv(6.0 * turns, dh, d.clamp_min(torch.finfo(x.dtype).tiny)).unsqueeze(1)
    offsets = torch.tensor(HUE_OFFSETS, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    u = h.add(offsets - 3.0 * folds)
    for _ in range(folds):
        u.abs_().sub_(3.0)
    u.abs_().sub_(1.0).clamp_(0.0, 1.0)
    return torch.addcmul((v - d).unsqueeze(1), d.unsqueeze(1), u)


def gaussian_kernel(sigma: torch.Tensor, radius: int, dtype: torch.dtype) -> torch.Tensor:
    """Per image, ``k(j) = exp(-j^2 / (2 sigma^2)) / sum`` for ``j = -radius..radius`` (``(B, 2 radius + 1)``)."""
    d = torch.arange(-radius, radius + 1, device=sigma.device, dtype=dtype)
    s = sigma.to(dtype).clamp_min(1e-6)[:, None]
    kernel = torch.exp(-(d[None, :] ** 2) / (2 * s**2))
    return kernel / kernel.sum(dim=1, keepdim=True)


def blur_radius(sigma: torch.Tensor, size: int) -> int:
    """``ceil(3 max sigma)``, at least 1, below ``size`` (reflect padding needs it)."""
    return min(max(1, math.ceil(3 * float(sigma.max()))), size - 1)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, radius: int | None = None) -> torch.Tensor:
    """Separable Gaussian blur with a per-image ``sigma`` (pixels; 0 leaves the image as is).

    ``y = sum_j k(j) x[. + j]`` along rows, then along columns, with ``gaussian_kernel`` of ``radius``
    (default ``blur_radius``), reflect padding.
    """
    radius = blur_radius(sigma, min(x.shape[-2:])) if radius is None else radius
    return blur_with(x, gaussian_kernel(sigma.to(x.device), radius, x.dtype), radius)


def blur_with(x: torch.Tensor, kernel: torch.Tensor, radius: int) -> torch.Tensor:
    """``gaussian_blur`` of ``x`` with its ``kernel`` ``(B, 2 radius + 1)``: one grouped ``conv2d`` per axis,
    except for several channels on a CPU, where oneDNN's grouped convolution is slow and erratic: there
    the sum runs tap by tap."""
    if _blurs_by_taps(x):
        return _blur_taps(_blur_taps(x, kernel, radius, 3), kernel, radius, 2)
    b, c, hgt, wid = x.shape
    kernel = kernel.repeat_interleave(c, dim=0)  # (b*c, k)
    y = x.reshape(1, b * c, hgt, wid)
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="reflect"), kernel[:, None, None, :], groups=b * c)
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="reflect"), kernel[:, None, :, None], groups=b * c)
    return y.reshape(b, c, hgt, wid)


def _blurs_by_taps(x: torch.Tensor) -> bool:
    """Whether ``gaussian_blur`` sums tap by tap (several channels on a CPU) rather than by ``conv2d``."""
    return x.shape[1] > 1 and x.device.type == "cpu"


def _blur_taps(x: torch.Tensor, kernel: torch.Tensor, radius: int, dim: int) -> torch.Tensor:
    """One axis (``dim`` 2 or 3) of the blur: ``k(0) x + sum_{j>0} k(j) (x[. - j] + x[. + j])``."""
    pad = (radius, radius, 0, 0) if dim == 3 else (0, 0, radius, radius)
    padded, size = F.pad(x, pad, mode="reflect"), x.shape[dim]
    k = kernel.view(x.shape[0], 1, 1, 1, -1)
    y = padded.narrow(dim, radius, size) * k[..., radius]
    pair = torch.empty_like(y)
    for j in range(1, radius + 1):
        torch.add(padded.narrow(dim, radius - j, size), padded.narrow(dim, radius + j, size), out=pair)
        y.addcmul_(pair, k[..., radius + j])
    return y


def as_float(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 ``(..., H, W, C)`` -> float ``(..., C, H, W)`` in [0, 1]."""
    return pixels.movedim(-1, -3).float().div_(255)


@dataclass(frozen=True)
class Draws:
    """The random numbers of one view of a batch (CPU tensors, one entry per image)."""

    bright: torch.Tensor
    contrast: torch.Tensor
    gray: torch.Tensor
    saturation: torch.Tensor | None
    hue: torch.Tensor | None
    sigma: torch.Tensor
    solar: torch.Tensor

    @staticmethod
    def draw(g: torch.Generator, b: int, rgb: bool, size: int, blur_p: float, solarize_p: float) -> Draws:
        """In the order of earlier versions (one-channel images draw no saturation or hue)."""
        on = (torch.rand(b, generator=g) < 0.8).float()
        bright = 1 + on * _uniform(g, b, -0.4, 0.4)
        contrast = 1 + on * _uniform(g, b, -0.4, 0.4)
        gray = torch.rand(b, generator=g) < 0.2
        saturation = 1 + on * _uniform(g, b, -0.2, 0.2) if rgb else None
        hue = on * _uniform(g, b, -0.1, 0.1) if rgb else None
        top = max(0.5, 2.0 * size / 224)
        sigma = (torch.rand(b, generator=g) < blur_p).float() * _uniform(g, b, 0.1, top)
        return Draws(bright, contrast, gray, saturation, hue, sigma, torch.rand(b, generator=g) < solarize_p)

    def part(self, lo: int, hi: int) -> Draws:
        """Images ``lo:hi``."""
        cut = [None if t is None else t[lo:hi] for t in (self.saturation, self.hue)]
        b, c, g, sigma, solar = (t[lo:hi] for t in (self.bright, self.contrast, self.gray, self.sigma, self.solar))
        return Draws(b, c, g, cut[0], cut[1], sigma, solar)


CPU_CHUNK_PIXELS = 1 << 17
"""On a CPU, images go through the colour work in groups of about this many pixels, which stay in cache."""


def _chunks(b: int, pixels: int, device: torch.device) -> list[tuple[int, int]]:
    """``(lo, hi)`` of the groups of images the colour work takes at once: on a CPU ``b // step`` groups of
    ``step = max(2, CPU_CHUNK_PIXELS // pixels)`` images or a few more (not 1: a grouped ``conv2d`` over
    one image adds in another order than over several), elsewhere one group."""
    n = max(1, b // max(2, CPU_CHUNK_PIXELS // pixels)) if device.type == "cpu" else 1
    return [(b * i // n, b * (i + 1) // n) for i in range(n)]


def _subset(x: torch.Tensor, mask: torch.Tensor, op: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    """``x[i] <- op(x[i], i)`` for the images ``i`` where ``mask`` (CPU) is set, in place."""
    idx = mask.nonzero().flatten()
    if len(idx) == len(mask):
        x.copy_(op(x, idx))
    elif len(idx):
        dev = idx.to(x.device)
        x[dev] = op(x[dev], idx)


def _blur_images(x: torch.Tensor, idx: torch.Tensor, kernel: torch.Tensor, radius: int) -> torch.Tensor:
    """``blur_with`` of images ``x`` and kernels ``kernel[idx]``."""
    return blur_with(x, kernel[idx].to(x.device, x.dtype), radius)


class Photometric:
    """The colour part of DINO's views, on a batch: global view 1 always blurred, view 2 blurred
    with p=0.1 and solarised with p=0.2, local views blurred with p=0.5.

    Colour: with p=0.8 brightness and contrast factors in [0.6, 1.4] (``x <- mean + c (x - mean)``,
    then ``x <- b x``) and, for RGB, a saturation factor in [0.8, 1.2] and a hue shift in [-0.1, 0.1]
    turns (DINO's ``ColorJitter(0.4, 0.4, 0.2, 0.1)``, in this fixed order where torchvision shuffles
    the four); RGB images turn grayscale (``luma``) with p=0.2. Blur sigma is drawn in
    ``[0.1, max(0.5, 2 size / 224)]`` pixels (DINO: [0.1, 2] at 224 px), radius ``blur_radius`` of the
    view's largest sigma. Solarised: ``x <- min(x, 1 - x)``. Then ``(x - mean) / std``.

    The random numbers are drawn on the CPU, all of a view before its pixels; the pixels are worked
    on where they are, on a CPU a few images at a time (``CPU_CHUNK_PIXELS``), elsewhere all at once.
    """

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        self.mean = torch.tensor(mean).view(1, -1, 1, 1)
        self.std = torch.tensor(std).view(1, -1, 1, 1)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.device, x.dtype)) / self.std.to(x.device, x.dtype)

    def __call__(self, global_px: torch.Tensor, local_px: torch.Tensor, g: torch.Generator) -> Crops:
        """uint8 crops from ``Geometry`` batched (``(B, 2, G, G, C)``, ``(B, N, L, L, C)``) -> views."""
        b, n, size, _, c = local_px.shape
        glob = torch.empty(2 * b, c, *global_px.shape[2:4], device=global_px.device)
        for v, (blur_p, solarize_p) in enumerate(((1.0, 0.0), (0.1, 0.2))):
            draws = Draws.draw(g, b, c == 3, global_px.shape[2], blur_p, solarize_p)
            self.view(global_px[:, v], draws, glob[v * b : (v + 1) * b])
        local = torch.empty(n * b, c, size, size, device=local_px.device)
        if n:
            self.view(
                local_px.transpose(0, 1).reshape(n * b, size, size, c),
                Draws.draw(g, n * b, c == 3, size, 0.5, 0.0),
                local,
            )
        return Crops(glob, local)

    def view(self, px: torch.Tensor, draws: Draws, out: torch.Tensor) -> None:
        """One view of every image of ``px`` (uint8 ``(B, H, W, C)``) into ``out`` (float ``(B, C, H, W)``)."""
        b, hgt, wid, _ = px.shape
        radius = blur_radius(draws.sigma, min(hgt, wid))
        kernel = gaussian_kernel(draws.sigma, radius, torch.float32)
        for lo, hi in _chunks(b, hgt * wid, px.device):
            part = draws.part(lo, hi)
            x = self._colour(px[lo:hi], part)
            blurred = part.sigma > 0
            if not _blurs_by_taps(x):  # one grouped conv2d over all, as earlier versions (bitwise their views)
                blurred = blurred | blurred.any()
            _subset(x, blurred, functools.partial(_blur_images, kernel=kernel[lo:hi], radius=radius))
            _subset(x, part.solar, lambda y, _: torch.minimum(y, 1.0 - y))
            mean, std = self.mean.to(x.device, x.dtype), self.std.to(x.device, x.dtype)
            torch.sub(x, mean, out=out[lo:hi]).div_(std)

    @staticmethod
    def _colour(px: torch.Tensor, d: Draws) -> torch.Tensor:
        """Float ``(B, C, H, W)`` in [0, 1] from uint8 ``(B, H, W, C)``, colour-jittered."""
        x = torch.empty(px.shape[0], px.shape[3], *px.shape[1:3], device=px.device)
        x.copy_(px.permute(0, 3, 1, 2)).div_(255)
        b, dev = x.shape[0], x.device
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        contrast, bright = d.contrast.to(dev).view(b, 1, 1, 1), d.bright.to(dev).view(b, 1, 1, 1)
        x.sub_(mean).mul_(contrast).add_(mean).mul_(bright).clamp_(0.0, 1.0)
        if d.saturation is not None and d.hue is not None:
            x = shift_hue(_saturate_(x, d.saturation), d.hue)
            _subset(x, d.gray, lambda y, _: luma(y).expand_as(y))
        return x
