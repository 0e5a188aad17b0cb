"""The report's figures and the data behind them: each group's training curves and gradient probes in long
form, the gradient-spread table, and every figure the groups have data for (curves, gradient norm per unit,
plain vs ResNet, error vs depth), drawn by `figures`."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

import pandas as pd
from scipy import stats

from ..folders import runfolder as rf
from . import figures
from .scan import SeedGroup, contexts, model_variant, shortcut_params, sort_key, variant_label, varying
from .tables import PAPER_ITERATIONS, schedule


def slug(text: str) -> str:
    """A file-name part: runs of other characters than letters, digits, '.', '=' and '-' become '_'."""
    return re.sub(r"[^A-Za-z0-9.=-]+", "_", text).strip("_") or "runs"


def curve_frame(groups: list[SeedGroup], label: Callable[[SeedGroup], str]) -> pd.DataFrame:
    """metrics.jsonl of the groups' runs in long form: variant, seed, iteration, split, error."""
    rows = [{"variant": label(g), "seed": r.seed, "iteration": m["iteration"], "split": split, "error": m.get(key)}
            for g in groups for r in g.runs for m in rf.read_jsonl(r.path / rf.METRICS)
            for split, key in (("test", "test_error"), ("train", "train_error"))]
    return pd.DataFrame(rows, columns=["variant", "seed", "iteration", "split", "error"]).astype({"error": float})


# The probe's per-unit measures (probes.jsonl keys): the per-element RMS by default (units' inputs differ in
# size: 16x32x32 at the first unit, 64x8x8 at the last, which biases a ratio of plain norms by 2x), or L2.
GRAD_MEASURES = {"rms": ("unit_input_rms", "grad. RMS"), "l2": ("unit_input", "grad. norm")}


def probe_frame(groups: list[SeedGroup], label: Callable[[SeedGroup], str], measure: str = "rms") -> pd.DataFrame:
    """probes.jsonl of the groups' runs in long form: variant, seed, iteration, unit, norm (the `measure`;
    probe lines without it, as files written before the RMS was recorded, give nothing)."""
    key = GRAD_MEASURES[measure][0]
    rows = [{"variant": label(g), "seed": r.seed, "iteration": p["iteration"], "unit": i, "norm": norm}
            for g in groups for r in g.runs for p in rf.read_jsonl(r.path / rf.PROBES)
            for i, norm in enumerate(p.get(key, []))]
    return pd.DataFrame(rows, columns=["variant", "seed", "iteration", "unit", "norm"])


def spread_caption(measure: str = "rms") -> str:
    what = "per-element RMS" if measure == "rms" else "L2 norm"
    return (f"Gradient spread: the {what} of the input gradient at the first residual unit over that at the "
            f"last, per probed iteration (> 1: the gradient grows towards the input, < 1: it shrinks); geometric "
            f"mean over the n seeds, with their min and max. The number behind the gradnorm figures.")


def gradient_spread(groups: list[SeedGroup], measure: str = "rms") -> pd.DataFrame:
    """First-unit / last-unit input-gradient `measure` per variant, depth and probed iteration, over seeds."""
    rows = []
    for context, gs in contexts(groups, (*model_variant(), "depth")):
        keys = varying(gs, model_variant())
        for g in sorted(gs, key=lambda g: (g.settings["depth"], sort_key(g.settings, model_variant()))):
            ratios: dict[int, list[float]] = {}
            for r in g.runs:
                for p in rf.read_jsonl(r.path / rf.PROBES):
                    norms = p.get(GRAD_MEASURES[measure][0]) or []
                    if len(norms) > 1 and norms[-1] > 0:
                        ratios.setdefault(p["iteration"], []).append(norms[0] / norms[-1])
            rows += [{"context": context, "variant": variant_label(g.settings, keys), "depth": g.settings["depth"],
                      "iteration": it, "n": len(rs), "first/last": float(stats.gmean(rs)), "min": min(rs),
                      "max": max(rs)} for it, rs in sorted(ratios.items())]
    frame = pd.DataFrame(rows, columns=["context", "variant", "depth", "iteration", "n", "first/last", "min", "max"])
    return frame.drop(columns="context") if not frame["context"].any() else frame


