"""Sweeps: expand `key=value` overrides and ablation specs into runs, write the sweep folder and run the
runs in this process or through submitit (local processes, SLURM job arrays, or submitit's debug mode).

    <sweep_dir>/sweep.yaml          name, layout, budget, command, git_commit, runs (read by the report)
    <sweep_dir>/<run name>/         one run folder per run (the trainer's format)
    <sweep_dir>/.submitit/          submitit's pickles and logs, and jobs.jsonl: which job trains which runs

Run keys and launcher keys share the command line and are told apart by name. A run key's value with
commas outside brackets is a sweep axis: `seed=0,1,2` is three runs, `milestones=[16000,24000]` is one.

Random search (`sweep.method=random`): `sweep.trials` points drawn from per-key distributions (a spec's
`search:` block, or `search.KEY=DIST:LOW:HIGH` / `search.KEY=choice:A,B` on the command line) with numpy's
Generator seeded by `sweep.seed`; each point is a trial, crossed with the spec's runs and the grid axes.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import itertools
import json
import shlex
import shutil
import signal
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import submitit
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from scipy import stats

from . import runfolder as rf
from .config import FIELDS, Config, opt, parse, run_dir, run_name
from .registry import UsageError, closest
from .train import LOCKSTEP, StopRequest, git_commit, train

LAUNCHERS = ("inline", "local", "slurm", "debug")
LAYOUTS = ("table1", "table2", "table3", "depth", "degradation", "gradnorm", "sweep")
SPEC_KEYS = ("description", "layout", "overrides", "variants", "grid", "seeds", "budgets", "search", "trials")
BUDGET_KEYS = ("description", "overrides", "seeds", "trials")
METHODS = ("grid", "random")
DISTRIBUTIONS = ("uniform", "loguniform", "int")
SOURCE = Path(__file__).resolve().parents[1]  # the checkout holding ablations/ and slurm/
SWEEP_FILE, SUBMITIT_DIR, JOBS_FILE = "sweep.yaml", ".submitit", "jobs.jsonl"
LOCAL_TIMEOUT_MIN = 60 * 24 * 365  # local jobs have no scheduler limit; submitit's default is 2 minutes
LIVE_STATES = ("PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING", "SUSPENDED")


@dataclass
class SlurmProfile:
    """SLURM job parameters, read from slurm/<profile>.yaml and overridable as slurm.KEY=VALUE."""

    partition: Optional[str] = opt(None, "partition; null = the cluster's default", "slurm")
    gpus_per_task: int = opt(0, "GPUs per job", "slurm")
    cpus_per_task: int = opt(2, "CPUs per job", "slurm")
    mem_gb: float = opt(4.0, "memory per job (GB)", "slurm")
    time: int = opt(60, "time limit per job (minutes); at the limit a job checkpoints and requeues", "slurm")
    account: Optional[str] = opt(None, "account to charge", "slurm")
    qos: Optional[str] = opt(None, "quality of service", "slurm")
    constraint: Optional[str] = opt(None, "node features, e.g. a100", "slurm")
    signal_delay_s: int = opt(90, "SIGUSR2 this long before the time limit", "slurm")
    extra: dict[str, Any] = opt({}, "extra sbatch options, e.g. slurm.extra.mail-type=END", "slurm")
    setup: list[str] = opt([], "shell lines run before the job, e.g. ['source .venv/bin/activate']", "slurm")


@dataclass
class SweepSettings:
    """How the runs are chosen: a grid of comma lists, or random trials drawn from distributions."""

    method: str = opt("", "grid or random; empty = random when there are search distributions, else grid", "sweep",
                      choices=lambda: list(METHODS))
    trials: int = opt(0, "random: points drawn from the search space; 0 = the spec's trials", "sweep")
    seed: int = opt(0, "random: seed of the draws (the same seed draws the same trials)", "sweep")


@dataclass
class Launch:
    """Where a sweep's runs come from, where they go, and what runs them."""

    launcher: str = opt("inline", "inline = in this process, one job after another; local = submitit local "
                        "processes; slurm = a SLURM job array; debug = submitit's in-process debug mode (pdb on "
                        "a crash)", "launcher", choices=lambda: list(LAUNCHERS))
    ablation: str = opt("", "spec name in ablations/ (e.g. table2_units) or a path to a spec .yaml", "launcher")
    budget: str = opt("full", "full, or a reduced budget the spec names (fewer iterations/seeds)", "launcher")
    dry_run: bool = opt(False, "print the expanded runs and which are finished; submit nothing", "launcher")
    sweep_dir: str = opt("", "sweep folder; empty = <runs_root>/<ablation or sweep>[_<budget>]", "launcher")
    array_parallelism: int = opt(16, "jobs running at once (SLURM array %N; local: jobs per wave)", "launcher")
    runs_per_job: int = opt(1, "runs trained together in one job (only runs sharing the lockstep settings "
                            f"{', '.join(LOCKSTEP)})", "launcher")
    max_num_timeout: int = opt(3, "requeues after reaching the time limit before a job gives up", "launcher")
    max_retries: int = opt(2, "retries of a crashed job in place, each resuming from the checkpoints", "launcher")
    profile: str = opt("default", "SLURM profile: slurm/<name>.yaml or a path", "launcher")
    slurm: SlurmProfile = field(default_factory=SlurmProfile)
    sweep: SweepSettings = field(default_factory=SweepSettings)
    search: dict[str, dict[str, Any]] = field(default_factory=dict)  # search.KEY=... from the command line


