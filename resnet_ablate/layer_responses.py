"""Measures the layer responses of the 2015 paper's Fig. 7 (`models/responses.py`) from each run folder's
checkpoint and writes them to its responses.json.

A finished run records them itself at its end (source: end); this is for a paused or killed run, or a run
folder written before they were recorded (source: checkpoint, at the checkpoint's iteration, which for a
finished run is its last evaluation before the end). A responses.json from the end is left alone.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from .cli import guarded
from .errors import UsageError
from .folders import runfolder as rf
from .training import checkpoint
from .training.evaluate import responses
from .training.runtime import resolve_device
from .training.state import build_state
from .training.writer import read_config

USAGE = "usage: python -m resnet_ablate.layer_responses RUN_DIR [RUN_DIR ...] [device=auto|cpu|cuda]"


def measure(folder: Path, device: torch.device) -> str:
    """Write `folder`'s responses.json from its checkpoint; returns the line to print."""
    done = rf.read_responses(folder)
    if done is not None and done.get("source") == "end":
        return f"{folder}: responses.json holds the final net's responses (iteration {done['iteration']}); kept"
    if not rf.present(folder / rf.CONFIG) or not rf.present(folder / rf.CHECKPOINT):
        raise UsageError(f"{folder} is not a run folder with a checkpoint (config.yaml and checkpoint.pt)")
    cfg = read_config(folder)
    state = build_state(cfg, device)
    checkpoint.restore(state, checkpoint.load(folder / rf.CHECKPOINT), folder / rf.CHECKPOINT)
    out = responses(state, "checkpoint")
    rf.write_json(folder / rf.RESPONSES, out)
    return f"{folder}: {len(out['std'])} layers at iteration {out['iteration']} -> {folder / rf.RESPONSES}"


def _main(argv: list[str]) -> int:
    if not argv or any(a in ("-h", "--help") for a in argv):
        print(f"{USAGE}\n\n{__doc__.strip()}")
        return 0 if argv else 2
    device = resolve_device(next((a.split("=", 1)[1] for a in argv if a.startswith("device=")), "auto"))
    for folder in (Path(a) for a in argv if not a.startswith("device=")):
        print(measure(folder, device), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    return guarded(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
