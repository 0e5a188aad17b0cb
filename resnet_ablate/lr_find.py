"""`python -m resnet_ablate.lr_find key=value ...`: the learning-rate range test (Smith, 2017).

Trains the configured net from its seeded initialisation while the lr grows exponentially from
`start_lr` to `end_lr` over `steps` iterations, stops once the smoothed loss passes 4x its minimum
(or is not finite), and writes the curve (`lr_find.jsonl`), a figure (`lr_find.png`) and the
suggestion (`lr_find.json`) to the run folder. Suggested lr: a tenth of the lr at the smoothed
loss's minimum, the usual rule of thumb; the steepest-descent lr is recorded beside it. When the loss
is lowest at an end of the range, the range did not bracket the minimum: it says so and suggests nothing.
Any training key works (`optim=adamw depth=56 ...`); the recipe's own schedule is not used.

It writes only into a new folder, an empty one or a range test's of the same settings (`folders/kinds.py`): a
run folder, a sweep folder or a folder of the user's own files is refused in one line.
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .analysis import plotting
from .cli import guarded
from .errors import UsageError, closest, first_line
from .folders import runfolder as rf
from .folders.kinds import RANGE_TEST_FILES, check_range_test_folder
from .training.config import fields
from .training.configfile import run_name, to_yaml
from .training.parse import check_unique, help_text, parse
from .training.progress import device_line, progress_line, say
from .training.runtime import setup
from .training.state import RunState, build_state
from .training.writer import check_settings

CURVE, SUGGESTION, FIGURE = RANGE_TEST_FILES
SMOOTHING = 0.98  # exponential moving average of the loss, bias-corrected
DIVERGED = 4.0  # stop when the smoothed loss exceeds this multiple of its minimum


@dataclass
class RangeTest:
    """The range test's own keys (the rest of the command line is the training config)."""

    start_lr: float = 1e-5
    end_lr: float = 10.0
    steps: int = 200


USAGE = ("usage: python -m resnet_ablate.lr_find [start_lr=1e-05] [end_lr=10.0] [steps=200] [training key=value ...]\n"
         "  start_lr, end_lr  the range the lr grows through, exponentially\n"
         "  steps             iterations to do it in (it stops early once the loss passes 4x its minimum)\n"
         "Writes lr_find.jsonl, lr_find.json and lr_find.png to runs/lr_find_<name>/ (or run_dir=). The training "
         "keys:\n")


def split_args(argv: list[str]) -> tuple[RangeTest, list[str]]:
    """Range-test keys (start_lr, end_lr, steps) apart from the training overrides; an unknown key gets the
    closest of both kinds."""
    own_keys = list(RangeTest.__dataclass_fields__)
    for key in (a.split("=", 1)[0] for a in argv if "=" in a):
        if key not in own_keys and key not in fields():
            raise UsageError(f"unknown key '{key}'{closest(key, [*own_keys, *fields()])}; see --help for the keys")
    own = [a for a in argv if a.split("=", 1)[0] in own_keys]
    rest = [a for a in argv if a not in own]
    try:
        test: RangeTest = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(RangeTest),
                                                              OmegaConf.from_dotlist(own)))  # type: ignore
    except OmegaConfBaseException as e:
        raise UsageError(f"bad range-test setting in {' '.join(own)}: {first_line(e)}") from e
    if not (0 < test.start_lr < test.end_lr < math.inf) or test.steps < 2:
        raise UsageError(f"need 0 < start_lr < end_lr < inf and steps >= 2 (got {test.start_lr}, {test.end_lr}, "
                         f"{test.steps})")
    return test, rest


def suggest(lrs: list[float], losses: list[float], whole_range: bool = False) -> dict[str, float | None]:
    """min-loss lr / 10 (the suggestion) and the lr of steepest loss descent per log-lr. No suggestion (None)
    when the loss is lowest at the start of the range, or at its end when the test ran through all of it
    (`whole_range`; a test stopped by a rising loss has its minimum before the stop): the minimum lies
    outside the range."""
    best = int(np.argmin(losses))
    slopes = np.gradient(np.asarray(losses[: best + 1]), np.log(lrs[: best + 1])) if best > 1 else np.zeros(1)
    inside = 0 < best and not (whole_range and best == len(lrs) - 1)
    return {"suggested_lr": lrs[best] / 10 if inside else None, "min_loss_lr": lrs[best],
            "steepest_lr": lrs[int(np.argmin(slopes))]}