LAUNCH_FIELDS = {f.name: f for f in dataclasses.fields(Launch) if f.name not in ("slurm", "sweep", "search")}
SLURM_FIELDS = {f.name: f for f in dataclasses.fields(SlurmProfile)}
SWEEP_FIELDS = {f.name: f for f in dataclasses.fields(SweepSettings)}
LAUNCH_KEYS = [*LAUNCH_FIELDS, *(f"slurm.{k}" for k in SLURM_FIELDS), *(f"sweep.{k}" for k in SWEEP_FIELDS)]


# --- command line ---------------------------------------------------------------------------------
def _key(override: str) -> str:
    """The key of a `key=value` string (a missing '=' is the run parser's one-line error)."""
    return override.split("=", 1)[0] if "=" in override else ""


def is_launch_key(key: str) -> bool:
    """Launcher keys: Launch's fields, sweep.*, search.KEY and slurm.* (slurm.extra.NAME for any sbatch option)."""
    return key in LAUNCH_KEYS or key.startswith(("slurm.extra.", "search."))


def split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """(launcher overrides, run overrides); an unknown key gets the closest key of either kind."""
    launch, run = [], []
    for override in argv:
        key = _key(override)
        if key and not is_launch_key(key) and key not in FIELDS:
            raise UsageError(f"unknown key '{key}'{closest(key, [*FIELDS, *LAUNCH_KEYS])}; see --help for the keys")
        (launch if is_launch_key(key) else run).append(override)
    return launch, run


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
    return [[f"{_key(o)}={v}" for v in sweep_values(o.split("=", 1)[1])] if "=" in o else [o] for o in run_overrides]


def is_sweep(launch_overrides: list[str], run_overrides: list[str]) -> bool:
    """Anything but one plain run in this process goes through the launcher."""
    return bool(launch_overrides) or any(len(a) > 1 for a in axes(run_overrides))


def parse_launch(overrides: list[str]) -> Launch:
    """Launch settings from `key=value` strings, with the SLURM profile loaded for launcher=slurm."""
    conf = OmegaConf.structured(Launch)
    for override in (o for o in overrides if not _key(o).startswith("search.")):
        _merge(conf, override)
    launch: Launch = OmegaConf.to_object(conf)  # type: ignore[assignment]
    launch.search = {_key(o).removeprefix("search."): parse_distribution(_key(o), o.split("=", 1)[1])
                     for o in overrides if _key(o).startswith("search.")}
    if launch.sweep.method not in ("", *METHODS):
        raise UsageError(f"unknown sweep.method '{launch.sweep.method}'{closest(launch.sweep.method, list(METHODS))}; "
                         f"allowed: {', '.join(METHODS)}")
    if launch.launcher not in LAUNCHERS:
        raise UsageError(f"unknown launcher '{launch.launcher}'{closest(launch.launcher, list(LAUNCHERS))}; "
                         f"allowed: {', '.join(LAUNCHERS)}")
    for name in ("array_parallelism", "runs_per_job"):
        if getattr(launch, name) < 1:
            raise UsageError(f"{name}={getattr(launch, name)} must be at least 1")
    if launch.sweep.trials < 0:
        raise UsageError(f"sweep.trials={launch.sweep.trials} must be at least 0")
    if launch.launcher == "slurm":
        launch.slurm = load_profile(launch.profile, [o for o in overrides if _key(o).startswith("slurm.")])
    return launch


