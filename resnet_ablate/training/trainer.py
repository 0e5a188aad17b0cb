"""The training loop: the papers' recipe for one run, or several packed runs stepping in lockstep on one
device, each a `TrainingRun` (its `RunState`, its `RunWriter`, its status); evaluation and checkpoints every
`eval_every` iterations, resume, and `fail` for a run that diverges.
"""
from __future__ import annotations

import contextlib
import enum
import math
import os
import platform
import signal
import sys
import time
from typing import Any, Iterator

import torch

from ..models import transfer
from ..registry import UsageError, first_line
from . import data as datamod
from .config import Config, data_root, run_dir, run_name
from .evaluate import evaluate, probe, responses
from .optim import lr_at
from .progress import Heartbeat, data_line, device_line, run_lines, say
from .runfolder import CHECKPOINT, Damaged
from .state import RunState, precision_policy
from .step import make_stepper
from .writer import RunWriter, file_sha256, finite

# Settings packed runs must share: they step together on one device.
LOCKSTEP = ("device", "precision", "cuda_graph", "batch_size", "iterations", "eval_every", "deterministic",
            "threads", "pack_mode", "compile", "sampling")


class Status(str, enum.Enum):
    """Where a run stands: training, paused (checkpointed, the same command resumes it), or finished with
    result.json's status (done or fail)."""

    TRAINING = "training"
    PAUSED = "paused"
    DONE = "done"
    FAIL = "fail"


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)


class StopRequest:
    """Set by SIGTERM/SIGUSR2 (preemption, time limit) or a first Ctrl-C: runs checkpoint at the next
    iteration and stop. The signal is answered at once with one line on stderr; a second Ctrl-C interrupts
    at once (KeyboardInterrupt)."""

    def __init__(self) -> None:
        self.reason: str | None = None

    def install(self) -> None:
        def handler(num: int, _frame) -> None:
            self.reason = signal.Signals(num).name
            if num == signal.SIGINT:
                signal.signal(signal.SIGINT, signal.default_int_handler)
                _answer("\nCtrl-C: checkpointing after this iteration, then stopping (Ctrl-C again stops at once, "
                        "losing the work since the last checkpoint)\n")
            else:
                _answer(f"{self.reason}: checkpointing after this iteration\n")

        with contextlib.suppress(ValueError):  # not the main thread
            for sig in STOP_SIGNALS:
                signal.signal(sig, handler)

    @contextlib.contextmanager
    def installed(self) -> Iterator[dict[str, Any]]:
        """`install` for the block, then the handlers it replaced back (so a notebook's Ctrl-C interrupts again
        once training returns); yields them by signal name."""
        saved = {s: signal.getsignal(s) for s in STOP_SIGNALS}
        self.install()
        try:
            yield {s.name: h for s, h in saved.items()}
        finally:
            with contextlib.suppress(ValueError, TypeError):  # not the main thread, or a handler set outside Python
                for sig, handler in saved.items():
                    signal.signal(sig, handler)


def _answer(text: str) -> None:
    """Write from a signal handler: straight to stderr's file descriptor (print could re-enter a write the
    handler interrupted); nothing where stderr has none."""
    try:
        os.write(sys.stderr.fileno(), text.encode())
    except (OSError, ValueError, AttributeError):
        pass


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"


