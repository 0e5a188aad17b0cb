"""Ablation specs, random search and expansion: what a sweep's runs are, as validated configs in their sweep
folder. Pure functions of the spec files and the command line (they launch nothing and write nothing).

A run key's value with commas outside brackets is a sweep axis: `seed=0,1,2` is three runs,
`milestones=[16000,24000]` is one. A spec is `overrides` + `variants` x `grid` x `seeds`, with named
`budgets`. Random search (`sweep.method=random`): `sweep.trials` points drawn from per-key distributions (a
spec's `search:` block, or `search.KEY=DIST:LOW:HIGH` / `search.KEY=choice:A,B` on the command line), trial i
with numpy's Generator seeded by (`sweep.seed`, i); each point is a trial, crossed with the spec's runs and the
grid axes.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..claims.spec import ANY_VALUE, RECIPE, Claim, read_claims
from ..errors import UsageError, closest, unknown
from ..folders import runfolder as rf
from ..folders.files import not_a_name
from ..folders.sweepfolder import LAYOUTS, SweepRecord
from ..training.config import Config, defaults, fields
from ..training.configfile import run_name
from ..training.parse import parse
from ..training.recipes import RECIPES
from ..values import override_text
from .expansion import check_collisions, check_list_axes, check_size, parse_runs, sweep_name
from .launchkeys import Launch, available, find_file, key_of, load_mapping

SPEC_KEYS = ("description", "layout", "overrides", "variants", "grid", "seeds", "budgets", "search", "trials",
             "claims")
BUDGET_KEYS = ("description", "overrides", "grid", "seeds", "trials")
DISTRIBUTIONS = ("uniform", "loguniform", "int")
FOLDER_KEYS = ("run_dir", "sweep_dir", "runs_root")  # folders: the sweep's is given once, on the command line


def sweep_values(value: str) -> list[str]:
    """'a,b,[1,2]' -> ['a', 'b', '[1,2]']: commas outside brackets, braces and quotes separate values."""
    parts, current, depth, quote = [], "", 0, ""
    for ch in value:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        current += ch
    return [*parts, current]


def axes(run_overrides: list[str]) -> list[list[str]]:
    """Each run override as the list of `key=value` strings it sweeps over (one for a plain override)."""
    return [[f"{key_of(o)}={v}" for v in sweep_values(o.split("=", 1)[1])] if "=" in o else [o] for o in run_overrides]


def is_sweep(launch_overrides: list[str], run_overrides: list[str]) -> bool:
    """Anything but one plain run in this process goes through the launcher."""
    return bool(launch_overrides) or any(len(a) > 1 for a in axes(run_overrides))


def parse_distribution(key: str, text: str) -> dict[str, Any]:
    """`DIST:LOW:HIGH` or `choice:A,B,...` (a search.KEY value) as the spec's mapping form, checked."""
    name, _, rest = text.partition(":")
    if name == "choice":
        return check_distribution(key, {"choice": sweep_values(rest) if rest else []})
    bounds = rest.split(":")
    try:
        low, high = (float(b) for b in bounds) if len(bounds) == 2 else (None, None)
    except ValueError:
        low = high = None
    if low is None:
        raise UsageError(f"{key}: expected DIST:LOW:HIGH (DIST: {', '.join(DISTRIBUTIONS)}) or choice:A,B,..., "
                         f"got '{text}'")
    return check_distribution(key, {"dist": name, "low": low, "high": high})


def check_distribution(key: str, space: Any) -> dict[str, Any]:
    """A search distribution: {choice: [values]} or {dist: uniform|loguniform|int, low, high}; one-line errors."""
    if not isinstance(space, dict) or ("choice" in space) == ("dist" in space):
        raise UsageError(f"{key}: expected {{dist: {'|'.join(DISTRIBUTIONS)}, low: L, high: H}} or "
                         f"{{choice: [A, B, ...]}}, got {space!r}")
    if "choice" in space:
        if set(space) != {"choice"} or not isinstance(space["choice"], list) or not space["choice"]:
            raise UsageError(f"{key}: choice must be a non-empty list and the only key, got {space!r}")
        return space
    dist, low, high = space["dist"], space.get("low"), space.get("high")
    if dist not in DISTRIBUTIONS:
        raise unknown("distribution", dist, [*DISTRIBUTIONS, "choice"], where=key)
    if set(space) != {"dist", "low", "high"} or not all(isinstance(b, (int, float)) and not isinstance(b, bool)
                                                        for b in (low, high)):
        raise UsageError(f"{key}: {dist} needs numbers low and high (and no other keys), got {space!r}")
    if (not low < high or (dist == "loguniform" and low <= 0) or
            (dist == "int" and (low != int(low) or high != int(high)))):
        raise UsageError(f"{key}: bad bounds low={low:g} high={high:g} for {dist} (need low < high"
                         f"{', low > 0' if dist == 'loguniform' else ', integers' if dist == 'int' else ''})")
    return space