def _merge(conf: Any, override: str, source: str = "") -> None:
    """Merge one `key=value` into an OmegaConf config, as a one-line error when the value does not fit."""
    key, value = override.split("=", 1) if "=" in override else (override, "")
    try:
        conf.merge_with(OmegaConf.from_dotlist([override]))
    except OmegaConfBaseException as e:
        raise UsageError(f"{source}bad value for {key}: '{value}' ({str(e).splitlines()[0]})") from e


def _find(folder: str, name: str) -> Path | None:
    """A spec or profile by path, or by name as <folder>/<name>.yaml here or in the source checkout."""
    if name.endswith((".yaml", ".yml")) or "/" in name:
        return Path(name) if Path(name).is_file() else None
    for root in dict.fromkeys([Path.cwd(), SOURCE]):
        if (root / folder / f"{name}.yaml").is_file():
            return root / folder / f"{name}.yaml"
    return None


def _available(folder: str) -> list[str]:
    return sorted({p.stem for root in (Path.cwd(), SOURCE) for p in (root / folder).glob("*.yaml")})


def load_profile(name: str, overrides: list[str]) -> SlurmProfile:
    """slurm/<name>.yaml (or a path) checked against SlurmProfile, then the slurm.* overrides."""
    path = _find("slurm", name)
    if path is None:
        raise UsageError(f"SLURM profile '{name}' not found (looked for slurm/{name}.yaml here and in {SOURCE}); "
                         f"available: {', '.join(_available('slurm')) or 'none'}")
    data = _load_mapping(path)
    unknown = [k for k in data if k not in SLURM_FIELDS]
    if unknown:
        raise UsageError(f"{path}: unknown key '{unknown[0]}'{closest(unknown[0], list(SLURM_FIELDS))}; "
                         f"allowed: {', '.join(SLURM_FIELDS)}")
    conf = OmegaConf.structured(SlurmProfile)
    for key, value in data.items():
        _merge(conf, f"{key}={_text(value)}", f"{path}: ")
    for override in overrides:
        _merge(conf, override.removeprefix("slurm."))
    return OmegaConf.to_object(conf)  # type: ignore[return-value]


def _load_mapping(path: Path) -> dict:
    """A YAML file that must hold a mapping, as plain Python data."""
    try:
        data = OmegaConf.to_container(OmegaConf.load(path))
    except (OmegaConfBaseException, ValueError, OSError) as e:
        raise UsageError(f"{path}: not readable as YAML ({str(e).splitlines()[0]})") from e
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a mapping of keys to values")
    return data


def _text(value: Any) -> str:
    """A YAML value back as the text of a `key=value` override."""
    return value if isinstance(value, str) else json.dumps(value)


# --- random search -----------------------------------------------------------------------------------
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
        raise UsageError(f"{key}: unknown distribution '{dist}'{closest(str(dist), list(DISTRIBUTIONS))}; "
                         f"allowed: {', '.join(DISTRIBUTIONS)}, choice")
    if set(space) != {"dist", "low", "high"} or not all(isinstance(b, (int, float)) and not isinstance(b, bool)
                                                        for b in (low, high)):
        raise UsageError(f"{key}: {dist} needs numbers low and high (and no other keys), got {space!r}")
    if not low < high or (dist == "loguniform" and low <= 0) or (dist == "int" and (low != int(low) or high != int(high))):
        raise UsageError(f"{key}: bad bounds low={low:g} high={high:g} for {dist} (need low < high"
                         f"{', low > 0' if dist == 'loguniform' else ', integers' if dist == 'int' else ''})")
    return space


