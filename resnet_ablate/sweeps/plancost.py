"""The launcher's cost line: what the runs still to train will take (GPU-hours, jobs, requeues at the SLURM
profile's time limit), printed by a dry run and at launch. The arithmetic is `cost`'s; this reads what a
launch knows: its runs (and how far a paused one got), its packing and its profile."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import packing
from ..folders import runfolder as rf
from ..training.config import ENTRIES, Config
from ..training.configfile import run_dir
from . import cost
from .launchkeys import SOURCE, Launch

SPEED_TABLES = SOURCE / "bench" / "results"


def _progress(cfg: Config) -> dict[str, Any]:
    """A run's settings as it will step (`packing.stepped`) with `done_iterations`: its last evaluation's
    iteration (0 when none)."""
    try:
        done = rf.read_jsonl(run_dir(cfg) / rf.METRICS)
    except rf.Damaged:
        done = []
    return {**packing.stepped(cfg, ENTRIES), "done_iterations": done[-1]["iteration"] if done else 0}


def cost_line(todo: list[Config], launch: Launch) -> str:
    """One line: the runs to train, their jobs, GPU-hours (speed table or estimate) and, at slurm.time, the
    job starts with requeues; a warning when a job would need more requeues than max_num_timeout."""
    if not todo:
        return "cost: nothing left to train"
    if launch.launcher == "slurm" and launch.slurm.gpus_per_task == 0:
        return (f"cost: {len(todo)} runs to train on CPUs (slurm.gpus_per_task=0); the cost model covers GPUs "
                f"only")
    rows = cost.read_speed_tables(SPEED_TABLES) if SPEED_TABLES.is_dir() else []
    gpu = cost.choose_gpu(launch.slurm.constraint, rows)
    packs = [[_progress(c) for c in batch] for batch in packing.jobs(todo, launch.runs_per_job)]
    limit_s = launch.slurm.time * 60 - launch.slurm.signal_delay_s - cost.STARTUP_S
    if limit_s <= 0:
        return (f"cost: slurm.time={launch.slurm.time} min leaves no time to train after the "
                f"{launch.slurm.signal_delay_s} s signal delay and {cost.STARTUP_S:.0f} s start-up; raise slurm.time")
    found = cost.sweep_cost(packs, gpu, rows, limit_s)
    sources = "; ".join(f"measured: {_shown(SPEED_TABLES)}/{cost.SPEED_GLOB}" if s == "speed table"
                        else _basis(packs, gpu) for s in found.sources)
    where = "" if launch.launcher == "slurm" else f"launcher={launch.launcher} has no time limit; under launcher=slurm "
    lower = "estimate" in found.sources and any(cost.precision_of(s) == "fp32" for p in packs for s in p)
    text = (f"cost: {_n(found.runs, 'run')} to train in {_n(found.jobs, 'job')} of up to "
            f"{_n(launch.runs_per_job, 'run')}: {'at least ' if lower else ''}{found.gpu_hours:.3g} GPU-hours on "
            f"{gpu} ({sources}; "
            f"{cost.STARTUP_S:.0f} s a job start); {where}at slurm.time={launch.slurm.time} min: "
            f"{_n(found.starts, 'job start')}, {found.starts - found.jobs} of them requeues")
    if found.most_requeues > launch.max_num_timeout:
        text += (f"; a job needs {found.most_requeues} requeues, more than max_num_timeout="
                 f"{launch.max_num_timeout}: raise slurm.time or max_num_timeout")
    return text


def _n(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _shown(path: Path) -> Path:
    """A path relative to the source checkout where it lies inside it."""
    try:
        return path.relative_to(SOURCE)
    except ValueError:
        return path


def _basis(packs: list[list[dict[str, Any]]], gpu: str) -> str:
    """The estimate: the precision and step mode it assumes, what it is fitted to, the per-image figures of the
    first few distinct nets of the sweep, and for fp32 runs that their speed has never been measured."""
    runs = [s for p in packs for s in p]
    nets = {(s["arch"], s["depth"]): s for s in runs}
    shown = ", ".join(cost.estimate_basis(s) for s in list(nets.values())[:3]) + (", ..." if len(nets) > 3 else "")
    modes = " and ".join(dict.fromkeys("in one CUDA graph per run" if cost.estimated_mode(s) == "graph" else "eager"
                                       for s in runs))
    fitted = (f"{cost.kernel_seconds('graph') * 1e6:.2g} µs per kernel in a graph, "
              f"{cost.kernel_seconds('eager') * 1e6:.2g} eager")
    text = (f"estimate for bf16 {modes}: FLOPs and activation bytes per training image at {cost.UTILISATION:g} of "
            f"{gpu}'s datasheet peaks and {fitted}, fitted to hand-written training loops on an H100 "
            f"({'; '.join(a.what for a in cost.ANCHORS)}): {shown}")
    if any(cost.precision_of(s) == "fp32" for s in runs):
        text += ("; these runs train in fp32 with TF32 off (the papers' recipes), which has never been measured on "
                 "a GPU: the bf16 estimate is a lower bound")
    return text
