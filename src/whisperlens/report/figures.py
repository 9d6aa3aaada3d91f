"""Study figures: heatmaps with confidence intervals, line plots with bands, histograms.

Every function builds a standalone :class:`matplotlib.figure.Figure` on the Agg canvas;
nothing touches pyplot's global figure registry, so figures never leak between studies
or tests. :func:`figure_png` turns a figure into PNG bytes for :mod:`whisperlens.report.html`.

Non-finite values are drawn as gaps: a NaN heatmap cell is light grey and reads "n/a",
NaN points break a line, and a histogram omits them and says how many it omitted.

>>> fig = heatmap([[0.95, 0.5]], ci_low=[[0.93, 0.4]], ci_high=[[0.97, 0.6]],
...               row_labels=["enc"], col_labels=["L0", "L1"])
>>> png = figure_png(fig)
"""

from __future__ import annotations

import io
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from numpy.typing import ArrayLike

from whisperlens.errors import ShapeError

SeriesKind = Literal["effect", "control"]
SERIES_KINDS: tuple[SeriesKind, ...] = get_args(SeriesKind)
NAN_TEXT = "n/a"  # how a missing number reads in a figure
NAN_COLOR = "#e6e6e6"  # fill of a NaN heatmap cell
CONTROL_COLOR = "#7f7f7f"  # line and band of a control series


def new_figure(width: float, height: float) -> Figure:
    """A figure on its own Agg canvas, outside pyplot's registry."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def figure_png(fig: Figure, *, dpi: int = 100) -> bytes:
    """PNG bytes of ``fig``; the figure is cleared (and closed, if pyplot made it)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        pyplot.close(fig)  # a no-op for figures made here
    fig.clear()
    return buf.getvalue()


def format_number(value: float, fmt: str = ".2f") -> str:
    """``value`` formatted with ``fmt``; NaN and infinities read "n/a"."""
    return format(value, fmt) if np.isfinite(value) else NAN_TEXT


def cell_text(
    value: float, lo: float | None = None, hi: float | None = None, fmt: str = ".2f"
) -> str:
    """The annotation of one heatmap cell: ``"0.95"`` or ``"0.95\\n[0.93, 0.97]"``."""
    if not np.isfinite(value):
        return NAN_TEXT
    text = format_number(value, fmt)
    if lo is not None and hi is not None:
        text += f"\n[{format_number(lo, fmt)}, {format_number(hi, fmt)}]"
    return text


