"""What runs cost before they run: GPU seconds per run from the bench's speed table where it has the row, else
an estimate from the architecture (FLOPs and activation bytes per image, a roofline, and a per-kernel time fitted
to speeds measured on a GPU); and what a sweep needs at a SLURM time limit (jobs, requeues). Also the owner of the
speed table's format (`bench/results/*.speed.csv`, written by bench/train_speed.py). Torch-free: plain
arithmetic on settings.

The estimate, per training image: FLOPs = 6 x the forward multiply-accumulates (forward 2, backward 4), bytes =
TRAFFIC x the activation elements x 2 (bf16); seconds = FLOPs / (peak x UTILISATION) + bytes / (bandwidth x
UTILISATION), plus, per iteration, a time per kernel (3 kernels per tensor op: forward, two backward) fitted to
`ANCHORS`: speeds measured with hand-written training loops on an H100 in bf16 (a CIFAR ResNet at batch 128 is
bound by its kernels, not its FLOPs: the unfitted 2.5 us per kernel made the estimate 1.4x too fast). It models
bf16 only, the one precision measured: fp32 with TF32 off, the papers' recipes, has never been measured on a GPU,
so for an fp32 run the estimate is a lower bound and the cost line says so. UTILISATION and STARTUP_S remain
assumptions; the bench's table replaces the estimate wherever it has the row.
"""
from __future__ import annotations

import csv
import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..packing import step_mode

# name: (bf16 dense TFLOP/s, memory TB/s), NVIDIA datasheets (SXM parts)
GPU_SPECS = {
    "H200": (989.0, 4.8),
    "H100": (989.0, 3.35),
    "A100": (312.0, 2.039),
}
DEFAULT_GPU = "H200"  # the GPU this project's device machine has
UTILISATION = 0.4  # share of peak compute and of peak bandwidth a training step reaches (assumed)
TRAFFIC = 6  # memory accesses per activation element per training image: forward write+read, backward 4
BF16_BYTES = 2
STARTUP_S = 120.0  # per job start: data load, model build, cuDNN autotuning, graph capture (assumed)
TEST_IMAGES = {"cifar10": 10000, "cifar100": 10000}
CLASSES = {"cifar100": 100}
EVAL_EVERY = 1000  # the default evaluation interval, for settings that do not carry one
SPEED_GLOB = "*.speed.csv"
SPEED_COLUMNS = ("gpu", "arch", "depth", "block", "precision", "bn_batch", "batch_size", "pack", "mode",
                 "img_per_s", "date", "torch", "command")
IMAGENET_UNITS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)), 50: ("bottleneck", (3, 4, 6, 3)),
                  101: ("bottleneck", (3, 4, 23, 3)), 152: ("bottleneck", (3, 8, 36, 3))}


@dataclass(frozen=True)
class Anchor:
    """A training speed measured on a GPU (CIFAR-10 ResNet, bf16, batch 128, channels_last), which the
    estimate's time per kernel in that step mode is fitted to."""

    gpu: str
    depth: int
    mode: str  # graph (one CUDA graph per step) or eager
    img_per_s: float
    what: str


# Measured with hand-written training loops, not this package's trainer (issue 37), on an H100.
ANCHORS = (
    Anchor("H100", 110, "graph", 10_900.0, "ResNet-110 in one CUDA graph, 10.9k img/s"),
    Anchor("H100", 20, "graph", 64000 * 128 / 135, "ResNet-20's 64k iterations in a graph loop in 135 s"),
    Anchor("H100", 110, "eager", 2_700.0, "ResNet-110 eager with the data on the GPU, 2.7k img/s"),
)
ANCHOR_BATCH = 128


@dataclass(frozen=True)
class Work:
    """One image's forward pass: multiply-accumulates, activation elements written, tensor ops (kernels)."""

    macs: float = 0.0
    elements: float = 0.0
    ops: int = 0

    def __add__(self, other: "Work") -> "Work":
        return Work(self.macs + other.macs, self.elements + other.elements, self.ops + other.ops)


