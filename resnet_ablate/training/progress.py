"""What a training process says while it works, so a working run never looks like a hung one: start-up lines
(device and threads, precision and step kind, the data, each run's size, folder and settings), the line of
each evaluation, a heartbeat line every `heartbeat_s` seconds between evaluations, and a note when the run
would take more than a day. Every progress line (these two and the lr range test's) ends the same way
(`progress_line`): '| 512 img/s | 0:01:40 elapsed, ETA 0:20:00'.

Every line is a whole line, flushed at once, with no carriage returns: it reads the same in a terminal and in
a SLURM log file.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Protocol

import torch

from ..values import override_text
from .config import Config, defaults, fields
from .datasets import Data

DAY_S = 86400.0
ESTIMATE_FROM, ESTIMATE_TO = 10, 40  # the over-a-day estimate times these iterations after the (re)start


def say(line: str) -> None:
    print(line, flush=True)


def duration(seconds: float) -> str:
    """'1:02:03' (hours unbounded)."""
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def progress_line(parts: list[str], images_per_s: float, elapsed: float, left: float) -> str:
    """`parts`, the speed and the times, joined by ' | ': 'it 10/30 lr 0.1 | 512 img/s | 0:00:10 elapsed, ETA
    0:00:20'."""
    return " | ".join([*parts, f"{images_per_s:.0f} img/s", f"{duration(elapsed)} elapsed, ETA {duration(left)}"])


def metrics_line(name: str, row: dict, iterations: int, elapsed: float, left: float) -> str:
    """An evaluation's line: '[name] it 10/30 lr 0.1 | train loss 2.3026 err 90.00% | test loss ... | img/s ...'."""
    return progress_line([f"[{name}] it {row['iteration']}/{iterations} lr {row['lr']:.4g}",
                          f"train loss {_loss(row['train_loss'])} err {row['train_error']:.2f}%",
                          f"test loss {_loss(row['test_loss'])} err {row['test_error']:.2f}%"],
                         row["img_per_s"], elapsed, left)


def _loss(value: float | None) -> str:
    """A loss for the progress line; a non-finite one (stored as null) reads nan."""
    return "nan" if value is None else f"{value:.4f}"


def cores() -> int:
    """The CPU cores this process may use (its affinity, where the OS tells)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def device_line(device: torch.device, precision: str, graphs: bool) -> str:
    """'device: <GPU name> (cuda:0), precision bf16, CUDA-graph steps' or the CPU with its thread count."""
    if device.type == "cuda":
        steps = "CUDA-graph steps" if graphs else "eager steps"
        return f"device: {torch.cuda.get_device_name(device)} ({device}), precision {precision}, {steps}"
    threads = torch.get_num_threads()
    return (f"device: CPU, {threads} thread{'s' if threads > 1 else ''} on {cores()} cores (threads=N to change), "
            f"precision {precision}, eager steps")


def data_line(cfg: Config, data: Data) -> str:
    """The data set, where it was read from, and its sizes."""
    size = data.train.images.shape[-1]
    val = f", {len(data.val)} validation" if data.val is not None else ""
    return (f"data: {cfg.dataset} ({data.source}): {len(data.train)} training{val}, {len(data.test)} test images "
            f"({size}x{size}), {data.num_classes} classes")


def changed_settings(cfg: Config) -> str:
    """The keys that differ from the defaults, as `key=value` (the full config is in config.yaml)."""
    plain = defaults()
    changed = [f"{k}={override_text(getattr(cfg, k))}" for k in fields() if getattr(cfg, k) != getattr(plain, k)]
    return " ".join(changed) or "none (all defaults)"


def run_lines(name: str, folder: Path, parameters: int, cfg: Config) -> list[str]:
    """A run's size, absolute folder and settings, each line prefixed by its name as the later lines are."""
    return [f"[{name}] {parameters:,} parameters; run folder {folder.resolve()}",
            f"[{name}] settings besides the defaults (all in config.yaml): {changed_settings(cfg)}"]


def day_note(seconds_per_iteration: float, iterations: int, done: int, images_per_iteration: int) -> str | None:
    """The one-time note for a run whose estimated total time is over a day, or None."""
    total = seconds_per_iteration * (iterations - done)
    if total <= DAY_S:
        return None
    rate = images_per_iteration / max(seconds_per_iteration, 1e-9)
    return (f"note: at {rate:.0f} img/s the remaining {iterations - done} iterations take about {total / DAY_S:.1f} "
            f"days; a GPU, a smaller depth, fewer iterations or a spec's budget=quick make it shorter")


class Watched(Protocol):
    """What the heartbeat reads of a run (a `lifecycle.TrainingRun`): its settings and device, its name, where it
    stands and its clock."""

    cfg: Config
    device: torch.device

    @property
    def name(self) -> str: ...
    @property
    def iteration(self) -> int: ...
    @property
    def lr(self) -> float: ...
    @property
    def elapsed(self) -> float: ...


class Heartbeat:
    """Called once per iteration by the loop: a progress line per run every `heartbeat_s` seconds (reset by each
    evaluation line), and once, after the first few dozen iterations, the over-a-day note. It counts its own
    steps, since packed runs may have resumed from different iterations."""

    def __init__(self, runs: list[Watched]) -> None:
        self.every, self.device = runs[0].cfg.heartbeat_s, runs[0].device
        self.started = time.perf_counter()  # elapsed = the run's clock (as the writer keeps it) + time since now
        self.base = {id(r): r.elapsed for r in runs}
        self.steps, self.last_steps, self.last_time = 0, 0, self.started
        self.estimate_from: float | None = None

    def _now(self) -> float:
        if self.device.type == "cuda":  # steps are queued; wait for them before timing (twice a minute at most)
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def tick(self, runs: list[Watched], evaluating: bool) -> None:
        """After an iteration of `runs`; no heartbeat when it ends at an evaluation (which prints its own line)."""
        self.steps += 1
        if self.steps in (ESTIMATE_FROM, ESTIMATE_TO):
            self._estimate(runs)
        if self.every and not evaluating and time.perf_counter() - self.last_time >= self.every:
            now = self._now()
            per_iteration = (now - self.last_time) / max(self.steps - self.last_steps, 1)
            for run in runs:
                self._line(run, per_iteration, now)
            self.last_time, self.last_steps = now, self.steps

    def quiet(self) -> None:
        """An evaluation line was just printed: the next heartbeat is a full interval away."""
        self.last_time, self.last_steps = time.perf_counter(), self.steps

    def _line(self, run: Watched, per_iteration: float, now: float) -> None:
        cfg, it = run.cfg, run.iteration
        elapsed = self.base.get(id(run), 0.0) + now - self.started
        say(progress_line([f"[{run.name}] it {it}/{cfg.iterations} lr {run.lr:.4g}"],
                          cfg.batch_size / max(per_iteration, 1e-9), elapsed, per_iteration * (cfg.iterations - it)))

    def _estimate(self, runs: list[Watched]) -> None:
        """Time steps ESTIMATE_FROM..ESTIMATE_TO (the first ones carry start-up costs), then note a run that
        would take more than a day."""
        now = self._now()
        if self.steps == ESTIMATE_FROM:
            self.estimate_from = now
            return
        per_iteration = (now - self.estimate_from) / (ESTIMATE_TO - ESTIMATE_FROM)
        cfg, done = runs[0].cfg, min(r.iteration for r in runs)
        note = day_note(per_iteration, cfg.iterations, done, cfg.batch_size * len(runs))
        if note:
            say(note)