def edge_warning(lrs: list[float], found: dict[str, float | None], test: RangeTest) -> str | None:
    """The warning for a loss lowest at an end of the range (what to change), or None."""
    if found["suggested_lr"] is not None:
        return None
    if found["min_loss_lr"] == lrs[0]:
        return f"warning: the loss is lowest at start_lr={test.start_lr:g}; lower start_lr to find its minimum"
    return (f"warning: the loss was still falling at {lrs[-1]:.3g}, the end of the range; raise end_lr (or steps) "
            f"to find its minimum")


def range_test(run: RunState, test: RangeTest) -> tuple[list[float], list[float]]:
    """(lr, smoothed loss) per iteration until the end or until the loss blows up; each step trains at its
    lr of the range (the recipe's schedule is not used). A progress line every `heartbeat_s` seconds, as in
    training (200 steps of ResNet-110 take minutes on a CPU)."""
    lrs, losses, avg, lowest = [], [], 0.0, math.inf
    started = last = time.perf_counter()
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
        if run.cfg.heartbeat_s and time.perf_counter() - last >= run.cfg.heartbeat_s:
            last = time.perf_counter()
            say(step_line(i + 1, test.steps, smoothed, run.cfg.batch_size, last - started))
    return lrs, losses


def step_line(done: int, steps: int, loss: float, batch_size: int, elapsed: float) -> str:
    """'range test: step 40/200, smoothed loss 2.31 | 512 img/s | 0:00:10 elapsed, ETA 0:00:40 at most' (the
    test may stop early)."""
    per_step = elapsed / done
    rate = batch_size / max(per_step, 1e-9)
    return progress_line([f"range test: step {done}/{steps}, smoothed loss {loss:.3g}"], rate, elapsed,
                         per_step * (steps - done)) + " at most"


def figure(lrs: list[float], losses: list[float], found: dict[str, float | None], title: str) -> Figure:
    """The smoothed loss against the lr (log axis), the lowest loss marked, the suggested lr as a dashed line."""
    with plotting.style():
        fig = Figure(figsize=(plotting.WIDTH, 2.6), layout="constrained")
        ax = fig.subplots()
        ax.plot(lrs, losses, lw=1.5)
        best = lrs.index(found["min_loss_lr"])
        ax.plot(lrs[best], losses[best], "o", c="C1", ms=4, label=f"lowest loss at {found['min_loss_lr']:.3g}")
        if found["suggested_lr"] is not None:
            ax.axvline(found["suggested_lr"], ls="--", c="C3", lw=1, label=f"suggested lr {found['suggested_lr']:.3g}")
        ax.set(xscale="log", xlabel="learning rate", ylabel="training loss (smoothed)")
        ax.set_title(plotting.fit_title(title), fontsize="small")
        ax.legend(fontsize="x-small")
    return fig


def main(argv: list[str] | None = None) -> int:
    return guarded(_main, argv)


def _main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE + help_text().split("\n", 2)[2])
        return 0
    check_unique(argv)
    test, overrides = split_args(argv)
    cfg = parse(overrides)
    folder = Path(cfg.run_dir) if cfg.run_dir else Path(cfg.runs_root) / f"lr_find_{run_name(cfg)}"
    key = "run_dir" if cfg.run_dir else "runs_root"
    check_range_test_folder(folder, key)  # before the data: a bad folder fails fast
    check_settings(folder, cfg)
    rf.create_folder(folder, key)
    device, precision = setup(cfg)
    say(device_line(device, precision, graphs=False))
    run = build_state(cfg, device, precision)
    say(f"range test: lr {test.start_lr:g} to {test.end_lr:g} over {test.steps} steps, {run.parameters:,} "
        f"parameters; writing to {folder.resolve()}")
    rf.write_text(folder / rf.CONFIG, rf.config_text(to_yaml(cfg)))
    lrs, losses = range_test(run, test)
    if len(lrs) < 3:
        print(f"error: the loss diverged within {len(lrs)} steps; lower start_lr", file=sys.stderr)
        return 1
    rf.write_text(folder / CURVE, "".join(json.dumps({"lr": lr, "loss": loss}) + "\n" for lr, loss in zip(lrs, losses)))
    found = suggest(lrs, losses, whole_range=len(lrs) == test.steps)
    warning = edge_warning(lrs, found, test)
    rf.write_json(folder / SUGGESTION, {**found, "steps_run": len(lrs), **vars(test), "warning": warning})
    figure(lrs, losses, found, f"lr range test: {run_name(cfg)}").savefig(folder / FIGURE, dpi=plotting.DPI)
    if warning:
        print(f"{warning}; curve and figure in {folder}")
        return 0
    print(f"suggested lr {found['suggested_lr']:.3g} (loss lowest at {found['min_loss_lr']:.3g}, steepest descent "
          f"at {found['steepest_lr']:.3g}); curve and figure in {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
