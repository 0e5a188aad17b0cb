"""`python -m resnet_ablate.report RUNS_DIR --out OUT_DIR [--layout L]`: run folders -> the papers'
tables (markdown, CSV, LaTeX booktabs, and printed) with the papers' numbers and Welch's t-tests
beside them, and the papers' figures.

Runs are grouped by their settings but the seed. Finished runs (done or fail) are read; unfinished
ones are listed as running; a broken or partial folder is listed by path and skipped. A `sweep.yaml`
(written by the launcher) in the given folder or above run folders names the layout and the budget
of the runs below it; elsewhere `--layout` chooses (default: every layout the runs fit).

`--layout sweep` (chosen by a random sweep's sweep.yaml) is the sweep view instead of a paper table: the
trials, each searched parameter's rank correlation with the final test error, error vs each parameter,
and the best trials' training curves.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import yaml
from scipy import stats

from . import figures, paper
from . import runfolder as rf
from .config import FIELDS, Config
from .model import resolve_block, resolve_downsample, shortcut_parameters
from .registry import UsageError
from .shortcuts import SHORTCUTS
from .units import UNITS

PAPER_ITERATIONS = 64000
SWEEP = "sweep.yaml"
RUN_FILES = {rf.CONFIG, rf.METRICS, rf.PROBES, rf.CHECKPOINT, rf.RESULT}
DEFAULTS = Config()
SETTINGS = tuple(k for k, f in FIELDS.items() if f.metadata["identity"] and k != "seed")
SHORTCUT_PARAMS = tuple(dict.fromkeys(p for s in SHORTCUTS for p in shortcut_parameters(SHORTCUTS.get(s))))
MODEL_VARIANT = ("unit", "shortcut", *SHORTCUT_PARAMS)
_YAML = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class Broken(Exception):
    """A run folder or sweep.yaml that cannot be read: reported by path and skipped."""


# --- reading ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sweep:
    """A launcher's sweep.yaml: its name, report layout, budget and run-folder names."""

    path: Path
    name: str
    layout: str | None
    budget: str
    runs: tuple[str, ...]
    search: dict[str, Any] = field(default_factory=dict)  # random search: distribution of each searched key

    def label(self) -> str:
        """'sweep NAME' plus the budget when it is not the full one."""
        return f"sweep {self.name}" + ("" if self.budget == "full" else f", budget {self.budget} (reduced)")


@dataclass(frozen=True)
class Run:
    """One run folder: its group settings, seed, status (done | fail | running) and result.json."""

    path: Path
    settings: dict[str, Any]
    seed: int
    status: str
    result: dict[str, Any]
    sweep: Sweep | None


@dataclass
class Scan:
    """Everything found under a folder: readable runs, broken folders, and sweep runs not started."""

    root: Path
    runs: list[Run] = field(default_factory=list)
    broken: list[tuple[Path, str]] = field(default_factory=list)
    missing: list[Path] = field(default_factory=list)


def _yaml(path: Path) -> Any:
    try:
        return yaml.load(path.read_text(), Loader=_YAML)
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise Broken(f"{path.name} is not valid YAML ({str(e).splitlines()[0]})") from e


def _typed(key: str, value: Any) -> Any:
    """A config value checked against its default's type (lists become tuples, ints may be floats)."""
    default = getattr(DEFAULTS, key)
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, list):
        ok = isinstance(value, list)
        value = tuple(value) if ok else value
    else:
        ok = isinstance(value, str)
    if not ok:
        raise Broken(f"config.yaml: {key}={value!r} is not a {type(default).__name__}")
    return value


def settings_of(config: dict[str, Any]) -> dict[str, Any]:
    """The settings that define a run's group: its identity settings but the seed (defaults for keys an
    older config lacks), with the parameters of shortcuts other than its own set to None."""
    out = {k: _typed(k, config.get(k, getattr(DEFAULTS, k))) for k in SETTINGS}
    if out["shortcut"] not in SHORTCUTS or out["unit"] not in UNITS:
        raise Broken(f"config.yaml: unknown shortcut '{out['shortcut']}' or unit '{out['unit']}'")
    own = shortcut_parameters(SHORTCUTS.get(out["shortcut"]))
    return {k: (None if k in SHORTCUT_PARAMS and k not in own else v) for k, v in out.items()}


