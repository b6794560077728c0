"""Every Pillow image mode read to 8 bits by a documented rule or refused; size limits before decoding."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lrsched.errors import UsageError
from lrsched.recipes.dino import images
from lrsched.recipes.dino.augment import _pixels, center_view
from lrsched.recipes.dino.data import open_folder
from lrsched.recipes.dino.images import ImageTooLarge, read_image, to_8bit


def pixels(img: Any) -> list[Any]:
    """The pixel values of a PIL image, row-major (tuples for RGB)."""
    values = np.asarray(img)
    return (
        [tuple(v) for v in values.reshape(-1, values.shape[2]).tolist()]
        if values.ndim == 3
        else values.ravel().tolist()
    )


def save(img: Any, path: Path, **options: Any) -> Path:
    img.save(path, **options)
    return path


def png_bytes(width: int, height: int, depth: int, colour: int, raw: bytes) -> bytes:
    """A PNG file of one IDAT chunk: ``raw`` is the filtered scanlines (filter byte 0 per row)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


# --- 16-bit, 32-bit integer and float samples -------------------------------------------------


SIXTEEN = [0, 255, 256, 32768, 65535]
"""16-bit values and their top 8 bits: 0, 0, 1, 128, 255."""


def test_16_bit_gray_png_reads_its_top_8_bits(tmp_path: Path) -> None:
    from PIL import Image

    path = save(Image.fromarray(np.array([SIXTEEN], dtype=np.uint16)), tmp_path / "g16.png")
    assert Image.open(path).mode == "I;16"
    img = read_image(path, None)
    assert img.mode == "L" and pixels(img) == [0, 0, 1, 128, 255]


def test_16_bit_big_endian_and_tiff_read_their_top_8_bits(tmp_path: Path) -> None:
    from PIL import Image

    big = Image.fromarray(np.array([SIXTEEN], dtype=">u2"))
    assert big.mode == "I;16B"
    assert pixels(to_8bit(big, tmp_path / "x")) == [0, 0, 1, 128, 255]
    path = save(Image.fromarray(np.array([SIXTEEN], dtype=np.uint16)), tmp_path / "g16.tif")
    assert pixels(read_image(path, None)) == [0, 0, 1, 128, 255]


def test_16_bit_colour_png_is_read_by_pillow_from_its_top_bytes(tmp_path: Path) -> None:
    row = b"\x00" + struct.pack(">6H", 0x1234, 0x80FF, 0xFFFF, 0, 0x00FF, 0x0100)  # 2 RGB pixels
    (tmp_path / "c16.png").write_bytes(png_bytes(2, 1, 16, 2, row))
    img = read_image(tmp_path / "c16.png", None)
    assert img.mode == "RGB" and pixels(img) == [(0x12, 0x80, 0xFF), (0, 0, 1)]


def test_16_bit_gray_opened_as_32_bit_I_reads_as_16_bit(tmp_path: Path) -> None:
    from PIL import Image

    img = Image.fromarray(np.array([SIXTEEN], dtype=np.int32))  # older Pillow opens 16-bit PNGs as "I"
    assert img.mode == "I"
    assert pixels(to_8bit(img, tmp_path / "x")) == [0, 0, 1, 128, 255]
    with pytest.raises(UsageError, match=r"integer samples in -1\.\.65535; only 16-bit ones"):
        to_8bit(Image.fromarray(np.array([[-1, 65535]], dtype=np.int32)), tmp_path / "x")


def test_32_bit_integer_tiff_is_refused(tmp_path: Path) -> None:
    from PIL import Image

    for name, values in (("big.tif", [0, 70000]), ("small.tif", [0, 200])):
        path = save(Image.fromarray(np.array([values], dtype=np.int32)), tmp_path / name)
        with pytest.raises(UsageError, match=rf"{name} has 32-bit integer samples in 0\.\."):
            read_image(path, None)


def test_float_in_0_1_is_scaled_by_255_and_outside_is_refused(tmp_path: Path) -> None:
    from PIL import Image

    values = np.array([[0.0, 0.25, 0.5, 1 / 255, 1.0, -0.001, 1.001]], dtype=np.float32)
    path = save(Image.fromarray(values), tmp_path / "f.tif")
    img = read_image(path, None)
    assert img.mode == "L" and pixels(img) == [0, 64, 128, 1, 255, 0, 255]
    for name, bad in (("over.tif", 1.5), ("neg.tif", -0.1), ("nan.tif", float("nan")), ("inf.tif", float("inf"))):
        path = save(Image.fromarray(np.array([[0.5, bad]], dtype=np.float32)), tmp_path / name)
        with pytest.raises(UsageError, match=rf"{name} has float samples outside \[0, 1\]"):
            read_image(path, None)


