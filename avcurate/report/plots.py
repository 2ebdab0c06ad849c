"""The report's charts, drawn with matplotlib (Agg, no pyplot state) as SVG text to inline in the page.

Deterministic: ids inside each SVG are hashed with a salt of the chart's own name (also keeping ids unique
across the page's charts), and the SVG metadata carries no date.
"""

from __future__ import annotations

import io
import math
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from .scores import Score

KEPT_COLOUR = "#3a7bd5"
REJECTED_COLOUR = "#e8833a"
WALL_COLOUR = "#8c8c8c"
THRESHOLD_COLOUR = "#c0392b"
_STYLE = {
    "svg.fonttype": "none",  # text stays text, in the page's own fonts: smaller, and selectable
    "text.parse_math": False,  # labels are data (a manifest's license "A$_$B"): never mathtext
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
}
_WIDTH_IN = 6.0
_HISTOGRAM_HEIGHT_IN = 2.4
_BINS = 40
# At most this many intervals between ticks on a numeric axis: enough to read a value off, and each tick is a
# good part of what drawing a chart costs.
_TICKS = 5


def histogram(score: Score, kept: np.ndarray) -> str:
    """Kept and rejected clips stacked over one score's range, each rule's bounds drawn as vertical lines with
    ids `threshold-{score}-{rule number}-{min|max}`."""
    finite = np.isfinite(score.values)
    bounds = [b for on in score.rules for b in (on.rule.min, on.rule.max) if b is not None]
    name = f"histogram-{score.name}"
    with _style(name):
        fig = Figure(figsize=(_WIDTH_IN, _HISTOGRAM_HEIGHT_IN))
        ax = fig.subplots(gridspec_kw=_margins(0.75, _HISTOGRAM_HEIGHT_IN, top=0.3))
        if finite.any():
            edges = _edges(score.values[finite], bounds)
            # Counted by numpy and drawn as two filled outlines, rejected stacked on kept: what `hist(stacked=True)`
            # draws, at a fraction of its cost.
            below, _ = np.histogram(score.values[finite & kept], edges)
            above, _ = np.histogram(score.values[finite & ~kept], edges)
            ax.stairs(below, edges, fill=True, color=KEPT_COLOUR, label="kept")
            ax.stairs(below + above, edges, baseline=below, fill=True, color=REJECTED_COLOUR, label="rejected")
            ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncols=2, frameon=False, fontsize=8)
        else:
            ax.text(0.5, 0.5, "not measured on any clip", ha="center", va="center", transform=ax.transAxes)
        low, high = ax.get_xlim()
        for number, on in enumerate(score.rules):
            for bound, value in (("min", on.rule.min), ("max", on.rule.max)):
                if value is None:
                    continue
                line = ax.axvline(value, color=THRESHOLD_COLOUR, linestyle="--", linewidth=1.5)
                line.set_gid(f"threshold-{score.name}-{number}-{bound}")
                left = value > (low + high) / 2  # the label on the side with room
                ax.annotate(f"{bound} {value:g}", (value, 1.0), xycoords=("data", "axes fraction"),
                            xytext=(-3 if left else 3, -10), textcoords="offset points", ha="right" if left else "left",
                            color=THRESHOLD_COLOUR, fontsize=8)  # fmt: skip
        ax.set_xlabel(score.name)
        ax.set_ylabel("clips")
        ax.xaxis.get_major_locator().set_params(nbins=_TICKS)
        ax.yaxis.get_major_locator().set_params(integer=True, nbins=_TICKS)
        return _svg(fig)


def _edges(values: np.ndarray, bounds: list[float]) -> np.ndarray:
    """Bins over the values and the thresholds, so every line falls on the plot; whole-number scores get a
    bin per number."""
    low, high = float(min([values.min(), *bounds])), float(max([values.max(), *bounds]))
    whole = np.all(values == np.round(values)) and all(float(b).is_integer() for b in bounds)
    if whole and 1 <= high - low <= _BINS:
        return np.arange(math.floor(low) - 0.5, math.ceil(high) + 1.5)
    if high == low:
        low, high = low - 0.5, high + 0.5
    return np.linspace(low, high, _BINS + 1)


def bars(name: str, labels: list[str], series: dict[str, list[float]], xlabel: str) -> str:
    """Horizontal bars, a group per label (top to bottom in the given order), a colour per series."""
    colours = [KEPT_COLOUR, WALL_COLOUR, REJECTED_COLOUR]
    with _style(name):
        height_in = 0.75 + 0.28 * len(labels) * max(1.0, len(series) * 0.7)
        fig = Figure(figsize=(_WIDTH_IN, height_in))
        # Room on the left for the longest label: fixed margins draw once, where a layout engine draws twice.
        ax = fig.subplots(gridspec_kw=_margins(0.3 + 0.065 * max(map(len, labels), default=1), height_in, top=0.1))
        height = 0.8 / len(series)
        rows = np.arange(len(labels))
        for number, (label, values) in enumerate(series.items()):
            offset = (number - (len(series) - 1) / 2) * height
            drawn = ax.barh(rows + offset, values, height=height, color=colours[number % len(colours)], label=label)
            ax.bar_label(drawn, labels=[_short(v) for v in values], padding=2, fontsize=8)
        ax.set_yticks(rows, labels)
        ax.invert_yaxis()
        ax.set_xlabel(xlabel)
        ax.margins(x=0.12)
        ax.xaxis.get_major_locator().set_params(nbins=_TICKS)
        if len(series) > 1:
            ax.legend(loc="lower right", frameon=False, fontsize=8)
        return _svg(fig)


def _margins(left_in: float, height_in: float, top: float) -> dict[str, float]:
    """Subplot margins, given in inches (left, top) and as the room tick labels and an axis label need below."""
    return {"left": left_in / _WIDTH_IN, "right": 0.97, "top": 1 - top / height_in, "bottom": 0.5 / height_in}


def _short(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() or abs(value) >= 100 else f"{value:.3g}"


def _style(name: str) -> Any:
    """The charts' look, and the salt of the SVG ids of the chart `name`: wraps drawing and saving alike."""
    return matplotlib.rc_context({**_STYLE, "svg.hashsalt": name})


def _svg(fig: Figure) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    return text[text.index("<svg") :]  # inline: no XML declaration or doctype
