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

from ..sweeps.sweepfolder import LAYOUTS as SWEEP_LAYOUTS
from ..sweeps.sweepfolder import SweepRecord
from ..training.config import defaults
from . import paper
from .scan import (SeedGroup, cell, context_of, group_keys, model_variant, papers_architecture,
                   setting_text, shortcut_params, sort_key, variant_label, varying, welch_p)

PAPER_ITERATIONS = 64000
ALIASES = {"degradation": "depth", "gradnorm": "table1"}  # the launcher's figure-first layouts
SWEEP_VIEW = "sweep"  # not a table layout: the random-search view
REPORT_LAYOUTS = (*SWEEP_LAYOUTS, "generic")  # what --layout accepts (besides auto)
RIGHT = {"n", "fail", "error (%)", "median", "min", "paper", "Δ", "p (Welch)", "depth", "params"}
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
    )}


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
    if key == "params":
        counts = [r.result.get("parameters") for r in g.runs if r.result.get("parameters")]
        return f"{np.mean(counts) / 1e6:.2f}M" if counts else ""
    return g.settings[key]


def left_out(layout: Layout, groups: list[SeedGroup]) -> list[str]:
    """report.md lines naming the groups a layout leaves out of its table (none: no lines), so that a table
    that shows 2 of 8 groups says so."""
    out = sorted((g for g in groups if not layout.keep(g.settings)), key=lambda g: sort_key(g.settings, model_variant()))
    if not out:
        return []
    keys = varying(groups, (*model_variant(), "depth", "dataset"))
    named = "; ".join(f"{_group_label(g, keys)} ({len(g.runs)} run{'s' if len(g.runs) > 1 else ''})" for g in out)
    return [f"Left out of this table (layout {layout.name} shows {layout.keeps}): {len(out)} of {len(groups)} "
            f"groups, {sum(len(g.runs) for g in out)} runs: {named}.", ""]


def _group_label(g: SeedGroup, keys: set[str]) -> str:
    """A group in words: its model variant, and depth and data set where those differ between groups."""
    extra = [f"{k}={cell(g.settings[k])}" for k in ("depth", "dataset") if k in keys]
    return ", ".join([variant_label(g.settings, keys), *extra])


def schedule(iterations: int) -> str:
    """'64k' for the papers' schedule, else 'reduced: N it'."""
    return "64k" if iterations == PAPER_ITERATIONS else f"reduced: {iterations} it"


def build_table(layout: Layout, groups: list[SeedGroup]) -> BuiltTable | None:
    """The layout's table over `groups` (None when it keeps none of them)."""
    kept = [g for g in groups if layout.keep(g.settings)]
    if not kept:
        return None
    keys = group_keys()
    varying = [k for k in keys if k not in layout.labels and k not in layout.variant
               and len({g.settings[k] for g in kept}) > 1]
    shown_keys = [*layout.labels, *varying]
    kept.sort(key=lambda g: sort_key(g.settings, tuple(k for k in shown_keys if k in keys)))
    baselines = {context_of(g.settings, layout.variant): g for g in kept if layout.is_baseline(g.settings)}
    raw, shown = [], []
    for g in kept:
        errors, base = g.errors(), baselines.get(context_of(g.settings, layout.variant))
        found = paper.lookup(g.settings, layout.tables) if papers_architecture(g.settings) else None
        ref = found[1].reference() if found else None
        mean = float(np.mean(errors)) if errors else None
        row = {k: _label(k, g) for k in shown_keys}
        row.update(
            n=len(g.runs), fail=g.fails(), mean=mean, std=float(np.std(errors, ddof=1)) if len(errors) > 1 else None,
            median=float(np.median(errors)) if errors else None, min=float(np.min(errors)) if errors else None,
            paper=found[1].text() if found else None, paper_row=f"{found[0].key}: {found[1].case}" if found else None,
            diff=mean - ref if mean is not None and ref is not None else None,
            baseline=base is g, p_welch=None if base is None or base is g else welch_p(errors, base.errors()),
            iterations=g.settings["iterations"], schedule=schedule(g.settings["iterations"]),
        )
        raw.append(row)
        shown.append({**{k: cell(v) for k, v in row.items() if k in shown_keys}, **_stat_cells(row)})
    return BuiltTable(layout, pd.DataFrame(raw), pd.DataFrame(shown), _caption(layout, kept, shown_keys))


def _stat_cells(row: dict[str, Any]) -> dict[str, str]:
    """The formatted statistics columns of one row."""
    if row["mean"] is None:
        error = "fail"
    else:
        error = f"{row['mean']:.2f}" + (f" ± {row['std']:.2f}" if row["std"] is not None else "")
    p = "baseline" if row["baseline"] else "" if row["p_welch"] is None else f"{row['p_welch']:.2g}"
    return {
        "n": str(row["n"]), "fail": str(row["fail"]), "error (%)": error,
        "median": _fixed(row["median"]), "min": _fixed(row["min"]), "paper": row["paper"] or "",
        "Δ": "" if row["diff"] is None else f"{row['diff']:+.2f}", "p (Welch)": p, "schedule": row["schedule"],
    }


def _fixed(v: float | None) -> str:
    return "" if v is None else f"{v:.2f}"


def _caption(layout: Layout, kept: list[SeedGroup], shown: list[str]) -> str:
    """What the table shows: its common settings, the statistics and the paper table used."""
    plain = defaults()
    common = [f"{k}={cell(v)}" for k in group_keys() if k not in shown and k not in layout.variant
              for v in {g.settings[k] for g in kept} if len({g.settings[k] for g in kept}) == 1
              and v != _as_setting(getattr(plain, k))]
    sources = [paper.TABLES[t] for t in layout.tables]
    text = (f"Final test error (%), grouped by settings but the seed. n: finished runs; fail: runs with status "
            f"fail (diverged or above fail_threshold); error, median, min over the runs that did not fail "
            f"(mean ± sample sd). p: Welch's t-test vs the baseline row ({layout.baseline}) with the same other "
            f"settings; blank where not computable (fewer than 2 runs on either side, or no variance). Δ: mean "
            f"minus the paper's value (its mean where it gives one).")
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