def test_a_folder_of_16_bit_pngs_or_float_tiffs_has_the_right_statistics(tmp_path: Path) -> None:
    from PIL import Image

    (tmp_path / "png").mkdir()
    (tmp_path / "tif").mkdir()
    for i in range(3):
        Image.fromarray(np.full((20, 30), 32768, dtype=np.uint16)).save(tmp_path / "png" / f"{i}.png")
        Image.fromarray(np.full((20, 30), 0.25, dtype=np.float32)).save(tmp_path / "tif" / f"{i}.tif")
    for folder, level in (("png", 128), ("tif", 64)):
        ds = open_folder(tmp_path / folder)
        assert ds.channels == 1 and ds.mean[0] == pytest.approx(level / 255, abs=1e-6), folder
        assert pixels(ds.train.image(0))[0] == level


# --- palette, alpha, CMYK, bilevel --------------------------------------------------------------


def test_palette_images_read_their_colours_and_a_gray_palette_stays_gray(tmp_path: Path) -> None:
    from PIL import Image

    img = Image.new("P", (2, 1))
    img.putpalette([10, 20, 30, 200, 100, 50])
    img.putdata([0, 1])
    out = read_image(save(img, tmp_path / "p.png"), None)
    assert out.mode == "RGB" and pixels(out) == [(10, 20, 30), (200, 100, 50)]
    img.putpalette([7, 7, 7, 99, 99, 99])
    out = read_image(save(img, tmp_path / "gray.png"), None)
    assert out.mode == "L" and pixels(out) == [7, 99]
    gif = read_image(save(img, tmp_path / "gray.gif"), None)
    assert pixels(gif) == [7, 99]


def test_transparent_palette_entries_are_composited_on_white(tmp_path: Path) -> None:
    from PIL import Image

    img = Image.new("P", (2, 1))
    img.putpalette([10, 20, 30, 200, 100, 50])
    img.putdata([0, 1])
    out = read_image(save(img, tmp_path / "t.png", transparency=0), None)
    assert out.mode == "RGB" and pixels(out) == [(255, 255, 255), (200, 100, 50)]
    out = read_image(save(img, tmp_path / "t.gif", transparency=0), None)
    assert pixels(out) == [(255, 255, 255), (200, 100, 50)]


def test_alpha_is_composited_on_white(tmp_path: Path) -> None:
    from PIL import Image

    rgba = Image.new("RGBA", (3, 1))
    rgba.putdata([(10, 20, 30, 0), (10, 20, 30, 255), (0, 100, 200, 128)])
    out = read_image(save(rgba, tmp_path / "a.png"), None)
    half = [round(c * 128 / 255 + 255 * 127 / 255) for c in (0, 100, 200)]
    got = pixels(out)
    assert out.mode == "RGB" and got[:2] == [(255, 255, 255), (10, 20, 30)]
    assert all(abs(g - h) <= 1 for g, h in zip(got[2], half, strict=True))
    la = Image.new("LA", (3, 1))
    la.putdata([(100, 0), (100, 255), (0, 128)])
    out = read_image(save(la, tmp_path / "la.png"), None)
    assert out.mode == "L" and pixels(out)[:2] == [255, 100] and abs(pixels(out)[2] - 127) <= 1
    gray_key = Image.new("L", (2, 1))
    gray_key.putdata([0, 50])
    out = read_image(save(gray_key, tmp_path / "key.png", transparency=0), None)
    assert out.mode == "L" and pixels(out) == [255, 50]


def test_cmyk_and_bilevel_images(tmp_path: Path) -> None:
    from PIL import Image

    cmyk = Image.new("CMYK", (3, 1))
    cmyk.putdata([(0, 0, 0, 0), (255, 0, 0, 0), (0, 0, 0, 255)])
    out = read_image(save(cmyk, tmp_path / "c.tif"), None)
    assert out.mode == "RGB" and pixels(out) == [(255, 255, 255), (0, 255, 255), (0, 0, 0)]
    bilevel = Image.new("1", (2, 1))
    bilevel.putdata([0, 1])
    out = read_image(save(bilevel, tmp_path / "b.png"), None)
    assert out.mode == "L" and pixels(out) == [0, 255]