def draw_trials(search: dict[str, dict[str, Any]], trials: int, seed: int) -> list[dict[str, str]]:
    """`trials` points of the search space as override texts, drawn with numpy's Generator seeded by `seed`."""
    rng = np.random.default_rng(seed)
    columns = {key: _draw(space, trials, rng) for key, space in search.items()}
    return [{key: values[i] for key, values in columns.items()} for i in range(trials)]


def _draw(space: dict[str, Any], n: int, rng: np.random.Generator) -> list[str]:
    """n draws of one distribution (floats to 4 significant digits, so run names stay readable)."""
    if "choice" in space:
        return [_text(space["choice"][i]) for i in rng.integers(len(space["choice"]), size=n)]
    low, high = space["low"], space["high"]
    if space["dist"] == "int":
        return [str(v) for v in rng.integers(int(low), int(high), size=n, endpoint=True)]
    dist = stats.loguniform(low, high) if space["dist"] == "loguniform" else stats.uniform(low, high - low)
    return [f"{v:.4g}" for v in dist.rvs(size=n, random_state=rng)]


# --- ablation specs ---------------------------------------------------------------------------------
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

    def budget(self, budget: str) -> dict[str, Any]:
        """The settings of a named budget ({} for full)."""
        if budget != "full" and budget not in self.budgets:
            names = ["full", *self.budgets]
            raise UsageError(f"unknown budget '{budget}' for {self.name}{closest(budget, names)}; "
                             f"allowed: {', '.join(names)}")
        return self.budgets.get(budget, {})

    def runs(self, budget: str) -> list[list[str]]:
        """Every run of the spec under `budget` as run overrides (later ones win)."""
        extra = self.budget(budget)
        seeds = extra.get("seeds", self.seeds)
        points = [dict(zip(self.grid, values)) for values in itertools.product(*self.grid.values())]
        return [[f"{k}={_text(v)}" for k, v in {**self.overrides, **variant, **point, "seed": seed,
                                                  **extra.get("overrides", {})}.items()]
                for variant in self.variants for point in points for seed in seeds]


def load_spec(name: str) -> Spec:
    """An ablation spec by name (ablations/<name>.yaml) or path, its keys and shapes checked."""
    path = _find("ablations", name)
    if path is None:
        available = _available("ablations")
        raise UsageError(f"unknown ablation '{name}'{closest(name, available)}; allowed: {', '.join(available)} "
                         f"(or a path to a spec .yaml)")
    data = _load_mapping(path)
    _known_keys(path, data, SPEC_KEYS)
    layout = data.get("layout")
    if layout is not None and layout not in LAYOUTS:
        raise UsageError(f"{path}: unknown layout '{layout}'{closest(str(layout), list(LAYOUTS))}; "
                         f"allowed: {', '.join(LAYOUTS)}")
    budgets = _expect(path, "budgets", data.get("budgets", {}), dict, "a mapping of budget names to settings")
    for budget, settings in budgets.items():
        _expect(path, f"budgets.{budget}", settings, dict, "a mapping")
        _known_keys(path, settings, BUDGET_KEYS, f"budgets.{budget}.")
    spec = Spec(path.stem, path, layout, _expect(path, "overrides", data.get("overrides", {}), dict, "a mapping"),
                _expect(path, "variants", data.get("variants", [{}]), list, "a list of mappings"),
                _expect(path, "grid", data.get("grid", {}), dict, "a mapping of keys to lists"),
                _expect(path, "seeds", data.get("seeds", [0]), list, "a list of seeds"), budgets,
                _expect(path, "search", data.get("search", {}), dict, "a mapping of keys to distributions"),
                _expect(path, "trials", data.get("trials", 0), int, "a number of trials"))
    for key, space in spec.search.items():
        check_distribution(f"{path}: search.{key}", space)
    for key, values in spec.grid.items():
        _expect(path, f"grid.{key}", values, list, "a list")
    for budget, settings in budgets.items():
        _expect(path, f"budgets.{budget}.seeds", settings.get("seeds", []), list, "a list of seeds")
        _expect(path, f"budgets.{budget}.trials", settings.get("trials", 0), int, "a number of trials")
    return spec


