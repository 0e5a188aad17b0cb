"""The report's tables: layouts (which settings name a row, which are compared, the baseline row, the paper
table beside it), one table per layout built from seed groups, and `emit`, which writes any table as
markdown, CSV and LaTeX (pandas' writers) and returns its report.md section.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from ..folders.sweepfolder import LAYOUTS as SWEEP_LAYOUTS
from ..folders.sweepfolder import SweepRecord
from ..training.config import defaults
from ..training.recipes import RECIPES, train_images
from ..values import report_text, statistic
from . import paper
from .scan import (
    SeedGroup,
    config_keys,
    context_of,
    group_keys,
    model_variant,
    papers_architecture,
    setting_text,
    shortcut_params,
    sort_key,
    variant_label,
    varying,
    welch_p,
)

PAPER_ITERATIONS = 64000
ALIASES = {"degradation": "depth", "gradnorm": "table1"}  # the launcher's figure-first layouts
SWEEP_VIEW = "sweep"  # not a table layout: the random-search view
REPORT_LAYOUTS = (*SWEEP_LAYOUTS, "generic")  # what --layout accepts (besides auto)
# the recipe_gap layout's column: each run's lowest test error, median
BEST_SEEN = "best epoch, chosen on test (fb prints)"
RIGHT = {"n", "fail", "error (%)", "median", "min", "paper", "Δ", "Δ he2015", "p (Welch)", "depth", "params",
         BEST_SEEN}
GAP_BASE, GAP_OTHER = "he2015", "fb_torch"  # the recipe_gap layout: knobs of GAP_OTHER swapped into GAP_BASE
TEX_SYMBOLS = {"±": r"$\pm$", "Δ": r"$\Delta$", "→": r"$\to$"}


@dataclass(frozen=True)
class Layout:
    """How a table is laid out: the columns naming a row, the settings compared (`variant`; the rest is
    the context a row is compared within), which groups it shows, its baseline and its paper tables."""

    name: str
    title: str
    labels: tuple[str, ...]
    variant: tuple[str, ...]
    keep: Callable[[dict], bool]
    is_baseline: Callable[[dict], bool]
    tables: tuple[str, ...]
    axis: tuple[str, ...]  # settings that must vary within a context for `auto` to choose this layout
    baseline: str  # the baseline row in words
    keeps: str = "every run"  # the groups `keep` admits, in words (the others are listed under the table)
    baseline_delta: bool = False  # a "Δ <baseline>" column: each row's median and mean minus the baseline's
    best_seen: bool = False  # a BEST_SEEN column beside the final error's median (what fb.resnet.torch prints)


def layouts() -> dict[str, Layout]:
    """The table layouts, by name (built on each call: the shortcut parameters come from the registry)."""
    shortcut = ("shortcut", *shortcut_params())
    return {layout.name: layout for layout in (
        Layout("table1", "shortcut variants (2016, Table 1)", ("shortcut", "setting"), shortcut, lambda s: True,
               lambda s: s["shortcut"] == "identity", ("2016-T1",), shortcut, "the identity shortcut"),
        Layout("table2", "residual units (2016, Table 2)", ("unit", "depth"), ("unit",),
               lambda s: s["shortcut"] == "identity", lambda s: s["unit"] == "original", ("2016-T2",), ("unit",),
               "the original unit", keeps="runs with the identity shortcut"),
        Layout("table3", "original vs pre-activation (2016, Table 3)", ("dataset", "depth", "unit"), ("unit",),
               lambda s: s["shortcut"] == "identity" and s["unit"] in ("original", "full_preact"),
               lambda s: s["unit"] == "original", ("2016-T3",), ("unit",), "the original unit",
               keeps="runs with the identity shortcut and the original or full_preact unit"),
        Layout("depth", "error vs depth, plain vs ResNet (2015, Table 6)", ("net", "depth", "params"), shortcut,
               lambda s: s["shortcut"] in ("identity", "none"), lambda s: s["shortcut"] == "identity",
               ("2015-T6",), ("depth",), "the ResNet of the same depth",
               keeps="runs with the identity shortcut (ResNet) or none (plain)"),
        Layout("generic", "all groups", ("unit", "shortcut", "setting"), model_variant(), lambda s: True,
               lambda s: s["unit"] == "original" and s["shortcut"] == "identity",
               ("2016-T2", "2016-T1", "2016-T3", "2015-T6"), (), "identity shortcut and original unit"),
        Layout("recipe_gap", f"recipe knobs: {GAP_OTHER}'s swapped into {GAP_BASE} one at a time", ("depth", "recipe"),
               recipe_keys(), lambda s: True, lambda s: not recipe_diff(s, GAP_BASE), ("2015-T6",), (),
               f"the {GAP_BASE} recipe of the same depth", baseline_delta=True, best_seen=True),
    )}


def recipe_keys() -> tuple[str, ...]:
    """The settings any recipe sets (epoch schedules as iterations and milestones)."""
    keys = {k for r in RECIPES.values() for k in r.keys()}
    return tuple(k for k in group_keys() if k in keys)


def recipe_values(name: str, settings: dict[str, Any]) -> dict[str, Any]:
    """Recipe `name` resolved for a group's depth, batch size and data set, as group settings."""
    images = train_images(settings["dataset"], settings["val_split"], settings["synthetic_size"])
    resolved = RECIPES[name].resolve(settings["depth"], settings["batch_size"], images, settings["unit"])
    return {k: _as_setting(v) for k, v in resolved.items()}


