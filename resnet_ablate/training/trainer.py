"""The training loop: the papers' recipe for one run, or several packed runs stepping in lockstep on one
device, each a `TrainingRun` (`lifecycle.py`: its state, its writer, its state word); evaluation and
checkpoints every `eval_every` iterations, resume, a stop request (`signals.py`) or `time_limit_s` pausing
every run at the next iteration. The device and the data are set up by `runtime.py`.
"""
from __future__ import annotations

import contextlib
import time

import torch

from ..folders.states import State
from ..packing import check_lockstep
from .config import Config
from .evaluate import probe
from .lifecycle import TrainingRun
from .progress import Heartbeat, device_line, say
from .runtime import data_key, load_data, setup
from .signals import Stopped, StopRequest
from .step import make_stepper


def train(cfgs: list[Config], stop: StopRequest | None = None) -> list[dict]:
    """Train the runs of `cfgs` together on one device (one run is the common case) and return their
    result.json contents; finished runs are skipped, unfinished ones resume from their checkpoints."""
    started = time.perf_counter()
    check_lockstep(cfgs)
    own = stop is None  # then this call takes the signals from its start (a stop while it sets up pauses too)
    stop = StopRequest() if stop is None else stop
    with stop.installed() if own else contextlib.nullcontext():
        device, precision = setup(cfgs[0])
        say(device_line(device, precision, graphs=cfgs[0].cuda_graph))
        try:
            datasets = load_data(cfgs, device)
        except Stopped as e:
            say(f"stopped while loading the data ({e}); nothing was trained: the same command starts again")
            return [{"status": State.PAUSED.value, "iteration": 0, "reason": str(e)} for _ in cfgs]
        runs = [TrainingRun(cfg, datasets[data_key(cfg)], device, precision) for cfg in cfgs]
        try:
            for run in runs:
                run.start()
            loop(runs, stop, started)
        finally:  # a crash or a refusal gives the folders back at once (a retry in this process takes them again)
            for run in runs:
                run.writer.release()
    return [run.summary() for run in runs]


def loop(runs: list[TrainingRun], stop: StopRequest, started: float | None = None) -> None:
    """Step the unfinished runs to the end; at each evaluation (or probe, or stop) measure, then settle. After
    every iteration: the heartbeat, and the time limit (counted from `started`, default now)."""
    active = [r for r in runs if r.status is State.RUNNING]
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
            active = [r for r in active if r.status is State.RUNNING]
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
