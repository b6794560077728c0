"""Tests of lrsched.render: the terminal chart and the matplotlib figures."""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, overload

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lrsched import render

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def triangle(n: int, peak: int, top: float = 1.0) -> list[float]:
    """Rises linearly to ``top`` at ``peak``, then falls linearly to 0 at ``n - 1``."""
    return [top * t / peak if t <= peak else top * (n - 1 - t) / (n - 1 - peak) for t in range(n)]


def chart_rows(text: str, height: int) -> list[str]:
    """The bar cells of each chart row (what follows the y axis's tick)."""
    return [line.split("┤" if "┤" in line else "│", 1)[1] for line in text.splitlines()[:height]]


class CountingSeries(Sequence[float]):
    """A long constant series that counts how many values were read."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.reads = 0

    def __len__(self) -> int:
        return self.n

    @overload
    def __getitem__(self, i: int) -> float: ...
    @overload
    def __getitem__(self, i: slice) -> list[float]: ...
    def __getitem__(self, i: int | slice) -> float | list[float]:
        if isinstance(i, slice):
            raise TypeError("no slices here")
        self.reads += 1
        return 1.0


def test_import_does_not_load_matplotlib() -> None:
    code = "import sys, lrsched.render; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_chart_shape() -> None:
    text = render.terminal_chart(triangle(1000, 300), width=60, height=10)
    lines = text.splitlines()
    assert len(lines) == 12
    widths = {len(line) for line in lines[:11]}
    assert len(widths) == 1
    assert all(len(cells) == 60 for cells in chart_rows(text, 10))


def test_chart_peak_column_is_on_top_row() -> None:
    width, height = 50, 8
    text = render.terminal_chart(triangle(1001, 700), width=width, height=height)
    top = chart_rows(text, height)[0]
    full = [i for i, ch in enumerate(top) if ch == "█"]
    assert full, top
    peak_col = 700 * width // 1001
    assert all(abs(c - peak_col) <= 1 for c in full)
    # The bottom row is covered everywhere (the curve's floor is the chart's floor).
    assert " " not in chart_rows(text, height)[-1]


def test_chart_falls_left_to_right_for_a_decay() -> None:
    height = 12
    values = [1.0 - t / 999 for t in range(1000)]
    rows = chart_rows(render.terminal_chart(values, width=40, height=height), height)
    filled = [sum(row[c] == "█" for row in rows) for c in range(40)]
    assert filled == sorted(filled, reverse=True)
    assert filled[0] == height - 1 or filled[0] == height


def test_chart_labels() -> None:
    text = render.terminal_chart(triangle(201, 10, top=4e-4), width=72, height=6, warmup=10, end_label="T=200")
    lines = text.splitlines()
    assert lines[0].lstrip().startswith("0.0004 ┤")
    assert lines[5].lstrip().startswith("0 ┤")
    axis, labels = lines[-2], lines[-1]
    col = axis.index("┴") - axis.index("└") - 1
    assert col == 10 * 72 // 201
    assert labels.split() == ["0", "W=10", "T=200"]


def test_chart_without_warmup_has_no_marker() -> None:
    text = render.terminal_chart([2.0] * 50, width=20, height=3)
    assert "┴" not in text
    assert text.splitlines()[-1].split() == ["0", "49"]
    assert all(set(row) == {"█"} for row in chart_rows(text, 3))


def test_chart_short_series_stretches() -> None:
    text = render.terminal_chart([0.0, 1.0], width=10, height=2)
    top = chart_rows(text, 2)[0]
    assert top == " " * 5 + "█" * 5


def test_chart_reads_a_bounded_number_of_values() -> None:
    series = CountingSeries(10**7)
    render.terminal_chart(series, width=72, height=5)
    assert series.reads <= 72 * (render.SAMPLES_PER_COLUMN + 2)


@pytest.mark.parametrize("kwargs", [{"width": 0}, {"height": 0}])
def test_chart_rejects_bad_sizes(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        render.terminal_chart([1.0], **kwargs)


def test_chart_rejects_empty() -> None:
    with pytest.raises(ValueError):
        render.terminal_chart([])


@given(st.integers(1, 5000), st.integers(1, 200))
def test_column_bounds_cover_every_index(n: int, width: int) -> None:
    bounds = render.column_bounds(n, width)
    assert len(bounds) == width
    assert all(0 <= a < b <= n for a, b in bounds)
    covered = {i for a, b in bounds for i in range(a, b)}
    assert covered == set(range(n))


@given(st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=3000), st.integers(0, 2999))
def test_column_max_is_exact_for_short_columns(values: list[float], start: int) -> None:
    start = min(start, len(values) - 1)
    stop = min(len(values), start + render.SAMPLES_PER_COLUMN)
    assert render.column_max(values, start, stop) == max(values[start:stop])


def test_thin_keeps_ends() -> None:
    values = list(range(100_001))
    steps, ys = render.thin([float(v) for v in values], limit=1000)
    assert steps[0] == 0 and steps[-1] == 100_000
    assert len(steps) <= 1001
    assert ys == [float(s) for s in steps]
    assert render.thin([1.0, 2.0]) == ([0, 1], [1.0, 2.0])


def assert_png(path: Path, min_bytes: int = 5000) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > min_bytes


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.startswith(".")]


def test_plot_schedules_writes_png(tmp_path: Path) -> None:
    out = tmp_path / "lr.png"
    curves = {"cosine": [math.cos(t / 300) for t in range(1001)], "linear": [1 - t / 1000 for t in range(1001)]}
    assert render.plot_schedules(curves, out, title="t", warmup=100) == out
    assert_png(out)
    assert no_temp_files(tmp_path)


def test_plot_schedules_thins_long_curves(tmp_path: Path) -> None:
    out = tmp_path / "long.png"
    render.plot_schedules({"x": [t / 1e6 for t in range(1_000_001)]}, out)
    assert_png(out)


@pytest.mark.parametrize("suffix, magic", [("svg", b"<?xml"), ("pdf", b"%PDF")])
def test_plot_other_formats(tmp_path: Path, suffix: str, magic: bytes) -> None:
    out = tmp_path / f"lr.{suffix}"
    render.plot_schedules({"a": [0.0, 1.0, 0.5]}, out)
    assert out.read_bytes().startswith(magic)


def test_plot_rejects_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must end with"):
        render.plot_schedules({"a": [1.0, 2.0]}, tmp_path / "lr.txt")
    assert list(tmp_path.iterdir()) == []


def test_plot_rejects_no_curves(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        render.plot_schedules({}, tmp_path / "x.png")
    with pytest.raises(ValueError):
        render.plot_schedules({"a": []}, tmp_path / "x.png")


def test_failed_write_leaves_existing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from matplotlib.figure import Figure

    out = tmp_path / "lr.png"
    out.write_bytes(b"old picture")

    def broken_savefig(self: Figure, fh: Any, **kwargs: Any) -> None:
        fh.write(PNG_SIGNATURE + b"half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(RuntimeError, match="disk full"):
        render.plot_schedules({"a": [0.0, 1.0]}, out)
    assert out.read_bytes() == b"old picture"
    assert [p.name for p in tmp_path.iterdir()] == ["lr.png"]


def test_missing_folder_raises_without_writing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        render.plot_schedules({"a": [0.0, 1.0]}, tmp_path / "nope" / "lr.png")
    assert list(tmp_path.iterdir()) == []


def test_plot_run_panels_and_points(tmp_path: Path) -> None:
    x = list(range(0, 2000, 10))
    columns = {
        "lr": [5e-4 * min(1.0, t / 200) for t in x],
        "loss": [2.3 * math.exp(-t / 700) for t in x],
        "weight_decay": [0.04 + 0.36 * t / 2000 for t in x],
    }
    extra = {"loss": ([500.0, 1500.0], [1.2, 0.5]), "knn_acc": ([1000.0], [0.8])}
    out = render.plot_run(tmp_path / "curves.png", columns, x, title="run", extra=extra)
    assert_png(out, min_bytes=10_000)
    assert no_temp_files(tmp_path)


def test_plot_run_checks_lengths(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'loss' has 2 values for 3 steps"):
        render.plot_run(tmp_path / "c.png", {"loss": [1.0, 2.0]}, [0, 1, 2])
    with pytest.raises(ValueError):
        render.plot_run(tmp_path / "c.png", {}, [])
    assert list(tmp_path.iterdir()) == []


def _drawn_plot(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """The figure ``lrsched plot`` builds for ``argv`` (captured where it is saved)."""
    from lrsched import cli

    figures: list[Any] = []
    monkeypatch.setattr(render, "save_figure", lambda fig, path, dpi=120: figures.append(fig) or Path(path))
    assert cli.main(["plot", *argv]) == 0
    assert len(figures) == 1
    return figures[0]


def test_open_ended_plot_title_fits_and_legend_names_the_shape_drawn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fig = _drawn_plot(["--warmup-steps", "100", "-o", str(tmp_path / "lr.png")], monkeypatch)
    (ax,) = fig.axes
    renderer = fig.canvas.get_renderer()
    box = ax.title.get_window_extent(renderer)
    assert box.x0 >= 0 and box.x1 <= fig.bbox.width, (box, ax.get_title())
    assert "open-ended" in ax.get_title() and "note 00" not in ax.get_title()
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "constant (open-ended)" in labels and not any("cosine" in label for label in labels), labels


def test_fit_title_keeps_a_short_title_on_one_line() -> None:
    fig, (ax,) = render.new_figure()
    render.fit_title(fig, ax, "a short title")
    assert ax.get_title() == "a short title"
    long = " ".join(f"word{i}" for i in range(60))
    render.fit_title(fig, ax, long)
    assert ax.get_title().replace("\n", " ") == long and ax.get_title().count("\n") >= 1
    assert ax.title.get_window_extent(fig.canvas.get_renderer()).width <= fig.bbox.width