def _known_keys(path: Path, data: dict, allowed: tuple[str, ...], prefix: str = "") -> None:
    unknown = [k for k in data if k not in allowed]
    if unknown:
        raise UsageError(f"{path}: unknown key '{prefix}{unknown[0]}'{closest(str(unknown[0]), list(allowed))}; "
                         f"allowed: {', '.join(allowed)}")


def _expect(path: Path, key: str, value: Any, kind: type, what: str) -> Any:
    if not isinstance(value, kind):
        raise UsageError(f"{path}: {key} must be {what}, got {value!r}")
    return value


# --- expansion --------------------------------------------------------------------------------------
@dataclass
class Sweep:
    """The expanded runs of one launch and where they go."""

    name: str
    layout: str | None
    budget: str
    folder: Path
    cfgs: list[Config]
    search: dict[str, Any] = field(default_factory=dict)  # random: method, trials, seed and the distributions


def expand(launch: Launch, run_overrides: list[str]) -> Sweep:
    """The spec's runs (if any) x the command line's sweep axes, each a validated Config in the sweep folder."""
    spec = load_spec(launch.ablation) if launch.ablation else None
    if spec is None and launch.budget != "full":
        raise UsageError(f"budget={launch.budget} needs an ablation= spec that defines it")
    if any(_key(o) == "run_dir" for o in run_overrides):
        raise UsageError("run_dir names one run's folder; a sweep puts its runs under sweep_dir= (or runs_root=)")
    base = spec.runs(launch.budget) if spec else [[]]
    for overrides in base:
        _parse_from(spec, overrides)
    search = random_search(launch, spec, run_overrides)
    points = draw_trials(search["search"], search["trials"], search["seed"]) if search else [{}]
    cfgs = {}
    for overrides, point, combo in itertools.product(base, points, itertools.product(*axes(run_overrides))):
        cfg = parse([*overrides, *(f"{k}={v}" for k, v in point.items()), *combo])
        cfgs.setdefault(run_name(cfg), cfg)
    if not cfgs:
        raise UsageError(f"{spec.path if spec else 'the command line'}: empty grid (a list of variants, grid "
                         f"values or seeds is empty); nothing to run")
    name = spec.name if spec else "sweep"
    first = next(iter(cfgs.values()))
    folder = Path(launch.sweep_dir or Path(first.runs_root) / (name if launch.budget == "full"
                                                                else f"{name}_{launch.budget}"))
    runs = [dataclasses.replace(c, runs_root=str(folder)) for c in cfgs.values()]
    layout = spec.layout if spec and spec.layout else "sweep" if search else None
    return Sweep(name, layout, launch.budget, folder, runs, search)


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
        if key not in FIELDS:
            raise UsageError(f"search.{key}: unknown key '{key}'{closest(key, list(FIELDS))}; see --help for the keys")
        if key in map(_key, run_overrides):
            raise UsageError(f"{key} is both searched (search.{key}) and set on the command line; drop one")
        for value in search[key].get("choice", []):
            try:
                parse([f"{key}={_text(value)}"])
            except UsageError as e:
                raise UsageError(f"search.{key}: {e}") from e
    trials = launch.sweep.trials or (spec.budget(launch.budget).get("trials", spec.trials) if spec else 0)
    if trials < 1:
        raise UsageError("sweep.method=random needs sweep.trials=N (or a spec's trials:)")
    return {"method": "random", "trials": trials, "seed": launch.sweep.seed, "search": search}


def _parse_from(spec: Spec | None, overrides: list[str]) -> None:
    """Check a spec's own run overrides, naming the spec file in the error."""
    try:
        parse(overrides)
    except UsageError as e:
        raise UsageError(f"{spec.path if spec else ''}: {e}") from e


def finished(cfg: Config) -> str | None:
    """'done' or 'fail' for a run whose result.json says so, else None."""
    result = rf.read_result(run_dir(cfg))
    status = result.get("status") if result else None
    return status if status in rf.FINISHED else None


