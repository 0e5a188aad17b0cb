"""Jobs: the submitit job that trains a batch of runs (with the trainer's signal hand-over and crash
retries, in a child process it watches), the executors for launcher=local|slurm|debug, and the record of which
job trains which runs. What became of a job (SLURM's states, why one ended) is `folders/jobstate.py`'s."""
from __future__ import annotations

import contextlib
import multiprocessing
import os
import shlex
import shutil
import signal
import sys
import traceback
from pathlib import Path
from typing import Any, Iterator

import submitit

from ..errors import UsageError, first_line
from ..folders.jobstate import killed_by, last_line
from ..folders.sweepfolder import SUBMITIT_DIR, append_job
from ..training.config import Config
from ..training.configfile import run_name
from ..training.signals import StopRequest, passes_on
from ..training.trainer import train
from .launchkeys import Launch, SlurmProfile

LOCAL_TIMEOUT_MIN = 60 * 24 * 365  # local jobs have no scheduler limit; submitit's default is 2 minutes


class RunCrashed(RuntimeError):
    """A job's runs crashed more often than max_retries allows."""


class ChildCrashed(RuntimeError):
    """The training process of an isolated job raised, or was killed (e.g. by the out-of-memory killer)."""


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

    `isolate` (launcher=local and slurm): each attempt trains in a child process that this one watches and
    forwards SIGTERM/SIGUSR2 to, so a training process killed outright (SIGKILL from the out-of-memory
    killer, or a kill -9) is a crash like any other, retried from the checkpoints; and a failed CUDA context
    is not reused by the retry.
    """

    def __init__(self, max_retries: int, isolate: bool = False) -> None:
        self.max_retries, self.isolate = max_retries, isolate

    def __call__(self, cfgs: list[Config]) -> list[dict]:
        crashes = 0
        while True:
            stop = StopRequest()
            try:
                with _trainer_signals(stop) as replaced:
                    summaries = train_isolated(cfgs, stop) if self.isolate else train(cfgs, stop)
            except UsageError:
                raise
            except Exception as e:  # noqa: BLE001 - any crash of training is retried, then reported
                crashes += 1
                if not isinstance(e, ChildCrashed):  # the child printed its own traceback
                    traceback.print_exc()
                if crashes > self.max_retries:
                    raise RunCrashed(f"crashed {crashes} times, last: {type(e).__name__}: {first_line(e)}") from e
                print(f"{type(e).__name__}: {first_line(e)}; retry {crashes} of {self.max_retries}, from the "
                      f"checkpoints", file=sys.stderr, flush=True)
                continue
            if not passes_on(replaced.get(stop.reason or "")):
                return summaries
            signal.raise_signal(signal.Signals[stop.reason])  # type: ignore[misc]


def _train_child(conn: Any, cfgs: list[Config]) -> None:
    """The child of an isolated job: say ('ready', None) once it listens for stop signals, train, and send back
    ('ok', summaries), ('usage', line) or ('crash', line)."""
    stop = StopRequest()
    stop.install()
    conn.send(("ready", None))
    try:
        conn.send(("ok", train(cfgs, stop)))
    except UsageError as e:
        conn.send(("usage", str(e)))
    except Exception as e:  # noqa: BLE001 - reported to the parent, which retries
        traceback.print_exc()
        conn.send(("crash", f"{type(e).__name__}: {first_line(e)}"))
    finally:
        conn.close()


def train_isolated(cfgs: list[Config], stop: StopRequest) -> list[dict]:
    """`train(cfgs)` in a fresh child process (spawned: no CUDA or thread state inherited), forwarding the
    stop signal this process receives once the child listens for it (a signal while it imports would kill it);
    the child's UsageError is raised here, and a crash or a kill is ChildCrashed."""
    ctx = multiprocessing.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_train_child, args=(send, cfgs), name="resnet_ablate-train")
    child.start()
    send.close()
    message, forwarded, closed, ready = None, None, False, False
    while not closed:  # until the child closes its end: after its message, or by dying
        if receive.poll(0.2):
            try:
                message = receive.recv()
                ready = ready or message[0] == "ready"
            except EOFError:
                closed = True
        if ready and stop.reason in ("SIGTERM", "SIGUSR2") and stop.reason != forwarded and child.is_alive():
            os.kill(child.pid, signal.Signals[stop.reason])
            forwarded = stop.reason
    child.join()
    if message is None or message[0] == "ready":
        raise ChildCrashed(_death(child.exitcode))
    kind, value = message
    if kind == "usage":
        raise UsageError(value)
    if kind == "crash":
        raise ChildCrashed(value)
    return value


