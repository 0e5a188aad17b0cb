"""Training speed, side by side on one device: (a) the loop tutorials teach (eager fp32, DataLoader with
crop/flip workers), (b) the project's trainer (eager, CUDA graph, compiled, ghost BN, bf16 residual stream,
per-step sampling, the papers' recipe in fp32), (c) the trainer with K packed runs, on streams and as one wide net
(and wide compiled); plus ResNet-1001's peak memory at batch 128. The trainer's rows are the package's defaults
(`recipe=default`: precision auto, one BN over the batch) plus each row's keys; `--row` adds rows of any keys.
Each row names its precision and BN group, is measured `--repeats` times (default 3) and shows the median, with
the CUDA graph warm-up and capture time and the compile time of the trainer's rows. Prints a markdown table and
writes it to bench/results/<date>-<device>.md (`--append`: after the rows already there).

    python bench/train_speed.py                       # on a GPU: ResNet-110 and -164, every setup, pack 2,4,8
    python bench/train_speed.py --setups graph wide   # only some setups (names: --help)
    python bench/train_speed.py --setups --row "recipe=he2016 precision=fp32 bn_batch=0"   # a row of any keys
    python bench/train_speed.py --data .data          # real CIFAR-10 instead of synthetic images
    python bench/train_speed.py --device cpu --depths 8 --packs 2 --warmup 2 --iterations 2 --no-1001 \
        --synthetic-size 256 --out /tmp/bench                                 # CPU smoke (numbers meaningless)
    python bench/train_speed.py --count-ops --device cpu   # kernels (CPU: leaf operators) per run-step, per mode

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

from resnet_ablate import packing
from resnet_ablate.errors import first_line
from resnet_ablate.folders import runfolder as rf
from resnet_ablate.models.cifar import build_model, resolve_block
from resnet_ablate.sweeps import cost
from resnet_ablate.training.configfile import run_dir
from resnet_ablate.training.datasets import load
from resnet_ablate.training.parse import parse
from resnet_ablate.training.runtime import resolve_precision
from resnet_ablate.training.signals import StopRequest
from resnet_ablate.training.trainer import train

sys.path.insert(0, str(Path(__file__).resolve().parent))  # opcount.py beside it, also when imported as a file
from opcount import MODES, count_main  # noqa: E402

RUN_IMAGES = 64000 * 128  # one run of the papers' recipe
RESULTS = Path(__file__).resolve().parent / "results"


class TutorialCifar(Dataset):
    """CIFAR as torchvision's CIFAR10 class serves it: a PIL image per item through the transforms."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: list[float], std: list[float]) -> None:
        from torchvision import transforms  # here: its import takes seconds, and only this row needs it

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
    on and PyTorch's default TF32 switches (convolutions in TF32 on GPUs that have it, matmuls not), set here, so
    the row does not depend on which row ran before it."""
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = True, False
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
            extra: list[str] = ()) -> tuple[float, float | None, float | None, float | None]:
    """Aggregate images/s of `pack` runs (seeds 0..pack-1) in the project's trainer, measured over the
    evaluation intervals after the first (capture, compile and warm-up happen in the first), the peak memory,
    the CUDA graph warm-up and capture time (result.json's capture_s; None when the step is eager) and the
    compile time (compile_s; None without compile)."""
    data = ["dataset=cifar10", f"data_dir={args.data}", "download=false"] if args.data else [
        "dataset=synthetic", f"synthetic_size={args.synthetic_size}"]
    common = [*data, f"depth={depth}", f"batch_size={args.batch_size}", f"device={device.type}",
              f"iterations={args.warmup + args.iterations}", f"eval_every={args.warmup}", "milestones=[]",
              "warmup_iters=0", "fail_threshold=100", "recipe=default", *extra]
    tag = "_".join([str(depth), str(pack), *extra, str(time.monotonic_ns())]).replace("=", "-")
    cfgs = [parse([*common, f"seed={s}", f"run_dir={root / tag / str(s)}"]) for s in range(pack)]
    _reset_memory(device)
    train(cfgs, StopRequest())
    result = rf.read_result(run_dir(cfgs[0]))
    rate = sum(_steady_rate(rf.read_jsonl(run_dir(c) / rf.METRICS)) for c in cfgs)
    return rate, _peak_gib(device), result.get("capture_s"), result.get("compile_s")


def _steady_rate(rows: list[dict]) -> float:
    """Images/s over all intervals but the first: total images over total seconds."""
    steps = [(b["iteration"] - a["iteration"], b["img_per_s"]) for a, b in zip(rows, rows[1:])]
    return sum(n for n, _ in steps) / sum(n / rate for n, rate in steps)


def _data(args: argparse.Namespace):
    return load("cifar10", Path(args.data), False, "channel", 0, 0) if args.data else load(
        "synthetic", Path(), False, "channel", 0, args.synthetic_size)


def _median_of(measure, repeats: int) -> tuple[float, float | None, float | None, float | None, list[float]]:
    """`measure()` `repeats` times: the median rate, its peak memory, capture and compile time, and every rate."""
    results = sorted((measure() for _ in range(repeats)), key=lambda r: r[0])
    return (*results[(len(results) - 1) // 2], [r[0] for r in results])


def _seconds(value: float | None) -> str:
    return f"{value:.1f}" if value is not None else "n/a"


def _row(depth: int, setup: str, runs: int, precision: str, bn_group: int, measured: tuple) -> str:
    rate, peak, capture, compile_s, rates = measured
    per_run = RUN_IMAGES / rate / 60
    spread = f"{min(rates):,.0f}-{max(rates):,.0f}"
    return f"| ResNet-{depth} | {setup} | {runs} | {precision} | {bn_group} | {rate:,.0f} | {spread} | " \
           f"{per_run:.1f} | {per_run * runs:.1f} | {_seconds(capture)} | {_seconds(compile_s)} | {_seconds(peak)} |"


# setup name -> (row label, runs (0: each --packs value, -1: the largest), trainer keys); "tutorial" is the
# textbook loop. In the order of what a short GPU lease must measure first (the table is written after every row):
# the modes, the papers' recipe in fp32 (ghost BN of half the batch, TF32 off) with and without its ghost BN, the
# options' costs, the compiled rows last.
SETUPS = {
    "tutorial": ("tutorial loop (eager fp32, DataLoader workers)", 1, None),
    "graph": ("trainer", 1, []),
    "streams": ("trainer, pack={k} (streams)", 0, []),
    "wide": ("trainer, pack={k} wide", 0, ["pack_mode=wide"]),
    "eager": ("trainer, cuda_graph=false", 1, ["cuda_graph=false"]),
    "fp32_recipe": ("trainer, recipe=he2016 precision=fp32", 1, ["recipe=he2016", "precision=fp32"]),
    "fp32_recipe_one_bn": ("trainer, recipe=he2016 precision=fp32 bn_batch=0", 1,
                           ["recipe=he2016", "precision=fp32", "bn_batch=0"]),
    "ghost_bn": ("trainer, bn_batch={g}", 1, ["bn_batch={g}"]),
    "bf16_stream": ("trainer, residual_fp32=false", 1, ["residual_fp32=false"]),
    "sampling_eager": ("trainer, sampling=eager (draws outside the graph)", 1, ["sampling=eager"]),
    "compile": ("trainer, compile=true", 1, ["compile=true"]),
    "wide_compile": ("trainer, pack={k} wide, compile=true", -1, ["pack_mode=wide", "compile=true"]),
}


def _setups(names: list[str], packs: list[int], batch: int,
            rows_keys: list[str] = ()) -> list[tuple[str, int, list[str] | None]]:
    """The rows to measure: each named setup, a pack setup once per pack size (-1: the largest only); ghost BN
    over 64 images (the papers' per-GPU BN; half the batch below 128); then a row per `rows_keys` entry (its
    trainer keys, space-separated)."""
    rows, ghost = [], min(64, batch // 2)
    for name in [n for n in SETUPS if n in names]:  # in SETUPS' order, whatever the command line's
        label, runs, extra = SETUPS[name]
        sizes = packs if runs == 0 else [max(packs)] if runs == -1 else [runs]
        keys = None if extra is None else [e.format(g=ghost) for e in extra]
        rows += [(label.format(k=k, g=ghost), k, keys) for k in sizes]
    return rows + [(f"trainer, {keys}", 1, keys.split()) for keys in rows_keys]


def _config(depth: int, args: argparse.Namespace, extra: list[str]):
    """The trainer row's resolved settings (the defaults, then the row's keys, as `trainer` trains them)."""
    return parse([f"depth={depth}", f"batch_size={args.batch_size}", f"device={args.device}", "recipe=default",
                  *extra])


def _precision(device: torch.device, depth: int, args: argparse.Namespace, extra: list[str] | None) -> str:
    """What the row trains in: the tutorial loop PyTorch's defaults; a trainer row its resolved precision (fp32
    on a GPU with TF32 off, as the package sets it)."""
    if extra is None:
        return "fp32 (PyTorch defaults: TF32 convolutions)" if device.type == "cuda" else "fp32"
    cfg = _config(depth, args, extra)
    if resolve_precision(cfg.precision, device) == "fp32":
        return "fp32, TF32 off" if device.type == "cuda" else "fp32"
    return f"bf16 autocast, {'fp32' if cfg.residual_fp32 else 'bf16'} stream"


def _bn_group(depth: int, args: argparse.Namespace, extra: list[str] | None) -> int:
    """Images per BN statistic: the row's resolved bn_batch (a recipe's too), else the whole batch."""
    return (_config(depth, args, extra).bn_batch if extra is not None else 0) or args.batch_size


def write_speed_table(path: Path, gpu: str, measured: list[tuple[int, str, int, list[str], float]],
                      args: argparse.Namespace, kept: list[dict] = ()) -> Path:
    """The trainer's rows as the machine-readable speed table the launcher's cost line reads (format:
    `resnet_ablate.sweeps.cost`): per GPU, net, precision, BN group, batch, pack and step mode, the aggregate
    img/s of the pack, after the rows `kept` (an earlier invocation's, `--append`). `measured` holds (depth,
    setup, runs, trainer keys, img/s); rows of options the cost line does not tell apart (compile, residual_fp32,
    sampling) and the memory row are left out."""
    rows = list(kept)
    for depth, setup, runs, extra, rate in measured:
        if any(e.split("=")[0] in ("compile", "residual_fp32", "sampling") for e in extra):
            continue
        cfg = _config(depth, args, extra)
        precision = resolve_precision(cfg.precision, torch.device(args.device))
        settings = {"cuda_graph": cfg.cuda_graph and args.device.startswith("cuda"), "pack_mode": cfg.pack_mode}
        rows.append({"gpu": gpu, "arch": cfg.arch, "depth": depth, "block": resolve_block(depth, cfg.block),
                     "precision": precision, "bn_batch": cfg.bn_batch, "batch_size": cfg.batch_size, "pack": runs,
                     "mode": packing.step_mode(settings), "img_per_s": f"{rate:.1f}",
                     "date": str(datetime.date.today()), "torch": torch.__version__,
                     "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])})
    return cost.write_speed_table(path, rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--depths", type=int, nargs="*", default=[110, 164], help="nets to time (none: the ResNet-1001 "
                   "memory check only)")
    p.add_argument("--packs", type=int, nargs="+", default=[2, 4, 8])
    p.add_argument("--setups", nargs="*", default=list(SETUPS), choices=list(SETUPS),
                   help="rows to measure per depth, always in this order (default: all)")
    p.add_argument("--row", action="append", default=[], metavar="KEYS", help="a trainer row of these keys per "
                   "depth, after the setups' rows, e.g. --row 'recipe=he2016 precision=fp32 bn_batch=0'; repeatable")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--warmup", type=int, default=100, help="iterations before timing starts")
    p.add_argument("--iterations", type=int, default=300, help="timed iterations")
    p.add_argument("--repeats", type=int, default=3, help="measurements per row; the table shows the median")
    p.add_argument("--data", default="", help="folder holding cifar-10-batches-py (default: synthetic images)")
    p.add_argument("--synthetic-size", type=int, default=50000, help="training images when --data is not given")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--no-1001", dest="r1001", action="store_false", help="skip ResNet-1001's memory check")
    p.add_argument("--memory-depth", type=int, default=1001, help="the memory check's net (a CPU smoke: a small one)")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--append", action="store_true", help="keep the rows of the table (and its speed CSV) already "
                   "in --out for this date and device, and add this run's after them")
    p.add_argument("--count-ops", action="store_true", help="instead of timing: print the kernels (CPU: leaf "
                   "operators) of one training step per run, per mode (opcount.py; its options: --count-depth, "
                   "--count-compiled-depth, --count-runs, --count-batch)")
    p.add_argument("--count-depth", type=int, default=110)
    p.add_argument("--count-compiled-depth", type=int, default=20, help="depth of the compiled modes' count "
                   "(compiling ResNet-110 takes many minutes on a few cores); alone and wide are counted there too")
    p.add_argument("--count-runs", type=int, default=8, help="K of the streams and wide counts")
    p.add_argument("--count-batch", type=int, default=8, help="batch of the counted step (counts do not depend on it)")
    p.add_argument("--count-keys", nargs="*", default=[], help="trainer keys for the counted runs, e.g. bn_batch=4")
    p.add_argument("--count-modes", nargs="+", default=list(MODES), choices=list(MODES), help="modes to count")
    args = p.parse_args()
    device = torch.device(args.device)
    if args.count_ops:
        return count_main(args, device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"{datetime.date.today()}-{re.sub(r'[^A-Za-z0-9]+', '-', name).strip('-').lower()}.md"
    csv_path = out.with_suffix(".speed.csv")
    rows, commands = _kept_rows(out) if args.append else ([], [])
    commands.append(f"- command: `python {' '.join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])}`")
    kept = cost.read_speed_table(csv_path) if args.append and csv_path.is_file() else []
    measured: list[tuple[int, str, int, list[str], float]] = []

    def add(row: str) -> None:  # the table so far, written after every row: a run cut short keeps its rows
        rows.append(row)
        print(row, flush=True)
        out.write_text(_report(args, name, rows, commands))

    with tempfile.TemporaryDirectory() as tmp:
        for depth in args.depths:
            for setup, runs, extra in _setups(args.setups, args.packs, args.batch_size, args.row):
                measure = (lambda: (*tutorial_loop(depth, args, device), None)) if extra is None else (
                    lambda runs=runs, extra=extra: trainer(depth, runs, args, device, Path(tmp), extra))
                labels = (depth, setup, runs, _precision(device, depth, args, extra), _bn_group(depth, args, extra))
                try:
                    result = _median_of(measure, args.repeats)
                except Exception as e:  # noqa: BLE001 - one row's failure (a missing module, a CUDA error) is a row
                    add(_failed_row(*labels, e))
                    continue
                add(_row(*labels, result))
                if extra is not None:
                    measured.append((depth, setup, runs, extra, result[0]))
                    write_speed_table(csv_path, name, measured, args, kept)
        if args.r1001:
            small = argparse.Namespace(**{**vars(args), "warmup": 5, "iterations": 10})
            depth = args.memory_depth
            labels = (depth, "trainer (memory check, 15 iterations)", 1, _precision(device, depth, args, []),
                      args.batch_size)
            try:
                rate, peak, capture, compile_s = trainer(depth, 1, small, device, Path(tmp))
                add(_row(*labels, (rate, peak, capture, compile_s, [rate])))
            except Exception as e:  # noqa: BLE001 - out of memory is this row's finding
                add(_failed_row(*labels, e))
    print(f"\n{_report(args, name, rows, commands)}\nwritten to {out} and {csv_path}")
    return 0


def _failed_row(depth: int, setup: str, runs: int, precision: str, bn_group: int, error: Exception) -> str:
    message = first_line(error).replace("|", "/")
    return f"| ResNet-{depth} | {setup} | {runs} | {precision} | {bn_group} | failed: {type(error).__name__}: " \
           f"{message} | | | | | | |"


def _kept_rows(path: Path) -> tuple[list[str], list[str]]:
    """The rows and command lines of a table written before (`--append`), none when there is no table."""
    lines = path.read_text().splitlines() if path.is_file() else []
    return ([line for line in lines if line.startswith("| ResNet-")],
            [line for line in lines if line.startswith("- command: ")])


def _report(args: argparse.Namespace, name: str, rows: list[str], commands: list[str]) -> str:
    data = f"CIFAR-10 from {args.data}" if args.data else f"synthetic, {args.synthetic_size} images"
    return "\n".join([
        f"# Training speed, {datetime.date.today()}", "",
        f"- device: {name}; torch {torch.__version__}; CUDA {torch.version.cuda}; python {platform.python_version()}",
        f"- batch {args.batch_size}; channels_last; timed over {args.iterations} iterations after {args.warmup}, "
        f"median of {args.repeats} measurements per row (range beside it); precision and BN group (images per BN "
        f"statistic) per row; capture: CUDA graph warm-up and capture (s); compile: torch.compile and its warm-up "
        f"(s); cuDNN autotuning on in every row; data: {data}",
        *commands, "",
        "| net | setup | runs | precision | BN group | img/s (all runs) | img/s range | min per 64k-iteration run "
        "(effective) | min wall for the runs | capture s | compile s | peak GiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|", *rows, ""])


if __name__ == "__main__":
    sys.exit(main())