class TrainingRun:
    """One run in the loop: its config, its state (built when it trains), its writer and its status."""

    def __init__(self, cfg: Config, data: datamod.Data, device: torch.device, precision: str) -> None:
        self.cfg, self.data, self.device, self.precision = cfg, data, device, precision
        inputs = {"data_fingerprint": data.fingerprint, "init_sha256": file_sha256(cfg.init)}
        self.writer = RunWriter(cfg, run_dir(cfg), run_name(cfg), inputs)
        self.status = Status.TRAINING
        self.state: RunState | None = None
        self.stop_reason = ""  # what paused it: a signal's name or time_limit_s=N
        self.step_facts: dict = {}  # how it stepped (pack mode, runs packed, compile), for result.json

    def start(self) -> None:
        """Resume or create the run folder, holding its lock while training; a finished run of the same
        settings and inputs is left alone, a folder of other ones refused."""
        if self._finished():
            return
        self.writer.claim()
        if self._finished():  # finished by another trainer just before this one took the lock
            return
        try:
            self.state = RunState(self.cfg, self.data, self.device, self.precision)
            for line in run_lines(self.writer.name, self.writer.dir, self.state.parameters, self.cfg):
                say(line)
            saved = self.writer.resume()
            if saved is not None:
                self._load(saved)
            self.writer.open(self.state.iteration)
        except BaseException:
            self.writer.release()
            raise

    def _finished(self) -> bool:
        """Whether the folder holds this run finished (then said, the lock given back)."""
        found = self.writer.finished()
        if found is None:
            return False
        self.writer.release()
        self.status, self.writer.result = Status(found["status"]), found
        print(f"[{self.writer.name}] already finished ({found['status']}) in {self.writer.dir}; nothing to do",
              flush=True)
        return True

    def _load(self, saved: dict) -> None:
        try:
            self.state.load_state_dict(saved)
        except (KeyError, RuntimeError, ValueError, TypeError) as e:
            raise Damaged(f"{self.writer.dir / CHECKPOINT} does not fit this run ({type(e).__name__}: "
                          f"{first_line(e)}): delete it to train the run again from iteration 0") from e

    def at_boundary(self) -> bool:
        it = self.state.iteration
        return it % self.cfg.eval_every == 0 or it == self.cfg.iterations

    def wants_probe(self) -> bool:
        every, it = self.cfg.grad_probe_every, self.state.iteration
        return it in self.cfg.grad_probe_at or (every > 0 and it % every == 0)

    def measure(self, seconds: float) -> None:
        """At an interval's end: probe if due, count the interval's time, evaluate and log at a boundary."""
        if self.wants_probe():
            self.writer.log_probe(self.state.iteration, probe(self.state))
        self.writer.add_time(seconds)
        if self.at_boundary():
            self.log_interval()

    def log_interval(self) -> None:
        """Evaluate, write the metrics line; a non-finite training loss ends the run as fail."""
        train_loss, train_err, images = self.state.read_meters()
        test_loss, test_err = evaluate(self.state, self.data.test)
        it = self.state.iteration
        row = {"iteration": it, "epoch": it * self.cfg.batch_size / len(self.data.train),
               "lr": lr_at(self.cfg, it - 1), "train_loss": finite(train_loss), "train_error": train_err,
               "test_loss": finite(test_loss), "test_error": test_err}
        if self.data.val is not None:
            val_loss, val_err = evaluate(self.state, self.data.val)
            row.update(val_loss=finite(val_loss), val_error=val_err)
        self.writer.log_metrics(row, images)
        if not math.isfinite(train_loss):
            lo = it - images // self.cfg.batch_size + 1
            self.finish(Status.FAIL, f"diverged: training loss is {train_loss} in iterations {lo}..{it}",
                        record_responses=False)

    def settle(self, stop_reason: str | None) -> None:
        """After measuring: finish at the last iteration, checkpoint at a boundary or a stop, pause on a stop."""
        if self.status is Status.TRAINING and self.state.iteration == self.cfg.iterations:
            self.finish(Status.DONE)
        if self.status is Status.TRAINING and (self.at_boundary() or stop_reason):
            self.writer.checkpoint(self.state.state_dict())
        if self.status is Status.TRAINING and stop_reason:
            self.status, self.stop_reason = Status.PAUSED, stop_reason
            self.writer.release()
            print(f"[{self.writer.name}] stopped at iteration {self.state.iteration} ({stop_reason}); "
                  f"checkpoint saved, run the same command again to resume", flush=True)

    def finish(self, status: Status, reason: str = "", record_responses: bool = True) -> None:
        """Write responses.json (the final net's layer responses; not for a diverged one, whose numbers mean
        nothing) and result.json: done (fail when above `fail_threshold`), or fail with the reason."""
        last = self.writer.last_row
        final = last.get("test_error")
        if status is Status.DONE and final is not None and final > self.cfg.fail_threshold:
            status, reason = Status.FAIL, f"final test error {final:.2f}% is above fail_threshold " \
                                          f"{self.cfg.fail_threshold}%"
        self.status = status
        if record_responses:
            self.writer.write_responses(responses(self.state, "end"))
        self.writer.write_result({
            "status": status.value, "reason": reason, "name": self.writer.name, "final_test_error": final,
            "final_test_loss": last.get("test_loss"), "best_test_error": finite(self.writer.best),
            "final_train_error": last.get("train_error"), "final_val_error": last.get("val_error"),
            "iterations": self.state.iteration, "wall_time_s": round(self.writer.elapsed, 2),
            "parameters": self.state.parameters, "seed": self.cfg.seed, "precision": self.precision,
            "precision_policy": precision_policy(self.precision, self.cfg.residual_fp32), **self.step_facts,
            "torch": torch.__version__, "device": device_name(self.device), "threads": torch.get_num_threads(),
            "git_commit": self.writer.commit,
            **({"capture_s": round(self.writer.capture_s, 2)} if self.writer.capture_s is not None else {}),
        })
        self.writer.release()

    def summary(self) -> dict:
        """result.json's contents for a finished run; status, iteration and what stopped it for a paused one."""
        if self.writer.result is not None:
            return self.writer.result
        return {"status": Status.PAUSED.value, "iteration": self.state.iteration, "reason": self.stop_reason}


