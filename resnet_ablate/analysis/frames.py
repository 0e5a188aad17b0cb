"""The data behind the report's figures, as long-format frames (one row per run and point): each group's
training curves (`metrics.jsonl`), gradient probes (`probes.jsonl`) and layer responses (`responses.json`);
and the gradient-spread table. `figures` draws them.

A probe line holds the input gradient of every unit twice (models/probes.py): in total, and through the
shortcuts only (`shortcut_path*`: every residual branch detached where it merges, the term of the 2016 paper's
Eq. 5). Its `unit_shape` says where a stage changes the shape; a zero-pad transition changes the RMS by
geometry, so the per-stage numbers compare units of one shape only."""
from __future__ import annotations

from typing import Callable

import pandas as pd
from scipy import stats

from ..folders import runfolder as rf
from .scan import SeedGroup, contexts, model_variant, sort_key, variant_label, varying


def curve_frame(groups: list[SeedGroup], label: Callable[[SeedGroup], str]) -> pd.DataFrame:
    """metrics.jsonl of the groups' runs in long form: variant, seed, iteration, split, error, loss (the test
    set's, or the evaluation interval's mean training loss)."""
    rows = [{"variant": label(g), "seed": r.seed, "iteration": m["iteration"], "split": split,
             "error": m.get(f"{split}_error"), "loss": m.get(f"{split}_loss")}
            for g in groups for r in g.runs for m in rf.read_jsonl(r.path / rf.METRICS) for split in ("test", "train")]
    return pd.DataFrame(rows, columns=["variant", "seed", "iteration", "split", "error", "loss"]).astype(
        {"error": float, "loss": float})


# The probe's per-unit measures (probes.jsonl keys): the per-element RMS by default (units' inputs differ in
# size: 16x32x32 at the first unit, 64x8x8 at the last, which biases a ratio of plain norms by 2x), or L2;
# each as (total key, shortcut-path key, axis label).
GRAD_MEASURES = {"rms": ("unit_input_rms", "shortcut_path_rms", "grad. RMS"),
                 "l2": ("unit_input", "shortcut_path", "grad. norm")}
PATHS = ("total", "shortcut path")  # a probe frame's `path` values, in GRAD_MEASURES' key order


def probe_frame(groups: list[SeedGroup], label: Callable[[SeedGroup], str], measure: str = "rms") -> pd.DataFrame:
    """probes.jsonl of the groups' runs in long form: variant, seed, iteration, path (total | shortcut path),
    unit, stage (0 where the line has no unit_shape), norm (the `measure`; probe lines without it, as files
    written before the RMS or the shortcut path was recorded, give nothing)."""
    rows = []
    for g in groups:
        for r in g.runs:
            for p in rf.read_jsonl(r.path / rf.PROBES):
                for path, key in zip(PATHS, GRAD_MEASURES[measure][:2]):
                    values = p.get(key) or []
                    shapes = p.get("unit_shape") or []
                    stage = rf.probe_stages(shapes) if len(shapes) == len(values) else [0] * len(values)
                    rows += [{"variant": label(g), "seed": r.seed, "iteration": p["iteration"], "path": path,
                              "unit": i, "stage": stage[i], "norm": norm} for i, norm in enumerate(values)]
    return pd.DataFrame(rows, columns=["variant", "seed", "iteration", "path", "unit", "stage", "norm"])


def spread_caption(measure: str = "rms") -> str:
    what = "per-element RMS" if measure == "rms" else "L2 norm"
    return (f"Gradient spread: the {what} of the input gradient at the first residual unit over that at the "
            f"last, per probed iteration (> 1: the gradient grows towards the input, < 1: it shrinks); geometric "
            f"mean over the n seeds, with their min and max. The number behind the gradnorm figures. Stage k "
            f"total / shortcut: within the k-th stretch of units whose inputs have one shape, the factor per unit "
            f"by which the {what} changes from the stretch's last unit back to its first ((first/last)^(1/units), "
            f"geometric mean over the seeds), in total and through the shortcuts only (every residual branch "
            f"detached where it merges: the 2016 paper's Eq. 5 term, exactly 1 for identity shortcuts on full "
            f"pre-activation units and λ for scaling; after original units a ReLU follows every addition). Within "
            f"a stage, because a zero-pad transition changes the RMS by geometry alone; blank where no gradient "
            f"flows (a plain net has no shortcut path).")


def _stage_factors(p: dict, measure: str) -> dict[str, float]:
    """One probe line's per-unit factors within each stage (`stage k total`, `stage k shortcut`)."""
    shapes, out = p.get("unit_shape") or [], {}
    for path, key in zip(("total", "shortcut"), GRAD_MEASURES[measure][:2]):
        values = p.get(key) or []
        if len(values) != len(shapes):
            continue
        per_stage = rf.probe_stages(shapes)
        for k in sorted(set(per_stage)):
            idx = [i for i, s in enumerate(per_stage) if s == k]
            first, last = values[idx[0]], values[idx[-1]]
            if len(idx) > 1 and first > 0 and last > 0:
                out[f"stage {k} {path}"] = (first / last) ** (1 / (len(idx) - 1))
    return out


def gradient_spread(groups: list[SeedGroup], measure: str = "rms") -> pd.DataFrame:
    """First-unit / last-unit input-gradient `measure` per variant, depth and probed iteration, over seeds;
    and the per-unit factors within each stage, in total and through the shortcuts only."""
    rows = []
    for context, gs in contexts(groups, (*model_variant(), "depth")):
        keys = varying(gs, model_variant())
        for g in sorted(gs, key=lambda g: (g.settings["depth"], sort_key(g.settings, model_variant()))):
            ratios: dict[int, list[float]] = {}
            factors: dict[int, dict[str, list[float]]] = {}
            for r in g.runs:
                for p in rf.read_jsonl(r.path / rf.PROBES):
                    norms = p.get(GRAD_MEASURES[measure][0]) or []
                    if len(norms) > 1 and norms[-1] > 0:
                        ratios.setdefault(p["iteration"], []).append(norms[0] / norms[-1])
                    for name, value in _stage_factors(p, measure).items():
                        factors.setdefault(p["iteration"], {}).setdefault(name, []).append(value)
            rows += [{"context": context, "variant": variant_label(g.settings, keys), "depth": g.settings["depth"],
                      "iteration": it, **{k: float(stats.gmean(v)) for k, v in factors.get(it, {}).items()},
                      "n": len(rs), "first/last": float(stats.gmean(rs)), "min": min(rs), "max": max(rs)}
                     for it, rs in sorted(ratios.items())]
    named = sorted({k for row in rows for k in row if k.startswith("stage ")},
                   key=lambda k: (k.endswith("shortcut"), int(k.split()[1])))
    frame = pd.DataFrame(rows, columns=["context", "variant", "depth", "iteration", *named, "n", "first/last", "min",
                                        "max"])
    return frame.drop(columns="context") if not frame["context"].any() else frame


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