def _death(exitcode: int | None) -> str:
    """Why a child ended without a word: its signal or its exit code."""
    if exitcode is not None and exitcode < 0:
        return f"the training process was {killed_by(-exitcode)}"
    return f"the training process exited with code {exitcode} without a result"


@contextlib.contextmanager
def _trainer_signals(stop: StopRequest) -> Iterator[dict[str, Any]]:
    """Let `stop` take SIGINT/SIGTERM/SIGUSR2 while training; yield the TERM/USR2 handlers it replaced (a
    Ctrl-C is not handed on: the runs stay paused), put back afterwards."""
    with stop.installed() as replaced:
        yield {name: h for name, h in replaced.items() if name != "SIGINT"}


def check_launcher(launch: Launch) -> None:
    """Before a launch takes its sweep folder: launcher=slurm needs sbatch on PATH."""
    if launch.launcher == "slurm" and shutil.which("sbatch") is None:
        raise UsageError("launcher=slurm but 'sbatch' is not on PATH: run this on a SLURM login node "
                         "(or start a local cluster with slurm/start-local-slurm.sh)")


def executor(launch: Launch, folder: Path) -> submitit.AutoExecutor:
    """submitit's AutoExecutor for launcher=local|slurm|debug with the launch's parameters."""
    check_launcher(launch)
    p = launch.slurm
    ex = submitit.AutoExecutor(folder=folder / SUBMITIT_DIR, cluster=launch.launcher,
                               slurm_max_num_timeout=launch.max_num_timeout, slurm_python=job_python(p),
                               local_max_num_timeout=launch.max_num_timeout)
    if launch.launcher == "slurm":
        ex.update_parameters(name=folder.name, timeout_min=p.time, cpus_per_task=p.cpus_per_task, mem_gb=p.mem_gb,
                             slurm_partition=p.partition, slurm_gpus_per_task=p.gpus_per_task or None,
                             slurm_account=p.account, slurm_qos=p.qos, slurm_constraint=p.constraint,
                             slurm_signal_delay_s=p.signal_delay_s, slurm_array_parallelism=launch.array_parallelism,
                             slurm_additional_parameters={**signal_target(p), **p.extra}, slurm_setup=list(p.setup),
                             slurm_use_srun=p.srun)
    elif launch.launcher == "local":
        ex.update_parameters(name=folder.name, timeout_min=LOCAL_TIMEOUT_MIN)
    return ex


def job_python(p: SlurmProfile) -> str | None:
    """The command that runs a job's Python: slurm.python (None: submitit's, this interpreter), after `exec`
    without srun, so that Python is the batch shell itself and receives its signal (`signal_target`)."""
    if p.srun:
        return p.python
    return f"exec {p.python or shlex.quote(sys.executable)}"


def signal_target(p: SlurmProfile) -> dict[str, str]:
    """Without srun the job has no step, and SLURM's warning signal reaches only job steps (measured on the
    local cluster: the Python in the batch script got none and was killed at the limit): send it to the batch
    shell (B:), which `job_python`'s exec made the Python, so the job still checkpoints and requeues."""
    return {} if p.srun else {"signal": f"B:USR2@{p.signal_delay_s}"}


def record_jobs(folder: Path, launcher: str, jobs: list[Any], batches: list[list[Config]]) -> None:
    """Record which job trains which runs in the sweep folder (status reads it)."""
    for job, batch in zip(jobs, batches):
        append_job(folder, job.job_id, launcher, [run_name(c) for c in batch])


def outcome(job: Any) -> str | None:
    """Wait for a submitit job; its crash reason, or None."""
    try:
        job.result()
    except Exception as e:  # noqa: BLE001 - submitit wraps the job's exception with its traceback
        return last_line(str(e))
    return None