def recipe_diff(settings: dict[str, Any], name: str) -> dict[str, Any]:
    """The recipe settings of a group that differ from recipe `name` (resolved for the group)."""
    want = recipe_values(name, settings)
    return {k: settings[k] for k in recipe_keys() if k in want and settings[k] != want[k]}


def recipe_label(settings: dict[str, Any]) -> str:
    """`he2015`, `fb_torch`, or `he2015 + nesterov=True` (the knobs that differ from he2015)."""
    diff = recipe_diff(settings, GAP_BASE)
    if not diff:
        return GAP_BASE
    if not recipe_diff(settings, GAP_OTHER):
        return GAP_OTHER
    return f"{GAP_BASE} + " + ", ".join(f"{k}={report_text(v)}" for k, v in diff.items())


def applies(layout: Layout, groups: list[SeedGroup]) -> bool:
    """Whether some context holds groups that differ in the layout's axis settings."""
    seen: dict[tuple, set] = {}
    for g in groups:
        if layout.keep(g.settings):
            axis = tuple(g.settings[k] for k in layout.axis)
            seen.setdefault(context_of(g.settings, layout.axis), set()).add(axis)
    return any(len(v) > 1 for v in seen.values())


def choose_layouts(requested: str | None, sweep: SweepRecord | None, groups: list[SeedGroup]) -> list[Layout]:
    """An explicit --layout, else the sweep's, else every paper layout the groups fit (generic if none)."""
    name = requested if requested not in (None, "auto") else (sweep.layout if sweep else None)
    known = layouts()
    if name is not None:
        return [known[ALIASES.get(name, name)]]
    fitting = [lay for lay in known.values() if lay.axis and applies(lay, groups)]
    return fitting or [known["generic"]]


@dataclass
class BuiltTable:
    """A built table: raw numbers (`frame`, for CSV) and the text cells shown (`shown`), with a caption."""

    layout: Layout
    frame: pd.DataFrame
    shown: pd.DataFrame
    caption: str


def _label(key: str, g: SeedGroup) -> Any:
    if key == "setting":
        return setting_text(g.settings)
    if key == "net":
        return "plain" if g.settings["shortcut"] == "none" else "ResNet"
    if key == "recipe":
        return recipe_label(g.settings)
    if key == "params":
        counts = [r.result.get("parameters") for r in g.runs if r.result.get("parameters")]
        return f"{np.mean(counts) / 1e6:.2f}M" if counts else ""
    return g.settings[key]