def groups(cfgs: list[Config], runs_per_job: int) -> list[list[Config]]:
    """Runs packed `runs_per_job` to a job; only runs sharing the LOCKSTEP settings share a job."""
    by_key: dict[tuple, list[Config]] = {}
    for cfg in cfgs:
        by_key.setdefault(tuple(str(getattr(cfg, k)) for k in LOCKSTEP), []).append(cfg)
    return [g[i:i + runs_per_job] for g in by_key.values() for i in range(0, len(g), runs_per_job)]


def write_sweep(sweep: Sweep, command: str, launch: Launch) -> None:
    """sweep.yaml: what the report needs to find and label the runs, and how they were launched."""
    sweep.folder.mkdir(parents=True, exist_ok=True)
    data = {"name": sweep.name, "layout": sweep.layout, "budget": sweep.budget, "command": command,
            "git_commit": git_commit(), "launcher": launch.launcher,
            "created": datetime.datetime.now().isoformat(timespec="seconds"),
            **(sweep.search or {"method": "grid"}), "runs": [run_name(c) for c in sweep.cfgs]}
    rf.write_text(sweep.folder / SWEEP_FILE, OmegaConf.to_yaml(OmegaConf.create(data)))


def read_sweep(folder: Path) -> dict:
    """A sweep folder's sweep.yaml as a dict (a one-line error when it is missing)."""
    path = folder / SWEEP_FILE
    if not path.is_file():
        raise UsageError(f"{folder} is not a sweep folder (no {SWEEP_FILE})")
    return _load_mapping(path)


# --- jobs ------------------------------------------------------------------------------------------
class RunCrashed(RuntimeError):
    """A job's runs crashed more often than max_retries allows."""


class SweepJob(submitit.helpers.Checkpointable):
    """One job: train its runs together with `train(cfgs)`, survive preemption, retry crashes.

    Signals. submitit installs its handlers before it calls the job: SIGUSR2 (SLURM's warning before the time
    limit, or a preemption notice) -> checkpoint_and_try_requeue, which pickles `self.checkpoint(cfgs)`,
    requeues the job and exits; SIGTERM -> a no-op ("bypass"), since SLURM sends SIGKILL after KillWait. Left
    alone, submitit's handler would requeue from the middle of an iteration and lose everything since the last
    periodic checkpoint. So while training, the job installs the trainer's StopRequest instead, which ends
    the current iteration and writes checkpoint.pt, and afterwards raises the signal again for the handler it
    replaced:
      - SIGUSR2: submitit requeues the job (time limits count against max_num_timeout) and exits; the requeued
        job is this callable with the same runs, and train() resumes each from its checkpoint.
      - SIGTERM (scontrol requeue, scancel, preemption): submitit's bypass returns and the job trains on from
        the checkpoint it just wrote, so the SIGKILL that follows loses at most the work since then, and a
        SIGTERM that nothing follows loses nothing.
      - where nothing handled the signal before (launcher=inline or debug), and for Ctrl-C, the runs stay
        paused and the job returns their summaries; the same command resumes them.
    A crash (an exception from training) is retried in place max_retries times, each from the checkpoints;
    then the job fails with RunCrashed, which submitit records in its logs and `status` reports.
    """

    def __init__(self, max_retries: int) -> None:
        self.max_retries = max_retries

    def __call__(self, cfgs: list[Config]) -> list[dict]:
        crashes = 0
        while True:
            stop = StopRequest()
            try:
                with _trainer_signals(stop) as replaced:
                    summaries = train(cfgs, stop)
            except UsageError:
                raise
            except Exception as e:  # noqa: BLE001 - any crash of training is retried, then reported
                crashes += 1
                traceback.print_exc()
                if crashes > self.max_retries:
                    raise RunCrashed(f"crashed {crashes} times, last: {type(e).__name__}: "
                                     f"{(str(e).splitlines() or [''])[0]}") from e
                print(f"retry {crashes} of {self.max_retries}, from the checkpoints", file=sys.stderr, flush=True)
                continue
            if not callable(replaced.get(stop.reason or "")):
                return summaries
            signal.raise_signal(signal.Signals[stop.reason])  # type: ignore[misc]


