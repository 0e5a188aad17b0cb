"""The launcher: `python -m resnet_ablate.run` with launcher keys or comma lists. It parses the launcher's
settings, expands the runs (`specs`), skips what is finished or still queued, writes the sweep folder's
sweep.yaml, and trains the rest in this process or submits them through submitit (`jobs`)."""
from __future__ import annotations

import contextlib
import os
import shlex
import sys
from pathlib import Path

from omegaconf import OmegaConf

from .. import packing
from ..cli import EXIT_CRASHED, EXIT_PAUSED, EXIT_USAGE
from ..errors import UsageError, closest, unknown
from ..folders import runfolder as rf
from ..folders.jobstate import live_state, slurm_states
from ..folders.kinds import check_run_folder, check_sweep_folder
from ..folders.lock import describe, holder
from ..folders.states import State, tally
from ..folders.sweepfolder import SweepRecord, latest_jobs, launching, write_sweep
from ..training.config import Config, fields
from ..training.configfile import run_dir, run_name
from ..training.progress import cores
from ..training.runtime import check_threads, prepare_inputs
from ..training.signals import release_stop_signals
from ..training.writer import check_settings, read_config
from ..values import override_text
from .jobs import RunCrashed, SweepJob, check_launcher, executor, outcome, record_jobs
from .launchkeys import (
    LAUNCH_KEYS,
    LAUNCHERS,
    METHODS,
    SLURM_FIELDS,
    SOURCE,
    Launch,
    SlurmProfile,
    available,
    check_ranges,
    find_file,
    is_launch_key,
    key_of,
    load_mapping,
    merge_override,
    text_verbatim,
)
from .plancost import cost_line
from .specs import SweepPlan, expand, parse_distribution


def split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """(launcher overrides, run overrides); an unknown key gets the closest key of either kind."""
    launch, run = [], []
    for override in argv:
        key = key_of(override)
        if key and not is_launch_key(key) and key not in fields():
            raise UsageError(f"unknown key '{key}'{closest(key, [*fields(), *LAUNCH_KEYS])}; see --help for the keys")
        (launch if is_launch_key(key) else run).append(override)
    return launch, run


def parse_launch(overrides: list[str]) -> Launch:
    """Launch settings from `key=value` strings, with the SLURM profile loaded for launcher=slurm."""
    conf = OmegaConf.structured(Launch)
    for override in (o for o in overrides if not key_of(o).startswith("search.")):
        merge_override(conf, text_verbatim(override))
    launch: Launch = OmegaConf.to_object(conf)  # type: ignore[assignment]
    launch.search = {key_of(o).removeprefix("search."): parse_distribution(key_of(o), o.split("=", 1)[1])
                     for o in overrides if key_of(o).startswith("search.")}
    if launch.sweep.method not in ("", *METHODS):
        raise unknown("sweep.method", launch.sweep.method, METHODS)
    if launch.launcher not in LAUNCHERS:
        raise unknown("launcher", launch.launcher, LAUNCHERS)
    check_ranges(launch)
    check_ranges(launch.sweep, "sweep.")
    if launch.sweep_dir.startswith("~"):
        raise UsageError(f"sweep_dir={launch.sweep_dir}: the shell did not expand '~' here; write the path out, e.g. "
                         f"sweep_dir={os.path.expanduser(launch.sweep_dir)}")
    if launch.launcher == "slurm":
        launch.slurm = load_profile(launch.profile, [o for o in overrides if key_of(o).startswith("slurm.")])
    return launch


def load_profile(name: str, overrides: list[str]) -> SlurmProfile:
    """slurm/<name>.yaml (or a path) checked against SlurmProfile, then the slurm.* overrides."""
    path = find_file("slurm", name)
    if path is None:
        raise UsageError(f"SLURM profile '{name}' not found (looked for slurm/{name}.yaml here and in {SOURCE}); "
                         f"available: {', '.join(available('slurm')) or 'none'}")
    data = load_mapping(path)
    for key in (k for k in data if k not in SLURM_FIELDS):
        raise unknown("key", key, SLURM_FIELDS, where=str(path))
    conf = OmegaConf.structured(SlurmProfile)
    for key, value in data.items():
        merge_override(conf, f"{key}={override_text(value)}", f"{path}: ")
    check_ranges(OmegaConf.to_object(conf), "slurm.", f"{path}: ")
    for override in overrides:
        merge_override(conf, override.removeprefix("slurm."))
    profile: SlurmProfile = OmegaConf.to_object(conf)  # type: ignore[assignment]
    check_ranges(profile, "slurm.")
    return profile