def read_run(folder: Path, sweep: Sweep | None) -> Run:
    """A run folder, or Broken with the reason it cannot be read."""
    if not (folder / rf.CONFIG).is_file():
        raise Broken("partial: no config.yaml")
    config = _yaml(folder / rf.CONFIG)
    if not isinstance(config, dict):
        raise Broken("config.yaml is not a mapping")
    settings, seed = settings_of(config), _typed("seed", config.get("seed", 0))
    if not (folder / rf.RESULT).is_file():
        return Run(folder, settings, seed, "running", {}, sweep)
    try:
        result = json.loads((folder / rf.RESULT).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise Broken(f"result.json is not valid JSON ({e})") from e
    status = result.get("status") if isinstance(result, dict) else None
    if status not in rf.FINISHED:
        raise Broken(f"result.json: status {status!r} is neither done nor fail")
    error = result.get("final_test_error")
    if status == "done" and not (isinstance(error, (int, float)) and math.isfinite(error)):
        raise Broken(f"result.json: status done without a final_test_error ({error!r})")
    return Run(folder, settings, seed, status, result, sweep)


def read_sweep(path: Path) -> Sweep:
    """sweep.yaml, or Broken when it is not a mapping with a known layout and a list of runs."""
    data = _yaml(path)
    if not isinstance(data, dict):
        raise Broken("sweep.yaml is not a mapping")
    layout = data.get("layout")
    if layout is not None and layout not in LAYOUT_NAMES:
        raise Broken(f"sweep.yaml: unknown layout {layout!r}; allowed: {', '.join(LAYOUT_NAMES)} or null")
    runs = data.get("runs") or []
    if not isinstance(runs, list):
        raise Broken("sweep.yaml: runs is not a list")
    search = data.get("search") or {}
    if not isinstance(search, dict):
        raise Broken("sweep.yaml: search is not a mapping")
    return Sweep(path.parent, str(data.get("name") or path.parent.name), layout, str(data.get("budget") or "full"),
                 tuple(map(str, runs)), search)


def scan(root: Path) -> Scan:
    """Every run folder under `root` (a folder holding any run file; its subfolders are not searched),
    each with the nearest sweep.yaml at or above it (up to `root`)."""
    if not root.is_dir():
        raise UsageError(f"{root}: no such folder")
    found, sweeps = Scan(root), {}
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        dirs.sort()
        if SWEEP in files:
            try:
                sweeps[here] = read_sweep(here / SWEEP)
            except Broken as e:
                found.broken.append((here / SWEEP, str(e)))
        if RUN_FILES & set(files):
            dirs.clear()
            sweep = next((sweeps[p] for p in (here, *here.parents) if p in sweeps), None)
            try:
                found.runs.append(read_run(here, sweep))
            except Broken as e:
                found.broken.append((here, str(e)))
    seen = {r.path for r in found.runs} | {p for p, _ in found.broken}
    found.missing = [s.path / name for s in sweeps.values() for name in s.runs if s.path / name not in seen]
    if not found.runs and not found.broken and not found.missing:
        raise UsageError(f"{root}: no run folders found (a run folder holds config.yaml, metrics.jsonl, result.json)")
    return found


# --- groups and statistics ---------------------------------------------------------------------
@dataclass
class Group:
    """Finished runs with the same settings but the seed."""

    settings: dict[str, Any]
    runs: list[Run]

    def errors(self) -> list[float]:
        """Final test errors of the runs that did not fail."""
        return [r.result["final_test_error"] for r in self.runs if r.status == "done"]

    def fails(self) -> int:
        return sum(r.status == "fail" for r in self.runs)


def group(runs: list[Run]) -> list[Group]:
    """Finished runs grouped by settings, each group's runs sorted by seed."""
    groups: dict[tuple, Group] = {}
    for run in sorted((r for r in runs if r.status != "running"), key=lambda r: (str(r.path), r.seed)):
        groups.setdefault(tuple(run.settings.items()), Group(run.settings, [])).runs.append(run)
    for g in groups.values():
        g.runs.sort(key=lambda r: r.seed)
    return list(groups.values())


def welch_p(values: list[float], baseline: list[float]) -> float | None:
    """Welch's t-test p-value (scipy, unequal variances) of values vs baseline; None when not computable."""
    if len(values) < 2 or len(baseline) < 2 or np.var(values) + np.var(baseline) == 0:
        return None
    with warnings.catch_warnings():  # a sample of identical values: scipy warns, the test is still defined
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(stats.ttest_ind(values, baseline, equal_var=False).pvalue)
    return p if math.isfinite(p) else None


def papers_architecture(settings: dict[str, Any]) -> bool:
    """Whether block and downsample are the papers' choice for the depth (else no paper value applies)."""
    block = resolve_block(settings["depth"], "auto")
    return resolve_block(settings["depth"], settings["block"]) == block and \
        resolve_downsample(block, settings["downsample"]) == resolve_downsample(block)


# --- layouts ---------------------------------------------------------------------------------------
def setting_text(settings: dict[str, Any]) -> str:
    """The shortcut's own parameters, e.g. 'scale=0.5, residual_scale=1'."""
    return ", ".join(f"{k}={_num(v)}" for k, v in settings.items() if k in SHORTCUT_PARAMS and v is not None)


def _num(v: Any) -> str:
    if isinstance(v, tuple):
        return ",".join(map(_num, v))
    return f"{v:g}" if isinstance(v, float) else str(v)


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


LAYOUTS = {
    layout.name: layout for layout in (
        Layout("table1", "shortcut variants (2016, Table 1)", ("shortcut", "setting"), ("shortcut", *SHORTCUT_PARAMS),
               lambda s: True, lambda s: s["shortcut"] == "identity", ("2016-T1",), ("shortcut", *SHORTCUT_PARAMS),
               "the identity shortcut"),
        Layout("table2", "residual units (2016, Table 2)", ("unit", "depth"), ("unit",),
               lambda s: s["shortcut"] == "identity", lambda s: s["unit"] == "original", ("2016-T2",), ("unit",),
               "the original unit"),
        Layout("table3", "original vs pre-activation (2016, Table 3)", ("dataset", "depth", "unit"), ("unit",),
               lambda s: s["shortcut"] == "identity" and s["unit"] in ("original", "full_preact"),
               lambda s: s["unit"] == "original", ("2016-T3",), ("unit",), "the original unit"),
        Layout("depth", "error vs depth, plain vs ResNet (2015, Table 6)", ("net", "depth", "params"),
               ("shortcut", *SHORTCUT_PARAMS), lambda s: s["shortcut"] in ("identity", "none"),
               lambda s: s["shortcut"] == "identity", ("2015-T6",), ("depth",), "the ResNet of the same depth"),
        Layout("generic", "all groups", ("unit", "shortcut", "setting"), MODEL_VARIANT, lambda s: True,
               lambda s: s["unit"] == "original" and s["shortcut"] == "identity",
               ("2016-T2", "2016-T1", "2016-T3", "2015-T6"), (), "identity shortcut and original unit"),
    )
}
ALIASES = {"degradation": "depth", "gradnorm": "table1"}  # the launcher's figure-first layouts
SWEEP_VIEW = "sweep"  # not a table layout: the random-search view
LAYOUT_NAMES = (*LAYOUTS, *ALIASES, SWEEP_VIEW)
BEST_CURVES = 3


def _context(settings: dict[str, Any], variant: tuple[str, ...]) -> tuple:
    return tuple((k, v) for k, v in settings.items() if k not in variant)


def applies(layout: Layout, groups: list[Group]) -> bool:
    """Whether some context holds groups that differ in the layout's axis settings."""
    seen: dict[tuple, set] = {}
    for g in groups:
        if layout.keep(g.settings):
            axis = tuple(g.settings[k] for k in layout.axis)
            seen.setdefault(_context(g.settings, layout.axis), set()).add(axis)
    return any(len(v) > 1 for v in seen.values())


def choose_layouts(requested: str | None, sweep: Sweep | None, groups: list[Group]) -> list[Layout]:
    """An explicit --layout, else the sweep's, else every paper layout the groups fit (generic if none)."""
    name = requested if requested not in (None, "auto") else (sweep.layout if sweep else None)
    if name is not None:
        return [LAYOUTS[ALIASES.get(name, name)]]
    fitting = [lay for lay in LAYOUTS.values() if lay.axis and applies(lay, groups)]
    return fitting or [LAYOUTS["generic"]]


_ORDER = {"shortcut": SHORTCUTS.names(), "unit": UNITS.names()}


def _sort_key(settings: dict[str, Any], first: tuple[str, ...]) -> tuple:
    """Context first, then the papers' order of shortcuts and units, gate biases from 0 down."""
    def rank(k: str) -> tuple:
        v = settings[k]
        if v is None:
            return (0, 0)
        if k in _ORDER:
            return (1, _ORDER[k].index(v))
        return (1, -v if k == "gate_bias" else v if not isinstance(v, str) else 0, str(v))
    return tuple(rank(k) for k in first) + tuple(rank(k) for k in settings if k not in first)


@dataclass
class Table:
    """A built table: raw numbers (`frame`, for CSV) and the text cells shown (`shown`), with a caption."""

    layout: Layout
    frame: pd.DataFrame
    shown: pd.DataFrame
    caption: str


def _label(key: str, g: Group) -> Any:
    if key == "setting":
        return setting_text(g.settings)
    if key == "net":
        return "plain" if g.settings["shortcut"] == "none" else "ResNet"
    if key == "params":
        counts = [r.result.get("parameters") for r in g.runs if r.result.get("parameters")]
        return f"{np.mean(counts) / 1e6:.2f}M" if counts else ""
    return g.settings[key]


def schedule(iterations: int) -> str:
    """'64k' for the papers' schedule, else 'reduced: N it'."""
    return "64k" if iterations == PAPER_ITERATIONS else f"reduced: {iterations} it"


def build_table(layout: Layout, groups: list[Group]) -> Table | None:
    """The layout's table over `groups` (None when it keeps none of them)."""
    kept = [g for g in groups if layout.keep(g.settings)]
    if not kept:
        return None
    varying = [k for k in SETTINGS if k not in layout.labels and k not in layout.variant
               and len({g.settings[k] for g in kept}) > 1]
    shown_keys = [*layout.labels, *varying]
    kept.sort(key=lambda g: _sort_key(g.settings, tuple(k for k in shown_keys if k in SETTINGS)))
    baselines = {_context(g.settings, layout.variant): g for g in kept if layout.is_baseline(g.settings)}
    raw, shown = [], []
    for g in kept:
        errors, base = g.errors(), baselines.get(_context(g.settings, layout.variant))
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
        shown.append({**{k: _cell(v) for k, v in row.items() if k in shown_keys}, **_stat_cells(row)})
    return Table(layout, pd.DataFrame(raw), pd.DataFrame(shown), _caption(layout, kept, shown_keys))


def _cell(v: Any) -> str:
    return "" if v is None else _num(v)


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


def _caption(layout: Layout, kept: list[Group], shown: list[str]) -> str:
    """What the table shows: its common settings, the statistics and the paper table used."""
    common = [f"{k}={_cell(v)}" for k in SETTINGS if k not in shown and k not in layout.variant
              for v in {g.settings[k] for g in kept} if len({g.settings[k] for g in kept}) == 1
              and v != _default(k)]
    sources = [paper.TABLES[t] for t in layout.tables]
    text = (f"Final test error (%), grouped by settings but the seed. n: finished runs; fail: runs with status "
            f"fail (diverged or above fail_threshold); error, median, min over the runs that did not fail "
            f"(mean ± sample sd). p: Welch's t-test vs the baseline row ({layout.baseline}) with the same other "
            f"settings; blank where not computable (fewer than 2 runs on either side, or no variance). Δ: mean minus the paper's value (its mean where it gives one).")
    if common:
        text += f" Common settings (besides defaults): {', '.join(common)}."
    return text + " Paper: " + "; ".join(f"{t.key} = {t.title}, {t.source} ({t.units})" for t in sources) + "."


def _default(key: str) -> Any:
    v = getattr(DEFAULTS, key)
    return tuple(v) if isinstance(v, list) else v


# --- output ------------------------------------------------------------------------------------------
def markdown(frame: pd.DataFrame) -> str:
    """A GitHub markdown table of string cells (numbers right-aligned)."""
    right = {"n", "fail", "error (%)", "median", "min", "paper", "Δ", "p (Welch)", "depth", "params"}
    head = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---:" if c in right else "---" for c in frame.columns) + "|"
    body = ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([head, rule, *body])


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
        "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$", "Δ": r"$\Delta$",
        "→": r"$\to$"}


