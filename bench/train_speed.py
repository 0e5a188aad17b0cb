"""Training speed, side by side on one device: (a) the loop tutorials teach (eager fp32, DataLoader with
crop/flip workers), (b) the project's trainer, (c) the trainer with K packed runs; plus ResNet-1001's
peak memory at batch 128. Each row is measured `--repeats` times (default 3) and shows the median, with the
CUDA graph warm-up and capture time of the trainer's rows. Prints a markdown table and writes it to
bench/results/<date>-<device>.md.

    python bench/train_speed.py                       # on a GPU: ResNet-110 and -164, pack 2,4,8
    python bench/train_speed.py --data .data          # real CIFAR-10 instead of synthetic images
    python bench/train_speed.py --device cpu --depths 8 --packs 2 --warmup 2 --iterations 2 --no-1001 \
        --synthetic-size 256 --out /tmp/bench                                 # CPU smoke (numbers meaningless)

Speed does not depend on the pixels, so without --data the trainer reads 50k synthetic images.
"""
from __future__ import annotations

import argparse
import datetime
import gc
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from resnet_ablate.folders import runfolder as rf
from resnet_ablate.models.cifar import build_model, resolve_block
from resnet_ablate.sweeps import cost
from resnet_ablate.training.config import run_dir
from resnet_ablate.training.data import load
from resnet_ablate.training.parse import parse
from resnet_ablate.training.signals import StopRequest
from resnet_ablate.training.trainer import train

RUN_IMAGES = 64000 * 128  # one run of the papers' recipe
RESULTS = Path(__file__).resolve().parent / "results"