@contextlib.contextmanager
def _trainer_signals(stop: StopRequest) -> Iterator[dict[str, Any]]:
    """Let `stop` take SIGINT/SIGTERM/SIGUSR2 while training; yield the TERM/USR2 handlers it replaced, and
    put them all back afterwards."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)}
    stop.install()
    try:
        yield {s.name: h for s, h in saved.items() if s != signal.SIGINT}
    finally:
        with contextlib.suppress(ValueError, TypeError):  # not the main thread, or a handler set outside Python
            for sig, handler in saved.items():
                signal.signal(sig, handler)


def executor(launch: Launch, folder: Path) -> submitit.AutoExecutor:
    """submitit's AutoExecutor for launcher=local|slurm|debug with the launch's parameters."""
    if launch.launcher == "slurm" and shutil.which("sbatch") is None:
        raise UsageError("launcher=slurm but 'sbatch' is not on PATH: run this on a SLURM login node "
                         "(or start a local cluster with slurm/start-local-slurm.sh)")
    ex = submitit.AutoExecutor(folder=folder / SUBMITIT_DIR, cluster=launch.launcher,
                               slurm_max_num_timeout=launch.max_num_timeout,
                               local_max_num_timeout=launch.max_num_timeout)
    p = launch.slurm
    if launch.launcher == "slurm":
        ex.update_parameters(name=folder.name, timeout_min=p.time, cpus_per_task=p.cpus_per_task, mem_gb=p.mem_gb,
                             slurm_partition=p.partition, slurm_gpus_per_task=p.gpus_per_task or None,
                             slurm_account=p.account, slurm_qos=p.qos, slurm_constraint=p.constraint,
                             slurm_signal_delay_s=p.signal_delay_s, slurm_array_parallelism=launch.array_parallelism,
                             slurm_additional_parameters=dict(p.extra), slurm_setup=list(p.setup))
    elif launch.launcher == "local":
        ex.update_parameters(name=folder.name, timeout_min=LOCAL_TIMEOUT_MIN)
    return ex


def record_jobs(folder: Path, launcher: str, jobs: list[Any], batches: list[list[Config]]) -> None:
    """Append which job trains which runs to .submitit/jobs.jsonl (status reads it)."""
    (folder / SUBMITIT_DIR).mkdir(parents=True, exist_ok=True)
    for job, batch in zip(jobs, batches):
        rf.append_jsonl(folder / SUBMITIT_DIR / JOBS_FILE, {"job_id": job.job_id, "launcher": launcher,
                                                           "runs": [run_name(c) for c in batch]})


def latest_jobs(folder: Path) -> dict[str, dict]:
    """Each run's most recent job record from .submitit/jobs.jsonl."""
    return {run: record for record in rf.read_jsonl(folder / SUBMITIT_DIR / JOBS_FILE) for run in record["runs"]}


def slurm_states(records: list[dict], folder: Path) -> dict[str, str]:
    """SLURM state (sacct, through submitit) of each SLURM job among `records`, by job id."""
    ids = sorted({r["job_id"] for r in records if r["launcher"] == "slurm"})
    if not ids or shutil.which("sacct") is None:
        return {}
    jobs = [submitit.SlurmJob(folder=folder / SUBMITIT_DIR, job_id=i) for i in ids]
    jobs[0].watcher.update()  # one sacct call for all of them
    return {job.job_id: (job.get_info(mode="cache").get("State") or "UNKNOWN").split()[0] for job in jobs}