def _tex(text: str) -> str:
    return "".join(_TEX.get(c, c) for c in str(text))


def latex(frame: pd.DataFrame, caption: str) -> str:
    """A booktabs table (needs \\usepackage{booktabs}) with the caption as a comment line."""
    spec = "".join("r" if c in {"n", "fail", "error (%)", "median", "min", "paper", "Δ", "p (Welch)"} else "l"
                   for c in frame.columns)
    lines = [f"% {caption}", f"\\begin{{tabular}}{{{spec}}}", "\\toprule",
             " & ".join(_tex(c) for c in frame.columns) + r" \\", "\\midrule"]
    lines += [" & ".join(_tex(v) for v in row) + r" \\" for row in frame.itertuples(index=False)]
    return "\n".join([*lines, "\\bottomrule", "\\end{tabular}", ""])


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.=-]+", "_", text).strip("_") or "runs"


# --- figures -----------------------------------------------------------------------------------------
def variant_label(settings: dict[str, Any], keys: set[str]) -> str:
    """A run's model variant in words, naming only the variant settings in `keys` (those that differ)."""
    parts = [settings["unit"]] if "unit" in keys else []
    if keys - {"unit"} or not parts:
        setting = setting_text(settings)
        parts.append(settings["shortcut"] + (f" ({setting})" if setting else ""))
    return ", ".join(parts)


