"""The report's view of a random sweep (`layout: sweep`): the trials best first, each searched parameter's
importance (Spearman's rho for numbers, Kruskal-Wallis H for choices), error against each parameter, and the
best trials' training curves."""
from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter
from scipy import stats

from ..folders.sweepfolder import SweepRecord
from ..values import report_text
from .figures import training_curves
from .frames import curve_frame
from .plotting import WIDTH, fit_title, save, style
from .scan import SeedGroup, group_keys, varying
from .tables import emit, text_cells

BEST_CURVES = 3
TRIALS_CAPTION = ("Trials, best first: searched parameters, final test error (%) mean over the runs that did not "
                  "fail (seeds), n runs, fail = runs with status fail.")
IMPORTANCE_CAPTION = ("Parameter importance: rank correlation of each numeric parameter with the trials' mean final "
                      "test error (Spearman rho; > 0: larger values, larger error), Kruskal-Wallis H across the "
                      "values of categorical ones; p-values from scipy; trials without a finished run are left out.")


def searched(groups: list[SeedGroup], sweep: SweepRecord | None) -> list[str]:
    """The parameters a sweep varies: sweep.yaml's search keys, else the settings that differ between groups."""
    keys = group_keys()
    found = list(sweep.search) if sweep and sweep.search else [k for k in keys if varying(groups, (k,))]
    return [k for k in found if k in keys]


def trial_frame(groups: list[SeedGroup], params: list[str]) -> pd.DataFrame:
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


def sweep_view(groups: list[SeedGroup], sweep: SweepRecord | None, out: Path, prefix: str, title: str,
               formats: tuple[str, ...]) -> list[str]:
    """The sweep view's tables (md, csv) and figures into `out`; returns its report.md lines."""
    params = searched(groups, sweep)
    if not params:
        return ["No searched parameters (no sweep.yaml search and no setting varies).", ""]
    trials, search = trial_frame(groups, params), sweep.search if sweep else {}
    lines = []
    for name, frame, caption in (("trials", trials, TRIALS_CAPTION),
                                 ("importance", importance(trials, params), IMPORTANCE_CAPTION)):
        heading = name + (f" — {title}" if title else "")
        lines += emit(text_cells(frame), frame, caption, out / f"{prefix}-{name}", heading)
    finals = pd.DataFrame([{**{k: g.settings[k] for k in params}, "error": r.result["final_test_error"]}
                           for g in groups for r in g.runs if r.status == "done"], columns=[*params, "error"])
    paths = []
    if not finals.empty:
        log = {k for k, space in search.items() if isinstance(space, dict) and space.get("dist") == "loguniform"}
        paths += save(metric_vs_params(finals, params, log, title), out / f"{prefix}-vs-params", formats)
    best = sorted(groups, key=lambda g: np.mean(g.errors()) if g.errors() else math.inf)[:BEST_CURVES]
    curves = curve_frame(best, lambda g: ", ".join(f"{k}={report_text(g.settings[k])}" for k in params))
    if not curves.empty:
        heading = ", ".join(filter(None, [title, f"best {len(best)} trials"]))
        paths += save(training_curves(curves, heading), out / f"{prefix}-best-curves", formats)
    return lines + [f"![{p.stem}]({p.name})" for p in paths if p.suffix == f".{formats[0]}"] + [""]