def _conv(k: int, cin: int, cout: int, hw: int, groups: int = 1) -> Work:
    """A conv followed by BN and ReLU (three tensors of its output size)."""
    return Work(k * k * cin * cout / groups * hw * hw, 3 * cout * hw * hw, 3)


def _block(s: Mapping[str, Any], depth: int) -> str:
    block = s.get("block", "auto")
    if block != "auto":
        return block
    if s.get("arch", "cifar") == "imagenet":
        return IMAGENET_UNITS.get(depth, ("bottleneck", ()))[0]
    fits = {"basic": (depth - 2) % 6 == 0, "bottleneck": (depth - 2) % 9 == 0}
    return "bottleneck" if fits["bottleneck"] and (depth > 110 or not fits["basic"]) else "basic"


def _unit(s: Mapping[str, Any], block: str, cin: int, cout: int, stride: int, hw: int) -> Work:
    """One residual unit at output size hw: its body, projection and the shortcut's own convolutions."""
    if block == "basic":
        work = _conv(3, cin, cout, hw) + _conv(3, cout, cout, hw)
    else:
        mid = cout // 4 * s.get("width_per_group", 64) // 64 * s.get("groups", 1)
        work = _conv(1, cin, mid, hw) + _conv(3, mid, mid, hw, s.get("groups", 1)) + _conv(1, mid, cout, hw)
    downsample = s.get("downsample", "auto")
    downsample = ("zeropad" if block == "basic" else "conv1x1") if downsample == "auto" else downsample
    shortcut = s.get("shortcut", "identity")
    if shortcut == "conv1x1" or ((cin != cout or stride != 1) and downsample == "conv1x1" and shortcut != "none"):
        work += _conv(1, cin, cout, hw)
    k, n = shortcut_convs(shortcut)
    for _ in range(n):
        work += _conv(k, cout, cout, hw)
    return work + Work(0.0, 2 * cout * hw * hw, 2)  # the merge and the unit's activation


def shortcut_convs(name: str) -> tuple[int, int]:
    """(kernel size, count) of the convolutions shortcut `name` adds per unit, as its class declares
    (`Shortcut.own_convs`); imported here, not at the top, so the table format reads without torch."""
    from ..models.shortcuts import SHORTCUTS

    return SHORTCUTS.get(name).own_convs if name in SHORTCUTS else (0, 0)


