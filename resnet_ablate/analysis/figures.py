"""Figures in the papers' style: seaborn on matplotlib's object API (no pyplot, no global state), one
paper column wide (3.3 in), saved as PNG and PDF at 300 dpi.

Each function takes a long-format frame (one row per run and point) and returns the Figure; the
mean over seeds is the line and the band is over seeds. `save` writes it.
"""
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
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter

WIDTH = 3.3  # inches: one column of a two-column paper
DPI = 300
SPLITS = {"test": ("", 1.6), "train": ((3, 1.5), 0.7)}  # test error bold and solid, training error thin and dashed
MAX_PROBE_PANELS = 4


@contextlib.contextmanager
def style() -> Iterator[None]:
    """Seaborn's paper context and ticks style, for the figures made inside only (lr_find's too)."""
    with mpl.rc_context({**sns.plotting_context("paper", font_scale=0.85), **sns.axes_style("ticks")}):
        yield


def _palette(names: list) -> dict:
    """One colour per name, colour-blind safe up to 10 names."""
    colours = sns.color_palette("colorblind" if len(names) <= 10 else "husl", len(names))
    return dict(zip(names, colours))


def _aggregate(frame: pd.DataFrame, keys: list[str], x: str, y: str, band: str) -> pd.DataFrame:
    """Mean of y over seeds per keys and x, with the band's bounds lo/hi: ±1 sd ("sd") or min-max ("range")."""
    agg = frame.groupby([*keys, x], sort=False)[y].agg(["mean", "std", "min", "max"]).reset_index()
    lo, hi = (agg["mean"] - agg["std"], agg["mean"] + agg["std"]) if band == "sd" else (agg["min"], agg["max"])
    return agg.assign(lo=lo, hi=hi).sort_values([*keys, x])


def _means_and_bands(ax: Axes, frame: pd.DataFrame, x: str, y: str, hue: str, palette: dict, band: str,
                     legend: bool, **line_kw) -> None:
    """Mean lines over seeds (seaborn, one colour per hue) with shaded bands; aggregated once with pandas,
    which is much faster than seaborn's per-point estimator for hundreds of runs."""
    keys = [hue, *[v for v in (line_kw.get("style"), line_kw.get("size")) if v and v != hue]]
    agg = _aggregate(frame, list(dict.fromkeys(keys)), x, y, band)
    for (name, *_), part in agg.groupby(list(dict.fromkeys(keys)), sort=False):
        if (part["hi"] > part["lo"]).any():
            ax.fill_between(part[x], part["lo"], part["hi"], color=palette[name], alpha=0.2, linewidth=0)
    sns.lineplot(data=agg, x=x, y="mean", hue=hue, hue_order=list(palette), palette=palette, estimator=None,
                 sort=False, ax=ax, legend=legend, **line_kw)


def _curves(ax: Axes, frame: pd.DataFrame, hue: str, palette: dict, legend: bool) -> None:
    """Error vs iteration: mean over seeds with a ±1 sd band, test bold, training dashed."""
    _means_and_bands(ax, frame, "iteration", "error", hue, palette, "sd", legend,
                     style="split", style_order=list(SPLITS), dashes={k: v[0] for k, v in SPLITS.items()},
                     size="split", size_order=list(SPLITS), sizes={k: v[1] for k, v in SPLITS.items()})
    ax.set(xlabel="iterations", ylabel="error (%)")
    _thousands(ax)


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


def _legend_below(fig: Figure, ax: Axes, columns: int = 2) -> None:
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


def _thousands(ax: Axes) -> None:
    """Iteration ticks as 16k, 32k, ..."""
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1000:g}k" if abs(v) >= 1000 else f"{v:g}"))


def training_curves(frame: pd.DataFrame, title: str = "") -> Figure:
    """Columns variant, seed, iteration, split (test|train), error: one colour per variant."""
    with style():
        fig = Figure(figsize=(WIDTH, 2.2), layout="constrained")
        ax = fig.subplots()
        _curves(ax, frame, "variant", _palette(list(dict.fromkeys(frame["variant"]))), legend=True)
        ax.set_title(fit_title(title), fontsize="small")
        _legend_below(fig, ax)
    return fig


def degradation(frame: pd.DataFrame, title: str = "") -> Figure:
    """2015 Fig. 6: plain nets left, ResNets right; columns net (plain|ResNet), depth, seed, iteration,
    split, error; one colour per depth, the same in both panels."""
    frame = frame.assign(layers=frame["depth"].map(lambda d: f"{d}-layer"))
    palette = _palette([f"{d}-layer" for d in sorted(frame["depth"].unique())])
    with style():
        fig = Figure(figsize=(WIDTH, 2.0), layout="constrained")
        axes = fig.subplots(1, 2, sharey=True)
        for ax, net in zip(axes, ("plain", "ResNet")):
            part = frame[frame["net"] == net]
            _curves(ax, part, "layers", {k: v for k, v in palette.items() if k in set(part["layers"])},
                    legend=net == "ResNet")
            ax.set_title(f"{net}", fontsize="small")
        fig.suptitle(fit_title(title), fontsize="small")
        _legend_below(fig, axes[1], columns=3)
    return fig


def probe_iterations(iterations: list[int]) -> list[int]:
    """The probed iterations drawn: all when few, else the first, the last and evenly spaced ones."""
    its = sorted(set(iterations))
    if len(its) <= MAX_PROBE_PANELS:
        return its
    step = (len(its) - 1) / (MAX_PROBE_PANELS - 1)
    return [its[round(i * step)] for i in range(MAX_PROBE_PANELS)]


