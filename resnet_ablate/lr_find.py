"""`python -m resnet_ablate.lr_find key=value ...`: the learning-rate range test (Smith, 2017).

Trains the configured net from its seeded initialisation while the lr grows exponentially from
`start_lr` to `end_lr` over `steps` iterations, stops once the smoothed loss passes 4x its minimum
(or is not finite), and writes the curve (`lr_find.jsonl`), a figure (`lr_find.png`) and the
suggestion (`lr_find.json`) to the run folder. Suggested lr: a tenth of the lr at the smoothed
loss's minimum, the usual rule of thumb; the steepest-descent lr is recorded beside it.
Any training key works (`optim=adamw depth=56 ...`); the recipe's own schedule is not used.
"""
from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .cli import guarded
from .registry import UsageError, first_line
from .training import runfolder as rf
from .training.config import run_name, to_yaml
from .training.parse import parse
from .training.state import RunState
from .training.trainer import data_key, load_data, setup

CURVE, SUGGESTION, FIGURE = "lr_find.jsonl", "lr_find.json", "lr_find.png"
SMOOTHING = 0.98  # exponential moving average of the loss, bias-corrected
DIVERGED = 4.0  # stop when the smoothed loss exceeds this multiple of its minimum


@dataclass
class RangeTest:
    """The range test's own keys (the rest of the command line is the training config)."""

    start_lr: float = 1e-5
    end_lr: float = 10.0
    steps: int = 200


def split_args(argv: list[str]) -> tuple[RangeTest, list[str]]:
    """Range-test keys (start_lr, end_lr, steps) apart from the training overrides."""
    own = [a for a in argv if a.split("=", 1)[0] in RangeTest.__dataclass_fields__]
    rest = [a for a in argv if a not in own]
    try:
        test: RangeTest = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(RangeTest),
                                                              OmegaConf.from_dotlist(own)))  # type: ignore
    except OmegaConfBaseException as e:
        raise UsageError(f"bad range-test setting in {' '.join(own)}: {first_line(e)}") from e
    if not (0 < test.start_lr < test.end_lr) or test.steps < 2:
        raise UsageError(f"need 0 < start_lr < end_lr and steps >= 2 (got {test.start_lr}, {test.end_lr}, {test.steps})")
    return test, rest


def suggest(lrs: list[float], losses: list[float]) -> dict[str, float]:
    """min-loss lr / 10 (the suggestion) and the lr of steepest loss descent per log-lr."""
    best = int(np.argmin(losses))
    slopes = np.gradient(np.asarray(losses[: best + 1]), np.log(lrs[: best + 1])) if best > 1 else np.zeros(1)
    return {"suggested_lr": lrs[best] / 10, "min_loss_lr": lrs[best], "steepest_lr": lrs[int(np.argmin(slopes))]}


def range_test(run: RunState, test: RangeTest) -> tuple[list[float], list[float]]:
    """(lr, smoothed loss) per iteration until the end or until the loss blows up; each step trains at its
    lr of the range (the recipe's schedule is not used)."""
    lrs, losses, avg, lowest = [], [], 0.0, math.inf
    for i in range(test.steps):
        lr = test.start_lr * (test.end_lr / test.start_lr) ** (i / (test.steps - 1))
        run.set_lr(lr)
        run.step()
        run.advance()
        loss = run.read_meters()[0]
        avg = SMOOTHING * avg + (1 - SMOOTHING) * loss
        smoothed = avg / (1 - SMOOTHING ** (i + 1))
        if not math.isfinite(smoothed) or smoothed > DIVERGED * lowest:
            break
        lowest = min(lowest, smoothed)
        lrs.append(lr)
        losses.append(smoothed)
    return lrs, losses


def plot(lrs: list[float], losses: list[float], found: dict[str, float], path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="paper")
    fig, ax = plt.subplots(figsize=(3.3, 2.4))
    ax.plot(lrs, losses, lw=1.5)
    ax.axvline(found["suggested_lr"], ls="--", c="C3", lw=1, label=f"suggested {found['suggested_lr']:.3g}")
    ax.set(xscale="log", xlabel="learning rate", ylabel="training loss (smoothed)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=300)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    return guarded(_main, argv)


def _main(argv: list[str]) -> int:
    test, overrides = split_args(argv)
    cfg = parse(overrides)
    folder = Path(cfg.run_dir) if cfg.run_dir else Path(cfg.runs_root) / f"lr_find_{run_name(cfg)}"
    rf.create_folder(folder, "run_dir" if cfg.run_dir else "runs_root")  # before the data: a bad folder fails fast
    device, precision = setup(cfg)
    run = RunState(cfg, load_data([cfg], device)[data_key(cfg)], device, precision)
    rf.write_text(folder / rf.CONFIG, to_yaml(cfg))
    lrs, losses = range_test(run, test)
    if len(lrs) < 3:
        print(f"error: the loss diverged within {len(lrs)} steps; lower start_lr", file=sys.stderr)
        return 1
    rf.write_text(folder / CURVE, "".join(json.dumps({"lr": lr, "loss": loss}) + "\n" for lr, loss in zip(lrs, losses)))
    found = suggest(lrs, losses)
    rf.write_json(folder / SUGGESTION, {**found, "steps_run": len(lrs), **vars(test)})
    plot(lrs, losses, found, folder / FIGURE)
    print(f"suggested lr {found['suggested_lr']:.3g} (loss lowest at {found['min_loss_lr']:.3g}, steepest descent "
          f"at {found['steepest_lr']:.3g}); curve and figure in {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