def left_out(layout: Layout, groups: list[SeedGroup]) -> list[str]:
    """report.md lines naming the groups a layout leaves out of its table (none: no lines), so that a table
    that shows 2 of 8 groups says so."""
    out = sorted((g for g in groups if not layout.keep(g.settings)),
                 key=lambda g: sort_key(g.settings, model_variant()))
    if not out:
        return []
    keys = varying(groups, (*model_variant(), "depth", "dataset"))
    named = "; ".join(f"{_group_label(g, keys)} ({len(g.runs)} run{'s' if len(g.runs) > 1 else ''})" for g in out)
    return [f"Left out of this table (layout {layout.name} shows {layout.keeps}): {len(out)} of {len(groups)} "
            f"groups, {sum(len(g.runs) for g in out)} runs: {named}.", ""]


def _group_label(g: SeedGroup, keys: set[str]) -> str:
    """A group in words: its model variant, and depth and data set where those differ between groups."""
    extra = [f"{k}={report_text(g.settings[k])}" for k in ("depth", "dataset") if k in keys]
    return ", ".join([variant_label(g.settings, keys), *extra])


def schedule(iterations: int) -> str:
    """'64k' for the papers' schedule, 'reduced: N it' for a shorter one, else 'N it'."""
    if iterations == PAPER_ITERATIONS:
        return "64k"
    return f"reduced: {iterations} it" if iterations < PAPER_ITERATIONS else f"{iterations} it"


def build_table(layout: Layout, groups: list[SeedGroup]) -> BuiltTable | None:
    """The layout's table over `groups` (None when it keeps none of them)."""
    kept = [g for g in groups if layout.keep(g.settings)]
    if not kept:
        return None
    keys = group_keys()
    varying = [k for k in keys if k not in layout.labels and k not in layout.variant
               and len({g.settings[k] for g in kept}) > 1]
    shown_keys = [*layout.labels, *varying]
    first = tuple(k for k in shown_keys if k in keys)
    kept.sort(key=lambda g: (sort_key(_as_paper_reads(g.settings), first), bool(paper.open_choices(g.settings))))
    baselines = {context_of(g.settings, layout.variant): g for g in kept if layout.is_baseline(g.settings)}
    raw, shown, withheld = [], [], 0
    for g in kept:
        errors, base = g.errors(), baselines.get(context_of(g.settings, layout.variant))
        fits = papers_architecture(g.settings)
        found = paper.lookup(g.settings, layout.tables) if fits else None
        variant = paper.variant_of(g.settings, layout.tables) if fits else None
        if found is not None and not official(g):
            found, withheld = None, withheld + 1
        row = {k: _label(k, g) for k in shown_keys}
        row.update(_statistics(g))
        row.update(
            paper=found[1].text() if found else None, paper_row=f"{found[0].key}: {found[1].case}" if found else None,
            paper_statistic=found[1].statistic if found else None, **_paper_deltas(found[1] if found else None, row),
            variant_of=f"{variant[0].key}: {variant[1].case}" if variant else None, data_official=official(g),
            baseline=base is g, p_welch=None if base is None or base is g else welch_p(errors, base.errors()),
            iterations=g.settings["iterations"], schedule=schedule(g.settings["iterations"]),
        )
        if layout.baseline_delta:
            other = _statistics(base) if base is not None else {}
            row.update(base_diff=_minus(row["median"], other.get("median")), base_diff_mean=_minus(row["mean"],
                                                                                                  other.get("mean")))
        raw.append(row)
        shown.append({**{k: report_text(v) for k, v in row.items() if k in shown_keys}, **_stat_cells(row, layout)})
    caption = _caption(layout, kept, shown_keys, any(r["variant_of"] for r in raw))
    if withheld:
        caption = _withheld_line(withheld, len(kept)) + " " + caption
    return BuiltTable(layout, pd.DataFrame(raw), pd.DataFrame(shown), caption)


def official(g: SeedGroup) -> bool:
    """Whether every run of the group read the official CIFAR files (result.json's data_official; a result
    written before it was kept does not count): only then is a number compared with the papers'."""
    return all(r.result.get("data_official") is True for r in g.runs)


def _withheld_line(withheld: int, rows: int) -> str:
    """The caption's first sentence when paper values are left out for data that is not the official CIFAR."""
    which = "every row" if withheld == rows else f"{withheld} of {rows} rows"
    return (f"No paper value or Δ in {which} that has one: not all of its runs read the official CIFAR files "
            f"(result.json's data_official is false or not recorded, e.g. the JPEG-75 copy), so a Δ would measure "
            f"the data, not the method.")