def _contexts(groups: list[Group], variant: tuple[str, ...]) -> list[tuple[str, list[Group]]]:
    """Groups split by the settings outside `variant`, each part named by the settings that differ."""
    parts: dict[tuple, list[Group]] = {}
    for g in groups:
        parts.setdefault(_context(g.settings, variant), []).append(g)
    differing = [k for k in SETTINGS if k not in variant and len({g.settings[k] for g in groups}) > 1]
    return [(", ".join(f"{k}={_cell(gs[0].settings[k])}" for k in differing), gs) for gs in parts.values()]


def _varying(groups: list[Group], keys: tuple[str, ...]) -> set[str]:
    return {k for k in keys if len({g.settings[k] for g in groups}) > 1}


def curve_frame(groups: list[Group], label: Callable[[Group], str]) -> pd.DataFrame:
    """metrics.jsonl of the groups' runs in long form: variant, seed, iteration, split, error."""
    rows = [{"variant": label(g), "seed": r.seed, "iteration": m["iteration"], "split": split, "error": m.get(key)}
            for g in groups for r in g.runs for m in rf.read_jsonl(r.path / rf.METRICS)
            for split, key in (("test", "test_error"), ("train", "train_error"))]
    return pd.DataFrame(rows, columns=["variant", "seed", "iteration", "split", "error"]).astype({"error": float})


