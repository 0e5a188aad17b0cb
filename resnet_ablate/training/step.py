"""How a training iteration is executed: eagerly (CPU, or `cuda_graph=false`), or on a GPU as one
captured CUDA graph per run (forward, backward, fused SGD update, loss/error sums), each replayed on
its own stream so that packed runs overlap on the device.

Why one graph per run rather than one graph holding K models: each run then keeps its own RNG stream
(dropout masks are drawn exactly as when it trains alone), its own memory pool, and runs can finish
at different times without re-capturing. Sampling and augmentation stay eager (about a dozen small
kernels on the GPU-resident uint8 data) and are copied into the graph's static input buffers.
"""
from __future__ import annotations

import time
from typing import Callable

import torch
from torch.torch_version import TorchVersion

from ..registry import first_line
from .state import RunState

WARMUP_STEPS = 3  # eager iterations on a side stream before capture (cuDNN/cuBLAS handles, autograd state)


def eager_step(runs: list[RunState]) -> None:
    """One iteration of every run, one after the other, each at its scheduled lr on its own RNG streams."""
    for run in runs:
        run.follow_schedule()
        run.step()


def snapshot(run: RunState) -> tuple[dict[int, torch.Tensor], dict]:
    """Copies of the state tensors and the run's RNG streams (warm-up draws dropout masks from them)."""
    return {id(t): t.detach().clone() for t in run.step_tensors()}, run.rng_state()


def restore(run: RunState, saved: tuple[dict[int, torch.Tensor], dict]) -> None:
    """Put the state back in place (addresses kept, as a captured graph needs) and rewind the RNG
    streams; optimizer state that did not exist before, i.e. fresh momentum or moment buffers, becomes
    zero, which the optimizers' first step treats exactly as a missing buffer (0.9·0 + g = g)."""
    tensors, rng = saved
    run.set_rng_state(rng)
    with torch.no_grad():
        for t in run.step_tensors():
            if id(t) in tensors:
                t.copy_(tensors[id(t)])
            else:
                t.zero_()


PER_GRAPH_RNG = "2.13"  # torch from which each captured graph has its own RNG seed/offset tensors


def one_rng_stream(runs: list[RunState], version: str = torch.__version__) -> bool:
    """Whether the packed runs that draw random numbers in their step (dropout shortcut) must replay on one
    stream: before torch 2.13 the captured graphs of one generator share one seed/offset pair, so graphs
    replayed on different streams would race for it and silently draw wrong masks. From 2.13 on each graph
    has its own, and every run keeps its own stream. (Clusters still carry torch 2.11: no install floor.)"""
    return TorchVersion(version) < PER_GRAPH_RNG and sum(run.draws_random() for run in runs) > 1


class GraphStep:
    """One run's training iteration as a CUDA graph on its own stream (or on `stream`, shared with other
    runs); call it once per iteration."""

    def __init__(self, run: RunState, stream: torch.cuda.Stream | None = None) -> None:
        self.run = run
        self.main = torch.cuda.current_stream(run.device)
        self.stream = stream if stream is not None else torch.cuda.Stream(run.device)
        shape = run.batch_shape()  # the data's image size (32 for CIFAR)
        self.x = torch.zeros(shape, device=run.device).contiguous(memory_format=torch.channels_last)
        self.y = torch.zeros(shape[0], dtype=torch.long, device=run.device)
        self.graph = self._capture()

    def _capture(self) -> torch.cuda.CUDAGraph:
        """Warm up on a side stream, capture one step, then undo every change warm-up and capture made."""
        run, saved = self.run, snapshot(self.run)
        self.stream.wait_stream(self.main)
        with torch.cuda.stream(self.stream), run.own_rng():
            for _ in range(WARMUP_STEPS):
                run.train_step(self.x, self.y)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=self.stream):
            run.train_step(self.x, self.y)
        self.main.wait_stream(self.stream)
        restore(run, saved)
        torch.cuda.synchronize(run.device)
        return graph

    def __call__(self) -> None:
        """Set the lr, sample and augment the next batch into the static buffers, replay; all on the
        run's stream, which waits only for work queued on the main stream (evaluation, meters reset),
        so packed runs' steps overlap. The loop synchronises the device before it reads results."""
        with torch.cuda.stream(self.stream):
            self.stream.wait_stream(self.main)
            self.run.follow_schedule()
            x, y = self.run.batch()
            self.x.copy_(x)
            self.y.copy_(y)
            with self.run.own_rng():
                self.graph.replay()


class GraphPack:
    """The captured graphs of packed runs, each replayed on its stream; `capture_s` is the time warm-up and
    capture took."""

    def __init__(self, graphs: dict[int, GraphStep], capture_s: float) -> None:
        self.graphs, self.capture_s = graphs, capture_s

    def __call__(self, active: list[RunState]) -> None:
        for run in active:
            self.graphs[id(run)]()


def make_stepper(runs: list[RunState]) -> Callable[[list[RunState]], None]:
    """The step for these runs: graphs on CUDA when `cuda_graph` is on, else the eager loop. A capture
    that fails (an op the graph cannot hold) falls back to eager for all runs with one warning line."""
    if not runs or runs[0].device.type != "cuda" or not runs[0].cfg.cuda_graph:
        return eager_step
    started = time.perf_counter()
    shared = torch.cuda.Stream(runs[0].device) if one_rng_stream(runs) else None
    if shared is not None:
        print(f"note: torch {torch.__version__} < {PER_GRAPH_RNG} shares one RNG state between CUDA graphs; the "
              f"packed runs that draw dropout masks replay on one stream", flush=True)
    graphs: dict[int, GraphStep] = {}
    saved = {id(run): snapshot(run) for run in runs}  # GraphStep restores its own; these serve a fallback
    try:
        for run in runs:
            graphs[id(run)] = GraphStep(run, shared if run.draws_random() else None)
    except RuntimeError as e:
        print(f"warning: CUDA graph capture failed ({first_line(e)}); training eagerly", flush=True)
        torch.cuda.synchronize(runs[0].device)
        for run in runs:
            run.zero_grad()
            restore(run, saved[id(run)])
        return eager_step
    return GraphPack(graphs, time.perf_counter() - started)