def _as_2d(values: ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 2:
        raise ShapeError(f"{name} must be 2-D (rows, cols), got shape {arr.shape}")
    return arr


def _text_color(im: matplotlib.image.AxesImage, value: float) -> str:
    """Black on light cells, white on dark ones (ITU-R 601 luma)."""
    if not np.isfinite(value):
        return "dimgray"
    scaled = float(np.asarray(im.norm(np.array([value]))).item())  # in [0, 1]
    r, g, b, _ = im.cmap(scaled)
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"


def heatmap(
    values: ArrayLike,
    *,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    ci_low: ArrayLike | None = None,
    ci_high: ArrayLike | None = None,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    vmin: float | None = None,
    vmax: float | None = None,
    cmap: str = "viridis",
    fmt: str = ".2f",
) -> Figure:
    """A cell-annotated heatmap of ``values`` (rows, cols), with CIs under each value.

    ``ci_low``/``ci_high`` (rows, cols; both or neither) add ``[lo, hi]`` to each cell.
    """
    vals_RC = _as_2d(values, "values")
    n_rows, n_cols = vals_RC.shape
    if (ci_low is None) != (ci_high is None):
        raise ValueError("pass both ci_low and ci_high, or neither")
    lo_RC = hi_RC = None
    if ci_low is not None and ci_high is not None:
        lo_RC, hi_RC = _as_2d(ci_low, "ci_low"), _as_2d(ci_high, "ci_high")
        if lo_RC.shape != vals_RC.shape or hi_RC.shape != vals_RC.shape:
            raise ShapeError(
                f"ci_low {lo_RC.shape} and ci_high {hi_RC.shape} must match values {vals_RC.shape}"
            )
    if len(row_labels) != n_rows or len(col_labels) != n_cols:
        raise ShapeError(
            f"{len(row_labels)} row and {len(col_labels)} column labels for values of shape "
            f"{vals_RC.shape}; pass one label per row and per column"
        )
    if not np.isfinite(vals_RC).any():  # nothing to autoscale on
        vmin, vmax = (0.0 if vmin is None else vmin), (1.0 if vmax is None else vmax)
    cell_h = 0.7 if lo_RC is not None else 0.4
    fig = new_figure(max(4.0, 0.9 * n_cols + 2.5), max(3.0, cell_h * n_rows + 1.5))
    ax = fig.add_subplot()
    colormap = matplotlib.colormaps[cmap].with_extremes(bad=NAN_COLOR)
    im = ax.imshow(
        np.ma.masked_invalid(vals_RC),
        cmap=colormap,
        vmin=vmin,
        vmax=vmax,
        aspect="auto",
        interpolation="nearest",
    )
    fig.colorbar(im, ax=ax)
    ax.set_xticks(range(n_cols), labels=list(col_labels))
    ax.set_yticks(range(n_rows), labels=list(row_labels))
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    fontsize = 8 if lo_RC is not None else 9
    for r in range(n_rows):
        for c in range(n_cols):
            lo = None if lo_RC is None else float(lo_RC[r, c])
            hi = None if hi_RC is None else float(hi_RC[r, c])
            text = cell_text(float(vals_RC[r, c]), lo, hi, fmt)
            color = _text_color(im, float(vals_RC[r, c]))
            ax.text(c, r, text, ha="center", va="center", fontsize=fontsize, color=color)
    return fig


@dataclass(frozen=True, eq=False)
class Series:
    """One line of :func:`line_plot`, with an optional band (a CI, or a control's spread)."""

    name: str  # legend label
    y: ArrayLike  # (n_x,) values; NaN breaks the line
    lo: ArrayLike | None = None  # (n_x,) lower edge of the band
    hi: ArrayLike | None = None  # (n_x,) upper edge of the band
    kind: SeriesKind = "effect"  # "control": grey, dashed, drawn under the effects

    def __post_init__(self) -> None:
        if self.kind not in SERIES_KINDS:
            raise ValueError(f"kind must be one of {SERIES_KINDS}, got {self.kind!r}")
        if (self.lo is None) != (self.hi is None):
            raise ValueError(f"series {self.name!r}: pass both lo and hi, or neither")


def _series_arrays(s: Series, n_x: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    arrays = [None if a is None else np.asarray(a, dtype=float) for a in (s.y, s.lo, s.hi)]
    for name, arr in zip(("y", "lo", "hi"), arrays, strict=True):
        if arr is not None and arr.shape != (n_x,):
            raise ShapeError(f"series {s.name!r}: {name} has shape {arr.shape}, x has ({n_x},)")
    y, lo, hi = arrays
    assert y is not None
    return y, lo, hi


def line_plot(
    x: ArrayLike,
    series: Sequence[Series],
    *,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    hline: float | None = None,
) -> Figure:
    """Lines over ``x`` (n_x,), each with a shaded band where it has ``lo``/``hi``.

    Controls are drawn first, grey and dashed; ``hline`` adds a dotted reference line.
    """
    x_X = np.asarray(x, dtype=float)
    if x_X.ndim != 1:
        raise ShapeError(f"x must be 1-D, got shape {x_X.shape}")
    fig = new_figure(6.4, 4.0)
    ax = fig.add_subplot()
    ordered = sorted(series, key=lambda s: s.kind != "control")
    colors = iter(matplotlib.rcParams["axes.prop_cycle"].by_key()["color"] * len(series))
    for s in ordered:
        y, lo, hi = _series_arrays(s, len(x_X))
        control = s.kind == "control"
        color = CONTROL_COLOR if control else next(colors)
        ax.plot(
            x_X,
            y,
            color=color,
            linestyle="--" if control else "-",
            marker="o",
            markersize=3,
            label=s.name,
        )
        if lo is not None and hi is not None:
            ax.fill_between(x_X, lo, hi, color=color, alpha=0.15 if control else 0.25, linewidth=0)
    if hline is not None:
        ax.axhline(hline, color="black", linestyle=":", linewidth=0.8)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    if series:
        ax.legend(fontsize=8)
    return fig


def histogram(
    values: ArrayLike,
    bins: int | Sequence[float] = 30,
    *,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "count",
) -> Figure:
    """A histogram of the finite entries of ``values`` (any shape, flattened)."""
    vals = np.asarray(values, dtype=float).ravel()
    finite = vals[np.isfinite(vals)]
    fig = new_figure(6.4, 4.0)
    ax = fig.add_subplot()
    if finite.size:
        ax.hist(finite, bins=bins, color="#4c72b0", edgecolor="white")
    n_omitted = vals.size - finite.size
    note = "no finite values" if not finite.size else f"{n_omitted} non-finite omitted"
    if n_omitted or not finite.size:
        ax.text(0.98, 0.98, note, transform=ax.transAxes, ha="right", va="top", fontsize=8)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    return fig