def _as_paper_reads(settings: dict[str, Any]) -> dict[str, Any]:
    """`settings` with each open choice at the paper rows' reading: a variant then sorts beside its paper row."""
    return {**settings, **{k: paper.OPEN_CHOICES[k] for k in paper.open_choices(settings)}}


def _statistics(g: SeedGroup) -> dict[str, Any]:
    """n, fails, the median counting failures (inf: it lands on a failure), and mean, sd and min (best) over
    the runs that did not fail."""
    errors = g.errors()
    best = [r.result.get("best_test_error") for r in g.runs if r.status == "done"]
    best = [b for b in best if isinstance(b, (int, float))]
    return {"n": len(g.runs), "fail": g.fails(), "median": g.median(),
            "mean": float(np.mean(errors)) if errors else None,
            "std": float(np.std(errors, ddof=1)) if len(errors) > 1 else None,
            "min": float(np.min(errors)) if errors else None,
            "best_seen": float(np.median(best)) if best else None}


def _minus(a: float | None, b: float | None) -> float | None:
    """a - b for two finite numbers, else None."""
    return a - b if a is not None and b is not None and math.isfinite(a) and math.isfinite(b) else None


def _paper_deltas(cell_: paper.Row | None, row: dict[str, Any]) -> dict[str, float | None]:
    """Like with like: `diff` is our median minus the paper's median (or as-reported value), or our best minus
    the paper's best; `diff_mean` our mean minus the paper's mean where it gives one."""
    if cell_ is None or cell_.value is None:
        return {"diff": None, "diff_mean": None}
    ours = row["min"] if cell_.statistic == paper.BEST else row["median"]
    return {"diff": _minus(ours, cell_.value), "diff_mean": _minus(row["mean"], cell_.mean)}


def _stat_cells(row: dict[str, Any], layout: Layout) -> dict[str, str]:
    """The formatted statistics columns of one row: median first (failures counted), then mean ± sd and min
    over the runs that did not fail."""
    survivors = f" (over {row['n'] - row['fail']} of {row['n']})" if row["fail"] else ""
    if row["mean"] is None:
        error = "fail"
    else:
        error = f"{row['mean']:.2f}" + (f" ± {row['std']:.2f}" if row["std"] is not None else "") + survivors
    p = "baseline" if row["baseline"] else "" if row["p_welch"] is None else f"{row['p_welch']:.2g}{survivors}"
    best = "best" if row["paper_statistic"] == paper.BEST else "median"
    delta = "; ".join(f"{v:+.2f} ({name})" for name, v in ((best, row["diff"]), ("mean", row["diff_mean"]))
                      if v is not None)
    variant = f"variant of: {row['variant_of'].split(': ', 1)[1]}" if row["variant_of"] else ""
    cells = {
        "n": str(row["n"]), "fail": str(row["fail"]), "median": statistic(row["median"]),
        **({BEST_SEEN: statistic(row["best_seen"])} if layout.best_seen else {}), "error (%)": error,
        "min": statistic(row["min"]), "paper": row["paper"] or variant, "Δ": delta, "p (Welch)": p,
        "schedule": row["schedule"],
    }
    if layout.baseline_delta:
        cells["Δ he2015"] = "baseline" if row["baseline"] else "; ".join(
            f"{v:+.2f} ({name})" for name, v in (("median", row.get("base_diff")), ("mean", row.get("base_diff_mean")))
            if v is not None)
    return cells


