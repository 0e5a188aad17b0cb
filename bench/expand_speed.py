"""Sweep expansion speed: the dry run of an `lr` x `seed` grid of ResNet-8 runs on synthetic data, in this
process (expanding, checking every run folder, printing each run), timed. Nothing is trained or read.

    python bench/expand_speed.py                    # 100 x 100 = 10,000 runs
    python bench/expand_speed.py --lrs 10 --seeds 10

Prints one line: the runs, the seconds, and the exit code of the dry run.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time

from resnet_ablate import run


def measure(lrs: int, seeds: int) -> tuple[float, int, int]:
    """(seconds, runs listed, exit code) of the grid's dry run, in a fresh temporary folder (the listed runs are
    its indented lines, after the header and the cost line)."""
    grid = [f"lr={','.join(f'{0.001 * (i + 1):.3f}' for i in range(lrs))}", f"seed={','.join(map(str, range(seeds)))}",
            *([f"max_runs={lrs * seeds}"] if lrs * seeds > 10_000 else [])]
    out = io.StringIO()
    with tempfile.TemporaryDirectory() as folder, contextlib.redirect_stdout(out):
        here = os.getcwd()
        os.chdir(folder)
        try:
            started = time.perf_counter()
            code = run.main(["dataset=synthetic", "depth=8", "dry_run=true", *grid])
            seconds = time.perf_counter() - started
        finally:
            os.chdir(here)
    return seconds, sum(line.startswith("  ") for line in out.getvalue().splitlines()), code  # "  <state> <run>"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lrs", type=int, default=100, help="values of lr in the grid")
    parser.add_argument("--seeds", type=int, default=100, help="values of seed in the grid")
    args = parser.parse_args(argv)
    seconds, runs, code = measure(args.lrs, args.seeds)
    print(f"{runs} runs: dry run in {seconds:.1f} s (exit code {code})")
    return code


if __name__ == "__main__":
    sys.exit(main())
