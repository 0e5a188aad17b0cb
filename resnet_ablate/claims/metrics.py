"""What a claim measures on a finished run, one registered entry per metric: what it is, whether a failed run
counts as worse than any value (as the papers' median of runs counts failures), and how it is read from the run
folder. Torch-free (the gradient metrics read the stretches of one input shape that the report's gradient
figures draw: `runfolder.probe_stages`)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..folders import runfolder as rf
from ..folders.states import State
from ..registry import Registry


@dataclass(frozen=True)
class Metric:
    """A claim's metric: what it is (`about`), whether a failed run counts as +inf, and its reader (None: the
    run does not record it)."""

    about: str
    failure_worst: bool
    read: Callable[[Any], float | None]


METRICS: Registry[Metric] = Registry("metric")


def value(run: Any, metric: str) -> float | None:
    """A finished run's value of `metric` (None: not recorded); a failed run is +inf where failures count."""
    entry = METRICS.get(metric)
    if entry.failure_worst and run.status == State.FAIL:
        return math.inf
    found = entry.read(run)
    return float(found) if isinstance(found, (int, float)) and math.isfinite(found) else None


def _final_train_loss(run: Any) -> float | None:
    """result.json's final_train_loss; for a run written before it was recorded, metrics.jsonl's last
    train_loss (the same number: the writer copies it from there when the run ends)."""
    if "final_train_loss" in run.result:
        return run.result["final_train_loss"]
    lines = [m for m in rf.read_jsonl(run.path / rf.METRICS) if "train_loss" in m]
    return lines[-1]["train_loss"] if lines else None


def _response_std(run: Any) -> float | None:
    found = rf.read_responses(run.path)
    return float(np.mean(found["std"])) if found and found["std"] else None


def _first_probe(run: Any, key: str) -> tuple[list[float], list] | None:
    """The per-unit `key` and the unit input shapes of a CIFAR run's probe at initialisation (iteration 0)."""
    rows = [p for p in rf.read_jsonl(run.path / rf.PROBES) if p["iteration"] == 0 and p.get(key)]
    if not rows or run.settings.get("arch", "cifar") != "cifar":
        return None
    values, shapes = rows[0][key], rows[0].get("unit_shape") or []
    return (values, shapes) if len(shapes) == len(values) and all(v > 0 for v in values) else None


def _shortcut_path_ratio(run: Any) -> float | None:
    """First/last-unit gradient RMS through the shortcuts within each stretch of units whose inputs have one
    shape (a stage's units and the next stage's zero-pad transition, which reads that shape), at
    initialisation; the geometric mean over the stretches of two units or more. Units of two shapes are never
    compared: a transition changes the RMS by geometry alone."""
    found = _first_probe(run, "shortcut_path_rms")
    if found is None:
        return None
    norms, stage = found[0], rf.probe_stages(found[1])
    stretches = [[v for v, s in zip(norms, stage) if s == k] for k in sorted(set(stage))]
    ratios = [units[0] / units[-1] for units in stretches if len(units) > 1]
    return float(np.exp(np.mean(np.log(ratios)))) if ratios else None


def _input_gradient_ratio(run: Any) -> float | None:
    """First/last-unit RMS of the total input gradient at initialisation (below 1: it shrinks towards the
    input)."""
    found = _first_probe(run, "unit_input_rms")
    return None if found is None or len(found[0]) < 2 else found[0][0] / found[0][-1]


for _name, _metric in {
    "test_error": Metric("final test error (%)", True, lambda run: run.result.get("final_test_error")),
    "train_error": Metric("final training error (%), the last evaluation's", True,
                          lambda run: run.result.get("final_train_error")),
    "train_loss": Metric("final training loss, the last evaluation interval's mean (result.json final_train_loss)",
                         True, _final_train_loss),
    "response_std": Metric("mean over the 3x3 layers of the response std (responses.json, 2015 Fig. 7)", False,
                           _response_std),
    "shortcut_path_ratio": Metric("first/last-unit RMS of the gradient through the shortcuts only (probes.jsonl "
                                  "shortcut_path_rms at iteration 0), within each stretch of units whose inputs "
                                  "have one shape, geometric mean over the stretches", False, _shortcut_path_ratio),
    "input_gradient_ratio": Metric("first/last-unit RMS of the total input gradient (probes.jsonl unit_input_rms "
                                   "at iteration 0)", False, _input_gradient_ratio),
}.items():
    METRICS.register(_name)(_metric)