def probe_frame(groups: list[Group], label: Callable[[Group], str]) -> pd.DataFrame:
    """probes.jsonl of the groups' runs in long form: variant, seed, iteration, unit, norm."""
    rows = [{"variant": label(g), "seed": r.seed, "iteration": p["iteration"], "unit": i, "norm": norm}
            for g in groups for r in g.runs for p in rf.read_jsonl(r.path / rf.PROBES)
            for i, norm in enumerate(p.get("unit_input", []))]
    return pd.DataFrame(rows, columns=["variant", "seed", "iteration", "unit", "norm"])


SPREAD_CAPTION = ("Gradient spread: the input-gradient norm at the first residual unit over that at the last, "
                  "per probed iteration (> 1: the gradient grows towards the input, < 1: it shrinks); geometric "
                  "mean over the n seeds, with their min and max. The number behind the gradnorm figures.")


def gradient_spread(groups: list[Group]) -> pd.DataFrame:
    """First-unit / last-unit input-gradient norm per variant, depth and probed iteration, over seeds."""
    rows = []
    for context, gs in _contexts(groups, (*MODEL_VARIANT, "depth")):
        keys = _varying(gs, MODEL_VARIANT)
        for g in sorted(gs, key=lambda g: (g.settings["depth"], _sort_key(g.settings, MODEL_VARIANT))):
            ratios: dict[int, list[float]] = {}
            for r in g.runs:
                for p in rf.read_jsonl(r.path / rf.PROBES):
                    norms = p.get("unit_input") or []
                    if len(norms) > 1 and norms[-1] > 0:
                        ratios.setdefault(p["iteration"], []).append(norms[0] / norms[-1])
            rows += [{"context": context, "variant": variant_label(g.settings, keys), "depth": g.settings["depth"],
                      "iteration": it, "n": len(rs), "first/last": float(stats.gmean(rs)), "min": min(rs),
                      "max": max(rs)} for it, rs in sorted(ratios.items())]
    frame = pd.DataFrame(rows, columns=["context", "variant", "depth", "iteration", "n", "first/last", "min", "max"])
    return frame.drop(columns="context") if not frame["context"].any() else frame