class TutorialCifar(Dataset):
    """CIFAR as torchvision's CIFAR10 class serves it: a PIL image per item through the transforms."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: list[float], std: list[float]) -> None:
        self.images, self.labels = images.permute(0, 2, 3, 1).numpy(), labels.tolist()
        self.transform = transforms.Compose([
            transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(), transforms.ToTensor(),
            transforms.Normalize(mean, std)])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        from PIL import Image
        return self.transform(Image.fromarray(self.images[i])), self.labels[i]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def tutorial_loop(depth: int, args: argparse.Namespace, device: torch.device) -> tuple[float, float | None, None]:
    """Images/s of the textbook loop: eager fp32, DataLoader workers doing PIL crop/flip, SGD; cuDNN autotuning
    on, set here (as the trainer sets it), so the row does not depend on which row ran before it."""
    torch.backends.cudnn.benchmark = True
    data = _data(args)
    mean = (data.mean.flatten() / 255).tolist()
    std = (data.std.flatten() / 255).tolist()
    workers = 0 if device.type == "cpu" else min(8, os.cpu_count() or 1)
    loader = DataLoader(TutorialCifar(data.train.images, data.train.labels, mean, std), batch_size=args.batch_size,
                        shuffle=True, drop_last=True, num_workers=workers, pin_memory=device.type == "cuda",
                        persistent_workers=workers > 0)
    model = build_model(depth, "original", "identity", num_classes=data.num_classes).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    _reset_memory(device)
    batches, done, start = iter(loader), 0, 0.0
    while done < args.warmup + args.iterations:
        if done == args.warmup:
            _sync(device)
            start = time.perf_counter()
        try:
            x, y = next(batches)
        except StopIteration:
            batches = iter(loader)
            continue
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        done += 1
    _sync(device)
    return args.iterations * args.batch_size / (time.perf_counter() - start), _peak_gib(device), None


def trainer(depth: int, pack: int, args: argparse.Namespace, device: torch.device, root: Path,
            extra: list[str] = ()) -> tuple[float, float | None, float | None]:
    """Aggregate images/s of `pack` runs (seeds 0..pack-1) in the project's trainer, measured over the
    evaluation intervals after the first (capture and warm-up happen in the first), the peak memory, and the
    CUDA graph warm-up and capture time (result.json's capture_s; None when the step is eager)."""
    data = ["dataset=cifar10", f"data_dir={args.data}", "download=false"] if args.data else [
        "dataset=synthetic", f"synthetic_size={args.synthetic_size}"]
    common = [*data, f"depth={depth}", f"batch_size={args.batch_size}", f"device={device.type}",
              f"iterations={args.warmup + args.iterations}", f"eval_every={args.warmup}", "milestones=[]",
              "warmup_iters=0", "fail_threshold=100", "recipe=default", *extra]
    tag = "_".join([str(depth), str(pack), *extra, str(time.monotonic_ns())]).replace("=", "-")
    cfgs = [parse([*common, f"seed={s}", f"run_dir={root / tag / str(s)}"]) for s in range(pack)]
    _reset_memory(device)
    train(cfgs, StopRequest())
    capture = rf.read_result(run_dir(cfgs[0])).get("capture_s")
    return sum(_steady_rate(rf.read_jsonl(run_dir(c) / rf.METRICS)) for c in cfgs), _peak_gib(device), capture


def _steady_rate(rows: list[dict]) -> float:
    """Images/s over all intervals but the first: total images over total seconds."""
    steps = [(b["iteration"] - a["iteration"], b["img_per_s"]) for a, b in zip(rows, rows[1:])]
    return sum(n for n, _ in steps) / sum(n / rate for n, rate in steps)


def _data(args: argparse.Namespace):
    return load("cifar10", Path(args.data), False, "channel", 0, 0) if args.data else load(
        "synthetic", Path(), False, "channel", 0, args.synthetic_size)


def _median_of(measure, repeats: int) -> tuple[float, float | None, float | None, list[float]]:
    """`measure()` `repeats` times: the median rate, its peak memory and capture time, and every rate."""
    results = sorted((measure() for _ in range(repeats)), key=lambda r: r[0])
    rate, peak, capture = results[(len(results) - 1) // 2]
    return rate, peak, capture, [r[0] for r in results]


def _row(depth: int, setup: str, runs: int, measured: tuple[float, float | None, float | None, list[float]]) -> str:
    rate, peak, capture, rates = measured
    per_run = RUN_IMAGES / rate / 60
    mem = f"{peak:.1f}" if peak is not None else "n/a"
    cap = f"{capture:.1f}" if capture is not None else "n/a"
    spread = f"{min(rates):,.0f}-{max(rates):,.0f}"
    return f"| ResNet-{depth} | {setup} | {runs} | {rate:,.0f} | {spread} | {per_run:.1f} | {per_run * runs:.1f} | " \
           f"{cap} | {mem} |"


def write_speed_table(path: Path, gpu: str, measured: list[tuple[int, str, int, float]],
                      args: argparse.Namespace) -> Path:
    """The trainer's rows as the machine-readable speed table the launcher's cost line reads (format:
    `resnet_ablate.sweeps.cost`): per GPU, net, precision, BN group, batch, pack and step mode, the aggregate
    img/s of the pack. `measured` holds (depth, setup, runs, img/s); the tutorial loop and memory rows are left
    out (the launcher never trains that way)."""
    rows = []
    for depth, setup, runs, rate in measured:
        if not setup.startswith("trainer") or "memory" in setup:
            continue
        cfg = parse([f"depth={depth}", f"batch_size={args.batch_size}", f"device={args.device}",
                     *(["cuda_graph=false"] if "cuda_graph=false" in setup else [])])
        precision = cfg.precision if cfg.precision != "auto" else (
            "bf16" if args.device.startswith("cuda") and torch.cuda.is_bf16_supported() else "fp32")
        rows.append({"gpu": gpu, "arch": cfg.arch, "depth": depth, "block": resolve_block(depth, cfg.block),
                     "precision": precision, "bn_batch": cfg.bn_batch, "batch_size": cfg.batch_size, "pack": runs,
                     "mode": "graph" if cfg.cuda_graph and args.device.startswith("cuda") else "eager",
                     "img_per_s": f"{rate:.1f}", "date": str(datetime.date.today()), "torch": torch.__version__,
                     "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])})
    return cost.write_speed_table(path, rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--depths", type=int, nargs="+", default=[110, 164])
    p.add_argument("--packs", type=int, nargs="+", default=[2, 4, 8])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--warmup", type=int, default=100, help="iterations before timing starts")
    p.add_argument("--iterations", type=int, default=300, help="timed iterations")
    p.add_argument("--repeats", type=int, default=3, help="measurements per row; the table shows the median")
    p.add_argument("--data", default="", help="folder holding cifar-10-batches-py (default: synthetic images)")
    p.add_argument("--synthetic-size", type=int, default=50000, help="training images when --data is not given")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--no-1001", dest="r1001", action="store_false", help="skip ResNet-1001's memory check")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    rows, measured = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for depth in args.depths:
            setups = [("tutorial loop (eager fp32, DataLoader workers)", 1, lambda: tutorial_loop(depth, args, device)),
                      ("trainer, cuda_graph=false", 1,
                       lambda: trainer(depth, 1, args, device, Path(tmp), ["cuda_graph=false"])),
                      ("trainer", 1, lambda: trainer(depth, 1, args, device, Path(tmp)))]
            setups += [(f"trainer, pack={k}", k, lambda k=k: trainer(depth, k, args, device, Path(tmp)))
                       for k in args.packs]
            for setup, runs, measure in setups:
                result = _median_of(measure, args.repeats)
                rows.append(_row(depth, setup, runs, result))
                measured.append((depth, setup, runs, result[0]))
                print(rows[-1], flush=True)
        if args.r1001:
            small = argparse.Namespace(**{**vars(args), "warmup": 5, "iterations": 10})
            rate, peak, capture = trainer(1001, 1, small, device, Path(tmp))
            rows.append(_row(1001, "trainer (memory check, 15 iterations)", 1, (rate, peak, capture, [rate])))
            print(rows[-1], flush=True)
    precision = "bf16 autocast" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    report = "\n".join([
        f"# Training speed, {datetime.date.today()}", "",
        f"- device: {name}; torch {torch.__version__}; CUDA {torch.version.cuda}; python {platform.python_version()}",
        f"- batch {args.batch_size}; trainer precision {precision} (default), channels_last; timed over "
        f"{args.iterations} iterations after {args.warmup}, median of {args.repeats} measurements per row (range "
        f"beside it); capture: CUDA graph warm-up and capture (s); cuDNN autotuning on in every row; data: {'CIFAR-10 from ' + args.data if args.data else f'synthetic, {args.synthetic_size} images'}",
        f"- command: `python {' '.join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])}`", "",
        "| net | setup | runs | img/s (all runs) | img/s range | min per 64k-iteration run (effective) | "
        "min wall for the runs | capture s | peak GiB |",
        "|---|---|---|---|---|---|---|---|---|", *rows, ""])
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"{datetime.date.today()}-{re.sub(r'[^A-Za-z0-9]+', '-', name).strip('-').lower()}.md"
    out.write_text(report)
    table = write_speed_table(out.with_suffix(".speed.csv"), name, measured, args)
    print(f"\n{report}\nwritten to {out} and {table}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
