"""The house style of every figure: seaborn on matplotlib's object API (no pyplot, no global state), one
paper column wide (3.3 in), colour-blind safe colours, the mean over seeds as the line with a band over seeds,
the legend under the plot, saved as PNG and PDF at 300 dpi. Used by the report's figures (`figures`), the
sweep view and lr_find."""
from __future__ import annotations

import contextlib
import math
import textwrap
from pathlib import Path
from typing import Iterator

import matplotlib as mpl
import pandas as pd
import seaborn as sns
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter

WIDTH = 3.3  # inches: one column of a two-column paper
DPI = 300


@contextlib.contextmanager
def style() -> Iterator[None]:
    """Seaborn's paper context and ticks style, for the figures made inside only (lr_find's too)."""
    with mpl.rc_context({**sns.plotting_context("paper", font_scale=0.85), **sns.axes_style("ticks")}):
        yield


def palette(names: list) -> dict:
    """One colour per name, colour-blind safe up to 10 names."""
    colours = sns.color_palette("colorblind" if len(names) <= 10 else "husl", len(names))
    return dict(zip(names, colours))


def _aggregate(frame: pd.DataFrame, keys: list[str], x: str, y: str, band: str) -> pd.DataFrame:
    """Mean of y over seeds per keys and x, with the band's bounds lo/hi: ±1 sd ("sd") or min-max ("range")."""
    agg = frame.groupby([*keys, x], sort=False)[y].agg(["mean", "std", "min", "max"]).reset_index()
    lo, hi = (agg["mean"] - agg["std"], agg["mean"] + agg["std"]) if band == "sd" else (agg["min"], agg["max"])
    return agg.assign(lo=lo, hi=hi).sort_values([*keys, x])


def means_and_bands(ax: Axes, frame: pd.DataFrame, x: str, y: str, hue: str, palette: dict, band: str,
                     legend: bool, **line_kw) -> None:
    """Mean lines over seeds (seaborn, one colour per hue) with shaded bands; aggregated once with pandas,
    which is much faster than seaborn's per-point estimator for hundreds of runs. Where a line has one point
    (a run evaluated once), every line gets markers: a line of one point draws nothing."""
    keys = [hue, *[v for v in (line_kw.get("style"), line_kw.get("size")) if v and v != hue]]
    agg = _aggregate(frame, list(dict.fromkeys(keys)), x, y, band)
    if (agg.groupby(list(dict.fromkeys(keys)), sort=False)[x].nunique() == 1).any():
        line_kw = {"marker": "o", "markersize": 3, **line_kw}
    for (name, *_), part in agg.groupby(list(dict.fromkeys(keys)), sort=False):
        if (part["hi"] > part["lo"]).any():
            ax.fill_between(part[x], part["lo"], part["hi"], color=palette[name], alpha=0.2, linewidth=0)
    sns.lineplot(data=agg, x=x, y="mean", hue=hue, hue_order=list(palette), palette=palette, estimator=None,
                 sort=False, ax=ax, legend=legend, **line_kw)


def _is_heading(handle: Artist) -> bool:
    """seaborn's sub-title entries ('split', the hue's name) are lines of width 0 without a marker."""
    return isinstance(handle, Line2D) and handle.get_linewidth() == 0 and handle.get_marker() in ("None", "", None)


def _sections(handles: list[Artist], labels: list[str]) -> list[list[tuple[Artist, str]]]:
    """The legend's entries split into sections, each starting at a sub-title entry."""
    sections: list[list[tuple[Artist, str]]] = []
    for handle, label in zip(handles, labels):
        if _is_heading(handle) or not sections:
            sections.append([])
        sections[-1].append((handle, label))
    return sections


def legend_below(fig: Figure, ax: Axes, columns: int = 2) -> None:
    """Move an axes' legend under the plot and grow the figure's height for it, so the plot keeps the
    column's width and its own height. With several columns, each section (a sub-title and its entries,
    e.g. 'split' with 'test' and 'train') fills a column of its own, so no entry lands under another's
    heading; long labels get one column, the sections one below the other."""
    handles, labels = ax.get_legend_handles_labels()
    if ax.get_legend() is not None:
        ax.get_legend().remove()
    sections = _sections(handles, labels)
    if max(map(len, labels), default=0) > 24 or len(sections) < 2 or columns < 2:
        entries, columns = [e for section in sections for e in section], 1
    else:
        rows = max(map(len, sections))
        blank = (Line2D([], [], linestyle="none"), "")
        entries = [e for section in sections for e in [*section, *[blank] * (rows - len(section))]]
        columns = len(sections)
    fig.set_figheight(fig.get_figheight() + 0.14 * math.ceil(len(entries) / columns))
    fig.legend([h for h, _ in entries], [label for _, label in entries], loc="outside lower center", ncols=columns,
               frameon=False, fontsize="x-small")


def fit_title(text: str, width: float = WIDTH, size: str | float = "small") -> str:
    """A title wrapped to the figure's width (at spaces), so that a long one is not clipped at the edges."""
    points = FontProperties(size=size).get_size_in_points()
    return "\n".join(textwrap.wrap(text, max(20, int(width * 72 / (0.6 * points))), break_on_hyphens=False))


def thousands(ax: Axes) -> None:
    """Iteration ticks as 16k, 32k, ..."""
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1000:g}k" if abs(v) >= 1000 else f"{v:g}"))


def save(fig: Figure, base: Path, formats: tuple[str, ...]) -> list[Path]:
    """Write `fig` as base.<fmt> for each format at 300 dpi; returns the paths."""
    paths = [base.parent / f"{base.name}.{fmt}" for fmt in formats]
    for path in paths:
        fig.savefig(path, dpi=DPI)
    return paths
