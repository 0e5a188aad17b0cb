"""What became of a sweep's jobs, for `status` and the launcher: SLURM's state of each job (sacct, through
submitit), why one that wrote no result ended, and submitit's result files and logs in `.submitit/`, read
without unpickling code (a sweep folder may come from someone else). `job_state` turns them into a run's state
(`states.py`) where its folder alone cannot tell."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

from .. import safepickle
from ..errors import first_line
from . import runfolder as rf
from .states import State
from .sweepfolder import SUBMITIT_DIR

QUEUED_STATES = ("PENDING", "REQUEUED")
LIVE_STATES = (*QUEUED_STATES, "RUNNING", "CONFIGURING", "COMPLETING", "RESIZING", "SUSPENDED")
TIMED_OUT = "timed-out too many times"  # submitit's words when a job used up max_num_timeout


def slurm_states(records: list[dict], folder: Path) -> dict[str, str]:
    """SLURM state (sacct, through submitit; squeue for a job sacct does not know yet) of each SLURM job among
    `records`, by job id."""
    ids = sorted({r["job_id"] for r in records if r["launcher"] == "slurm"})
    if not ids or shutil.which("sacct") is None:
        return {}
    import submitit  # here, not at the top: a tenth of a second that a sweep without SLURM jobs need not wait

    jobs = [submitit.SlurmJob(folder=folder / SUBMITIT_DIR, job_id=i) for i in ids]
    jobs[0].watcher.update()  # one sacct call for all of them
    states = {job.job_id: (job.get_info(mode="cache").get("State") or "UNKNOWN").split()[0] for job in jobs}
    unknown = [i for i, state in states.items() if state == "UNKNOWN"]
    return {**states, **(_queued(unknown) if unknown else {})}


def _queued(ids: list[str]) -> dict[str, str]:
    """The states squeue (the controller itself) gives jobs sacct does not know yet: a job submitted a moment
    ago reaches the accounting database later, and must not look like one that never ran (a second launch
    would submit its runs again)."""
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%T", "-j", ",".join(ids)], capture_output=True,
                             text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    return {job: state for job, _, state in (line.partition("|") for line in out.split()) if job in ids}


def live_state(slurm_state: str) -> State | None:
    """queued or running for a SLURM job that is still live, else None."""
    state = slurm_state.upper()
    return State.QUEUED if state in QUEUED_STATES else State.RUNNING if state in LIVE_STATES else None


def killed_by(number: int) -> str:
    """'killed by SIGNAME', with the usual culprit of a SIGKILL."""
    try:
        name = signal.Signals(number).name
    except ValueError:
        name = f"signal {number}"
    return f"killed by {name}" + (" (the out-of-memory killer, or a kill -9)" if number == signal.SIGKILL else "")


def ended_cause(job_id: str) -> str:
    """Why a SLURM job that wrote no result ended, in words, from sacct's states and exit codes of the job and
    its steps: out of memory, time limit or cancelled (the job itself, by scancel: SLURM's own words, whatever
    signal it used), else killed by a signal, node failure, or an exit code."""
    try:
        out = subprocess.run(["sacct", "-j", job_id, "-o", "JobID,State,ExitCode", "-P", "-n"], capture_output=True,
                             text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    rows = [line.split("|") for line in out.splitlines() if line.count("|") == 2]
    states = {state.split()[0] for _, state, _ in rows if state}
    own = {state.split()[0] for step, state, _ in rows if state and "." not in step}  # the job's, not its steps'
    codes = [tuple(int(x) for x in code.split(":")) for _, _, code in rows if code.replace(":", "").isdigit()]
    signals = sorted({sig for _, sig in codes if sig}, key=lambda n: n != signal.SIGKILL)
    for state, words, where in (("OUT_OF_MEMORY", "out of memory", states), ("TIMEOUT", "time limit", states),
                                ("CANCELLED", "cancelled (scancel)", own)):
        if state in where:  # before the signals: SLURM ends a cancelled or timed-out job with SIGTERM, SIGKILL
            return words
    if signals:
        return killed_by(signals[0])
    if "NODE_FAIL" in states:
        return "node failure"
    exits = sorted({code for code, _ in codes if code})
    return f"exit code {exits[-1]}" if exits else ""


def read_outcome(path: Path) -> tuple[str, Any]:
    """A submitit result file's (outcome, value) without running code: only plain data is unpickled (a
    sweep folder may come from someone else); ('unreadable', why) for anything else."""
    try:
        with os.fdopen(rf.open_file(path), "rb") as f:
            data = safepickle.load(f)
    except Exception as e:  # noqa: BLE001 - a foreign or torn file: any unpickling error
        return "unreadable", f"{type(e).__name__}: {first_line(e)}"
    if not (isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], str)):
        return "unreadable", "not a submitit result"
    return data


def last_line(text: str) -> str:
    """The error line of a traceback (the last line naming an exception), else its last non-empty line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.split(":", 1)[0].endswith(("Error", "Crashed", "Exception"))]
    return (errors or lines or [""])[-1]


def job_state(folder: Path, job_id: str, slurm_state: str) -> tuple[State, str] | None:
    """What the latest job of a run that is neither finished nor trained now says of it: crashed (with the
    cause) or paused (at a time limit) when it ended, queued or running while SLURM has it, else None."""
    ended = _job_ended(folder, job_id, slurm_state)
    if ended is not None:
        return ended
    live = live_state(slurm_state)
    return (live, "") if live is not None else None


def _job_ended(folder: Path, job_id: str, state: str) -> tuple[State, str] | None:
    """None while the job may still run or ended cleanly (its runs paused or done); (paused, why) when it
    stopped resumably at its time limit; (crashed, why) with the cause otherwise."""
    from submitit.core.utils import JobPaths  # here, as in `slurm_states`: only a sweep with jobs needs it

    paths = JobPaths(folder / SUBMITIT_DIR, job_id=job_id, task_id=0)
    if rf.present(paths.result_pickle):
        outcome, value = read_outcome(paths.result_pickle)
        if outcome != "error":
            return None
        line = last_line(str(value))
        if TIMED_OUT in line:
            return State.PAUSED, f"job {job_id} reached its time limit max_num_timeout times; launch the sweep " \
                                 f"again to resume (or raise slurm.time)"
        return State.CRASHED, f"job {job_id}: {line}"
    if state in ("", "UNKNOWN") or state in LIVE_STATES:
        return None
    cause = ended_cause(job_id) or state
    if cause == "time limit":
        return State.PAUSED, f"job {job_id} ended at its time limit; launch the sweep again to resume (or raise " \
                             f"slurm.time)"
    text = rf.read_text(paths.stderr, errors="replace")
    log = _error_line(text) if text is not None else ""
    return State.CRASHED, f"job {job_id} ended {state}: {cause}" + (f"; its log says: {log}" if log else "")


def _error_line(text: str) -> str:
    """The last line of a job's log naming an error (srun's 'error: ... Killed'), else the traceback's."""
    lines = [line.strip() for line in text.splitlines() if line.strip() and "error" in line.lower()]
    return lines[-1] if lines else last_line(text)
