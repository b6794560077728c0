"""One image file read to 8 bits, by a rule for each Pillow mode, or refused (docs/phase5.md,
"What a data folder may hold"); sizes are checked before anything is decoded."""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

from lrsched.errors import UsageError
from lrsched.recipes.dino.files import shown

MAX_PIXELS = 100_000_000
"""An image with more pixels is skipped with a warning (300 MB decoded as RGB, per worker)."""
MAX_ASPECT = 100
"""An image with one side more than this many times the other is skipped with a warning."""
ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")
"""Pillow modes with an alpha channel: composited on white (``to_8bit``)."""


class ImageTooLarge(UsageError):
    """An image over the size limits (``check_size``): skipped with a warning wherever it is met."""


def read_image(path: Path, mode: str | None, content: bytes | None = None) -> Any:
    """The image at ``path`` in 8 bits, as ``mode`` (``L`` or ``RGB``; None: whichever it is); with ``content``,
    the image is those bytes (a member of a shard) and ``path`` only names it.

    Sizes are checked before anything is decoded (``check_size``); every Pillow mode is mapped to
    8-bit ``L`` or ``RGB`` by the rules of ``to_8bit`` or refused. Any failure is a ``UsageError``
    naming the file (``ImageTooLarge`` for the size limits).
    """
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit below
            with Image.open(stream if (stream := _bytes(content)) is not None else path) as img:
                check_size(img.width, img.height, path)
                img.load()
                out = to_8bit(img, path)
    except UsageError:
        raise
    except Image.DecompressionBombError:
        raise ImageTooLarge(f"--data-dir: image {shown(path)} has more than {MAX_PIXELS:,} pixels; skipped") from None
    except (OSError, ValueError, SyntaxError) as err:
        reason = str(err).replace(f" {stream!r}", "")  # Pillow names an in-memory file by its repr
        raise UsageError(f"--data-dir: cannot read image {shown(path)} ({reason})") from None
    return out if mode is None or out.mode == mode else out.convert(mode)


def _bytes(content: bytes | None) -> io.BytesIO | None:
    return io.BytesIO(content) if content is not None else None


def check_size(width: int, height: int, path: Path) -> None:
    """``ImageTooLarge`` for more than ``MAX_PIXELS`` pixels or sides more than ``MAX_ASPECT`` to 1."""
    if width * height > MAX_PIXELS:
        raise ImageTooLarge(
            f"--data-dir: image {shown(path)} is {width} x {height}, more than {MAX_PIXELS:,} pixels; skipped"
        )
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise ImageTooLarge(
            f"--data-dir: image {shown(path)} is {width} x {height}, one side more than {MAX_ASPECT} times "
            "the other (its views would be slivers); skipped"
        )


def to_8bit(img: Any, path: Path) -> Any:
    """``img`` (loaded, any Pillow mode) as 8-bit ``L`` or ``RGB``, by the rules in docs/phase5.md.

    ``1``/``L`` -> ``L``; 16-bit and 32-bit integer -> ``L`` from the top 8 of 16 bits; float ->
    ``L`` from [0, 1] x 255; alpha or a transparent colour -> composited on white; palette, CMYK and
    other colour modes -> ``RGB`` by Pillow's conversion.
    """
    mode = img.mode
    if mode.startswith("I"):
        return _integer_to_8bit(img, path)
    if mode == "F":
        return _float_to_8bit(img, path)
    if mode in ALPHA_MODES or "transparency" in img.info:
        return _on_white(img)
    if mode in ("L", "RGB"):
        return img
    gray = mode == "1" or (mode == "P" and _gray_palette(img))
    return img.convert("L" if gray else "RGB")


def _integer_to_8bit(img: Any, path: Path) -> Any:
    """16-bit samples (``I;16*``, or ``I`` with values in 0..65535) -> their top 8 bits, as ``L``.

    A TIFF that declares 32-bit integer samples has no standard 8-bit reading, and is refused, as
    is any ``I`` image with a value outside 0..65535.
    """
    import numpy as np
    from PIL import Image

    values = np.asarray(img)  # uint16 for I;16*, int32 for I: no wider copy
    declared = getattr(img, "tag_v2", {}).get(258, (16,)) if img.mode == "I" else (16,)
    low, high = (int(values.min()), int(values.max())) if values.size else (0, 0)
    if max(declared) > 16 or low < 0 or high > 65535:
        bits = f"{max(declared)}-bit " if max(declared) > 16 else ""
        raise UsageError(
            f"--data-dir: image {shown(path)} has {bits}integer samples in {low}..{high}; only 16-bit ones "
            "(0..65535) have a standard 8-bit reading: save it in 8 or 16 bits"
        )
    return Image.fromarray((values >> 8).astype(np.uint8), mode="L")


def _float_to_8bit(img: Any, path: Path) -> Any:
    """Float samples in [0, 1] -> ``round(255 x)`` as ``L``; values that round outside 0..255 are refused."""
    import numpy as np
    from PIL import Image

    values = np.asarray(img)  # float32
    scaled = np.rint(values * np.float32(255))
    if not np.isfinite(scaled).all() or scaled.min(initial=0) < 0 or scaled.max(initial=0) > 255:
        raise UsageError(
            f"--data-dir: image {shown(path)} has float samples outside [0, 1] "
            f"({np.nanmin(values):g}..{np.nanmax(values):g}, or not finite); save it as 8-bit or scale it to [0, 1]"
        )
    return Image.fromarray(scaled.astype(np.uint8), mode="L")


def _on_white(img: Any) -> Any:
    """An image with alpha (or a transparent colour) composited on white: ``L`` if it was gray, else ``RGB``."""
    from PIL import Image

    gray = img.mode in ("LA", "La", "L", "1") or (img.mode == "P" and _gray_palette(img))
    rgba = img.convert("RGBA")
    out = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return out.convert("L" if gray else "RGB")


def _gray_palette(img: Any) -> bool:
    """Whether every colour of a palette image's palette is a gray (R = G = B)."""
    colours = img.getpalette() or []
    return all(colours[k] == colours[k + 1] == colours[k + 2] for k in range(0, len(colours) - 2, 3))
