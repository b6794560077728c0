"""Pictures of a schedule: a chart for the terminal and matplotlib figures.

``terminal_chart`` needs only the standard library. The figure functions import
matplotlib when called (Agg canvas, no pyplot, no display), so importing this
module stays cheap. Figures are written with ``atomic_write`` (a temporary file in the
target's folder moved into place): a failure never leaves a half-written file.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lrsched.atomic import atomic_write

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

BLOCKS = " ▁▂▃▄▅▆▇█"
"""Cell fill in eighths: ``BLOCKS[k]`` fills ``k`` eighths of a character cell from below."""
SAMPLES_PER_COLUMN = 256
"""A terminal column reads at most this many values (evenly spaced) plus its last one."""
PLOT_POINTS = 20_000
"""A curve longer than this is thinned (evenly spaced steps, ends kept) before plotting."""
FORMATS = ("png", "svg", "pdf")
"""Figure formats, chosen by the output file's suffix."""

Extra = Mapping[str, tuple[Sequence[float], Sequence[float]]]


# --- terminal -------------------------------------------------------------------------------


def column_bounds(n: int, width: int) -> list[tuple[int, int]]:
    """Split indices ``0..n-1`` into ``width`` consecutive, non-empty ``[start, stop)`` ranges.

    With fewer values than columns a value spans several columns.
    """
    return [(c * n // width, max((c + 1) * n // width, c * n // width + 1)) for c in range(width)]


def column_max(values: Sequence[float], start: int, stop: int) -> float:
    """The largest of ``values[start:stop]``, read at most ``SAMPLES_PER_COLUMN + 1`` times."""
    stride = max(1, (stop - start) // SAMPLES_PER_COLUMN)
    picks = [*range(start, stop, stride), stop - 1]
    return max(values[i] for i in picks)


def _fill(level: int, row_from_bottom: int) -> str:
    """The character of one cell of a bar ``level`` eighths high."""
    eighths = level - 8 * row_from_bottom
    return BLOCKS[min(8, max(0, eighths))]


def _y_label(value: float) -> str:
    return f"{value:.3g}"


def _place(labels: list[str], col: int, word: str) -> bool:
    """Write ``word`` at ``col`` if it fits and keeps a space from other labels."""
    if col < 0 or col + len(word) > len(labels):
        return False
    if any(ch != " " for ch in labels[max(0, col - 1) : col + len(word) + 1]):
        return False
    labels[col : col + len(word)] = word
    return True


def _x_axis(width: int, n: int, warmup: int | None, end_label: str) -> tuple[str, str]:
    """The axis line (a ``┴`` at the warm-up's end) and the labels under it: 0, the end, ``W=...``."""
    axis = ["─"] * width
    labels = [" "] * max(width, len(end_label) + 2)
    _place(labels, 0, "0")
    _place(labels, len(labels) - len(end_label), end_label)
    if warmup is not None and 0 < warmup < n:
        col = min(width - 1, warmup * width // n)
        axis[col] = "┴"
        word = f"W={warmup}"
        if not _place(labels, col, word):
            _place(labels, col + 1 - len(word), word)
    return "└" + "".join(axis), "".join(labels).rstrip()


def terminal_chart(
    values: Sequence[float],
    width: int = 72,
    height: int = 14,
    *,
    warmup: int | None = None,
    end_label: str | None = None,
) -> str:
    """A block-character chart of ``values`` (one per step, from step 0).

    The plot area is ``width`` columns by ``height`` rows; each column shows the largest
    value of its share of the steps, as a bar filled in eighths of a cell. The y axis is
    labelled with the largest value (top row) and the smallest (bottom row); the x axis
    with step 0, the warm-up's end ``W=...`` (a ``┴`` on the axis) and ``end_label``
    (default: the last step). The text has ``height + 2`` lines; the ``height`` chart lines
    and the axis line all have the same length.
    """
    if not values:
        raise ValueError("terminal_chart: no values")
    if width < 1 or height < 1:
        raise ValueError(f"terminal_chart: width={width}, height={height}: both must be >= 1")
    n = len(values)
    tops = [column_max(values, a, b) for a, b in column_bounds(n, width)]
    lo, hi = min(min(tops), 0.0), max(tops)
    span = hi - lo if hi > lo else 1.0
    levels = [max(1, round((v - lo) / span * 8 * height)) for v in tops]
    ylab = [_y_label(hi), _y_label(lo)]
    pad = max(len(s) for s in ylab)
    lines = []
    for row in range(height):
        label = ylab[0] if row == 0 else ylab[1] if row == height - 1 else ""
        tick = "┤" if label else "│"
        bars = "".join(_fill(level, height - 1 - row) for level in levels)
        lines.append(f"{label:>{pad}} {tick}{bars}")
    axis, labels = _x_axis(width, n, warmup, end_label or str(n - 1))
    lines.append(" " * (pad + 1) + axis)
    lines.append(" " * (pad + 2) + labels)
    return "\n".join(lines)


# --- figures --------------------------------------------------------------------------------


def new_figure(rows: int = 1, height: float = 4.5) -> tuple[Figure, list[Axes]]:
    """A figure on an Agg canvas with ``rows`` stacked axes sharing x (no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9.0, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, 1, sharex=True, squeeze=False)
    return fig, [row[0] for row in axes]


def save_figure(fig: Figure, path: str | os.PathLike[str], dpi: int = 120) -> Path:
    """Write ``fig`` to ``path`` atomically (format from the suffix: png, svg or pdf).

    An existing file is replaced only once the new one is complete.
    """
    target = Path(path)
    fmt = target.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise ValueError(f"{target}: the file name must end with one of .{', .'.join(FORMATS)}")
    with atomic_write(target, "wb", permissions=0o644) as fh:
        fig.savefig(fh, format=fmt, dpi=dpi)
    return target


def thin(values: Sequence[float], limit: int = PLOT_POINTS) -> tuple[list[int], list[float]]:
    """Steps and values to plot: every step up to ``limit`` points, else evenly spaced ones.

    The first and last steps are always kept.
    """
    n = len(values)
    stride = max(1, -(-n // limit))
    steps = list(range(0, n, stride))
    if steps[-1] != n - 1:
        steps.append(n - 1)
    return steps, [values[i] for i in steps]


def format_axes(ax: Axes, limits: tuple[int, int] = (0, 0)) -> None:
    """Scientific y tick labels (``×10⁻⁵`` at the top) and plain step numbers on x.

    ``limits``: the powers of ten outside which y switches to scientific notation
    (``(0, 0)``: always).
    """
    ax.ticklabel_format(axis="y", style="sci", scilimits=limits, useMathText=True)
    ax.ticklabel_format(axis="x", style="plain", useOffset=False)
    ax.grid(True, alpha=0.3)


LINESTYLES = ("-", "--", "-.", ":")


def _curve_style(i: int) -> dict[str, Any]:
    """Curves drawn later are thinner and dashed, so identical curves stay visible."""
    return {"linestyle": LINESTYLES[i % len(LINESTYLES)], "linewidth": max(1.2, 3.2 - 0.6 * i)}


def shade_warmup(ax: Axes, warmup: int) -> None:
    ax.axvspan(0, warmup, color="0.6", alpha=0.2, label=f"warm-up ({warmup} steps)")
    ax.axvline(warmup, color="0.4", linestyle="--", linewidth=1)


def fit_title(fig: Figure, ax: Axes, title: str) -> None:
    """Set ``ax``'s title, wrapped at word boundaries onto as many lines as it needs to fit the
    figure's width (a long title is otherwise cut at both edges)."""
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    room = fig.bbox.width * 0.96
    width = len(title)
    while True:
        text = ax.set_title("\n".join(textwrap.wrap(title, width)) if width < len(title) else title)
        if text.get_window_extent(renderer).width <= room or width <= 20:
            return
        width -= 4


def schedule_figure(
    curves: Mapping[str, Sequence[float]], title: str = "learning-rate schedule", warmup: int | None = None
) -> Figure:
    """The figure ``plot_schedules`` writes: one line per named curve, the warm-up shaded, the title
    fitted to the width (``fit_title``), the legend under the axes."""
    if not curves or not all(len(v) for v in curves.values()):
        raise ValueError("plot_schedules: needs at least one non-empty curve")
    fig, (ax,) = new_figure(height=5.0)
    if warmup:
        shade_warmup(ax, warmup)
    for i, (label, values) in enumerate(curves.items()):
        xs, ys = thin(values)
        ax.plot(xs, ys, label=label, **_curve_style(i))
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("learning rate")
    fit_title(fig, ax, title)
    ax.set_xlim(0, max(len(v) for v in curves.values()) - 1 or 1)
    ax.set_ylim(bottom=0)
    format_axes(ax)
    entries = len(curves) + (1 if warmup else 0)
    fig.legend(loc="outside lower center", ncols=min(entries, 3), frameon=False)
    return fig


def plot_schedules(
    curves: Mapping[str, Sequence[float]],
    path: str | os.PathLike[str],
    title: str = "learning-rate schedule",
    warmup: int | None = None,
) -> Path:
    """Draw one line per named curve (values at steps 0, 1, ...) and write the figure.

    The warm-up ``[0, warmup]`` is shaded and its end dashed; axes are labelled
    "optimizer step" and "learning rate", the LR in scientific notation.
    """
    return save_figure(schedule_figure(curves, title, warmup), path)


def plot_run(
    path: str | os.PathLike[str],
    columns: Mapping[str, Sequence[float]],
    x: Sequence[int],
    title: str = "training run",
    extra: Extra | None = None,
    marks: Mapping[str, int] | None = None,
) -> Path:
    """One panel per column (LR, loss, weight decay, ...) stacked over the shared step axis ``x``.

    ``extra`` maps a name to ``(xs, ys)`` points drawn as markers (e.g. a per-epoch eval
    loss): on the panel of the same name, else on a panel of its own below. ``marks`` maps a
    label to a step marked by a red vertical line in every panel (e.g. where a collapse was seen).
    """
    return save_figure(run_figure(columns, x, title, extra, marks), path)


def run_figure(
    columns: Mapping[str, Sequence[float]],
    x: Sequence[int],
    title: str = "training run",
    extra: Extra | None = None,
    marks: Mapping[str, int] | None = None,
) -> Figure:
    """The figure ``plot_run`` writes."""
    extra = extra or {}
    names = [*columns, *(k for k in extra if k not in columns)]
    if not names:
        raise ValueError("plot_run: needs at least one column")
    for name, ys in columns.items():
        if len(ys) != len(x):
            raise ValueError(f"plot_run: column {name!r} has {len(ys)} values for {len(x)} steps")
    fig, axes = new_figure(len(names), height=1.2 + 2.0 * len(names))
    for ax, name in zip(axes, names):
        if name in columns:
            idx, ys = thin(columns[name])
            ax.plot([x[i] for i in idx], ys, linewidth=1.2, label=name)
        if name in extra:
            ax.plot(*extra[name], marker="o", linestyle="--", label=f"{name} (points)")
            ax.legend(loc="best")
        ax.set_ylabel(name)
        format_axes(ax, (-3, 4))
    for label, step in (marks or {}).items():
        for i, ax in enumerate(axes):
            ax.axvline(step, color="tab:red", linewidth=1.2, label=label if i == 0 else None)
        axes[0].legend(loc="best", fontsize="small")
    axes[0].set_title(title)
    axes[-1].set_xlabel("optimizer step")
    return fig
