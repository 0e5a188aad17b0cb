"""One grouped convolution against K dense ones: what a wide pack's step is made of (`pack_mode=wide` turns the K
runs' convolutions into one grouped convolution over their channels side by side). For each stage's 3x3
convolution of a CIFAR ResNet (16, 32 and 64 channels at 32, 16 and 8 pixels; batch 128, channels_last), the
forward pass and both backward passes (the input's gradient, the weight's gradient) of K runs, done three ways:
K dense convolutions one after the other (`serial`), K dense convolutions each on its own CUDA stream (`streams`,
GPU only: how `pack_mode=streams` overlaps runs), and one grouped convolution (`grouped`, groups=K). cuDNN
autotuning on, as in training. Milliseconds per call of all K, median of --repeats timings of --inner calls each.

    python bench/grouped_conv.py                        # on a GPU: bf16 and fp32, K = 2, 4, 8
    python bench/grouped_conv.py --device cpu --batch 8 --packs 2 --repeats 3 --inner 2 --precisions fp32

prints one line per stage, K, pass and precision, `grouped_conv precision=<p> channels=<C> size=<H> K=<K>
pass=<forward|input_grad|weight_grad> serial_ms=<ms> streams_ms=<ms or n/a> grouped_ms=<ms>`, and writes the
markdown table to --out when given.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

STAGES = ((16, 32), (32, 16), (64, 8))  # (channels, size) of each stage's 3x3 convolutions
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
PASSES = ("forward", "input_grad", "weight_grad")
CONV = dict(stride=[1, 1], padding=[1, 1], dilation=[1, 1], transposed=False, output_padding=[0, 0])


def conv_pass(name: str, x: torch.Tensor, w: torch.Tensor, gy: torch.Tensor, groups: int) -> Callable[[], object]:
    """One pass of a 3x3 convolution (stride 1, padding 1) of `x` by `w` in `groups` groups."""
    if name == "forward":
        return lambda: F.conv2d(x, w, padding=1, groups=groups)
    mask = [name == "input_grad", name == "weight_grad", False]
    return lambda: torch.ops.aten.convolution_backward(gy, x, w, None, *CONV.values(), groups, mask)


def tensors(k: int, channels: int, size: int, batch: int, dtype: torch.dtype, device: torch.device):
    """Input, weight and output gradient of K runs side by side as channels (channels_last)."""
    def make(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
    return (make(batch, k * channels, size, size), make(k * channels, channels, 3, 3),
            make(batch, k * channels, size, size))


def ways(name: str, k: int, channels: int, x, w, gy, device: torch.device) -> dict[str, Callable[[], None] | None]:
    """The pass of K runs done serially, on K streams (GPU) and as one grouped convolution."""
    xs, ws, gys = (t.split(channels, 1 if t is not w else 0) for t in (x, w, gy))
    xs, ws, gys = ([p.contiguous(memory_format=torch.channels_last) for p in part] for part in (xs, ws, gys))
    dense = [conv_pass(name, xk, wk, gk, 1) for xk, wk, gk in zip(xs, ws, gys)]

    def serial() -> None:
        for call in dense:
            call()

    streams = None
    if device.type == "cuda":
        side = [torch.cuda.Stream(device) for _ in range(k)]

        def streams() -> None:
            main = torch.cuda.current_stream(device)
            for s, call in zip(side, dense):
                s.wait_stream(main)
                with torch.cuda.stream(s):
                    call()
            for s in side:
                main.wait_stream(s)

    grouped = conv_pass(name, x, w, gy, k)
    return {"serial": serial, "streams": streams, "grouped": grouped}


def measure_conv(call: Callable[[], object], device: torch.device, warmup: int, repeats: int, inner: int) -> float:
    """Milliseconds per call: the median of `repeats` timings of `inner` calls, after `warmup` calls."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(inner):
                call()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / inner)
        else:
            began = time.perf_counter()
            for _ in range(inner):
                call()
            times.append(1000 * (time.perf_counter() - began) / inner)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precisions", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    p.add_argument("--packs", type=int, nargs="+", default=[2, 4, 8], help="K, the runs of a pack")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--inner", type=int, default=10, help="calls per timing")
    p.add_argument("--out", type=Path, default=None, help="also write the markdown table here")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False  # fp32 as the recipes train
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    table = [f"# Grouped against dense convolutions, {name}, torch {torch.__version__}, batch {args.batch}", "",
             "| precision | channels | size | K | pass | serial ms | streams ms | grouped ms | grouped / serial |",
             "|---|---|---|---|---|---|---|---|---|"]
    for precision in args.precisions:
        for channels, size in STAGES:
            for k in args.packs:
                x, w, gy = tensors(k, channels, size, args.batch, DTYPES[precision], device)
                for pass_name in PASSES:
                    calls = ways(pass_name, k, channels, x, w, gy, device)
                    ms = {way: None if call is None else measure_conv(call, device, args.warmup, args.repeats,
                                                                       args.inner) for way, call in calls.items()}
                    shown = {way: "n/a" if v is None else f"{v:.4f}" for way, v in ms.items()}
                    print(f"grouped_conv precision={precision} channels={channels} size={size} K={k} pass={pass_name} "
                          f"serial_ms={shown['serial']} streams_ms={shown['streams']} grouped_ms={shown['grouped']}",
                          flush=True)
                    table.append(f"| {precision} | {channels} | {size} | {k} | {pass_name} | {shown['serial']} | "
                                 f"{shown['streams']} | {shown['grouped']} | {ms['grouped'] / ms['serial']:.2f} |")
                    if args.out:
                        args.out.write_text("\n".join(table) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
