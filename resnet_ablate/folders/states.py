"""Where a run stands: one word for each state, used by the trainer, the launcher, `status`, the report and the
docs alike. The table (in the order of `State` and of every count line):

    state        meaning
    done         finished: result.json says done
    fail         finished: result.json says fail (diverged, or its final test error is above fail_threshold, or
                 at chance after a reduced schedule: training/failrule.py); a result, not an error
    crashed      its job ended with an error or was killed, without a result: the line says why; launching the
                 sweep again resumes it from its checkpoint (or trains it from the start where it has none)
    paused       a checkpoint, no result, and nobody trains it (stopped by Ctrl-C, SIGTERM, time_limit_s or a
                 job's time limit): the same command resumes it
    not started  no checkpoint and no result yet (nothing written, or stopped before its first checkpoint): the
                 next launch trains it from iteration 0
    queued       its SLURM job waits in the queue (submitted, or requeued after a preemption or a time limit)
    running      a process trains it now (it holds the run folder's lock), or its SLURM job runs
    damaged      a file of its folder cannot be read as what it should be: the line names the file and what to
                 do; it is skipped until then

`finished` (done or fail) is the one meaning of the word: result.json holds the run's result. `done` and `fail`
are also result.json's two `status` values (the file format); the other states are read from the folder's
files, its lock and the sweep's job records (`runfolder.folder_state`, `jobstate.job_state`).
"""
from __future__ import annotations

import enum
from typing import Iterable


class State(str, enum.Enum):
    """Where a run stands (the module's table says what each means)."""

    DONE = "done"
    FAIL = "fail"
    CRASHED = "crashed"
    PAUSED = "paused"
    NOT_STARTED = "not started"
    QUEUED = "queued"
    RUNNING = "running"
    DAMAGED = "damaged"

    def __str__(self) -> str:  # the word itself in f-strings and prints, on every Python version
        return self.value

    @property
    def finished(self) -> bool:
        """done or fail: result.json holds the run's result."""
        return self in FINISHED

    @property
    def live(self) -> bool:
        """queued or running: something trains it or will, so nothing else may start it."""
        return self in (State.QUEUED, State.RUNNING)

    @property
    def to_run(self) -> bool:
        """not started, paused or crashed: the next launch trains it (from its checkpoint where it has one)."""
        return self in (State.NOT_STARTED, State.PAUSED, State.CRASHED)


FINISHED = (State.DONE, State.FAIL)  # result.json's status values


def tally(states: Iterable[State], always: Iterable[State] = FINISHED) -> str:
    """'5 runs: 2 done, 0 fail, 1 paused, 2 not started': the count of each state that occurs, in `State`'s
    order, and of `always` (done and fail) even when zero."""
    states = list(states)
    shown = [f"{sum(s == state for s in states)} {state}" for state in State
             if state in always or state in states]
    return f"{len(states)} run{'s' if len(states) != 1 else ''}: " + ", ".join(shown)
