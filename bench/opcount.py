"""Kernels per run-step, the GPU cost a CPU can count (`train_speed.py --count-ops`): the leaf operators of one
training step (torch.profiler; on a GPU the CUDA kernels) divided by the runs that step trains, for each way of
stepping. About 60 % of a ResNet-110 step at batch 128 on a GPU is fixed per-kernel cost, so this count is
what packing and fusion cut.

    python bench/train_speed.py --count-ops --device cpu

prints one line per mode, `ops_per_run_step depth=<d> mode=<alone|streams|wide|compiled|wide+compiled> runs=<K>
precision=<fp32|bf16> bn_batch=<N> ops=<N>`: alone, streams and wide at --count-depth (110) with K = --count-runs
(8), then alone, wide, compiled and wide+compiled at --count-compiled-depth (20: compiling ResNet-110 takes many
minutes on a few cores). The runs are a bare command's (the default recipe, he2016: fp32, ghost BN over half the
batch) with --count-keys on top, in the precision they configure (`precision=bf16`: under bf16 autocast).
On the CPU an operator (aten or mkldnn op, or one fused kernel of compiled code) counts once where none of the
operators it calls counts, otherwise it counts what they count; views and allocations count nothing, nor do
autograd's nodes: the innermost operators that compute, a proxy of a GPU's kernels. On a GPU every kernel,
memset and memcpy of the step counts. The step counted is the trainer's whole iteration: lr, sampling and
augmentation, forward, backward, update, meters.
"""
from __future__ import annotations

import argparse

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from resnet_ablate.training.parse import parse
from resnet_ablate.training.runtime import data_key, load_data, resolve_precision
from resnet_ablate.training.state import RunState, build_state
from resnet_ablate.training.step import compile_parts
from resnet_ablate.training.wide import WidePack

MODES = ("alone", "streams", "wide", "compiled", "wide+compiled")
NO_KERNEL = {  # leaf aten ops that only make views or allocate
    "aten::empty", "aten::empty_strided", "aten::empty_like", "aten::view", "aten::_unsafe_view",
    "aten::as_strided", "aten::reshape", "aten::_reshape_alias", "aten::t", "aten::transpose", "aten::permute",
    "aten::expand", "aten::slice", "aten::select", "aten::unsqueeze", "aten::squeeze", "aten::detach",
    "aten::alias", "aten::lift_fresh", "aten::resize_", "aten::split", "aten::chunk", "aten::unbind",
    "aten::narrow", "aten::view_as", "aten::expand_as", "aten::flatten", "aten::contiguous", "aten::numpy_T",
    "aten::result_type", "aten::set_", "aten::split_with_sizes", "aten::_has_compatible_shallow_copy_type",
    "detach", "aten::mT", "aten::diagonal", "aten::unfold", "aten::movedim", "aten::to", "aten::resolve_conj",
    "aten::resolve_neg", "aten::as_strided_", "aten::lift", "aten::_nested_tensor_from_mask_left_aligned",
}


def _runs(depth: int, k: int, args: argparse.Namespace, device: torch.device, extra: list[str]) -> list[RunState]:
    cfgs = [parse(["dataset=synthetic", f"synthetic_size={max(64, 4 * args.count_batch)}", f"depth={depth}",
                   f"batch_size={args.count_batch}", f"device={device.type}", "warmup_iters=0", "milestones=[]",
                   f"seed={s}", *extra]) for s in range(k)]
    data = load_data(cfgs[:1], device)[data_key(cfgs[0])]
    precision = resolve_precision(cfgs[0].precision, device)
    return [build_state(c, device, precision, data) for c in cfgs]


def _is_op(name: str) -> bool:
    return ("::" in name or "cpp_fused" in name) and name not in NO_KERNEL and "autograd::" not in name


def _leaf_ops(event) -> int:
    """The kernels under a profiler event: an operator whose children launch none is one (its children only
    allocate), otherwise its children's; a record_function or autograd node counts its children's."""
    below = sum(_leaf_ops(child) for child in event.cpu_children)
    return below or int(_is_op(event.name))


def _kernels(prof, device: torch.device) -> int:
    events = prof.events()
    if device.type == "cuda":
        return sum(e.device_type == DeviceType.CUDA for e in events)
    return sum(_leaf_ops(e) for e in events if e.cpu_parent is None and e.device_type == DeviceType.CPU)


def count(parts: list, device: torch.device) -> int:
    """Kernels of one iteration of `parts` (runs or a wide pack), after two iterations of warm-up."""
    def step() -> None:
        for part in parts:
            part.follow_schedule()
            part.step()
            for run in getattr(part, "runs", [part]):
                run.advance()

    step()
    step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return _kernels(prof, device)


def line(depth: int, mode: str, runs: list[RunState], ops: int) -> str:
    first = runs[0]
    return f"ops_per_run_step depth={depth} mode={mode} runs={len(runs)} precision={first.precision} " \
           f"bn_batch={first.cfg.bn_batch} ops={round(ops / len(runs))}"


def measure(depth: int, mode: str, k: int, args: argparse.Namespace, device: torch.device) -> str:
    runs = _runs(depth, k, args, device, args.count_keys)
    parts = [WidePack(runs)] if mode.startswith("wide") else runs
    if mode.endswith("compiled"):
        if compile_parts(parts) is None:
            raise SystemExit(f"compile failed for mode={mode}")
    return line(depth, mode, runs, count(parts, device))


def count_main(args: argparse.Namespace, device: torch.device) -> int:
    """Print the ops lines of every mode (module docstring)."""
    if device.type == "cpu":
        import torch._inductor.config
        torch._inductor.config.cpp.enable_kernel_profile = True  # each fused kernel a profiler event
    k, d, dc, modes = args.count_runs, args.count_depth, args.count_compiled_depth, args.count_modes
    plan = [(d, mode, 1 if mode == "alone" else k) for mode in MODES[:3] if mode in modes]
    if any(mode in modes for mode in MODES[3:]):  # alone and wide again at the compiled modes' depth
        plan += [(dc, mode, 1 if mode in ("alone", "compiled") else k) for mode in ("alone", "wide", *MODES[3:])
                 if mode in modes]
    for depth, mode, runs in plan:
        print(measure(depth, mode, runs, args, device), flush=True)
    return 0