def _net(g: Group) -> str:
    return "plain" if g.settings["shortcut"] == "none" else "ResNet"


def draw_figures(groups: list[Group], out: Path, prefix: str, title: str, formats: tuple[str, ...]) -> list[Path]:
    """Every figure the groups have data for; returns the written files."""
    written: list[Path] = []

    def emit(fig_name: str, context: str, fig) -> None:
        base = out / slug("-".join(filter(None, [prefix, fig_name, context])))
        written.extend(figures.save(fig, base, formats))

    groups = sorted(groups, key=lambda g: _sort_key(g.settings, MODEL_VARIANT))  # legends in the papers' order
    for context, gs in _contexts(groups, MODEL_VARIANT):
        keys, heading = _varying(gs, MODEL_VARIANT), ", ".join(filter(None, [title, context, _budget(gs)]))
        curves = curve_frame(gs, lambda g: variant_label(g.settings, keys))
        if not curves.empty:
            emit("curves", context, figures.training_curves(curves, heading))
        probes = probe_frame(gs, lambda g: variant_label(g.settings, keys))
        if not probes.empty:
            emit("gradnorm", context, figures.gradient_norms(probes, heading))
    nets = [g for g in groups if g.settings["shortcut"] in ("identity", "none")]
    for context, gs in _contexts(nets, ("depth", "shortcut", *SHORTCUT_PARAMS)):
        heading = ", ".join(filter(None, [title, context, _budget(gs)]))
        curves = pd.concat([curve_frame([g], _net).assign(depth=g.settings["depth"]) for g in gs])
        if set(curves["variant"]) == {"plain", "ResNet"}:
            emit("degradation", context, figures.degradation(curves.rename(columns={"variant": "net"}), heading))
        finals = pd.DataFrame([{"net": _net(g), "depth": g.settings["depth"], "seed": r.seed,
                                "error": r.result["final_test_error"]} for g in gs for r in g.runs
                               if r.status == "done"], columns=["net", "depth", "seed", "error"])
        if finals["depth"].nunique() > 1:
            emit("depth", context, figures.error_vs_depth(finals, heading))
    return written


def _budget(groups: list[Group]) -> str:
    """'reduced: N it' when the groups share a schedule shorter than the papers', else ''."""
    its = {g.settings["iterations"] for g in groups}
    return schedule(its.pop()) if len(its) == 1 and PAPER_ITERATIONS not in its else ""


# --- sweep view --------------------------------------------------------------------------------------
def searched(groups: list[Group], sweep: Sweep | None) -> list[str]:
    """The parameters a sweep varies: sweep.yaml's search keys, else the settings that differ between groups."""
    keys = list(sweep.search) if sweep and sweep.search else [k for k in SETTINGS if _varying(groups, (k,))]
    return [k for k in keys if k in SETTINGS]


def trial_frame(groups: list[Group], params: list[str]) -> pd.DataFrame:
    """One row per trial (group): its parameters, mean final test error over runs that did not fail, n and
    fail; best first, trials without a finished run last."""
    rows = [{**{k: g.settings[k] for k in params}, "mean": float(np.mean(g.errors())) if g.errors() else None,
             "n": len(g.runs), "fail": g.fails()} for g in groups]
    return pd.DataFrame(rows, columns=[*params, "mean", "n", "fail"]).sort_values("mean", na_position="last",
                                                                                  ignore_index=True)


