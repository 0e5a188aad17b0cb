"""How a training iteration is executed. A loop's runs step as *parts*: each run on its own (`pack_mode=streams`,
and any single run), or K runs of one architecture as one wide net (`pack_mode=wide`, `wide.py`). A part steps
eagerly (CPU, or `cuda_graph=false`) or, on a GPU, as one captured CUDA graph (forward, backward, fused
update, loss/error sums, and with `sampling=buffered` the batch's sampling and augmentation too), each part's
graph replayed on its own stream so that packed parts overlap on the device. `compile=true` compiles each
part's net first (`compiled.py`) and warms it up, so that the graph captures the fused kernels.

Why one graph per run with streams: each run then keeps its own RNG stream (dropout masks are drawn exactly as
when it trains alone), its own memory pool, and its numbers are the run's alone exactly. A wide pack trades that
for kernels that each do K runs' work (equal to alone to rounding; see `wide.py`).
"""
from __future__ import annotations

import time
from typing import Any, Callable, ContextManager, Protocol

import torch
from torch import nn
from torch.torch_version import TorchVersion

from ..errors import first_line
from ..packing import why_no_graph
from . import runtime
from .compiled import compile_net
from .config import ENTRIES, Config
from .state import RunState
from .wide import wide_pack

WARMUP_STEPS = 3  # eager iterations on a side stream before capture (cuDNN/cuBLAS handles, autograd state)


class Part(Protocol):
    """What the step drives: one run (`state.RunState`) or K runs as one wide net (`wide.WidePack`), alike, so
    that the step never asks which it has. `runs` are the runs it steps (a run alone: itself)."""

    cfg: Config
    device: torch.device
    model: nn.Module
    net: Callable[[torch.Tensor], torch.Tensor]  # what the training forward calls (`compile=true`: compiled)
    optimizer: torch.optim.Optimizer
    sampler: Any
    runs: list[RunState]

    def buffered(self) -> bool: ...
    def follow_schedule(self) -> None: ...
    def autocast(self) -> ContextManager: ...
    def own_rng(self) -> ContextManager: ...
    def rng_state(self) -> Any: ...
    def set_rng_state(self, state: Any) -> None: ...
    def batch_shape(self) -> tuple[int, ...]: ...
    def label_shape(self) -> tuple[int, ...]: ...
    def batch(self) -> tuple[torch.Tensor, torch.Tensor]: ...
    def device_batch(self) -> tuple[torch.Tensor, torch.Tensor]: ...
    def augmented(self, idx: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor) -> tuple[torch.Tensor, ...]: ...
    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> None: ...
    def zero_grad(self) -> None: ...
    def step(self) -> None: ...
    def draws_random(self) -> bool: ...
    def step_tensors(self) -> list[torch.Tensor]: ...


Saved = tuple[dict[int, torch.Tensor], Any, set[int]]


def eager_step(runs: list[RunState]) -> None:
    """One iteration of every run, one after the other, each at its scheduled lr on its own RNG streams."""
    for run in runs:
        run.follow_schedule()
        run.step()


def snapshot(part: Part) -> Saved:
    """Copies of the state tensors and the RNG streams (warm-up draws dropout masks from them), and which
    parameters have optimizer state."""
    return ({id(t): t.detach().clone() for t in part.step_tensors()}, part.rng_state(),
            set(map(id, part.optimizer.state)))


