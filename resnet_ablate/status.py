"""`python -m resnet_ablate.status <sweep folder>`: how many of a sweep's runs are in each state (done, fail,
crashed, paused, not started, queued, running, damaged: `folders/states.py` says what each means), and why each
fail, crashed, paused or damaged one is so: the cause of a crash from SLURM (out of memory, killed by a signal,
cancelled) and the job's last error line; and each finished run that did not step as it asked (its result.json's
`fallbacks`: a failed CUDA graph capture or compile, a wide pack stepped as streams).

It reads the sweep folder only (sweep.yaml, the run folders and their locks, submitit's records, read without
unpickling code) and sacct, and imports no torch, so it answers at once; that each config.yaml is a complete,
valid config is checked by `run`, which needs the registries.
"""
from __future__ import annotations

import sys
from pathlib import Path

from .cli import guarded
from .errors import UsageError
from .folders import runfolder as rf
from .folders.jobstate import job_state, slurm_states
from .folders.states import State, tally
from .folders.sweepfolder import latest_jobs, read_sweep

EXPLAINED = (State.FAIL, State.CRASHED, State.PAUSED, State.DAMAGED)  # states listed with their reason
FINISHED = (State.DONE, State.FAIL)  # states whose result.json may list fallbacks
USAGE = "usage: python -m resnet_ablate.status <sweep folder>"
RESUME = "launch the sweep again to resume"


def run_states(folder: Path) -> dict[str, tuple[State, str]]:
    """Each run of the sweep in `folder`: (state, reason); a reason for fail, crashed, paused and damaged runs."""
    runs = read_sweep(folder).runs
    latest = latest_jobs(folder)
    slurm = slurm_states(list(latest.values()), folder)
    return {name: _state(folder, name, latest.get(name), slurm) for name in runs}


def _state(folder: Path, name: str, record: dict | None, slurm: dict[str, str]) -> tuple[State, str]:
    """The run folder's state, or, for a run that is neither finished nor trained now, its latest job's."""
    state, reason = rf.folder_state(folder / name, member=True)
    if state in (State.PAUSED, State.NOT_STARTED) and record is not None:
        job = job_state(folder, record["job_id"], slurm.get(record["job_id"], ""))
        if job is not None:
            resumable = state is State.PAUSED and job[0] is State.CRASHED
            return job[0], job[1] + ("; resumable from its checkpoint: launch the sweep again" if resumable else "")
    return state, RESUME if state is State.PAUSED else reason


def _main(argv: list[str]) -> int:
    if argv in (["-h"], ["--help"]):
        print(f"{USAGE}\nPrints {__doc__.split(': ', 1)[1].rstrip()}")  # the docstring says what it prints
        return 0
    if len(argv) != 1:
        raise UsageError(f"expected one sweep folder; {USAGE}")
    states = run_states(Path(argv[0]))
    print(f"{argv[0]}: {tally(state for state, _ in states.values())}")
    for name, (state, reason) in states.items():
        if state in EXPLAINED:
            print(f"  {state} {name}: {reason}")
    for name, (state, _) in states.items():
        fallbacks = (rf.read_result(Path(argv[0]) / name) or {}).get("fallbacks") if state in FINISHED else None
        if fallbacks:
            print(f"  fallback {name}: {'; '.join(fallbacks)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return guarded(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