def importance(trials: pd.DataFrame, params: list[str]) -> pd.DataFrame:
    """Each parameter against the trials' mean error: Spearman's rho for numeric parameters, Kruskal-Wallis H
    across the values of categorical ones (scipy), with p-values; NaN where not computable."""
    scored = trials.dropna(subset=["mean"])
    rows = []
    for param in params:
        values = scored[param]
        numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
        with warnings.catch_warnings():  # constant inputs: scipy warns and returns NaN, shown as blank
            warnings.simplefilter("ignore")
            if numeric:
                res = stats.spearmanr(values, scored["mean"]) if len(scored) > 2 else None
            else:
                samples = [part["mean"].to_numpy() for _, part in scored.groupby(param)]
                res = stats.kruskal(*samples) if len(samples) > 1 and len(scored) > len(samples) else None
        rows.append({"parameter": param, "test": "Spearman rho" if numeric else "Kruskal-Wallis H",
                     "statistic": float(res.statistic) if res else math.nan,
                     "p": float(res.pvalue) if res else math.nan, "trials": len(scored)})
    return pd.DataFrame(rows, columns=["parameter", "test", "statistic", "p", "trials"])


def _shown(frame: pd.DataFrame) -> pd.DataFrame:
    """Text cells of a sweep table: numbers to 4 significant digits, NaN/None blank."""
    return frame.apply(lambda col: col.map(lambda v: "" if v is None or (isinstance(v, float) and math.isnan(v))
                                           else f"{v:.4g}" if isinstance(v, float) else str(v)))


def sweep_view(groups: list[Group], sweep: Sweep | None, out: Path, prefix: str, title: str,
               formats: tuple[str, ...]) -> list[str]:
    """The sweep view's tables (md, csv) and figures into `out`; returns its report.md lines."""
    params = searched(groups, sweep)
    if not params:
        return ["No searched parameters (no sweep.yaml search and no setting varies).", ""]
    trials, search = trial_frame(groups, params), sweep.search if sweep else {}
    scores = importance(trials, params)
    lines = []
    for name, frame, caption in (
            ("trials", trials, "Trials, best first: searched parameters, final test error (%) mean over the runs "
                               "that did not fail (seeds), n runs, fail = runs with status fail."),
            ("importance", scores, "Parameter importance: rank correlation of each numeric parameter with the "
                                   "trials' mean final test error (Spearman rho; > 0: larger values, larger error), "
                                   "Kruskal-Wallis H across the values of categorical ones; p-values from scipy; "
                                   "trials without a finished run are left out.")):
        text = markdown(_shown(frame))
        Path(out / f"{prefix}-{name}.md").write_text(f"{text}\n\n{caption}\n")
        frame.to_csv(out / f"{prefix}-{name}.csv", index=False)
        lines += [f"### {name}" + (f" — {title}" if title else ""), "", text, "", caption, ""]
    finals = pd.DataFrame([{**{k: g.settings[k] for k in params}, "error": r.result["final_test_error"]}
                           for g in groups for r in g.runs if r.status == "done"], columns=[*params, "error"])
    paths = []
    if not finals.empty:
        log = {k for k, space in search.items() if isinstance(space, dict) and space.get("dist") == "loguniform"}
        paths += figures.save(figures.metric_vs_params(finals, params, log, title), out / f"{prefix}-vs-params",
                              formats)
    best = sorted(groups, key=lambda g: np.mean(g.errors()) if g.errors() else math.inf)[:BEST_CURVES]
    curves = curve_frame(best, lambda g: ", ".join(f"{k}={_cell(g.settings[k])}" for k in params))
    if not curves.empty:
        heading = ", ".join(filter(None, [title, f"best {len(best)} trials"]))
        paths += figures.save(figures.training_curves(curves, heading), out / f"{prefix}-best-curves", formats)
    return lines + [f"![{p.stem}]({p.name})" for p in paths if p.suffix == f".{formats[0]}"] + [""]


# --- the report ----------------------------------------------------------------------------------------
def sections(found: Scan) -> list[tuple[str, Sweep | None, list[Run]]]:
    """The runs split by sweep (runs outside any sweep last), each with a name for its files."""
    parts: dict[Path | None, list[Run]] = {}
    for run in found.runs:
        parts.setdefault(run.sweep.path if run.sweep else None, []).append(run)
    named = [(runs[0].sweep.name, runs[0].sweep, runs) for key, runs in parts.items() if key is not None]
    return named + ([("runs", None, parts[None])] if None in parts else [])