def gradient_norms(frame: pd.DataFrame, title: str = "", ylabel: str = "grad. RMS", note: str = "") -> Figure:
    """Per-unit input-gradient RMS or norm (log scale) vs unit index, one row of panels per probed iteration and
    one column per `path` in the frame (total; shortcut path, beside it); columns variant, seed, iteration,
    unit, norm, and optionally path and stage (dotted lines where the stage changes); line = mean over seeds,
    band = their range. `note` goes under the title (what the shortcut-path panels measure)."""
    frame = frame if "path" in frame else frame.assign(path="total")
    shown, paths = probe_iterations(frame["iteration"].tolist()), list(dict.fromkeys(frame["path"]))
    palette = _palette(list(dict.fromkeys(frame["variant"])))
    with style():
        fig = Figure(figsize=(WIDTH * len(paths), 0.4 + 1.3 * len(shown)), layout="constrained")
        grid = fig.subplots(len(shown), len(paths), sharex=True, squeeze=False)
        for row, it in zip(grid, shown):
            for ax, path in zip(row, paths):
                part = frame[(frame["iteration"] == it) & (frame["path"] == path)]
                part = part[part["norm"] > 0]  # log axis: a plain net has no shortcut path (zeros)
                if not part.empty:
                    _means_and_bands(ax, part, "unit", "norm", "variant", palette, "range", legend=ax is grid[0, 0],
                                     marker=".")
                _stage_lines(ax, part)
                ax.set_yscale("log")
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
                ax.set(ylabel=ylabel if ax is row[0] else "", xlabel="unit index (input → output)")
                ax.set_title(f"iteration {it}" if len(paths) == 1 else f"{path}, iteration {it}", fontsize="small")
        text = fit_title(title, fig.get_figwidth())
        fig.suptitle(text + (f"\n{fit_title(note, fig.get_figwidth(), 'x-small')}" if note else ""), fontsize="small")
        _legend_below(fig, grid[0, 0])
    return fig


def _stage_lines(ax: Axes, part: pd.DataFrame) -> None:
    """Dotted vertical lines between stages (where a unit's input shape changes), from the frame's stage."""
    if "stage" not in part or part.empty:
        return
    first = part.groupby("stage")["unit"].min()
    for stage, unit in first.items():
        if stage > 1:
            ax.axvline(unit - 0.5, color="0.6", linestyle=":", linewidth=0.8)


def layer_responses(frame: pd.DataFrame, title: str = "") -> Figure:
    """2015 Fig. 7: std of each 3x3 layer's response, top in layer order, bottom sorted in descending order;
    columns variant, seed, layer, rank, std; line = mean over seeds, band = their range."""
    palette = _palette(list(dict.fromkeys(frame["variant"])))
    with style():
        fig = Figure(figsize=(WIDTH, 3.2), layout="constrained")
        axes = fig.subplots(2, 1)
        for ax, x, xlabel in zip(axes, ("layer", "rank"), ("layer index (original)", "layer index (sorted by std)")):
            _means_and_bands(ax, frame, x, "std", "variant", palette, "range", legend=ax is axes[0])
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set(xlabel=xlabel, ylabel="std")
        fig.suptitle(fit_title(title), fontsize="small")
        _legend_below(fig, axes[0], columns=3)
    return fig


def error_vs_depth(frame: pd.DataFrame, title: str = "") -> Figure:
    """Final test error vs depth (log axis, ticks at the depths) for plain and residual nets; columns
    net, depth, seed, error; points = mean over seeds, bars = ±1 sd."""
    depths = sorted(frame["depth"].unique())
    with style():
        fig = Figure(figsize=(WIDTH, 2.1), layout="constrained")
        ax = fig.subplots()
        sns.lineplot(data=frame, x="depth", y="error", hue="net", palette=_palette(list(dict.fromkeys(frame["net"]))),
                     marker="o", errorbar="sd", err_style="bars", ax=ax)
        ax.set_xscale("log")
        ax.set_xticks(depths, [str(d) for d in depths])
        ax.minorticks_off()
        ax.set(xlabel="depth (layers)", ylabel="test error (%)")
        ax.set_title(fit_title(title), fontsize="small")
        _legend_below(fig, ax)
    return fig


def metric_vs_params(frame: pd.DataFrame, params: list[str], log: set[str], title: str = "") -> Figure:
    """Final test error vs each searched parameter, one panel each (log x for those in `log`, strips for
    categorical ones); columns the params and error, one row per run."""
    with style():
        fig = Figure(figsize=(max(WIDTH, 1.7 * len(params)), 2.0), layout="constrained")
        axes = fig.subplots(1, len(params), sharey=True, squeeze=False)[0]
        for ax, param in zip(axes, params):
            numeric = pd.api.types.is_numeric_dtype(frame[param]) and not pd.api.types.is_bool_dtype(frame[param])
            colour = sns.color_palette("colorblind")[0]
            if numeric:
                sns.scatterplot(data=frame, x=param, y="error", ax=ax, color=colour, s=18)
            else:
                sns.stripplot(data=frame.assign(**{param: frame[param].astype(str)}), x=param, y="error", ax=ax,
                              color=colour, size=4)
            if param in log:
                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set(xlabel=param, ylabel="test error (%)")
        fig.suptitle(fit_title(title, fig.get_figwidth()), fontsize="small")
    return fig


def save(fig: Figure, base: Path, formats: tuple[str, ...]) -> list[Path]:
    """Write `fig` as base.<fmt> for each format at 300 dpi; returns the paths."""
    paths = [base.parent / f"{base.name}.{fmt}" for fmt in formats]
    for path in paths:
        fig.savefig(path, dpi=DPI)
    return paths