def draw_trials(search: dict[str, dict[str, Any]], trials: int, seed: int) -> list[dict[str, str]]:
    """`trials` points of the search space as override texts. Trial i is drawn with numpy's Generator seeded by
    (`seed`, i), so it does not depend on how many trials there are: enlarging a sweep extends it and keeps the
    trials already trained."""
    points = []
    for i in range(trials):
        rng = np.random.default_rng([seed, i])
        points.append({key: _draw(space, rng) for key, space in search.items()})
    return points


def _draw(space: dict[str, Any], rng: np.random.Generator) -> str:
    """One draw of a distribution (floats to 4 significant digits, so run names stay readable)."""
    if "choice" in space:
        return override_text(space["choice"][int(rng.integers(len(space["choice"])))])
    low, high = space["low"], space["high"]
    if space["dist"] == "int":
        return str(int(rng.integers(int(low), int(high), endpoint=True)))
    if space["dist"] == "loguniform":
        return f"{math.exp(rng.uniform(math.log(low), math.log(high))):.4g}"
    return f"{rng.uniform(low, high):.4g}"


@dataclass
class Spec:
    """An ablation: variants x grid x seeds of run overrides on top of shared ones, and named budgets."""

    name: str
    path: Path
    layout: str | None
    overrides: dict[str, Any]
    variants: list[dict[str, Any]]
    grid: dict[str, list[Any]]
    seeds: list[int]
    budgets: dict[str, dict[str, Any]]
    search: dict[str, dict[str, Any]]
    trials: int
    claims: list[Claim] = field(default_factory=list)  # the paper's findings these runs check (`claims.spec`)

    def budget(self, budget: str) -> dict[str, Any]:
        """The settings of a named budget ({} for full)."""
        if budget != "full" and budget not in self.budgets:
            raise unknown("budget", budget, ["full", *self.budgets], of=f"for {self.name}")
        return self.budgets.get(budget, {})

    def grid_of(self, budget: str) -> dict[str, list]:
        """The grid under `budget`: a budget's `grid` replaces the values of some of the spec's axes."""
        return {**self.grid, **self.budget(budget).get("grid", {})}

    def runs(self, budget: str) -> list[list[str]]:
        """Every run of the spec under `budget` as run overrides (later ones win)."""
        extra, grid = self.budget(budget), self.grid_of(budget)
        seeds = extra.get("seeds", self.seeds)
        points = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
        return [[f"{k}={override_text(v)}" for k, v in {**self.overrides, **variant, **point, "seed": seed,
                                                  **extra.get("overrides", {})}.items()]
                for variant in self.variants for point in points for seed in seeds]