def train(cfgs: list[Config], stop: StopRequest | None = None) -> list[dict]:
    """Train the runs of `cfgs` together on one device (one run is the common case) and return their
    result.json contents; finished runs are skipped, unfinished ones resume from their checkpoints."""
    started = time.perf_counter()
    _check_lockstep(cfgs)
    device, precision = setup(cfgs[0])
    say(device_line(device, precision, graphs=cfgs[0].cuda_graph))
    datasets = load_data(cfgs, device)
    runs = [TrainingRun(cfg, datasets[data_key(cfg)], device, precision) for cfg in cfgs]
    own = stop is None  # then this call takes the signals while it trains, and gives them back
    stop = StopRequest() if stop is None else stop
    try:
        for run in runs:
            run.start()
        with stop.installed() if own else contextlib.nullcontext():
            loop(runs, stop, started)
    finally:  # a crash or a refusal gives the folders back at once (a retry in this process takes them again)
        for run in runs:
            run.writer.release()
    return [run.summary() for run in runs]


def loop(runs: list[TrainingRun], stop: StopRequest, started: float | None = None) -> None:
    """Step the unfinished runs to the end; at each evaluation (or probe, or stop) measure, then settle. After
    every iteration: the heartbeat, and the time limit (counted from `started`, default now)."""
    active = [r for r in runs if r.status is Status.TRAINING]
    if not active:
        return
    step = make_stepper([r.state for r in active])
    for run in active:
        run.writer.capture_s, run.step_facts = step.capture_s, step.facts()  # capture_s: CUDA graphs only
    started = time.perf_counter() if started is None else started
    for run in active:
        if run.state.iteration == 0 and run.wants_probe():
            run.writer.log_probe(0, probe(run.state))
    beat, overhead = Heartbeat(active), 0.0
    tick = last = time.perf_counter()
    while active:
        step([r.state for r in active])
        for run in active:
            run.state.advance()
        now = time.perf_counter()
        _time_limit(active, stop, now - started + (now - last) + overhead)
        last = now
        measuring = bool(stop.reason) or any(r.at_boundary() or r.wants_probe() for r in active)
        beat.tick(active, evaluating=measuring)
        if measuring:
            seconds = _sync_seconds(active[0].device, tick)
            for run in active:
                run.measure(seconds)
            for run in active:
                run.settle(stop.reason)
            overhead = time.perf_counter() - tick - seconds  # evaluation, probes, checkpoints
            for run in active:
                run.writer.add_time(overhead, interval=False)
            active = [r for r in active if r.status is Status.TRAINING]
            beat.quiet()
            tick = last = time.perf_counter()


def _sync_seconds(device: torch.device, tick: float) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - tick


def _time_limit(active: list[TrainingRun], stop: StopRequest, projected: float) -> None:
    """Ask for a stop (checkpoint at this iteration) when `projected`, the time spent plus one more iteration
    and one more evaluation-and-checkpoint, would overrun `time_limit_s`. Checked after every iteration."""
    limit = active[0].cfg.time_limit_s
    if limit and not stop.reason and projected > limit:
        stop.reason = f"time_limit_s={limit:g}"


def _check_lockstep(cfgs: list[Config]) -> None:
    for key in LOCKSTEP:
        values = {str(getattr(c, key)) for c in cfgs}
        if len(values) > 1:
            raise UsageError(f"packed runs must share {key} (got {', '.join(sorted(values))})")


def load_data(cfgs: list[Config], device: torch.device) -> dict[tuple, datamod.Data]:
    """Each distinct data set once, on the device, shared by the runs that use it."""
    cache: dict[tuple, datamod.Data] = {}
    for cfg in cfgs:
        key = data_key(cfg)
        if key not in cache:
            root, create = data_root(cfg)
            cache[key] = datamod.load(cfg.dataset, root, cfg.download, cfg.normalize, cfg.val_split,
                                      cfg.synthetic_size, cfg.image_size, create).to(device)
            say(data_line(cfg, cache[key]))
    return cache


def check_inputs(cfgs: list[Config]) -> None:
    """Before a sweep runs or submits anything: each data set is there (CIFAR fetched and extracted here, once,
    rather than by every job at the same time) and each init= file reads as a state dict; one-line UsageErrors
    otherwise, so that a missing data set is one message and not 50 crashed jobs."""
    for cfg in {data_key(c): c for c in cfgs}.values():
        root, create = data_root(cfg)
        if cfg.dataset in datamod.CIFAR:
            datamod.locate(cfg.dataset, root, cfg.download, create)
        elif cfg.dataset == "folder":
            datamod.folder_splits(root)
    for path in sorted({c.init for c in cfgs if c.init}):
        transfer.read_state_dict(path)


def data_key(cfg: Config) -> tuple:
    return cfg.dataset, cfg.data_dir, cfg.normalize, cfg.val_split, cfg.synthetic_size, cfg.image_size


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"device={name} but no CUDA GPU is available; use device=cpu or device=auto")
    return torch.device(name)


def resolve_precision(name: str, device: torch.device) -> str:
    """`auto`: bf16 on GPUs that support it, fp32 elsewhere."""
    if name == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    return name


def setup(cfg: Config) -> tuple[torch.device, str]:
    """Device, precision, CPU threads and determinism switches for a process that trains `cfg`."""
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = not cfg.deterministic
    return device, resolve_precision(cfg.precision, device)
