"""Reading run folders for the report: every run folder under a root with the nearest sweep.yaml above it,
its settings (the identity config keys but the seed), state and result; damaged folders listed with the
reason. Then the runs grouped by settings, and the statistics the tables use.

Shared by tables, figures and the sweep view: the group settings (`group_keys`, `shortcut_params`,
`model_variant`: functions, since registering a shortcut adds keys), labels of a group's settings, and how
groups split into contexts that a table or figure compares within.
"""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from scipy import stats

from ..errors import UsageError
from ..folders import runfolder as rf
from ..folders.kinds import RANGE_TEST_FILES
from ..folders.lock import holder
from ..folders.states import FINISHED, State
from ..folders.sweepfolder import SWEEP_FILE, SweepFileError, SweepRecord, read_sweep
from ..models.resnet import ARCHS
from ..models.shortcuts import SHORTCUTS
from ..models.units import UNITS
from ..training.config import defaults, fields, not_applying, shortcut_keys
from ..training.configfile import missing_entry
from ..training.failrule import judged
from ..values import report_text

DATA = "data"  # the pseudo-setting for the data a run trained on (see `data_of`)


def config_keys() -> tuple[str, ...]:
    """The config keys a group shares: every identity config key but the seed."""
    return tuple(k for k, f in fields().items() if f.metadata["identity"] and k != "seed")


def group_keys() -> tuple[str, ...]:
    """The settings a group shares: `config_keys` and the data (runs with the same settings on two data sets,
    e.g. the real CIFAR-10 and a re-encoded copy under two run roots, are two groups, not one)."""
    return (*config_keys(), DATA)


def data_of(result: dict[str, Any]) -> str:
    """A finished run's data identity: the start of result.json's data fingerprint ('' for a result written
    before fingerprints were kept, or an unfinished run)."""
    value = result.get("data_fingerprint")
    return value[:8] if isinstance(value, str) else ""


def shortcut_params() -> tuple[str, ...]:
    """Every registered shortcut's parameters (config keys)."""
    return tuple(shortcut_keys())


def model_variant() -> tuple[str, ...]:
    """The settings that make a model variant: unit, shortcut and the shortcut parameters."""
    return ("unit", "shortcut", *shortcut_params())


class Broken(Exception):
    """A run folder or sweep.yaml that cannot be read (damaged): reported by path and skipped."""


@dataclass(frozen=True)
class RunRecord:
    """One run folder: its group settings, seed, state (done or fail; else running, paused or not started, as
    `runfolder.folder_state` says) and result.json (for a running run: the lock's owner record)."""

    path: Path
    settings: dict[str, Any]
    seed: int
    status: State
    result: dict[str, Any]
    sweep: SweepRecord | None


@dataclass
class Scan:
    """Everything found under a folder: readable runs, damaged folders (`broken`), sweep runs with no folder, and
    lr_find's range-test folders (not training runs)."""

    root: Path
    runs: list[RunRecord] = field(default_factory=list)
    broken: list[tuple[Path, str]] = field(default_factory=list)
    missing: list[Path] = field(default_factory=list)
    range_tests: list[Path] = field(default_factory=list)


def _typed(key: str, value: Any, default: Any) -> Any:
    """A config value checked against its default's type (lists become tuples, ints may be floats)."""
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
    """The config settings that define a run's group: its identity settings but the seed (defaults for keys an
    older config lacks), with the keys of registered entries not in use (another shortcut's, optimizer's or
    schedule's) set to None (blank in a table). A core key that changes nothing under the others (milestones
    under schedule=cosine, ...) keeps what the run recorded, as before parse set it to its default."""
    plain = defaults()
    out = {k: _typed(k, config.get(k, getattr(plain, k)), getattr(plain, k)) for k in config_keys()}
    problem = missing_entry(config)
    if problem is not None:
        raise Broken(f"config.yaml: {problem}")
    foreign = {k for k in not_applying(out.get) if fields()[k].metadata["family"]}
    return {k: (None if k in foreign else v) for k, v in out.items()}


def _read(folder: Path, read: Callable[[], Any]) -> Any:
    """`read()`, with its Damaged line (less the folder's path) as Broken."""
    try:
        return read()
    except rf.Damaged as e:
        raise Broken(str(e).removeprefix(f"{folder}/")) from e


