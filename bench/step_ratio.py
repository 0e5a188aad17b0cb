"""The default recipe's step against one BN and against a tutorial loop, interleaved in one process (issue 33).

Three ways to take one training step of the same net (ResNet-20 by default, batch 128), each timed once per
round in a rotated order, so that a machine whose speed drifts slows all three alike:

- `he2016`: the package's step at the default recipe (64 images per BN, fp32, per-pixel mean): sampling and
  augmentation as tensor ops, forward, backward, fused SGD, meters (`RunState.step`);
- `he2016 bn_batch=0`: the same with one BN over the batch;
- `tutorial`: the seeds' style, the package's net with one BN, `torch.optim.SGD` (not fused), a `DataLoader`
  over torchvision's PIL transforms (pad, crop, flip, normalise), `model(x)`, `loss.backward()`, `opt.step()`.

Prints each one's median step time and the median over rounds of the per-round ratios, and the ops each counts
(`opcount.py`'s leaf operators). Speed does not depend on the pixels: synthetic images by default.

    OMP_NUM_THREADS=1 python bench/step_ratio.py                      # ResNet-20, batch 128, 40 rounds
    OMP_NUM_THREADS=1 python bench/step_ratio.py --rounds 3 --batch 16 --depth 8 --warmup 1   # smoke
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
from torch.utils.data import DataLoader

from resnet_ablate.models.cifar import build_model
from resnet_ablate.training.parse import parse
from resnet_ablate.training.runtime import data_key, load_data
from resnet_ablate.training.state import build_state

sys.path.insert(0, str(Path(__file__).resolve().parent))  # beside it, also when imported as a file
from opcount import count  # noqa: E402
from train_speed import TutorialCifar  # noqa: E402

CPU = torch.device("cpu")


def package_step(args: argparse.Namespace, extra: list[str]) -> tuple[Callable[[], None], object]:
    """One iteration of the trainer's own step for a run of the default recipe plus `extra`."""
    cfg = parse(["dataset=synthetic", f"synthetic_size={args.images}", f"depth={args.depth}",
                 f"batch_size={args.batch}", "device=cpu", "iterations=64000", *extra])
    data = load_data([cfg], CPU)[data_key(cfg)]
    run = build_state(cfg, CPU, "fp32", data)

    def step() -> None:
        run.follow_schedule()
        run.step()
        run.advance()
    return step, run


def tutorial_step(args: argparse.Namespace) -> Callable[[], None]:
    """One iteration of the tutorial loop over the same synthetic images."""
    cfg = parse(["dataset=synthetic", f"synthetic_size={args.images}", f"batch_size={args.batch}", "device=cpu",
                 "recipe=default"])  # per-channel statistics, as the tutorials normalise
    data = load_data([cfg], CPU)[data_key(cfg)]
    mean, std = (data.mean.flatten() / 255).tolist(), (data.std.flatten() / 255).tolist()
    loader = DataLoader(TutorialCifar(data.train.images, data.train.labels, mean, std), batch_size=args.batch,
                        shuffle=True, drop_last=True)
    model = build_model(args.depth, "original", "identity", num_classes=data.num_classes)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    batches = iter(loader)

    def step() -> None:
        nonlocal batches
        try:
            x, y = next(batches)
        except StopIteration:
            batches = iter(loader)
            x, y = next(batches)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=40, help="timed rounds (each steps every way once)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed rounds first")
    parser.add_argument("--images", type=int, default=2560, help="synthetic training images")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    ghost, ghost_run = package_step(args, ["recipe=he2016"])
    one_bn, one_bn_run = package_step(args, ["recipe=he2016", "bn_batch=0"])
    steps = {"he2016": ghost, "he2016 bn_batch=0": one_bn, "tutorial": tutorial_step(args)}
    names, times = list(steps), {name: [] for name in steps}
    for r in range(args.warmup + args.rounds):
        for name in names[r % 3:] + names[:r % 3]:
            start = time.perf_counter()
            steps[name]()
            if r >= args.warmup:
                times[name].append(time.perf_counter() - start)
    print(f"ResNet-{args.depth}, batch {args.batch}, one thread, {args.rounds} rounds (rotated order), "
          f"torch {torch.__version__}")
    for name in names:
        print(f"  {name:18s} median step {1000 * statistics.median(times[name]):8.1f} ms")
    for a, b in [("he2016", "he2016 bn_batch=0"), ("he2016", "tutorial"), ("he2016 bn_batch=0", "tutorial")]:
        ratios = [x / y for x, y in zip(times[a], times[b])]
        print(f"  {a} / {b}: median ratio {statistics.median(ratios):.3f} "
              f"(quartiles {statistics.quantiles(ratios, n=4)[0]:.3f}-{statistics.quantiles(ratios, n=4)[2]:.3f})")
    ops = {name: count([run], CPU) for name, run in (("he2016", ghost_run), ("he2016 bn_batch=0", one_bn_run))}
    print(f"  ops per step (leaf operators): he2016 {ops['he2016']}, bn_batch=0 {ops['he2016 bn_batch=0']}, "
          f"ratio {ops['he2016'] / ops['he2016 bn_batch=0']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