def test_a_mixed_folder_is_rgb_and_gray_images_in_it_are_repeated(tmp_path: Path) -> None:
    from PIL import Image

    Image.fromarray(np.full((8, 8), 32768, dtype=np.uint16)).save(tmp_path / "a.png")
    Image.new("RGB", (8, 8), (255, 0, 0)).save(tmp_path / "b.png")
    ds = open_folder(tmp_path)
    assert ds.channels == 3 and pixels(ds.train.image(0))[0] == (128, 128, 128)


# --- sizes --------------------------------------------------------------------------------------


def test_sizes_are_checked_before_decoding(tmp_path: Path) -> None:
    width, height = 12_000, 10_000  # 120 million pixels: over MAX_PIXELS, under Pillow's own bomb limit
    header_only = png_bytes(width, height, 8, 0, b"")  # no pixel data: decoding it would fail
    (tmp_path / "huge.png").write_bytes(header_only)
    with pytest.raises(ImageTooLarge, match=r"huge\.png is 12000 x 10000, more than 100,000,000 pixels; skipped"):
        read_image(tmp_path / "huge.png", None)
    (tmp_path / "sliver.png").write_bytes(png_bytes(1, 101, 8, 0, b""))
    with pytest.raises(ImageTooLarge, match=r"sliver\.png is 1 x 101, one side more than 100 times"):
        read_image(tmp_path / "sliver.png", None)
    (tmp_path / "bomb.png").write_bytes(png_bytes(20_000, 20_000, 8, 0, b""))  # Pillow's own limit
    with pytest.raises(ImageTooLarge, match=r"bomb\.png"):
        read_image(tmp_path / "bomb.png", None)


def test_start_up_sampling_skips_images_over_the_limits_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from PIL import Image

    for i in range(3):
        Image.new("L", (20, 10), color=40 * (i + 1)).save(tmp_path / f"{i}.png")
    Image.new("RGB", (1, 150), (255, 0, 0)).save(tmp_path / "3.png")
    ds = open_folder(tmp_path)
    assert "warning: --data-dir: image" in capsys.readouterr().err
    assert ds.channels == 1 and ds.mean[0] == pytest.approx(80 / 255, abs=1e-6)  # the sliver is not counted
    with pytest.raises(ImageTooLarge):
        ds.train.image(3)  # and the training stream and k-NN skip it the same way (a UsageError)


def test_every_sampled_image_over_the_limits_is_a_usage_error(tmp_path: Path) -> None:
    from PIL import Image

    Image.new("L", (1, 150)).save(tmp_path / "0.png")
    with pytest.raises(UsageError, match="every sampled image is over the size limits"):
        open_folder(tmp_path)


def test_center_view_of_a_very_long_image_resamples_only_its_centre(monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    largest: list[int] = []
    real = Image.Image.resize

    def recording(self: Any, size: tuple[int, int], *args: Any, **kw: Any) -> Any:
        largest.append(size[0] * size[1])
        return real(self, size, *args, **kw)

    monkeypatch.setattr(Image.Image, "resize", recording)
    tall = Image.new("L", (1, 100_000), 77)
    view = center_view(tall, 64, 1)
    assert view.shape == (64, 64, 1) and bool((view == 77).all())
    assert max(largest) <= 64 * 64  # resizing it whole: 64 x 6.4 million pixels


def test_center_view_of_an_ordinary_image_is_the_resized_whole_cropped() -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for width, height, size in ((300, 200, 64), (90, 400, 32), (50, 50, 96), (64, 200, 64), (40, 600, 28)):
        img = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        scale = size / min(width, height)
        w, h = max(size, round(width * scale)), max(size, round(height * scale))
        whole = img.resize((w, h), Image.Resampling.BICUBIC) if (w, h) != img.size else img
        left, top = (w - size) // 2, (h - size) // 2
        expected = _pixels(whole.crop((left, top, left + size, top + size)), 3)
        assert bool((center_view(img, size, 3) == expected).all()), (width, height, size)


def test_the_limits_are_the_documented_ones() -> None:
    assert (images.MAX_PIXELS, images.MAX_ASPECT) == (100_000_000, 100)


def test_a_refusal_naming_an_odd_file_name_stays_one_line(tmp_path: Path) -> None:
    (tmp_path / "new\nline.png").write_bytes(b"not a png")
    (tmp_path / "long\tone.png").write_bytes(png_bytes(1, 500, 8, 0, b""))
    for name, error in (("new\nline.png", UsageError), ("long\tone.png", ImageTooLarge)):
        with pytest.raises(error) as err:
            read_image(tmp_path / name, None)
        assert "\n" not in str(err.value) and "\t" not in str(err.value)
        assert "\\n" in str(err.value) or "\\t" in str(err.value)