def read_run(folder: Path, sweep: SweepRecord | None) -> RunRecord:
    """A run folder, or Broken with the reason it cannot be read."""
    config = _read(folder, lambda: rf.read_config_mapping(folder))
    if config is None:
        raise Broken("no config.yaml")
    settings, seed = settings_of(config), _typed("seed", config.get("seed", 0), 0)
    for name in (rf.METRICS, rf.PROBES):  # the curves read these lines later: a damaged one lists the folder here
        _read(folder, lambda: rf.read_jsonl(folder / name))
    result = _read(folder, lambda: rf.read_result(folder))
    if result is not None:
        result = judged(result, {**settings, "recipe": config.get("recipe", "default")}, defaults().iterations)
    if result is None:
        state, _ = rf.folder_state(folder)
        who = holder(folder) if state is State.RUNNING else None
        return RunRecord(folder, {**settings, DATA: ""}, seed, state, who or {}, sweep)
    error = result.get("final_test_error")
    if result["status"] == State.DONE and not (isinstance(error, (int, float)) and math.isfinite(error)):
        raise Broken(f"result.json: status done without a final_test_error ({error!r})")
    return RunRecord(folder, {**settings, **trained_precision(result), DATA: data_of(result)}, seed,
                     State(result["status"]), result, sweep)


def trained_precision(result: dict[str, Any]) -> dict[str, str]:
    """The precision a finished run trained in (result.json's, resolved on its device), which replaces the
    config's: `auto` is resolved only where the run trains, so a bf16 GPU seed and an fp32 CPU seed of one
    name are two groups. Empty for a result that does not record it."""
    value = result.get("precision")
    return {"precision": value} if isinstance(value, str) and value else {}


def scan(root: Path) -> Scan:
    """Every run folder under `root` (a folder holding any run file; its subfolders are not searched),
    each with the nearest sweep.yaml at or above it (up to `root`); a range-test folder (lr_find's, which also
    holds a config.yaml) is set aside."""
    if not root.is_dir():
        raise UsageError(f"{root}: no such folder")
    found, sweeps = Scan(root), {}
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        dirs.sort()
        if SWEEP_FILE in files:
            try:
                sweeps[here] = read_sweep(here)
            except SweepFileError as e:
                found.broken.append((here / SWEEP_FILE, str(e).removeprefix(f"{here / SWEEP_FILE}: ")))
        if set(RANGE_TEST_FILES) & set(files):
            dirs.clear()
            found.range_tests.append(here)
        elif set(rf.RUN_FILES) & set(files):
            dirs.clear()
            sweep = next((sweeps[p] for p in (here, *here.parents) if p in sweeps), None)
            try:
                found.runs.append(read_run(here, sweep))
            except Broken as e:
                found.broken.append((here, str(e)))
    seen = {r.path for r in found.runs} | {p for p, _ in found.broken}
    found.missing = [s.folder / name for s in sweeps.values() for name in s.runs if s.folder / name not in seen]
    if not found.runs and not found.broken and not found.missing and not found.range_tests:
        raise UsageError(f"{root}: no run folders found (a run folder holds config.yaml, metrics.jsonl, result.json)")
    return found



@dataclass
class SeedGroup:
    """Finished runs with the same settings but the seed."""

    settings: dict[str, Any]
    runs: list[RunRecord]

    def errors(self) -> list[float]:
        """Final test errors of the runs that did not fail."""
        return [r.result["final_test_error"] for r in self.runs if r.status == "done"]

    def fails(self) -> int:
        return sum(r.status == "fail" for r in self.runs)

    def median(self) -> float | None:
        """Median final test error over every finished run, a failed one counting as above any error (inf),
        as the 2016 paper's median of 5 runs, failures included: inf when the median lands on a failure."""
        values = [r.result["final_test_error"] if r.status == "done" else math.inf for r in self.runs]
        return float(np.median(values)) if values else None


RESULT_NUMBERS = ("status", "final_test_error", "final_train_error", "final_train_loss", "best_test_error")


@dataclass(frozen=True)
class Copy:
    """A finished run whose settings and seed an earlier one (`counted`: the first path, sorted) already has, as
    when two sweeps train the same run: listed, never counted, so that no seed weighs twice in a median, sd or
    test."""

    run: RunRecord
    counted: RunRecord

    def differs(self) -> list[str]:
        """The result.json numbers (`RESULT_NUMBERS`) in which the two copies differ, 'key here vs counted'."""
        return [f"{k} {report_text(self.run.result.get(k))} vs {report_text(self.counted.result.get(k))}"
                for k in RESULT_NUMBERS if self.run.result.get(k) != self.counted.result.get(k)]

    def line(self) -> str:
        """The copy in one report.md line: where it lies, the run counted instead, and how their numbers differ."""
        differ = self.differs()
        return (f"- not counted (a copy of {self.counted.path}, the same settings and seed {self.run.seed}"
                + (f"; its numbers differ: {', '.join(differ)}" if differ else "; the same numbers") + f"): "
                f"{self.run.path}")


