"""A process's data-check phase with an empty cache and with the entry the first one wrote (issue 33).

Each pair loads a CIFAR folder twice (`datasets.load`: reading, md5 of every batch file, fingerprint, the
per-pixel mean) into a fresh cache folder: the first load computes and writes the entry, the second reads it.
Prints both medians and the median of the per-pair ratios.

    python bench/data_checks.py --data .data                  # a CIFAR-10 copy under .data/cifar-10-batches-py
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from resnet_ablate.training import datacache, datasets


def timed_load(data: Path, normalize: str) -> float:
    start = time.perf_counter()
    datasets.load("cifar10", data, False, normalize, 0, 0)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="data_dir holding cifar-10-batches-py/")
    parser.add_argument("--pairs", type=int, default=7)
    parser.add_argument("--normalize", default="pixel_mean")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    timed_load(args.data, args.normalize)  # the files in the page cache for every pair alike
    firsts, seconds = [], []
    for _ in range(args.pairs):
        with tempfile.TemporaryDirectory() as cache:
            os.environ[datacache.ENV] = cache
            firsts.append(timed_load(args.data, args.normalize))
            seconds.append(timed_load(args.data, args.normalize))
    ratios = [b / a for a, b in zip(firsts, seconds)]
    print(f"data checks of {args.data} ({args.pairs} pairs, normalize={args.normalize}): first (empty cache) median "
          f"{statistics.median(firsts):.2f} s, second (cached) median {statistics.median(seconds):.2f} s, median "
          f"ratio {statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