def _net(g: SeedGroup) -> str:
    return "plain" if g.settings["shortcut"] == "none" else "ResNet"


def response_frame(groups: list[SeedGroup], label: Callable[[SeedGroup], str]) -> pd.DataFrame:
    """responses.json of the groups' runs in long form: variant, seed, layer (forward order), rank (position
    when sorted by std, descending), std."""
    rows = []
    for g in groups:
        for r in g.runs:
            found = rf.read_responses(r.path)
            stds = found["std"] if found else []
            ranks = {i: rank for rank, i in enumerate(sorted(range(len(stds)), key=lambda i: -stds[i]))}
            rows += [{"variant": label(g), "seed": r.seed, "layer": i + 1, "rank": ranks[i] + 1, "std": v}
                     for i, v in enumerate(stds)]
    return pd.DataFrame(rows, columns=["variant", "seed", "layer", "rank", "std"])


def _response_label(g: SeedGroup, keys: set[str]) -> str:
    """'plain-20', 'ResNet-56' as in 2015 Fig. 7 (other variants by their label), with the depth."""
    paper_nets = keys <= {"shortcut"} and g.settings["shortcut"] in ("identity", "none")
    return f"{_net(g) if paper_nets else variant_label(g.settings, keys)}-{g.settings['depth']}"


def draw_figures(groups: list[SeedGroup], out: Path, prefix: str, title: str, formats: tuple[str, ...],
                 measure: str = "rms") -> list[Path]:
    """Every figure the groups have data for (gradient figures of the probe's `measure`); returns the files."""
    written: list[Path] = []

    def save(fig_name: str, context: str, fig) -> None:
        base = out / slug("-".join(filter(None, [prefix, fig_name, context])))
        written.extend(figures.save(fig, base, formats))

    groups = sorted(groups, key=lambda g: sort_key(g.settings, model_variant()))  # legends in the papers' order
    for context, gs in contexts(groups, model_variant()):
        keys, heading = varying(gs, model_variant()), ", ".join(filter(None, [title, context, _budget(gs)]))
        curves = curve_frame(gs, lambda g: variant_label(g.settings, keys))
        if not curves.empty:
            save("curves", context, figures.training_curves(curves, heading))
        probes = probe_frame(gs, lambda g: variant_label(g.settings, keys), measure)
        if not probes.empty:
            save("gradnorm", context, figures.gradient_norms(probes, heading, GRAD_MEASURES[measure][1]))
    for context, gs in contexts(groups, (*model_variant(), "depth")):
        keys = varying(gs, model_variant())
        frame = response_frame(sorted(gs, key=lambda g: (g.settings["shortcut"] != "none", g.settings["depth"])),
                               lambda g: _response_label(g, keys))
        if not frame.empty:
            heading = ", ".join(filter(None, [title, context, _budget(gs)]))
            save("responses", context, figures.layer_responses(frame, heading))
    nets = [g for g in groups if g.settings["shortcut"] in ("identity", "none")]
    for context, gs in contexts(nets, ("depth", "shortcut", *shortcut_params())):
        heading = ", ".join(filter(None, [title, context, _budget(gs)]))
        curves = pd.concat([curve_frame([g], _net).assign(depth=g.settings["depth"]) for g in gs])
        if set(curves["variant"]) == {"plain", "ResNet"}:
            save("degradation", context, figures.degradation(curves.rename(columns={"variant": "net"}), heading))
        finals = pd.DataFrame([{"net": _net(g), "depth": g.settings["depth"], "seed": r.seed,
                                "error": r.result["final_test_error"]} for g in gs for r in g.runs
                               if r.status == "done"], columns=["net", "depth", "seed", "error"])
        if finals["depth"].nunique() > 1:
            save("depth", context, figures.error_vs_depth(finals, heading))
    return written


def _budget(groups: list[SeedGroup]) -> str:
    """'reduced: N it' when the groups share a schedule shorter than the papers', else ''."""
    its = {g.settings["iterations"] for g in groups}
    return schedule(its.pop()) if len(its) == 1 and PAPER_ITERATIONS not in its else ""