def load_spec(name: str) -> Spec:
    """An ablation spec by name (ablations/<name>.yaml) or path, its keys and shapes checked."""
    path = find_file("ablations", name)
    if path is None:
        raise unknown("ablation", name, available("ablations"), extra="(or a path to a spec .yaml)")
    data = load_mapping(path)
    if not data:
        raise UsageError(f"{path}: empty spec, nothing to run; a spec sets overrides, variants, grid, seeds or "
                         f"search (see the specs in ablations/)")
    known_keys(path, data, SPEC_KEYS)
    layout = data.get("layout")
    if layout is not None and layout not in LAYOUTS:
        raise unknown("layout", layout, LAYOUTS, where=str(path))
    budgets = _expect(path, "budgets", data.get("budgets", {}), dict, "a mapping of budget names to settings")
    for name, what in ((path.stem, "its file name"), *((str(b), "a budget's name") for b in budgets)):
        if not_a_name(name):  # it names the sweep folder: '../../..' put the whole sweep outside runs_root
            raise UsageError(f"{path}: {what} becomes the sweep folder's name, but {not_a_name(name)}; rename it")
    for budget, settings in budgets.items():
        _expect(path, f"budgets.{budget}", settings, dict, "a mapping")
        known_keys(path, settings, BUDGET_KEYS, f"budgets.{budget}.")
    spec = Spec(path.stem, path, layout, _expect(path, "overrides", data.get("overrides", {}), dict, "a mapping"),
                _expect(path, "variants", data.get("variants", [{}]), list, "a list of mappings"),
                _expect(path, "grid", data.get("grid", {}), dict, "a mapping of keys to lists"),
                _expect(path, "seeds", data.get("seeds", [0]), list, "a list of seeds"), budgets,
                _expect(path, "search", data.get("search", {}), dict, "a mapping of keys to distributions"),
                _expect(path, "trials", data.get("trials", 0), int, "a number of trials"))
    spec.claims = read_claims(path, spec.name, data.get("claims", []), check_setting)
    for key, space in spec.search.items():
        check_distribution(f"{path}: search.{key}", space)
    for key, values in spec.grid.items():
        _expect(path, f"grid.{key}", values, list, "a list")
    for budget, settings in budgets.items():
        for key, values in _expect(path, f"budgets.{budget}.grid", settings.get("grid", {}), dict,
                                   "a mapping of the spec's grid keys to lists").items():
            if key not in spec.grid:
                raise UsageError(f"{path}: budgets.{budget}.grid.{key} is not a key of the spec's grid "
                                 f"({', '.join(spec.grid) or 'none'}); a budget's grid replaces the values of those")
            _expect(path, f"budgets.{budget}.grid.{key}", values, list, "a list")
        _expect(path, f"budgets.{budget}.seeds", settings.get("seeds", []), list, "a list of seeds")
        _expect(path, f"budgets.{budget}.trials", settings.get("trials", 0), int, "a number of trials")
    return spec


def check_setting(key: str, value: Any) -> None:
    """A claim selector's `key: value`: a config key that defines a run (or `recipe`), with a value of its type
    and among its choices (any value for ANY_VALUE); a one-line UsageError otherwise."""
    if key == RECIPE and value is not ANY_VALUE:
        if value not in RECIPES:
            raise unknown("recipe", value, RECIPES)
        return
    known = {k: f for k, f in fields().items() if f.metadata["identity"]}
    if key not in known:
        raise UsageError(f"unknown setting '{key}'{closest(key, list(known))}; a selector names config keys that "
                         f"define a run (see --help) or recipe")
    if value is ANY_VALUE:
        return
    default, choices = getattr(defaults(), key), known[key].metadata["choices"]
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    fits = {bool: isinstance(value, bool), int: number and float(value).is_integer(), float: number,
            list: isinstance(value, list), str: isinstance(value, str)}.get(type(default), True)
    if not fits:
        raise UsageError(f"{key}: {value!r} is not a {type(default).__name__}")
    if choices is not None and value not in choices():
        raise unknown(key, value, choices())


def known_keys(path: Path, data: dict, allowed: tuple[str, ...], prefix: str = "") -> None:
    """A one-line error naming the file for the first key of `data` that is not `allowed`."""
    for key in (k for k in data if k not in allowed):
        raise unknown("key", f"{prefix}{key}", allowed, where=str(path))


def _expect(path: Path, key: str, value: Any, kind: type, what: str) -> Any:
    if not isinstance(value, kind):
        raise UsageError(f"{path}: {key} must be {what}, got {value!r}")
    return value


@dataclass
class SweepPlan:
    """The expanded runs of one launch and where they go."""

    name: str
    layout: str | None
    budget: str
    folder: Path
    cfgs: list[Config]
    search: dict[str, Any] = field(default_factory=dict)  # random: method, trials, seed and the distributions
    notes: list[str] = field(default_factory=list)  # settings ignored (another shortcut's parameters), once each
    names: list[str] = field(default_factory=list)  # the runs' folder names, as cfgs (computed once: run_name)

    def record(self, command: str, launcher: str) -> SweepRecord:
        """The sweep.yaml this launch writes."""
        random = self.search or {"method": "grid"}
        return SweepRecord(self.folder, self.name, self.layout, self.budget,
                           tuple(self.names or (run_name(c) for c in self.cfgs)),
                           command, rf.git_commit(), launcher, method=random["method"],
                           trials=random.get("trials", 0), seed=random.get("seed", 0), search=random.get("search", {}))


