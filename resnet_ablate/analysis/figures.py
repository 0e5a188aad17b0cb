"""The report's figures, one registered entry each (`FIGURES`, a `FigureInfo` per figure, beside its drawing
function): which groups one figure compares (`per`: a `Grouping` splits the groups into the figures' `Scope`s),
the data it draws (`frame`: a long-format frame from `frames`, one row per run and point), whether a scope has
anything to draw (`shows`), the drawing (`draw`) and its caption in report.md (`caption`: the legend's
explanation, the budget, what the panels measure, so the panels keep their room). `draw_figures` draws every
entry for every scope, so a new figure from an existing measurement is a drawing function and its entry, here.

Each drawing function takes the frame and returns the Figure in the house style (`plotting`): the mean over
seeds is the line and the band is over seeds; a run with one evaluation is a point, never an empty panel."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..registry import Registry
from . import frames
from .plotting import WIDTH, fit_title, legend_below, means_and_bands, palette, save, style, thousands
from .scan import SeedGroup, contexts, model_variant, shortcut_params, sort_key, variant_label, varying
from .tables import PAPER_ITERATIONS, schedule

SPLITS = {"test": ("", 1.6), "train": ((3, 1.5), 0.7)}  # test error bold and solid, training error thin and dashed
MAX_PROBE_PANELS = 4


@dataclass(frozen=True)
class Scope:
    """What one figure shows: the groups it compares, the settings that set them apart from the other
    figures' groups (`context`, '' where none do; part of the file name), its title, the probe's measure
    (--grad-measure), the model-variant settings that differ between the groups (what a legend names) and a
    reduced schedule they share ('' for the papers'; the caption says it)."""

    groups: list[SeedGroup]
    context: str
    title: str
    measure: str
    keys: frozenset[str]
    budget: str = ""

    def label(self, g: SeedGroup) -> str:
        """A group's legend entry: its model variant, naming only the settings that differ."""
        return variant_label(g.settings, set(self.keys))


def _every(g: SeedGroup) -> bool:
    return True


@dataclass(frozen=True)
class Grouping:
    """How the groups split into figures: one per combination of the settings outside `compared` (the
    settings a figure's lines tell apart), among the groups `keeps` admits."""

    compared: Callable[[], tuple[str, ...]]
    keeps: Callable[[SeedGroup], bool] = _every

    def scopes(self, groups: list[SeedGroup], title: str, measure: str) -> list[Scope]:
        """The figures' scopes, each titled by the report's title and its context."""
        kept = [g for g in groups if self.keeps(g)]
        return [Scope(gs, context, ", ".join(filter(None, [title, context])), measure,
                      frozenset(varying(gs, model_variant())), _budget(gs))
                for context, gs in contexts(kept, self.compared())]


def _budget(groups: list[SeedGroup]) -> str:
    """'reduced: N it' when the groups share a schedule shorter than the papers', else ''."""
    its = {g.settings["iterations"] for g in groups}
    return schedule(its.pop()) if len(its) == 1 and PAPER_ITERATIONS not in its else ""


def _not_empty(frame: pd.DataFrame) -> bool:
    return not frame.empty


def _no_caption(frame: pd.DataFrame, scope: Scope) -> str:
    return ""


def seeds_text(frame: pd.DataFrame, line: list[str]) -> str:
    """'3 seeds' or '1-5 seeds' per line of the figure (a line: one value of each column in `line`)."""
    n = frame.groupby(line)["seed"].nunique()
    low, high = (int(n.min()), int(n.max())) if len(n) else (0, 0)
    return f"{low} seed{'s' * (high != 1)}" if low == high else f"{low}-{high} seeds"


def budget_text(scope: Scope) -> str:
    return f" Budget: {scope.budget} (the papers train 64k iterations)." if scope.budget else ""


def points_text(frame: pd.DataFrame, line: list[str], x: str = "iteration") -> str:
    single = frame.groupby(line)[x].nunique()
    return " Lines with one evaluation are drawn as points." if len(single) and (single == 1).any() else ""


@dataclass(frozen=True)
class FigureInfo:
    """A report figure, registered under the name its files carry (<prefix>-<name>[-<context>].<format>): its
    grouping (`per`), its data for a scope (`frame`), whether that frame has anything to draw (`shows`), and
    the drawing (`draw`, the frame and the scope to a Figure)."""

    per: Grouping
    frame: Callable[[Scope], pd.DataFrame]
    draw: Callable[[pd.DataFrame, Scope], Figure]
    shows: Callable[[pd.DataFrame], bool] = _not_empty
    caption: Callable[[pd.DataFrame, Scope], str] = _no_caption


FIGURES: Registry[FigureInfo] = Registry("figure")

# the groupings: a figure per combination of the settings outside the model variant (its lines: the variants);
# the same with the depths in one figure; plain nets and ResNets (identity shortcuts) of every depth in one
VARIANTS = Grouping(model_variant)
VARIANTS_BY_DEPTH = Grouping(lambda: (*model_variant(), "depth"))
PLAIN_VS_RESNET = Grouping(lambda: ("depth", "shortcut", *shortcut_params()),
                           lambda g: g.settings["shortcut"] in ("identity", "none"))


def _curves(ax: Axes, frame: pd.DataFrame, hue: str, colours: dict, legend: bool) -> None:
    """Error vs iteration: mean over seeds with a ±1 sd band, test bold, training dashed."""
    means_and_bands(ax, frame, "iteration", "error", hue, colours, "sd", legend,
                    style="split", style_order=list(SPLITS), dashes={k: v[0] for k, v in SPLITS.items()},
                    size="split", size_order=list(SPLITS), sizes={k: v[1] for k, v in SPLITS.items()})
    ax.set(xlabel="iterations", ylabel="error (%)")
    thousands(ax)


def training_curves(frame: pd.DataFrame, title: str = "") -> Figure:
    """Columns variant, seed, iteration, split (test|train), error and optionally loss: one colour per variant;
    the error above, and below it the training loss (thin dashed, as the 2016 paper's figures draw it) where
    the runs recorded one."""
    colours = palette(list(dict.fromkeys(frame["variant"])))
    train = frame[frame["split"] == "train"].dropna(subset=["loss"]) if "loss" in frame else frame.iloc[:0]
    with style():
        fig = Figure(figsize=(WIDTH, 3.6 if len(train) else 2.2), layout="constrained")
        ax, *below = fig.subplots(2 if len(train) else 1, 1, sharex=True, squeeze=False)[:, 0]
        _curves(ax, frame, "variant", colours, legend=True)
        ax.set_title(fit_title(title), fontsize="small")
        if below:
            means_and_bands(below[0], train, "iteration", "loss", "variant", colours, "sd", False,
                            dashes=False, linestyle=(0, SPLITS["train"][0]), linewidth=SPLITS["train"][1])
            below[0].set(xlabel="iterations", ylabel="training loss")
            ax.set(xlabel="")
            thousands(below[0])
        legend_below(fig, ax)
    return fig


def _curves_caption(frame: pd.DataFrame, scope: Scope) -> str:
    return (f"Error (%) against iterations: test error bold and solid, training error thin and dashed; line = mean "
            f"over {seeds_text(frame, ['variant'])}, band = ±1 sd.{budget_text(scope)}"
            f"{points_text(frame, ['variant', 'split'])}")


FIGURES.register("curves")(FigureInfo(VARIANTS, lambda s: frames.curve_frame(s.groups, s.label),
                                      lambda frame, s: training_curves(frame, s.title), caption=_curves_caption))


def probe_iterations(iterations: list[int]) -> list[int]:
    """The probed iterations drawn: all when few, else the first, the last and evenly spaced ones."""
    its = sorted(set(iterations))
    if len(its) <= MAX_PROBE_PANELS:
        return its
    step = (len(its) - 1) / (MAX_PROBE_PANELS - 1)
    return [its[round(i * step)] for i in range(MAX_PROBE_PANELS)]


def gradient_norms(frame: pd.DataFrame, title: str = "", ylabel: str = "grad. RMS") -> Figure:
    """Per-unit input-gradient RMS or norm (log scale) vs unit index, one row of panels per probed iteration and
    one column per `path` in the frame that has a value (total; shortcut path, beside it: a plain net has none);
    columns variant, seed, iteration, unit, norm, and optionally path and stage (dotted lines where the stage
    changes); line = mean over seeds, band = their range. What the panels measure is the caption's."""
    frame = frame if "path" in frame else frame.assign(path="total")
    frame = frame[frame["norm"] > 0]  # log axis: a plain net has no shortcut path (zeros)
    shown, paths = probe_iterations(frame["iteration"].tolist()), list(dict.fromkeys(frame["path"]))
    colours = palette(list(dict.fromkeys(frame["variant"])))
    with style():
        fig = Figure(figsize=(WIDTH * len(paths), 0.4 + 1.3 * len(shown)), layout="constrained")
        grid = fig.subplots(len(shown), len(paths), sharex=True, squeeze=False)
        for row, it in zip(grid, shown):
            for ax, path in zip(row, paths):
                part = frame[(frame["iteration"] == it) & (frame["path"] == path)]
                if not part.empty:
                    means_and_bands(ax, part, "unit", "norm", "variant", colours, "range", legend=ax is grid[0, 0],
                                    marker=".")
                _stage_lines(ax, part)
                ax.set_yscale("log")
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
                ax.set(ylabel=ylabel if ax is row[0] else "", xlabel="unit index (input → output)")
                ax.set_title(f"iteration {it}" if len(paths) == 1 else f"{path}, iteration {it}", fontsize="small")
        fig.suptitle(fit_title(title, fig.get_figwidth()), fontsize="small")
        legend_below(fig, grid[0, 0])
    return fig


def _stage_lines(ax: Axes, part: pd.DataFrame) -> None:
    """Dotted vertical lines between stages (where a unit's input shape changes), from the frame's stage."""
    if "stage" not in part or part.empty:
        return
    first = part.groupby("stage")["unit"].min()
    for stage, unit in first.items():
        if stage > 1:
            ax.axvline(unit - 0.5, color="0.6", linestyle=":", linewidth=0.8)


def shortcut_note(units: set[str]) -> str:
    """What the figure's shortcut-path panels measure, for nets of these units."""
    pure = units <= {"full_preact"}
    return ("Right: through the shortcuts only (residual branches detached), the 2016 paper's Eq. 5 term; "
            + ("full pre-activation units: a pure identity path, constant within a stage for identity shortcuts"
               if pure else "after original units a ReLU follows every addition, so the path is not pure identity;"
               " Eq. 5 holds for full pre-activation units")
            + " (a plain net has none); dotted lines: zero-pad transitions, which change the RMS by geometry: "
              "compare within a stage")


def _gradnorm_caption(frame: pd.DataFrame, scope: Scope) -> str:
    """What the panels measure, and the note on the shortcut-path panels where drawn."""
    shortcut_path = ((frame["path"] != frames.PATHS[0]) & (frame["norm"] > 0)).any()
    note = f" {shortcut_note({g.settings['unit'] for g in scope.groups})}." if shortcut_path else ""
    return (f"Per-unit input-gradient {frames.GRAD_MEASURES[scope.measure][2]} (log scale), input to output, a row "
            f"per probed iteration; line = mean over {seeds_text(frame, ['variant'])}, band = their range.{note}"
            f"{budget_text(scope)}")


FIGURES.register("gradnorm")(FigureInfo(
    VARIANTS, lambda s: frames.probe_frame(s.groups, s.label, s.measure),
    lambda frame, s: gradient_norms(frame, s.title, frames.GRAD_MEASURES[s.measure][2]),
    lambda frame: (frame["norm"] > 0).any(), _gradnorm_caption))


def layer_responses(frame: pd.DataFrame, title: str = "") -> Figure:
    """2015 Fig. 7: std of each 3x3 layer's response, top in layer order, bottom sorted in descending order;
    columns variant, seed, layer, rank, std; line = mean over seeds, band = their range."""
    colours = palette(list(dict.fromkeys(frame["variant"])))
    with style():
        fig = Figure(figsize=(WIDTH, 3.2), layout="constrained")
        axes = fig.subplots(2, 1)
        for ax, x, xlabel in zip(axes, ("layer", "rank"), ("layer index (original)", "layer index (sorted by std)")):
            means_and_bands(ax, frame, x, "std", "variant", colours, "range", legend=ax is axes[0])
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set(xlabel=xlabel, ylabel="std")
        fig.suptitle(fit_title(title), fontsize="small")
        legend_below(fig, axes[0], columns=3)
    return fig


def _response_label(g: SeedGroup, keys: set[str]) -> str:
    """'plain-20', 'ResNet-56' as in 2015 Fig. 7 (other variants by their label), with the depth."""
    paper_nets = keys <= {"shortcut"} and g.settings["shortcut"] in ("identity", "none")
    return f"{_net(g) if paper_nets else variant_label(g.settings, keys)}-{g.settings['depth']}"


def _responses(scope: Scope) -> pd.DataFrame:
    """The response frame, plain nets first and shallow before deep, as the 2015 paper's Fig. 7."""
    ordered = sorted(scope.groups, key=lambda g: (g.settings["shortcut"] != "none", g.settings["depth"]))
    return frames.response_frame(ordered, lambda g: _response_label(g, scope.keys))


def _responses_caption(frame: pd.DataFrame, scope: Scope) -> str:
    return (f"As the 2015 paper's Fig. 7: the std of each 3x3 layer's response at the run's end, top in layer "
            f"order, bottom sorted in descending order; line = mean over {seeds_text(frame, ['variant'])}, band = "
            f"their range.{budget_text(scope)}")


FIGURES.register("responses")(FigureInfo(VARIANTS_BY_DEPTH, _responses,
                                         lambda frame, s: layer_responses(frame, s.title),
                                         caption=_responses_caption))

def _net(g: SeedGroup) -> str:
    return "plain" if g.settings["shortcut"] == "none" else "ResNet"


def degradation(frame: pd.DataFrame, title: str = "") -> Figure:
    """2015 Fig. 6: plain nets left, ResNets right; columns net (plain|ResNet), depth, seed, iteration,
    split, error; one colour per depth, the same in both panels."""
    frame = frame.assign(layers=frame["depth"].map(lambda d: f"{d}-layer"))
    colours = palette([f"{d}-layer" for d in sorted(frame["depth"].unique())])
    with style():
        fig = Figure(figsize=(WIDTH, 2.0), layout="constrained")
        axes = fig.subplots(1, 2, sharey=True)
        for ax, net in zip(axes, ("plain", "ResNet")):
            part = frame[frame["net"] == net]
            _curves(ax, part, "layers", {k: v for k, v in colours.items() if k in set(part["layers"])},
                    legend=net == "ResNet")
            ax.set_title(f"{net}", fontsize="small")
        fig.suptitle(fit_title(title), fontsize="small")
        legend_below(fig, axes[1], columns=3)
    return fig


def _net_curves(scope: Scope) -> pd.DataFrame:
    """Each group's curves with its net (plain | ResNet) and depth."""
    curves = pd.concat([frames.curve_frame([g], _net).assign(depth=g.settings["depth"]) for g in scope.groups])
    return curves.rename(columns={"variant": "net"})


def _degradation_caption(frame: pd.DataFrame, scope: Scope) -> str:
    return (f"As the 2015 paper's Fig. 6: plain nets left, ResNets (identity shortcuts) right, a colour per depth; "
            f"thin dashed: training error, bold: test error; line = mean over {seeds_text(frame, ['net', 'depth'])}, "
            f"band = ±1 sd.{budget_text(scope)}{points_text(frame, ['net', 'depth', 'split'])}")


FIGURES.register("degradation")(FigureInfo(PLAIN_VS_RESNET, _net_curves,
                                           lambda frame, s: degradation(frame, s.title),
                                           lambda frame: set(frame["net"]) == {"plain", "ResNet"},
                                           _degradation_caption))


def error_vs_depth(frame: pd.DataFrame, title: str = "") -> Figure:
    """Final test error vs depth (log axis, ticks at the depths) for plain and residual nets; columns
    net, depth, seed, error; points = mean over seeds, bars = ±1 sd."""
    depths = sorted(frame["depth"].unique())
    with style():
        fig = Figure(figsize=(WIDTH, 2.1), layout="constrained")
        ax = fig.subplots()
        sns.lineplot(data=frame, x="depth", y="error", hue="net", palette=palette(list(dict.fromkeys(frame["net"]))),
                     marker="o", errorbar="sd", err_style="bars", ax=ax)
        ax.set_xscale("log")
        ax.set_xticks(depths, [str(d) for d in depths])
        ax.minorticks_off()
        ax.set(xlabel="depth (layers)", ylabel="test error (%)")
        ax.set_title(fit_title(title), fontsize="small")
        legend_below(fig, ax)
    return fig


def _finals(scope: Scope) -> pd.DataFrame:
    """The final test error of every run that did not fail, with its net and depth."""
    return pd.DataFrame([{"net": _net(g), "depth": g.settings["depth"], "seed": r.seed,
                          "error": r.result["final_test_error"]} for g in scope.groups for r in g.runs
                         if r.status == "done"], columns=["net", "depth", "seed", "error"])


def _depth_caption(frame: pd.DataFrame, scope: Scope) -> str:
    return (f"Final test error against depth (log axis) of the runs that did not fail; points = mean over "
            f"{seeds_text(frame, ['net', 'depth'])}, bars = ±1 sd.{budget_text(scope)}")


FIGURES.register("depth")(FigureInfo(PLAIN_VS_RESNET, _finals, lambda frame, s: error_vs_depth(frame, s.title),
                                     lambda frame: frame["depth"].nunique() > 1, _depth_caption))


def slug(text: str) -> str:
    """A file-name part: runs of other characters than letters, digits, '.', '=' and '-' become '_'."""
    return re.sub(r"[^A-Za-z0-9.=-]+", "_", text).strip("_") or "runs"


def draw_figures(groups: list[SeedGroup], out: Path, prefix: str, title: str, formats: tuple[str, ...],
                 measure: str = "rms") -> list[tuple[list[Path], str]]:
    """Every registered figure for every scope it has data for (gradient figures of the probe's `measure`);
    returns each figure's files with its caption. The figures of one grouping are drawn scope by scope, in the
    order registered."""
    groups = sorted(groups, key=lambda g: sort_key(g.settings, model_variant()))  # legends in the papers' order
    entries = {name: FIGURES.get(name) for name in FIGURES}
    written: list[tuple[list[Path], str]] = []
    for per in dict.fromkeys(entry.per for entry in entries.values()):
        for scope in per.scopes(groups, title, measure):
            for name, entry in ((n, e) for n, e in entries.items() if e.per == per):
                frame = entry.frame(scope)
                if entry.shows(frame):
                    base = out / slug("-".join(filter(None, [prefix, name, scope.context])))
                    written.append((save(entry.draw(frame, scope), base, formats), entry.caption(frame, scope)))
    return written