def result_state(cfg: Config, quiet: bool = False, folder: Path | None = None) -> State | None:
    """done or fail for a run whose folder holds it finished with these settings, damaged for a folder with a
    file that cannot be read (as `status` and the report find it; said on stderr unless `quiet`), else None.
    A folder of other settings, or another tool's, is refused; one trained from another data_dir or init file
    is left to the trainer, which compares the data themselves. `folder`: the run's, when known (run_dir(cfg))."""
    folder = folder or run_dir(cfg)
    if not os.path.isdir(folder):
        return None
    try:
        check_run_folder(folder)
        check_settings(folder, cfg)
        result = rf.check_readable(folder)
        saved = read_config(folder)
    except rf.Damaged as e:
        if not quiet:
            print(f"damaged, skipped: {e}", file=sys.stderr, flush=True)
        return State.DAMAGED
    if result is None or saved is None or (saved.data_dir, saved.init) != (cfg.data_dir, cfg.init):
        return None
    return State(result["status"])


def launch_main(launch_overrides: list[str], run_overrides: list[str], command: str) -> int:
    """Expand, report what is finished, and run or submit the rest; the exit code of `cli.py` (1 when a run
    crashed in a waited-for job, 75 when runs were stopped before their end)."""
    launch = parse_launch(launch_overrides)
    if launch.launcher in ("local", "slurm"):
        release_stop_signals()  # this process submits and waits, its jobs train: a SIGTERM ends it as any process
    plan = expand(launch, run_overrides)
    for note in plan.notes:
        print(note, flush=True)
    record = plan.record(command, launch.launcher)
    check_sweep_folder(record)
    if not launch.dry_run:
        check_launcher(launch)
    with contextlib.nullcontext() if launch.dry_run else launching(plan.folder):
        return _launch(launch, plan, record, command)


def _launch(launch: Launch, plan: SweepPlan, record: SweepRecord, command: str) -> int:
    """The launch proper, holding the sweep folder's lock (but for a dry run, which writes nothing): what is
    finished, live or damaged, then run or submit the rest and record the jobs."""
    runs = dict(zip(record.runs, plan.cfgs))  # by name, computed once (a name takes 0.1 ms, a sweep has thousands)
    states = {name: result_state(c, folder=plan.folder / name) for name, c in runs.items()}
    live = _live_runs(plan.folder, [name for name, state in states.items() if state is None])
    todo = [c for name, c in runs.items() if states[name] is None and name not in live]
    if todo and launch.launcher == "slurm":
        check_threads(todo, launch.slurm.cpus_per_task, "CPUs a job gets (slurm.cpus_per_task)",
                      ", or raise slurm.cpus_per_task")
    elif todo:
        check_threads(todo, cores(), "cores of this machine")
    _announce(launch, plan, states, live, todo)
    print(cost_line(todo, launch), flush=True)
    damaged = EXIT_USAGE if State.DAMAGED in states.values() else 0
    if launch.dry_run:
        for name, state in states.items():
            shown = state or (live[name][1] if name in live else "-")
            print(f"  {shown!s:<8} {name}")
        return 0
    prepare_inputs(todo)
    executor_ = None if launch.launcher == "inline" else executor(launch, plan.folder)
    write_sweep(record)
    batches = packing.jobs(todo, launch.runs_per_job)
    if not batches:
        return _summary(plan, runs, {}, live, command) or damaged
    job = SweepJob(launch.max_retries, isolate=launch.launcher in ("local", "slurm"))
    if executor_ is None:
        return _summary(plan, runs, _run_inline(job, batches), live, command) or damaged
    if launch.launcher == "slurm":
        jobs = executor_.map_array(job, batches)
        record_jobs(plan.folder, launch.launcher, jobs, batches)
        print(f"submitted {len(jobs)} jobs ({jobs[0].job_id.split('_')[0]}) for {len(todo)} runs; follow them with "
              f"`python -m resnet_ablate.status {plan.folder}`", flush=True)
        return damaged
    crashed = {}
    for start in range(0, len(batches), launch.array_parallelism):
        wave = batches[start:start + launch.array_parallelism]
        jobs = executor_.map_array(job, wave)
        record_jobs(plan.folder, launch.launcher, jobs, wave)
        crashed.update(_crashes([outcome(j) for j in jobs], wave))
    return _summary(plan, runs, crashed, live, command) or damaged