def forward_work(s: Mapping[str, Any]) -> Work:
    """One image's forward pass of the net the settings build (arch cifar or imagenet)."""
    depth, size = int(s["depth"]), int(s.get("image_size", 32))
    block = _block(s, depth)
    expansion = 1 if block == "basic" else 4
    if s.get("arch", "cifar") == "imagenet":
        hw = (size + 1) // 2
        work, cin = _conv(7, 3, 64, hw) + Work(0.0, 64 * (hw // 2) ** 2, 1), 64
        hw //= 2
        plan = [(w * expansion, n, 1 if i == 0 else 2)
                for i, (w, n) in enumerate(zip((64, 128, 256, 512), IMAGENET_UNITS[depth][1]))]
    else:
        hw, work, cin = size, _conv(3, 3, 16, size), 16
        n = (depth - 2) // (6 if block == "basic" else 9)
        plan = [(w * expansion, n, 1 if i == 0 else 2) for i, w in enumerate((16, 32, 64))]
    for cout, units, stride in plan:
        for j in range(units):
            hw = hw // stride if j == 0 else hw
            work += _unit(s, block, cin, cout, stride if j == 0 else 1, hw)
            cin = cout
    return work + Work(cin * CLASSES.get(s.get("dataset", ""), 10), 0.0, 2)


def precision_of(s: Mapping[str, Any]) -> str:
    """What a run trains in on a GPU: auto is bf16 (every GPU in GPU_SPECS has it)."""
    return "fp32" if s.get("precision", "auto") == "fp32" else "bf16"


def image_seconds(s: Mapping[str, Any], gpu: str) -> tuple[float, Work]:
    """Estimated seconds of one training image's compute and memory traffic on `gpu` in bf16 (no kernel time)."""
    work = forward_work(s)
    peak, bandwidth = GPU_SPECS[gpu]
    return 6 * work.macs / (peak * 1e12 * UTILISATION) + \
        TRAFFIC * work.elements * BF16_BYTES / (bandwidth * 1e12 * UTILISATION), work


def estimated_mode(s: Mapping[str, Any]) -> str:
    """The step mode whose kernel time the estimate uses: eager, else graph (a wide pack is not measured: one
    graph per run stands in)."""
    return "eager" if step_mode(s) == "eager" else "graph"


@functools.cache
def kernel_seconds(mode: str) -> float:
    """The time per kernel in step mode `mode` (graph or eager) that makes the estimate meet the `ANCHORS` of
    that mode (least squares over them; computed on first use: counting a net's convolutions reads the shortcut
    registry, which imports torch)."""
    pairs = []
    for a in (a for a in ANCHORS if a.mode == mode):
        per_image, work = image_seconds({"depth": a.depth}, a.gpu)
        pairs.append((3 * work.ops, ANCHOR_BATCH / a.img_per_s - ANCHOR_BATCH * per_image))
    return sum(k * rest for k, rest in pairs) / sum(k * k for k, _ in pairs)


def estimated_run_seconds(s: Mapping[str, Any], gpu: str, iterations: int) -> float:
    """`iterations` training steps and their evaluations, estimated from the architecture (bf16; a lower bound
    for an fp32 run)."""
    per_image, work = image_seconds(s, gpu)
    batch = int(s.get("batch_size", 128))
    step = batch * per_image + 3 * work.ops * kernel_seconds(estimated_mode(s))
    evals = iterations // int(s.get("eval_every", EVAL_EVERY) or EVAL_EVERY)
    return iterations * step + evals * TEST_IMAGES.get(s.get("dataset", ""), 0) * per_image / 3


# ---- the bench's speed table (format owner) ----------------------------------------------------------------

def write_speed_table(path: Path, rows: Iterable[Mapping[str, Any]]) -> Path:
    """Write measured speed rows (SPEED_COLUMNS; img_per_s is the aggregate of the pack) as a CSV file."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, SPEED_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({k: row.get(k, "") for k in SPEED_COLUMNS} for row in rows)
    return path


def read_speed_table(path: Path) -> list[dict[str, str]]:
    """The rows of one speed table, as written (a bench run that appends to it reads them back)."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def read_speed_tables(folder: Path) -> list[dict[str, str]]:
    """Every row of the speed tables in `folder`, oldest date first (a later measurement wins a lookup);
    rows without a positive img_per_s are skipped."""
    rows = [r for path in sorted(folder.glob(SPEED_GLOB)) for r in read_speed_table(path)
            if _positive(r.get("img_per_s"))]
    return sorted(rows, key=lambda r: r.get("date", ""))


def _positive(text: Any) -> bool:
    try:
        return float(text) > 0
    except (TypeError, ValueError):
        return False


def choose_gpu(constraint: str | None, rows: list[dict[str, str]]) -> str:
    """The GPU a sweep is costed for: the one the profile's constraint names (in the speed table, else in
    GPU_SPECS), else the speed table's only GPU, else DEFAULT_GPU."""
    measured = list(dict.fromkeys(r["gpu"] for r in rows))
    if constraint:
        for name in [*measured, *GPU_SPECS]:
            if constraint.lower() in name.lower() or name.lower() in constraint.lower():
                return name
    return measured[0] if len(measured) == 1 else DEFAULT_GPU


def _row_key(s: Mapping[str, Any]) -> dict[str, str]:
    return {"arch": str(s.get("arch", "cifar")), "depth": str(s["depth"]), "precision": precision_of(s),
            "bn_batch": str(s.get("bn_batch", 0)), "batch_size": str(s.get("batch_size", 128)),
            "mode": step_mode(s)}


def measured_rate(s: Mapping[str, Any], gpu: str, pack: int, rows: list[dict[str, str]]) -> tuple[float, int] | None:
    """(aggregate img/s, pack measured) from the speed table for `pack` runs of these settings on `gpu`: the
    row of that pack, else of the largest smaller pack (its aggregate rate held: no further gain assumed)."""
    want = {"gpu": gpu, **_row_key(s)}
    found = [r for r in rows if all(str(r.get(k, "")) == v for k, v in want.items())
             and str(r.get("pack", "")).isdigit() and int(r["pack"]) <= pack]
    if not found and want["mode"] == "wide":  # a wide pack not measured: the per-run graphs' rate stands in
        return measured_rate({**s, "pack_mode": "streams"}, gpu, pack, rows)
    if not found:
        return None
    best = max(int(r["pack"]) for r in found)
    return float([r for r in found if int(r["pack"]) == best][-1]["img_per_s"]), best


# ---- a sweep's cost ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class JobCost:
    """One job (a pack of runs trained together): its GPU seconds and where the figure comes from."""

    runs: int
    seconds: float
    source: str


def job_cost(pack: list[Mapping[str, Any]], gpu: str, rows: list[dict[str, str]]) -> JobCost:
    """The GPU seconds of one job's remaining iterations (`done_iterations` in a run's mapping: already
    trained), from the speed table where it has the row, else the estimate (runs of a pack in turn)."""
    left = [max(0, int(s["iterations"]) - int(s.get("done_iterations", 0))) for s in pack]
    rate = measured_rate(pack[0], gpu, len(pack), rows)
    if rate is not None:
        images = max(left) * int(pack[0].get("batch_size", 128)) * len(pack)
        measured = f"pack {rate[1]}" + (f" for {len(pack)}" if rate[1] != len(pack) else "")
        return JobCost(len(pack), images / rate[0], f"speed table ({measured})")
    return JobCost(len(pack), sum(estimated_run_seconds(s, gpu, n) for s, n in zip(pack, left)), "estimate")


@dataclass(frozen=True)
class SweepCost:
    """A sweep's GPU-hours and the jobs it needs at a time limit."""

    runs: int
    jobs: int
    gpu_hours: float
    starts: int  # job starts, requeues included (0 without a time limit)
    most_requeues: int
    gpu: str
    sources: tuple[str, ...]


def sweep_cost(packs: list[list[Mapping[str, Any]]], gpu: str, rows: list[dict[str, str]],
               limit_s: float | None) -> SweepCost:
    """Cost of the packs (one job each) on `gpu`; at `limit_s` usable seconds per job start (None: no limit)
    each job starts ceil(seconds / limit_s) times, each start paying STARTUP_S."""
    costs = [job_cost(p, gpu, rows) for p in packs if p]
    starts = [max(1, math.ceil(c.seconds / limit_s)) if limit_s else 1 for c in costs]
    seconds = sum(c.seconds + n * STARTUP_S for c, n in zip(costs, starts))
    return SweepCost(sum(c.runs for c in costs), len(costs), seconds / 3600, sum(starts) if limit_s else 0,
                     max(starts, default=1) - 1, gpu, tuple(dict.fromkeys(c.source.split(" (")[0] for c in costs)))


def run_hours(s: Mapping[str, Any], gpu: str, rows: list[dict[str, str]]) -> tuple[float, str]:
    """GPU-hours of one run of these settings trained alone, and where the figure comes from."""
    cost = job_cost([s], gpu, rows)
    return (cost.seconds + STARTUP_S) / 3600, cost.source


def estimate_basis(s: Mapping[str, Any]) -> str:
    """The estimate's per-image figures for these settings, e.g. 'depth 110 1.5 GFLOP/50.1 MB'."""
    work = forward_work(s)
    return f"depth {s['depth']} {6 * work.macs / 1e9:.2g} GFLOP/{TRAFFIC * work.elements * BF16_BYTES / 1e6:.3g} MB"