def _unread(found: Scan) -> list[str]:
    """Lines for the runs left out: running, broken or partial, not started."""
    lines = []
    for run in (r for r in found.runs if r.status == "running"):
        done = rf.read_jsonl(run.path / rf.METRICS)
        at = f"iteration {done[-1]['iteration']} of {run.settings['iterations']}" if done else "no evaluation yet"
        lines.append(f"- running (no result.json; {at}): {run.path}")
    lines += [f"- skipped, broken or partial: {path}: {reason}" for path, reason in found.broken]
    lines += [f"- not started (named in sweep.yaml, no run folder): {path}" for path in found.missing]
    return lines


def write_report(found: Scan, out: Path, layout: str | None, formats: tuple[str, ...]) -> str:
    """Tables (md, csv, tex) and figures of every section into `out`, and report.md; returns its text."""
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"# Report on {found.root}", ""]
    for name, sweep, runs in sections(found):
        groups, prefix = group(runs), slug(name)
        title = sweep.label() if sweep else ""
        lines += [f"## {title or f'runs under {found.root}'}", ""]
        if not groups:
            lines += ["No finished runs yet.", ""]
            continue
        if (layout if layout not in (None, "auto") else sweep.layout if sweep else None) == SWEEP_VIEW:
            lines += sweep_view(groups, sweep, out, prefix, title, formats)
            continue
        for lay in choose_layouts(layout, sweep, groups):
            table = build_table(lay, groups)
            if table is None:
                lines += [f"No runs fit layout {lay.name} ({lay.title}).", ""]
                continue
            base = out / f"{prefix}-{lay.name}"
            text = markdown(table.shown)
            Path(f"{base}.md").write_text(f"{text}\n\n{table.caption}\n")
            table.frame.to_csv(f"{base}.csv", index=False)
            Path(f"{base}.tex").write_text(latex(table.shown, table.caption))
            lines += [f"### {lay.title}" + (f" — {title}" if title else ""), "", text, "", table.caption, ""]
        spread = gradient_spread(groups)
        if not spread.empty:
            text = markdown(_shown(spread))
            Path(out / f"{prefix}-gradnorm.md").write_text(f"{text}\n\n{SPREAD_CAPTION}\n")
            spread.to_csv(out / f"{prefix}-gradnorm.csv", index=False)
            lines += ["### Gradient spread" + (f" — {title}" if title else ""), "", text, "", SPREAD_CAPTION, ""]
        paths = draw_figures(groups, out, prefix, title, formats)
        shown = [p for p in paths if p.suffix == f".{formats[0]}"]
        lines += [f"![{p.stem}]({p.name})" for p in shown] + [""]
    unread = _unread(found)
    if unread:
        lines += ["## Not in the tables", "", *unread, ""]
    text = "\n".join(lines)
    (out / "report.md").write_text(text)
    return text


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit code 2 (from main), no usage block
        raise UsageError(f"{message}; see --help")


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line: RUNS_DIR, --out, --layout, --formats."""
    parser = _Parser(prog="python -m resnet_ablate.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs_dir", type=Path, help="a folder of run folders (searched recursively), a sweep or one run")
    parser.add_argument("--out", type=Path, required=True, help="where the tables, figures and report.md go")
    parser.add_argument("--layout", choices=["auto", *LAYOUT_NAMES], default=None,
                        help="table layout (default: the sweep.yaml's, else every layout the runs fit)")
    parser.add_argument("--formats", default="png,pdf", help="figure formats, comma-separated (png, pdf)")
    args = parser.parse_args(argv)
    args.formats = tuple(f for f in args.formats.split(",") if f)
    bad = [f for f in args.formats if f not in ("png", "pdf")]
    if bad or not args.formats:
        raise UsageError(f"unknown figure format(s) {', '.join(bad) or '(none)'}; allowed: png, pdf")
    return args


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        text = write_report(scan(args.runs_dir), args.out, args.layout, args.formats)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: cannot write the report: {e}", file=sys.stderr)
        return 2
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