def distinct(runs: list[RunRecord]) -> tuple[list[RunRecord], list[Copy]]:
    """The finished runs with each (settings, seed) once, the copy with the first path (sorted) counted; and
    the other copies, never counted."""
    kept: dict[tuple, RunRecord] = {}
    copies = []
    for run in sorted((r for r in runs if r.status in FINISHED), key=lambda r: str(r.path)):
        key = (tuple(run.settings.items()), run.seed)
        if key in kept:
            copies.append(Copy(run, kept[key]))
        else:
            kept[key] = run
    return list(kept.values()), copies


def copy_lines(runs: list[RunRecord]) -> list[str]:
    """report.md lines under a table for the copies among `runs` that it does not count (none: no lines)."""
    copies = distinct(runs)[1]
    if not copies:
        return []
    differ = sum(bool(c.differs()) for c in copies)
    return [f"{len(copies)} finished run{'s' if len(copies) > 1 else ''} not counted: each a copy of a run above "
            f"(the same settings and seed; the copy with the first path counts)"
            + (f", {differ} of them with numbers that differ from the counted copy's:" if differ else ":"),
            "", *(c.line() for c in copies), ""]


def group_by_settings(runs: list[RunRecord]) -> list[SeedGroup]:
    """Finished runs grouped by settings, each (settings, seed) counted once (`distinct`), each group's runs
    sorted by seed."""
    groups: dict[tuple, SeedGroup] = {}
    for run in distinct(runs)[0]:
        groups.setdefault(tuple(run.settings.items()), SeedGroup(run.settings, [])).runs.append(run)
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
    """Whether block and downsample are the papers' choice for the depth (else no paper value applies), as the
    run's own layout (`ARCHS`) resolves them: each layout has its own depths (CIFAR 6n+2, ImageNet 18, 34, ...)."""
    layout = ARCHS.get(settings["arch"])
    try:
        block = layout.resolve_block(settings["depth"], "auto")
        return layout.resolve_block(settings["depth"], settings["block"]) == block and \
            layout.resolve_downsample(block, settings["downsample"]) == layout.resolve_downsample(block, "auto")
    except UsageError:  # settings no net of this layout has (a hand-edited config.yaml): no paper value
        return False


def setting_text(settings: dict[str, Any]) -> str:
    """The shortcut's own parameters, e.g. 'scale=0.5, residual_scale=1'; its `secondary_params` (the gates'
    init and decay switches) only where they differ from their defaults."""
    keys, cls = shortcut_keys(), SHORTCUTS.get(settings["shortcut"])
    return ", ".join(f"{k}={report_text(v)}" for k, v in settings.items() if k in keys and v is not None
                     and (k not in cls.secondary_params or v != keys[k][0]))


def variant_label(settings: dict[str, Any], keys: set[str]) -> str:
    """A run's model variant in words, naming only the variant settings in `keys` (those that differ)."""
    parts = [settings["unit"]] if "unit" in keys else []
    if keys - {"unit"} or not parts:
        setting = setting_text(settings)
        parts.append(settings["shortcut"] + (f" ({setting})" if setting else ""))
    return ", ".join(parts)


def context_of(settings: dict[str, Any], variant: tuple[str, ...]) -> tuple:
    """The settings outside `variant`: what a table row or figure line is compared within."""
    return tuple((k, v) for k, v in settings.items() if k not in variant)


def contexts(groups: list[SeedGroup], variant: tuple[str, ...]) -> list[tuple[str, list[SeedGroup]]]:
    """Groups split by the settings outside `variant`, each part named by the settings that differ."""
    parts: dict[tuple, list[SeedGroup]] = {}
    for g in groups:
        parts.setdefault(context_of(g.settings, variant), []).append(g)
    differing = [k for k in group_keys() if k not in variant and len({g.settings[k] for g in groups}) > 1]
    return [(", ".join(f"{k}={report_text(gs[0].settings[k])}" for k in differing), gs) for gs in parts.values()]


def varying(groups: list[SeedGroup], keys: tuple[str, ...]) -> set[str]:
    """Those of `keys` whose value differs between the groups."""
    return {k for k in keys if len({g.settings[k] for g in groups}) > 1}


def sort_key(settings: dict[str, Any], first: tuple[str, ...]) -> tuple:
    """Context first, then the papers' order of shortcuts and units, gate biases from 0 down."""
    order = {"shortcut": SHORTCUTS.names(), "unit": UNITS.names()}

    def rank(k: str) -> tuple:
        v = settings[k]
        if v is None:
            return (0, 0)
        if k in order:
            return (1, order[k].index(v))
        return (1, -v if k == "gate_bias" else v if not isinstance(v, str) else 0, str(v))
    return tuple(rank(k) for k in first) + tuple(rank(k) for k in settings if k not in first)
