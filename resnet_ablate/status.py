"""`python -m resnet_ablate.status <sweep folder>`: how many of a sweep's runs are pending, running, done and
failed, and why each failed one failed.

    done     result.json says done
    failed   result.json says fail (diverged, or above fail_threshold), or the run's latest job crashed
             (submitit's result pickle holds the error) or ended without a result (SLURM state, stderr)
    running  a checkpoint or metrics but no result, and its job (when SLURM can tell) is running
    pending  nothing written yet, or its job is queued (again, after a requeue) or ended without finishing it
"""
from __future__ import annotations

import sys
from pathlib import Path

from submitit.core.utils import JobPaths, pickle_load

from .cli import guarded
from .registry import UsageError
from .sweeps.jobs import LIVE_STATES, last_line, slurm_states
from .sweeps.sweepfolder import SUBMITIT_DIR, latest_jobs, read_sweep
from .training import runfolder as rf

STATES = ("pending", "running", "done", "failed")
USAGE = "usage: python -m resnet_ablate.status <sweep folder>"


def run_states(folder: Path) -> dict[str, tuple[str, str]]:
    """Each run of the sweep in `folder`: (state, reason); the reason only for failed runs."""
    runs = read_sweep(folder).runs
    latest = latest_jobs(folder)
    slurm = slurm_states(list(latest.values()), folder)
    return {name: _state(folder, name, latest.get(name), slurm) for name in runs}


def _state(folder: Path, name: str, record: dict | None, slurm: dict[str, str]) -> tuple[str, str]:
    result = rf.read_result(folder / name)
    if result is not None and result.get("status") in rf.FINISHED:
        return ("done", "") if result["status"] == "done" else ("failed", result.get("reason", ""))
    state = slurm.get(record["job_id"], "") if record else ""
    if record is not None:
        ended = _job_ended(folder, record["job_id"], state)
        if ended is not None:
            return ("failed", ended) if ended else ("pending", "")
    if state in ("PENDING", "REQUEUED"):
        return "pending", ""
    started = (folder / name / rf.CHECKPOINT).is_file() or (folder / name / rf.METRICS).is_file()
    return ("running" if started else "pending"), ""


def _job_ended(folder: Path, job_id: str, state: str) -> str | None:
    """None while the job may still run; '' if it ended cleanly (its runs paused); else why it failed."""
    paths = JobPaths(folder / SUBMITIT_DIR, job_id=job_id, task_id=0)
    if paths.result_pickle.is_file():
        outcome, value = pickle_load(paths.result_pickle)
        return f"job {job_id}: {last_line(value)}" if outcome == "error" else ""
    if state in ("", "UNKNOWN") or state in LIVE_STATES:
        return None
    stderr = last_line(paths.stderr.read_text(errors="replace")) if paths.stderr.is_file() else ""
    return f"job {job_id} ended {state} without a result" + (f"; last stderr line: {stderr}" if stderr else "")


def _main(argv: list[str]) -> int:
    if argv in (["-h"], ["--help"]):
        print(f"{USAGE}\nPrints {__doc__.split(': ', 1)[1].rstrip()}")  # the docstring says what it prints
        return 0
    if len(argv) != 1:
        raise UsageError(f"expected one sweep folder; {USAGE}")
    states = run_states(Path(argv[0]))
    counts = {s: sum(state == s for state, _ in states.values()) for s in STATES}
    print(f"{argv[0]}: {len(states)} runs: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    for name, (state, reason) in states.items():
        if state == "failed":
            print(f"  failed {name}: {reason}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return guarded(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
