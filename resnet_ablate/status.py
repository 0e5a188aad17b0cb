"""`python -m resnet_ablate.status <sweep folder>`: how many of a sweep's runs are pending, running, paused,
done, failed and damaged, and why each failed, damaged or stopped one is so.

    done     result.json says done
    failed   result.json says fail (diverged, or above fail_threshold), or the run's latest job crashed
             (its submitit result holds the error) or ended without a result: the cause from SLURM (out of
             memory, killed by a signal, cancelled) and the job's last error line
    running  a process trains it now (it holds the run folder's lock), or its SLURM job is running
    paused   a checkpoint, no result, and nobody trains it: stopped by Ctrl-C, time_limit_s, or a job that
             reached its time limit max_num_timeout times; launching the sweep again resumes it
    pending  nothing written yet, or its job is queued (again, after a requeue)
    damaged  result.json cannot be read; the line says what to do

submitit's result files are read without unpickling code (`jobs.read_outcome`).
"""
from __future__ import annotations

import sys
from pathlib import Path

from submitit.core.utils import JobPaths

from .cli import guarded
from .registry import UsageError
from .sweeps.jobs import LIVE_STATES, ended_cause, last_line, read_outcome, slurm_states
from .sweeps.sweepfolder import SUBMITIT_DIR, latest_jobs, read_sweep
from .training import runfolder as rf

STATES = ("pending", "running", "paused", "done", "failed", "damaged")
EXPLAINED = ("paused", "failed", "damaged")  # states listed with their reason
USAGE = "usage: python -m resnet_ablate.status <sweep folder>"
TIMED_OUT = "timed-out too many times"  # submitit's words when a job used up max_num_timeout


def run_states(folder: Path) -> dict[str, tuple[str, str]]:
    """Each run of the sweep in `folder`: (state, reason); a reason for paused, failed and damaged runs."""
    runs = read_sweep(folder).runs
    latest = latest_jobs(folder)
    slurm = slurm_states(list(latest.values()), folder)
    return {name: _state(folder, name, latest.get(name), slurm) for name in runs}


def _state(folder: Path, name: str, record: dict | None, slurm: dict[str, str]) -> tuple[str, str]:
    run = folder / name
    try:
        result = rf.read_result(run)
    except rf.Damaged as e:
        return "damaged", str(e)
    if result is not None:
        return ("done", "") if result["status"] == "done" else ("failed", result.get("reason", ""))
    if rf.holder(run) is not None:
        return "running", ""
    state = slurm.get(record["job_id"], "") if record else ""
    checkpoint = (run / rf.CHECKPOINT).is_file()
    if record is not None:
        ended = _job_ended(folder, record["job_id"], state)
        if ended is not None and ended[0]:
            kind, reason = ended
            resumable = "; resumable from its checkpoint: launch the sweep again" if checkpoint and kind == "failed" else ""
            return kind, reason + resumable
    if state in ("PENDING", "REQUEUED"):
        return "pending", ""
    if state in LIVE_STATES:
        return "running", ""
    if checkpoint:
        return "paused", "launch the sweep again to resume"
    return "pending", ""


def _job_ended(folder: Path, job_id: str, state: str) -> tuple[str, str] | None:
    """None while the job may still run; ('', '') if it ended cleanly (its runs paused or done); ('paused',
    why) when it stopped resumably at its time limit; ('failed', why) with the cause otherwise."""
    paths = JobPaths(folder / SUBMITIT_DIR, job_id=job_id, task_id=0)
    if paths.result_pickle.is_file():
        outcome, value = read_outcome(paths.result_pickle)
        if outcome != "error":
            return "", ""
        line = last_line(str(value))
        if TIMED_OUT in line:
            return "paused", f"job {job_id} reached its time limit max_num_timeout times; launch the sweep again " \
                             f"to resume (or raise slurm.time)"
        return "failed", f"job {job_id}: {line}"
    if state in ("", "UNKNOWN") or state in LIVE_STATES:
        return None
    cause = ended_cause(job_id) or state
    if cause == "time limit":
        return "paused", f"job {job_id} ended at its time limit; launch the sweep again to resume (or raise slurm.time)"
    log = _error_line(paths.stderr.read_text(errors="replace")) if paths.stderr.is_file() else ""
    return "failed", f"job {job_id} ended {state}: {cause}" + (f"; its log says: {log}" if log else "")


def _error_line(text: str) -> str:
    """The last line of a job's log naming an error (srun's 'error: ... Killed'), else the traceback's."""
    lines = [line.strip() for line in text.splitlines() if "error" in line.lower()]
    return lines[-1] if lines else last_line(text)


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
        if state in EXPLAINED:
            print(f"  {state} {name}: {reason}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return guarded(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