def restore(part: Part, saved: Saved) -> None:
    """Put the state back in place (addresses kept, as a captured graph needs) and rewind the RNG streams.
    Optimizer state that did not exist before (fresh momentum or moment buffers) becomes zero for an optimizer
    that declares `zero_state` (its first step treats zeros as no state, 0.9·0 + g = g; the addresses stay), and
    is dropped for one that does not (its next step makes it afresh: eager steps only, as `make_stepper`
    captures no graph of such an optimizer)."""
    tensors, rng, had_state = saved
    part.set_rng_state(rng)
    if not ENTRIES["optim"].can(part.cfg.optim, "zero_state"):
        for fresh in [p for p in part.optimizer.state if id(p) not in had_state]:
            del part.optimizer.state[fresh]
    with torch.no_grad():
        for t in part.step_tensors():
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
    """One part's training iteration as a CUDA graph on its own stream (or on `stream`, shared with other
    parts); call it once per iteration. With buffered sampling the graph draws the batch itself; otherwise the
    batch is drawn eagerly and copied into the graph's static input buffers."""

    def __init__(self, part: Part, stream: torch.cuda.Stream | None = None) -> None:
        self.part = part
        self.main = torch.cuda.current_stream(part.device)
        self.stream = stream if stream is not None else torch.cuda.Stream(part.device)
        self.static = None if part.buffered() else (
            torch.zeros(part.batch_shape(), device=part.device).contiguous(memory_format=torch.channels_last),
            torch.zeros(part.label_shape(), dtype=torch.long, device=part.device))
        self.graph = self._capture()

    def _body(self) -> None:
        self.part.train_step(*(self.part.device_batch() if self.static is None else self.static))

    def _rewind(self) -> None:
        """Warm-up and capture read the buffer's first row (never past its end); `restore` puts the counter back."""
        if self.static is None:
            self.part.sampler.counter.zero_()

    def _capture(self) -> torch.cuda.CUDAGraph:
        """Warm up on a side stream, capture one step, then undo every change warm-up and capture made."""
        part = self.part
        if self.static is None:
            part.sampler.refill_if_due()  # before the snapshot: the refill is the next step's, not warm-up's
        saved = snapshot(part)
        self.stream.wait_stream(self.main)
        with torch.cuda.stream(self.stream), part.own_rng():
            for _ in range(WARMUP_STEPS):
                self._rewind()
                self._body()
            self._rewind()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=self.stream):
                self._body()
        self.main.wait_stream(self.stream)
        restore(part, saved)
        torch.cuda.synchronize(part.device)
        return graph

    def __call__(self) -> None:
        """Set the lr, refill the draws when due (once an epoch) or copy an eager batch in, replay; all on the
        part's stream, which waits only for work queued on the main stream (evaluation, meters reset), so
        packed parts' steps overlap. The loop synchronises the device before it reads results."""
        with torch.cuda.stream(self.stream):
            self.stream.wait_stream(self.main)
            self.part.follow_schedule()
            if self.static is None:
                self.part.sampler.refill_if_due()
            else:
                x, y = self.part.batch()
                self.static[0].copy_(x)
                self.static[1].copy_(y)
            with self.part.own_rng():
                self.graph.replay()
            if self.static is None:
                self.part.sampler.count()


class Stepper:
    """The step of a loop's runs: their parts, each stepped eagerly or by its graph, and how (for result.json:
    `facts`; `capture_s` is the time warm-up and capture took, None when eager; `fallbacks` what was asked and
    not done, in words)."""

    def __init__(self, parts: list[Part], mode: str, runs: int, compile_s: float | None,
                 fallbacks: list[str] | None = None) -> None:
        self.parts, self.mode, self.runs, self.compile_s = parts, mode, runs, compile_s
        self.graphs: dict[int, GraphStep] | None = None
        self.capture_s: float | None = None
        self.fallbacks = fallbacks if fallbacks is not None else []

    def __call__(self, active: list[RunState]) -> None:
        """One iteration of the active runs (a wide pack steps all of its runs: its shapes never change)."""
        live = {id(r) for r in active}
        for part in self.parts:
            if not any(id(r) in live for r in part.runs):
                continue
            if self.graphs is not None:
                self.graphs[id(part)]()
            else:
                part.follow_schedule()
                part.step()

    def facts(self) -> dict:
        """How the runs stepped: pack mode (alone, streams or wide), runs packed, step mode (graph or eager: what
        the steps ran as), each fallback from what was asked, compile and its start-up time."""
        compiled = {"compile_s": round(self.compile_s, 2)} if self.compile_s is not None else {}
        return {"pack_mode": self.mode, "pack_runs": self.runs, "step_mode": "eager" if self.graphs is None else
                "graph", "fallbacks": list(self.fallbacks), "compiled": self.compile_s is not None, **compiled}


def fall_back(fallbacks: list[str], level: str, text: str) -> None:
    """Say a fallback in one line (`level`: note or warning) and keep its words for result.json."""
    print(f"{level}: {text}", flush=True)
    fallbacks.append(text)