def expand(launch: Launch, run_overrides: list[str]) -> SweepPlan:
    """The spec's runs (if any) x the command line's sweep axes, each a validated Config in the sweep folder."""
    spec = load_spec(launch.ablation) if launch.ablation else None
    if spec is None and launch.budget != "full":
        raise UsageError(f"budget={launch.budget} needs an ablation= spec that defines it")
    if any(key_of(o) == "run_dir" for o in run_overrides):
        raise UsageError("run_dir names one run's folder; a sweep puts its runs under sweep_dir= (or runs_root=)")
    search = random_search(launch, spec, run_overrides)
    grid = axes(run_overrides)
    check_list_axes(grid)
    check_size(spec, launch.budget, search.get("trials", 0), grid, launch.max_runs)  # before anything is built
    base = spec.runs(launch.budget) if spec else [[]]
    for key in (key_of(o) for overrides in base for o in overrides if key_of(o) in FOLDER_KEYS):
        raise UsageError(f"{spec.path}: {key} may not be set in a spec (a sweep's runs all live in its sweep "
                         f"folder); give sweep_dir= on the command line instead")
    _parse_from(spec, base)
    points = draw_trials(search["search"], search["trials"], search["seed"]) if search else [{}]
    notes: list[str] = []
    runs = [[*overrides, *(f"{k}={v}" for k, v in point.items()), *combo]
            for overrides, point, combo in itertools.product(base, points, itertools.product(*grid))]
    named = check_collisions(parse_runs(runs, notes))
    cfgs = list(named.values())
    if not cfgs:
        raise UsageError(f"{spec.path if spec else 'the command line'}: empty grid (a list of variants, grid "
                         f"values or seeds is empty); nothing to run")
    name = spec.name if spec else "sweep"
    own = (name if launch.budget == "full" else f"{name}_{launch.budget}") if spec else sweep_name(cfgs)
    folder = Path(launch.sweep_dir or Path(cfgs[0].runs_root) / own)
    for cfg in cfgs:  # each a config of its own (parse_runs made them), so set in place: no copy of 10,000
        cfg.runs_root = str(folder)
    layout = spec.layout if spec and spec.layout else "sweep" if search else None
    return SweepPlan(name, layout, launch.budget, folder, cfgs, search, list(dict.fromkeys(notes)), list(named))


def random_search(launch: Launch, spec: Spec | None, run_overrides: list[str]) -> dict[str, Any]:
    """For sweep.method=random: method, trials, seed and the distributions (the command line's win over the
    spec's); {} for a grid. Errors for a search without random, random without a search, or no trials."""
    search = {**(spec.search if spec else {}), **launch.search}
    method = launch.sweep.method or ("random" if search else "grid")
    if method == "grid":
        if search:
            raise UsageError(f"search distributions ({', '.join(search)}) need sweep.method=random")
        return {}
    if not search:
        raise UsageError("sweep.method=random needs distributions: a spec's search: block or search.KEY=DIST:LOW:HIGH")
    for key in search:
        if key in FOLDER_KEYS:
            raise UsageError(f"search.{key}: folders are not searched (the trials would share one folder); "
                             f"give sweep_dir= once instead")
        if key not in fields():
            raise UsageError(f"search.{key}: unknown key '{key}'{closest(key, list(fields()))}; "
                             f"see --help for the keys")
        if key in map(key_of, run_overrides):
            raise UsageError(f"{key} is both searched (search.{key}) and set on the command line; drop one")
        for value in search[key].get("choice", []):
            try:
                parse([f"{key}={override_text(value)}"])
            except UsageError as e:
                raise UsageError(f"search.{key}: {e}") from e
    trials = launch.sweep.trials or (spec.budget(launch.budget).get("trials", spec.trials) if spec else 0)
    if trials < 1:
        raise UsageError("sweep.method=random needs sweep.trials=N (or a spec's trials:)")
    return {"method": "random", "trials": trials, "seed": launch.sweep.seed, "search": search}


def _parse_from(spec: Spec | None, runs: list[list[str]]) -> None:
    """Check a spec's own run overrides, naming the spec file in the error."""
    try:
        parse_runs(runs)
    except UsageError as e:
        raise UsageError(f"{spec.path if spec else ''}: {e}") from e