def _caption(layout: Layout, kept: list[SeedGroup], shown: list[str], variants: bool = False) -> str:
    """What the table shows: its common settings, the statistics and the paper table used."""
    plain = defaults()
    common = [f"{k}={report_text(v)}" for k in config_keys() if k not in shown and k not in layout.variant
              for v in {g.settings[k] for g in kept} if len({g.settings[k] for g in kept}) == 1
              and v is not None and v != _as_setting(getattr(plain, k))]  # None: a key the run's entry does not use
    sources = [paper.TABLES[t] for t in layout.tables]
    text = (f"Final test error (%), grouped by settings but the seed. n: finished runs; fail: runs with status "
            f"fail (diverged, above fail_threshold, or at chance after a reduced schedule: fail_rule); median over "
            f"all n runs, a failed run counting as above any "
            f"error (the 2016 paper's median of 5, failures included; 'fail' when it lands on a failed run); "
            f"error (mean ± sample sd) and min (best) over the runs that did not fail ('over k of n' where some "
            f"failed). p: Welch's t-test vs the baseline row ({layout.baseline}) with the same other settings, over "
            f"the runs that did not fail; blank where not computable (fewer than 2 runs on either side, or no "
            f"variance). Paper: the value with its statistic, for runs on the official CIFAR files only. Δ: like "
            f"with like, our median minus a median (or a value whose statistic the paper does not state), our best "
            f"minus a best, our mean minus a mean.")
    if variants:
        text += (f" 'variant of': the row differs from that paper row only in a choice the paper leaves open "
                 f"({', '.join(f'{k}={v}' for k, v in paper.OPEN_CHOICES.items())} stand for the paper's rows); it "
                 f"sits below that row and is not compared with the paper.")
    if layout.baseline_delta:
        text += f" Δ {GAP_BASE}: this row's median and mean minus those of {layout.baseline}."
    if layout.best_seen:
        text += (f" {BEST_SEEN}: the median over the runs of each run's lowest test error at any evaluation, what "
                 f"fb.resnet.torch prints (it tests every epoch, as recipe fb_torch and recipe_gap.yaml do), beside "
                 f"the final error that the other columns use. The epoch is chosen on the test set itself, so the "
                 f"figure is optimistic; to choose on held-out data, train with the 2015 paper's 45k/5k split "
                 f"(val_split=5000) and read val_error.")
    if common:
        text += f" Common settings (besides defaults): {', '.join(common)}."
    return text + " Paper: " + "; ".join(f"{t.key} = {t.title}, {t.source} ({t.units})" for t in sources) + "."


def _as_setting(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def text_cells(frame: pd.DataFrame) -> pd.DataFrame:
    """Text cells of a numeric table: numbers to 4 significant digits, NaN/None blank."""
    return frame.apply(lambda col: col.map(lambda v: "" if v is None or (isinstance(v, float) and math.isnan(v))
                                           else f"{v:.4g}" if isinstance(v, float) else str(v)))


def markdown(frame: pd.DataFrame) -> str:
    """A markdown table of string cells (pandas/tabulate), the statistics columns right-aligned."""
    cells = frame.apply(lambda col: col.map(lambda v: str(v).replace("|", "\\|")))
    align = ["right" if c in RIGHT else "left" for c in frame.columns]
    return cells.to_markdown(index=False, tablefmt="pipe", colalign=align, disable_numparse=True)


def latex(frame: pd.DataFrame, caption: str) -> str:
    """A booktabs table (pandas' Styler; needs \\usepackage{booktabs}), the caption as a comment line; the
    symbols LaTeX's text mode lacks (±, Δ, →) in math mode."""
    spec = "".join("r" if c in RIGHT and c not in ("depth", "params") else "l" for c in frame.columns)
    styled = frame.style.hide(axis="index").format(escape="latex").format_index(escape="latex", axis=1)
    text = styled.to_latex(hrules=True, column_format=spec)
    for symbol, tex in TEX_SYMBOLS.items():
        text = text.replace(symbol, tex)
    return f"% {caption}\n{text}"


def emit(shown: pd.DataFrame, raw: pd.DataFrame, caption: str, base: Path, heading: str,
         tex: bool = False) -> list[str]:
    """Write a table as `base`.md (with its caption), `base`.csv (the raw numbers) and, with `tex`, `base`.tex;
    return its section of report.md."""
    text = markdown(shown)
    Path(f"{base}.md").write_text(f"{text}\n\n{caption}\n")
    raw.to_csv(f"{base}.csv", index=False)
    if tex:
        Path(f"{base}.tex").write_text(latex(shown, caption))
    return [f"### {heading}", "", text, "", caption, ""]