# --- launching --------------------------------------------------------------------------------------
def launch_main(launch_overrides: list[str], run_overrides: list[str], command: str) -> int:
    """Expand, report what is finished, and run or submit the rest; 1 when a run crashed in a waited-for job."""
    launch = parse_launch(launch_overrides)
    sweep = expand(launch, run_overrides)
    states = {run_name(c): finished(c) for c in sweep.cfgs}
    live = _live_runs(sweep.folder)
    todo = [c for c in sweep.cfgs if states[run_name(c)] is None and run_name(c) not in live]
    trials = f", {sweep.search['trials']} random trials (seed {sweep.search['seed']})" if sweep.search else ""
    print(f"sweep {sweep.name} (budget {sweep.budget}, layout {sweep.layout}{trials}): {len(sweep.cfgs)} runs in "
          f"{sweep.folder}; {sum(s is not None for s in states.values())} finished, {len(live)} queued or "
          f"running, {len(todo)} to run", flush=True)
    if launch.dry_run:
        for name, state in states.items():
            print(f"  {state or live.get(name) or '-':<8} {name}")
        return 0
    executor_ = None if launch.launcher == "inline" else executor(launch, sweep.folder)
    write_sweep(sweep, command, launch)
    batches = groups(todo, launch.runs_per_job)
    if not batches:
        return 0
    job = SweepJob(launch.max_retries)
    if executor_ is None:
        return _report([_run_inline(job, batch) for batch in batches], batches)
    if launch.launcher == "slurm":
        jobs = executor_.map_array(job, batches)
        record_jobs(sweep.folder, launch.launcher, jobs, batches)
        print(f"submitted {len(jobs)} jobs ({jobs[0].job_id.split('_')[0]}) for {len(todo)} runs; follow them with "
              f"`python -m resnet_ablate.status {sweep.folder}`", flush=True)
        return 0
    outcomes = []
    for start in range(0, len(batches), launch.array_parallelism):
        wave = batches[start:start + launch.array_parallelism]
        jobs = executor_.map_array(job, wave)
        record_jobs(sweep.folder, launch.launcher, jobs, wave)
        outcomes += [_outcome(j) for j in jobs]
    return _report(outcomes, batches)


def _live_runs(folder: Path) -> dict[str, str]:
    """Runs whose latest SLURM job is still queued or running (never submitted twice), with that state."""
    latest = latest_jobs(folder)
    states = slurm_states(list(latest.values()), folder)
    return {run: states[r["job_id"]].lower() for run, r in latest.items()
            if states.get(r["job_id"], "").upper() in LIVE_STATES}


def _run_inline(job: SweepJob, batch: list[Config]) -> str | None:
    """Train one batch in this process; the crash reason, or None."""
    try:
        job(batch)
    except RunCrashed as e:
        return str(e)
    return None


def _outcome(job: Any) -> str | None:
    """Wait for a submitit job; its crash reason, or None."""
    try:
        job.result()
    except Exception as e:  # noqa: BLE001 - submitit wraps the job's exception with its traceback
        return _last_line(str(e))
    return None


def _last_line(text: str) -> str:
    """The error line of a traceback (the last line naming an exception), else its last non-empty line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.split(":", 1)[0].endswith(("Error", "Crashed", "Exception"))]
    return (errors or lines or [""])[-1]


def _report(outcomes: list[str | None], batches: list[list[Config]]) -> int:
    """Print the runs whose job crashed; 1 if any did."""
    crashed = [(run_name(c), reason) for reason, batch in zip(outcomes, batches) if reason for c in batch]
    for name, reason in crashed:
        print(f"crashed: {name}: {reason}", file=sys.stderr)
    return 1 if crashed else 0


def help_text() -> str:
    """The launcher keys with their defaults and meaning, for `--help`."""
    lines = ["launcher (sweeps: comma lists expand to a grid, e.g. shortcut=identity,gating seed=0,1,2):"]
    defaults = Launch()
    for name, f in LAUNCH_FIELDS.items():
        allowed = f"  [allowed: {', '.join(f.metadata['choices']())}]" if f.metadata["choices"] else ""
        lines.append(f"  {name}={getattr(defaults, name)}  {f.metadata['help']}{allowed}")
    lines.append("sweep (random search: search.KEY=DIST:LOW:HIGH, DIST uniform|loguniform|int, or "
                 "search.KEY=choice:A,B,...):")
    lines += [f"  sweep.{name}={getattr(SweepSettings(), name)}  {f.metadata['help']}" for name, f in SWEEP_FIELDS.items()]
    lines.append("slurm (defaults from slurm/<profile>.yaml):")
    lines += [f"  slurm.{name}  {f.metadata['help']}" for name, f in SLURM_FIELDS.items()]
    return "\n".join(lines)


def command_line(argv: list[str]) -> str:
    """The command that launched a sweep, as one shell line."""
    return shlex.join(["python", "-m", "resnet_ablate.run", *argv])
