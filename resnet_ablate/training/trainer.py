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
import time
from pathlib import Path

import torch

from ..registry import UsageError
from . import data as datamod
from .config import Config, default_data_dir, run_dir, run_name
from .evaluate import evaluate, probe, responses
from .optim import lr_at
from .state import RunState, precision_policy
from .step import make_stepper
from .writer import RunWriter, finite

# Settings packed runs must share: they step together on one device.
LOCKSTEP = ("device", "precision", "cuda_graph", "batch_size", "iterations", "eval_every", "deterministic")


class Status(str, enum.Enum):
    """Where a run stands: training, paused (checkpointed, the same command resumes it), or finished with
    result.json's status (done or fail)."""

    TRAINING = "training"
    PAUSED = "paused"
    DONE = "done"
    FAIL = "fail"


class StopRequest:
    """Set by SIGTERM/SIGUSR2 (preemption, time limit) or a first Ctrl-C: runs checkpoint at the next
    iteration and stop. A second Ctrl-C interrupts at once."""

    def __init__(self) -> None:
        self.reason: str | None = None

    def install(self) -> None:
        def handler(num: int, _frame) -> None:
            self.reason = signal.Signals(num).name
            if num == signal.SIGINT:
                signal.signal(signal.SIGINT, signal.default_int_handler)

        with contextlib.suppress(ValueError, AttributeError):  # not the main thread, or no SIGUSR2 here
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2):
                signal.signal(sig, handler)


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"


class TrainingRun:
    """One run in the loop: its config, its state (built when it trains), its writer and its status."""

    def __init__(self, cfg: Config, data: datamod.Data, device: torch.device, precision: str) -> None:
        self.cfg, self.data, self.device, self.precision = cfg, data, device, precision
        self.writer = RunWriter(cfg, run_dir(cfg), run_name(cfg))
        self.status = Status.TRAINING
        self.state: RunState | None = None

    def start(self) -> None:
        """Resume or create the run folder; a finished run is left alone."""
        found = self.writer.finished()
        if found is not None:
            self.status, self.writer.result = Status(found["status"]), found
            print(f"[{self.writer.name}] already finished ({found['status']}) in {self.writer.dir}; nothing to do",
                  flush=True)
            return
        self.state = RunState(self.cfg, self.data, self.device, self.precision)
        self.writer.claim()
        saved = self.writer.resume()
        if saved is not None:
            self.state.load_state_dict(saved)
        self.writer.open(self.state.iteration)

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
            self.status = Status.PAUSED
            self.writer.close()
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
            "precision_policy": precision_policy(self.precision),
            "torch": torch.__version__, "device": device_name(self.device), "git_commit": self.writer.commit,
            **({"capture_s": round(self.writer.capture_s, 2)} if self.writer.capture_s is not None else {}),
        })

    def summary(self) -> dict:
        """result.json's contents for a finished run; status and iteration for a paused one."""
        if self.writer.result is not None:
            return self.writer.result
        return {"status": Status.PAUSED.value, "iteration": self.state.iteration}


def train(cfgs: list[Config], stop: StopRequest | None = None) -> list[dict]:
    """Train the runs of `cfgs` together on one device (one run is the common case) and return their
    result.json contents; finished runs are skipped, unfinished ones resume from their checkpoints."""
    _check_lockstep(cfgs)
    device, precision = setup(cfgs[0])
    datasets = load_data(cfgs, device)
    runs = [TrainingRun(cfg, datasets[data_key(cfg)], device, precision) for cfg in cfgs]
    for run in runs:
        run.start()
    if stop is None:
        stop = StopRequest()
        stop.install()
    loop(runs, stop)
    return [run.summary() for run in runs]


def loop(runs: list[TrainingRun], stop: StopRequest) -> None:
    """Step the unfinished runs to the end; at each evaluation (or probe, or stop) measure, then settle."""
    active = [r for r in runs if r.status is Status.TRAINING]
    step = make_stepper([r.state for r in active])
    for run in active:
        run.writer.capture_s = getattr(step, "capture_s", None)  # CUDA graphs only
    started = time.perf_counter()
    for run in active:
        if run.state.iteration == 0 and run.wants_probe():
            run.writer.log_probe(0, probe(run.state))
    tick = time.perf_counter()
    while active:
        step([r.state for r in active])
        for run in active:
            run.state.advance()
        if stop.reason or any(r.at_boundary() or r.wants_probe() for r in active):
            seconds = _sync_seconds(active[0].device, tick)
            for run in active:
                run.measure(seconds)
            _time_limit(active, stop, started)
            for run in active:
                run.settle(stop.reason)
            overhead = time.perf_counter() - tick - seconds  # evaluation, probes, checkpoints
            for run in active:
                run.writer.add_time(overhead, interval=False)
            active = [r for r in active if r.status is Status.TRAINING]
            tick = time.perf_counter()


def _sync_seconds(device: torch.device, tick: float) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - tick


def _time_limit(active: list[TrainingRun], stop: StopRequest, started: float) -> None:
    """Ask for a stop when the next interval would overrun `time_limit_s`."""
    limit = active[0].cfg.time_limit_s if active else 0
    if limit and not stop.reason:
        spent = time.perf_counter() - started
        per_interval = max((r.writer.last_row.get("img_per_s") or 0) for r in active) or 1.0
        next_interval = active[0].cfg.eval_every * active[0].cfg.batch_size * len(active) / per_interval
        if spent + next_interval > limit:
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
            root = Path(cfg.data_dir) if cfg.data_dir else default_data_dir()
            cache[key] = datamod.load(cfg.dataset, root, cfg.download, cfg.normalize, cfg.val_split,
                                      cfg.synthetic_size, cfg.image_size).to(device)
    return cache


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
    """Device, precision and determinism switches for a process that trains `cfg`."""
    device = resolve_device(cfg.device)
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = not cfg.deterministic
    return device, resolve_precision(cfg.precision, device)
