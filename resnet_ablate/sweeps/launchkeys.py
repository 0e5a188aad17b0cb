"""The launcher's own keys (`launcher=`, `ablation=`, `slurm.*`, `sweep.*`, ...; `search.*` is parsed by
`specs`), apart from the run keys they share the command line with, and the small YAML helpers specs and
profiles use. The bottom of `sweeps/`: it imports no other module of it."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ..errors import UsageError, first_line
from ..packing import LOCKSTEP
from ..registry import Range, check_value, parameters
from ..training.config import FAMILIES, opt
from ..values import override_text, yaml_verbatim

LAUNCHERS = ("inline", "local", "slurm", "debug")
METHODS = ("grid", "random")
SOURCE = Path(__file__).resolve().parents[2]  # the checkout holding ablations/ and slurm/


# What a launcher key declared with it applies to: sweeps only (how their runs share jobs, how many they may have).
# On a command that is otherwise a single run it is ignored with a note, and the run keeps its own folder.
SWEEPS = {"command": ["a sweep"]}


@dataclass
class SlurmProfile:
    """SLURM job parameters, read from slurm/<profile>.yaml and overridable as slurm.KEY=VALUE."""

    partition: Optional[str] = opt(None, "partition; null = the cluster's default", "slurm")
    gpus_per_task: int = opt(1, "GPUs per job (0: the jobs train on their CPUs)", "slurm", range="[0, inf)")
    cpus_per_task: int = opt(2, "CPUs per job", "slurm", range="[1, inf)")
    mem_gb: float = opt(4.0, "memory per job (GB)", "slurm", range="(0, inf)")
    time: int = opt(60, "time limit per job (minutes); at the limit a job checkpoints and requeues", "slurm",
                    range="[1, inf)")
    account: Optional[str] = opt(None, "account to charge", "slurm")
    qos: Optional[str] = opt(None, "quality of service", "slurm")
    constraint: Optional[str] = opt(None, "node features, e.g. a100", "slurm")
    signal_delay_s: int = opt(90, "SIGUSR2 this long before the time limit", "slurm", range="[0, inf)")
    extra: dict[str, Any] = opt({}, "extra sbatch options, e.g. slurm.extra.mail-type=END", "slurm")
    setup: list[str] = opt([], "shell lines run before the job, e.g. ['source .venv/bin/activate']", "slurm")
    python: Optional[str] = opt(None, "the command that runs the job's Python, e.g. 'apptainer exec img.sif python' "
                                "for a container; null = this process's interpreter", "slurm")
    srun: bool = opt(True, "start the job's command with srun inside its sbatch script; false where the cluster or "
                     "a container wants the command run directly", "slurm")


@dataclass
class SweepSettings:
    """How the runs are chosen: a grid of comma lists, or random trials drawn from distributions."""

    method: str = opt("", "grid or random; empty = random when there are search distributions, else grid", "sweep",
                      choices=lambda: list(METHODS))
    trials: int = opt(0, "random: points drawn from the search space; 0 = the spec's trials", "sweep",
                      range="[0, inf)")
    seed: int = opt(0, "random: seed of the draws (the same seed draws the same trials)", "sweep",
                    range=Range(f"[0, {2**32})", "0 <= sweep.seed < 2**32"))


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
    max_runs: int = opt(10_000, "refuse a sweep of more runs than this (counted before it is expanded: a typo in a "
                        "list or sweep.trials is one line, not minutes of expanding)", "launcher", range="[1, inf)",
                        applies=SWEEPS)
    array_parallelism: int = opt(16, "jobs running at once (SLURM array %N; local: jobs per wave)", "launcher",
                                 range="[1, inf)", applies=SWEEPS)
    runs_per_job: int = opt(1, "runs trained together in one job (only runs sharing the lockstep settings "
                            f"{', '.join(LOCKSTEP)})", "launcher", range="[1, inf)", applies=SWEEPS)
    max_num_timeout: int = opt(3, "requeues after reaching the time limit before a job gives up", "launcher",
                               range="[0, inf)")
    max_retries: int = opt(2, "retries of a crashed job in place, each resuming from the checkpoints", "launcher",
                           range="[0, inf)")
    profile: str = opt("default", "SLURM profile: slurm/<name>.yaml or a path", "launcher")
    slurm: SlurmProfile = field(default_factory=SlurmProfile)
    sweep: SweepSettings = field(default_factory=SweepSettings)
    search: dict[str, dict[str, Any]] = field(default_factory=dict)  # search.KEY=... from the command line


LAUNCH_FIELDS = {f.name: f for f in dataclasses.fields(Launch) if f.name not in ("slurm", "sweep", "search")}
SLURM_FIELDS = {f.name: f for f in dataclasses.fields(SlurmProfile)}
SWEEP_FIELDS = {f.name: f for f in dataclasses.fields(SweepSettings)}
LAUNCH_KEYS = [*LAUNCH_FIELDS, *(f"slurm.{k}" for k in SLURM_FIELDS), *(f"sweep.{k}" for k in SWEEP_FIELDS)]

def check_ranges(settings: Any, prefix: str = "", source: str = "") -> None:
    """Each number of a launcher settings object (Launch, SlurmProfile, SweepSettings) in the range declared
    with its key: one line naming `prefix`KEY (`source`: the file it came from) otherwise."""
    for f in dataclasses.fields(settings):
        allowed = f.metadata.get("range")
        if allowed is not None:
            try:
                check_value(f"{prefix}{f.name}", getattr(settings, f.name), allowed, None)
            except UsageError as e:
                raise UsageError(f"{source}{e}") from e


def sweeps_only(launch_overrides: list[str]) -> dict[str, tuple[str, tuple[str, ...]]]:
    """The launcher keys among `launch_overrides` that apply to sweeps only (declared `applies=SWEEPS`), each
    with what rules it out on a single run, for `ignored_note`."""
    keys = {key_of(o) for o in launch_overrides}
    return {k: ("a single run", ("sweeps",)) for k, f in LAUNCH_FIELDS.items()
            if k in keys and f.metadata["applies"].keys() == SWEEPS.keys()}


def key_of(override: str) -> str:
    """The key of a `key=value` string (a missing '=' is the run parser's one-line error)."""
    return override.split("=", 1)[0] if "=" in override else ""


def is_launch_key(key: str) -> bool:
    """Launcher keys: Launch's fields, sweep.*, search.KEY and slurm.* (slurm.extra.NAME for any sbatch option)."""
    return key in LAUNCH_KEYS or key.startswith(("slurm.extra.", "search."))


def _not_a_launch_key(kind: str) -> Callable[[str, type], None]:
    """Registration check for a family of registered entries (shortcuts, optimizers, schedules): a parameter
    may not share its name with a launcher key (the command line would hand it to the launcher)."""
    def check(name: str, cls: type) -> None:
        for param in parameters(cls):
            if is_launch_key(param):
                raise UsageError(f"{kind} '{name}': parameter '{param}' clashes with the launcher key '{param}'; "
                                 f"rename the parameter")
    return check


for _family in FAMILIES:
    _family.registry.add_check(_not_a_launch_key(_family.registry.kind))


def text_verbatim(override: str) -> str:
    """A launcher `key=value` whose key is a text (sweep_dir, ablation, profile, ...) with the value quoted for
    YAML, so that it is read as typed (`sweep_dir=runs #2` named the folder 'runs')."""
    key, value = override.split("=", 1) if "=" in override else (override, "")
    fields = {**LAUNCH_FIELDS, **{f"sweep.{k}": f for k, f in SWEEP_FIELDS.items()}}
    return f"{key}={yaml_verbatim(value)}" if key in fields and fields[key].type == "str" else override


def merge_override(conf: Any, override: str, source: str = "") -> None:
    """Merge one `key=value` into an OmegaConf config, as a one-line error when the value does not fit."""
    key, value = override.split("=", 1) if "=" in override else (override, "")
    try:
        conf.merge_with(OmegaConf.from_dotlist([override]))
    except OmegaConfBaseException as e:
        raise UsageError(f"{source}bad value for {key}: '{value}' ({first_line(e)})") from e


def find_file(folder: str, name: str) -> Path | None:
    """A spec or profile by path, or by name as <folder>/<name>.yaml here or in the source checkout."""
    if name.endswith((".yaml", ".yml")) or "/" in name:
        return Path(name) if Path(name).is_file() else None
    for root in dict.fromkeys([Path.cwd(), SOURCE]):
        if (root / folder / f"{name}.yaml").is_file():
            return root / folder / f"{name}.yaml"
    return None


def available(folder: str) -> list[str]:
    """The names of the .yaml files in <folder>/ here and in the source checkout."""
    return sorted({p.stem for root in (Path.cwd(), SOURCE) for p in (root / folder).glob("*.yaml")})


def load_mapping(path: Path) -> dict:
    """A YAML file that must hold a mapping, as plain Python data."""
    try:
        data = OmegaConf.to_container(OmegaConf.load(path))
    except yaml.YAMLError as e:
        raise UsageError(f"{path}: not valid YAML: {yaml_problem(e)}") from e
    except (OmegaConfBaseException, ValueError, OSError) as e:
        raise UsageError(f"{path}: not readable as YAML ({first_line(e)})") from e
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a mapping of keys to values")
    return data


def yaml_problem(error: yaml.YAMLError) -> str:
    """A YAML syntax error in one line: what is wrong and where ("did not find expected ',' (line 2, column 6)")."""
    mark, problem = getattr(error, "problem_mark", None), getattr(error, "problem", None) or first_line(error)
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else problem


def help_text() -> str:
    """The launcher keys with their defaults, meaning and allowed values, for `--help`."""
    lines = ["launcher (sweeps: comma lists expand to a grid, e.g. shortcut=identity,gating seed=0,1,2):"]
    lines += [f"  {name}={override_text(getattr(Launch(), name))}  {_about(name, f)}"
              for name, f in LAUNCH_FIELDS.items()]
    lines.append("sweep (random search: search.KEY=DIST:LOW:HIGH, DIST uniform|loguniform|int, or "
                 "search.KEY=choice:A,B,...):")
    lines += [f"  sweep.{name}={override_text(getattr(SweepSettings(), name))}  {_about(f'sweep.{name}', f)}"
              for name, f in SWEEP_FIELDS.items()]
    lines.append("slurm (defaults from slurm/<profile>.yaml):")
    lines += [f"  slurm.{name}  {_about(f'slurm.{name}', f)}" for name, f in SLURM_FIELDS.items()]
    return "\n".join(lines)


def _about(key: str, f: dataclasses.Field) -> str:
    """A launcher key's help line with its allowed names or numbers."""
    allowed = ", ".join(f.metadata["choices"]()) if f.metadata["choices"] else \
        f.metadata["range"].allowed(key) if f.metadata["range"] else ""
    return f"{f.metadata['help']}  [allowed: {allowed}]" if allowed else f.metadata["help"]
