"""Jobs: the submitit job that trains a batch of runs (with the trainer's signal hand-over and crash
retries), the executors for launcher=local|slurm|debug, the record of which job trains which runs, and the
SLURM states of those jobs."""
from __future__ import annotations

import contextlib
import shutil
import signal
import sys
import traceback
from pathlib import Path
from typing import Any, Iterator

import submitit

from ..registry import UsageError, first_line
from ..training.config import Config, run_name
from ..training.trainer import StopRequest, train
from .settings import Launch
from .sweepfolder import SUBMITIT_DIR, append_job

LOCAL_TIMEOUT_MIN = 60 * 24 * 365  # local jobs have no scheduler limit; submitit's default is 2 minutes
LIVE_STATES = ("PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING", "SUSPENDED")


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
                    raise RunCrashed(f"crashed {crashes} times, last: {type(e).__name__}: {first_line(e)}") from e
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
    """Record which job trains which runs in the sweep folder (status reads it)."""
    for job, batch in zip(jobs, batches):
        append_job(folder, job.job_id, launcher, [run_name(c) for c in batch])


def slurm_states(records: list[dict], folder: Path) -> dict[str, str]:
    """SLURM state (sacct, through submitit) of each SLURM job among `records`, by job id."""
    ids = sorted({r["job_id"] for r in records if r["launcher"] == "slurm"})
    if not ids or shutil.which("sacct") is None:
        return {}
    jobs = [submitit.SlurmJob(folder=folder / SUBMITIT_DIR, job_id=i) for i in ids]
    jobs[0].watcher.update()  # one sacct call for all of them
    return {job.job_id: (job.get_info(mode="cache").get("State") or "UNKNOWN").split()[0] for job in jobs}


def outcome(job: Any) -> str | None:
    """Wait for a submitit job; its crash reason, or None."""
    try:
        job.result()
    except Exception as e:  # noqa: BLE001 - submitit wraps the job's exception with its traceback
        return last_line(str(e))
    return None


def last_line(text: str) -> str:
    """The error line of a traceback (the last line naming an exception), else its last non-empty line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.split(":", 1)[0].endswith(("Error", "Crashed", "Exception"))]
    return (errors or lines or [""])[-1]
