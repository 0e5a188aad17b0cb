"""The run folder of one training run as it is written (the format is `runfolder.py`'s): config.yaml checked
and written at start, metrics and probe lines, checkpoints, the tracker, the progress line and result.json;
and the run's clock (elapsed and interval seconds) and best test error, which a checkpoint keeps too."""
from __future__ import annotations

import math
from pathlib import Path

from ..registry import UsageError
from . import runfolder as rf
from . import tracking
from .config import Config, from_yaml, identity_items, to_yaml


def finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def duration(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class RunWriter:
    """Writes one run folder; `last_row` is the latest metrics line, `result` result.json once written."""

    def __init__(self, cfg: Config, folder: Path, name: str) -> None:
        self.cfg, self.dir, self.name = cfg, folder, name
        self.commit = rf.git_commit()  # the code this process trains with
        self.elapsed, self.interval_seconds, self.best = 0.0, 0.0, math.inf
        self.last_row: dict = {}
        self.result: dict | None = None
        self.tracker: tracking.Tracker | None = None
        self.capture_s: float | None = None  # CUDA graph warm-up and capture in this process (None: eager)

    def finished(self) -> dict | None:
        """result.json when the folder holds a finished run (done or fail), else None."""
        result = rf.read_result(self.dir)
        return result if result is not None and result.get("status") in rf.FINISHED else None

    def claim(self) -> None:
        """Create the folder, refuse one that holds a run with other settings, write config.yaml."""
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / rf.CONFIG
        if path.is_file():
            old, new = identity_items(from_yaml(path)), identity_items(self.cfg)
            diff = [f"{k}: {old[k]} vs {new[k]}" for k in new if old.get(k) != new[k]]
            if diff:
                raise UsageError(f"{self.dir} holds a run with other settings ({'; '.join(diff)}); "
                                 f"use another run_dir or remove it")
        rf.write_text(path, to_yaml(self.cfg))

    def resume(self) -> dict | None:
        """The latest checkpoint (its clock restored here), or None for a fresh run."""
        state = rf.load_checkpoint(self.dir / rf.CHECKPOINT)
        if state is not None:
            self.elapsed, self.best, self.interval_seconds = state["elapsed"], state["best"], state["interval_seconds"]
            print(f"[{self.name}] resuming from iteration {state['iteration']}", flush=True)
        return state

    def open(self, iteration: int) -> None:
        """Drop lines a killed predecessor wrote past its checkpoint; open the tracker at `iteration`."""
        for name in (rf.METRICS, rf.PROBES):
            rf.truncate_jsonl(self.dir / name, iteration)
        self.tracker = tracking.open_tracker(self.cfg.logger, self.dir, self.name, self.cfg, iteration)

    def add_time(self, seconds: float, interval: bool = True) -> None:
        """Count training time (`interval`: also towards the next metrics line's img/s) or overhead."""
        self.elapsed += seconds
        self.interval_seconds += seconds if interval else 0.0

    def checkpoint(self, training_state: dict) -> None:
        rf.save_checkpoint(self.dir / rf.CHECKPOINT, {**training_state, "elapsed": self.elapsed, "best": self.best,
                                                      "interval_seconds": self.interval_seconds})

    def log_probe(self, iteration: int, norms: dict) -> None:
        rf.append_jsonl(self.dir / rf.PROBES, {"iteration": iteration, **norms})

    def write_responses(self, responses: dict) -> None:
        rf.write_json(self.dir / rf.RESPONSES, responses)

    def log_metrics(self, row: dict, images: int) -> None:
        """Append a metrics line (with img/s over the interval and the elapsed time), send it to the tracker,
        print the progress line, and start the next interval."""
        row.update(img_per_s=round(images / max(self.interval_seconds, 1e-9), 1), elapsed_s=round(self.elapsed, 2))
        rf.append_jsonl(self.dir / rf.METRICS, row)
        if self.tracker is not None:
            self.tracker.log(row, row["iteration"])
        self.last_row, self.best = row, min(self.best, row["test_error"])
        left = (self.cfg.iterations - row["iteration"]) * self.cfg.batch_size / max(row["img_per_s"], 1e-9)
        print(f"[{self.name}] it {row['iteration']}/{self.cfg.iterations} lr {row['lr']:.4g} | train loss "
              f"{_num(row['train_loss'])} err {row['train_error']:.2f}% | test loss {_num(row['test_loss'])} err "
              f"{row['test_error']:.2f}% | "
              f"{row['img_per_s']:.0f} img/s | {duration(self.elapsed)} elapsed, ETA {duration(left)}", flush=True)
        self.interval_seconds = 0.0

    def write_result(self, result: dict) -> None:
        """result.json (closing the tracker first)."""
        self.close()
        self.result = result
        rf.write_json(self.dir / rf.RESULT, result)
        status, reason = result["status"], result.get("reason")
        print(f"[{self.name}] {status}" + (f": {reason}" if reason else "") + f" -> {self.dir}", flush=True)

    def close(self) -> None:
        """Flush and close the tracker (a resumed run opens a new one)."""
        if self.tracker is not None:
            self.tracker.close()
            self.tracker = None


def _num(value: float | None) -> str:
    """A loss for the progress line; a non-finite one (stored as null) reads nan."""
    return "nan" if value is None else f"{value:.4f}"