def make_stepper(runs: list[RunState]) -> Stepper:
    """The step for these runs: wide when asked and possible (else streams, with a note), compiled when asked
    (else, or after a failed compile, the eager net with a warning), graphs on CUDA when `cuda_graph` is on and
    the optimizer can be captured (else eager, with a note). A capture that fails (an op the graph cannot hold)
    falls back to eager for all parts with one warning line. Each fallback is kept in words (`Stepper.fallbacks`,
    result.json's `fallbacks`)."""
    if not runs:
        return Stepper([], "alone", 0, None)
    cfg = runs[0].cfg
    parts: list[Part] = list(runs)
    mode, fallbacks = "streams" if len(runs) > 1 else "alone", []
    if cfg.pack_mode == "wide" and len(runs) > 1:
        pack, reason = wide_pack(runs)
        if pack is None:
            fall_back(fallbacks, "note", f"pack_mode=wide cannot pack these {len(runs)} runs ({reason}); they step "
                                         f"as streams")
        else:
            parts, mode = [pack], "wide"
    stepper = Stepper(parts, mode, len(runs), compile_parts(parts, fallbacks) if cfg.compile else None, fallbacks)
    if cfg.cuda_graph and runtime.graph_device(runs[0].device):
        reason = why_no_graph(cfg, ENTRIES)
        if reason is None:
            stepper.graphs, stepper.capture_s = capture(parts, fallbacks)
        else:
            fall_back(fallbacks, "note", f"cuda_graph=true cannot capture the step of these runs ({reason}); they "
                                         f"step eagerly")
    return stepper


def compile_parts(parts: list[Part], fallbacks: list[str] | None = None) -> float | None:
    """Compile each part's net and warm it up (compile) on a zero batch, undoing what the warm-up changed;
    the seconds it took, or None after a failure (one warning line, also added to `fallbacks`, then the eager
    nets)."""
    started = time.perf_counter()
    saved = {id(p): snapshot(p) for p in parts}
    try:
        for part in parts:
            part.net = compile_net(part.model, len(parts))
            x = torch.zeros(part.batch_shape(), device=part.device).contiguous(memory_format=torch.channels_last)
            with part.own_rng():
                part.train_step(x, torch.zeros(part.label_shape(), dtype=torch.long, device=part.device))
    except Exception as e:  # noqa: BLE001 - a compiler fails in many ways (dynamo, inductor, a C++/Triton build)
        fall_back([] if fallbacks is None else fallbacks, "warning",
                  f"compile=true failed ({type(e).__name__}: {first_line(e)}); training the eager net")
        for part in parts:
            part.net = part.model
        return None
    finally:
        for part in parts:
            part.zero_grad()
            restore(part, saved[id(part)])
    return time.perf_counter() - started


def capture(parts: list[Part],
            fallbacks: list[str] | None = None) -> tuple[dict[int, GraphStep] | None, float | None]:
    """Each part's graph, and the seconds warm-up and capture took; (None, None) after a failed capture, which
    restores every part and says so in one line (also added to `fallbacks`)."""
    started = time.perf_counter()
    runs = [r for p in parts for r in p.runs]
    shared = torch.cuda.Stream(parts[0].device) if one_rng_stream(runs) else None
    if shared is not None:
        print(f"note: torch {torch.__version__} < {PER_GRAPH_RNG} shares one RNG state between CUDA graphs; the "
              f"packed runs that draw dropout masks replay on one stream", flush=True)
    graphs: dict[int, GraphStep] = {}
    for part in parts:  # the next step's refill, made before the snapshots (a fallback keeps it)
        if part.buffered():
            part.sampler.refill_if_due()
    saved = {id(p): snapshot(p) for p in parts}  # GraphStep restores its own; these serve a fallback
    try:
        for part in parts:
            graphs[id(part)] = GraphStep(part, shared if part.draws_random() else None)
    except RuntimeError as e:
        fall_back([] if fallbacks is None else fallbacks, "warning",
                  f"CUDA graph capture failed ({first_line(e)}); training eagerly")
        torch.cuda.synchronize(parts[0].device)
        for part in parts:
            part.zero_grad()
            restore(part, saved[id(part)])
        return None, None
    return graphs, time.perf_counter() - started