def _announce(launch: Launch, plan: SweepPlan, states: dict[str, State | None], live: dict[str, tuple[State, str]],
              todo: list[Config]) -> None:
    """The sweep's header line (how many are finished, live (queued or running), to run, damaged), and a note
    when SLURM jobs get no GPU."""
    trials = f", {plan.search['trials']} random trials (seed {plan.search['seed']})" if plan.search else ""
    layout = f", layout {plan.layout}" if plan.layout else ""
    damaged = sum(s is State.DAMAGED for s in states.values())
    print(f"sweep {plan.name} (budget {plan.budget}{layout}{trials}): {len(plan.cfgs)} runs in "
          f"{plan.folder}; {sum(bool(s and s.finished) for s in states.values())} finished, {len(live)} queued or "
          f"running, {len(todo)} to run" + (f", {damaged} damaged (skipped, see above)" if damaged else ""),
          flush=True)
    if launch.launcher == "slurm" and todo and not launch.slurm.gpus_per_task:
        print("note: slurm.gpus_per_task=0: the jobs get no GPU and train on their CPUs, which for the papers' "
              "nets takes days per run; slurm.gpus_per_task=1 (slurm/default.yaml) gives each job a GPU", flush=True)


def _live_runs(folder: Path, unfinished: list[str]) -> dict[str, tuple[State, str]]:
    """The unfinished runs that are live, with that state (queued or running) and it in words: trained now by any
    process (the folder's lock is held; whatever launched it: 'running (pid ...)'), or whose latest SLURM job is
    still queued or running. Never started twice; a finished run is never live (its job may show RUNNING in
    sacct for a moment after its result.json)."""
    wanted = set(unfinished)
    latest = {run: r for run, r in latest_jobs(folder).items() if run in wanted}
    states = slurm_states(list(latest.values()), folder)
    live = {run: (state, str(state)) for run, r in latest.items()
            if (state := live_state(states.get(r["job_id"], ""))) is not None}
    for name in unfinished:
        who = holder(folder / name)
        if who is not None:
            live[name] = State.RUNNING, f"running ({describe(who)})"
    return live


def _run_inline(job: SweepJob, batches: list[list[Config]]) -> dict[str, str]:
    """Train the batches one after another in this process; the crashed runs with the reason. A batch stopped
    by a signal (Ctrl-C, SIGTERM) stops the sweep there: the rest is left for the next launch."""
    crashed: dict[str, str] = {}
    for batch in batches:
        try:
            summaries = job(batch)
        except RunCrashed as e:
            crashed.update({run_name(c): str(e) for c in batch})
            continue
        if any(s["status"] == State.PAUSED and not str(s.get("reason", "")).startswith("time_limit_s")
               for s in summaries):
            break
    return crashed


def _crashes(outcomes: list[str | None], batches: list[list[Config]]) -> dict[str, str]:
    """The runs whose job crashed, with the reason."""
    return {run_name(c): reason for reason, batch in zip(outcomes, batches) if reason for c in batch}


def _summary(plan: SweepPlan, runs: dict[str, Config], crashed: dict[str, str], live: dict[str, tuple[State, str]],
             command: str) -> int:
    """Print the crashed runs and the sweep's one summary line (how many runs are in each state, what to run
    next); return the exit code: 1 if a run crashed, 75 if some are to run (and not live), else 0."""
    for name, reason in crashed.items():
        print(f"crashed: {name}: {reason}", file=sys.stderr)
    states = [_where(name, cfg, plan.folder / name, crashed, live) for name, cfg in runs.items()]
    if any(s.to_run for s in states):
        after = f"run the same command again to resume: {command}"
    elif any(s.live for s in states):
        after = f"follow them with: python -m resnet_ablate.status {plan.folder}"
    else:
        after = f"next: python -m resnet_ablate.report {plan.folder} --out reports/{plan.folder.name}"
    print(f"sweep {plan.name}: {tally(states)}; {after}", flush=True)
    return EXIT_CRASHED if State.CRASHED in states else EXIT_PAUSED if any(s.to_run for s in states) else 0


def _where(name: str, cfg: Config, folder: Path, crashed: dict[str, str], live: dict[str, tuple[State, str]]) -> State:
    """Where run `name` (in `folder`) stands after a launch: done, fail or damaged (its folder), crashed (its job,
    in this launch), queued or running (a live job), paused (a checkpoint) or not started."""
    state = result_state(cfg, quiet=True, folder=folder)
    if state is not None:
        return state
    if name in crashed:
        return State.CRASHED
    if name in live:
        return live[name][0]
    return State.PAUSED if rf.present(folder / rf.CHECKPOINT) else State.NOT_STARTED


def command_line(argv: list[str]) -> str:
    """The command that launched a sweep, as one shell line."""
    return shlex.join(["python", "-m", "resnet_ablate.run", *argv])
