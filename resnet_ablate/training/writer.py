"""The run folder of one training run as it is written (the format is `folders/runfolder.py`'s, the
checkpoint's `checkpoint.py`'s): the checks every reuse of a folder passes (a run folder and nobody else's, the
settings against config.yaml and against the checkpoint's, the data and init weights against what the
checkpoint or result recorded), the folder's lock, config.yaml, metrics and probe lines (every line a
checkpoint covers kept, or said lost), checkpoints, the tracker, the evaluation's progress line and
result.json; and the run's clock (elapsed and interval seconds) and best test error, which a checkpoint keeps
too."""
from __future__ import annotations

import hashlib
import math
import os
import stat
from pathlib import Path

import yaml
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from ..errors import UsageError, first_line
from ..folders import runfolder as rf
from ..folders.kinds import check_run_folder
from ..folders.lock import FolderLock
from . import checkpoint, tracking
from .config import Config, defaults
from .configfile import from_yaml_text, identity_items, missing_entry, to_yaml
from .progress import metrics_line, say
from .state import RunState

INPUTS = ("data_fingerprint", "init_sha256")  # what a run read besides its settings, recorded and checked
LINES = (rf.METRICS, rf.PROBES)  # the appended files, whose lines a checkpoint covers


def finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def file_sha256(path: str) -> str | None:
    """The SHA-256 of a file (the init weights), None for no file; one line when it cannot be read."""
    if not path:
        return None
    h = hashlib.sha256()
    try:
        with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as f:  # a FIFO opens at once (it blocked)
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise UsageError(f"init={path}: not a regular file; give a state_dict file saved with torch.save")
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError as e:
        raise UsageError(f"init={path}: {'no such file' if isinstance(e, FileNotFoundError) else e.strerror}") from e
    return h.hexdigest()


def read_config(folder: Path) -> Config | None:
    """The folder's config.yaml, None when there is none; rf.Damaged when it cannot be read as a config, and a
    UsageError for one the package did not write that holds other keys than a run's (the user's own file), or
    that names an entry not registered here (a plugin that is not installed: the line names it)."""
    path = folder / rf.CONFIG
    saved = rf.read_config_mapping(folder)  # also: the checksum line, where there is one
    if saved is None:
        return None
    problem = missing_entry(saved)
    if problem is not None:
        raise UsageError(f"{folder}: {problem}")
    try:
        return from_yaml_text(rf.read_text(path) or "")
    except (OmegaConfBaseException, yaml.YAMLError, ValueError, TypeError, UnicodeDecodeError) as e:
        if isinstance(e, ConfigKeyError) and not rf.written_by_package(folder):
            raise UsageError(f"{folder} is not a run folder: its {rf.CONFIG} was not written by this package "
                             f"({first_line(e)}); choose another run_dir") from e
        raise rf.Damaged(f"{path} is damaged ({first_line(e)}): put back the run's config.yaml, or remove the folder "
                         f"to train the run again") from e


def settings_record(cfg: Config) -> dict:
    """The run's identity settings as config.yaml holds them, for its checkpoints: whose checkpoint it is. The
    init file is left out (it is checked by its contents, `init_sha256`, so a copy elsewhere matches)."""
    return {k: list(v) if isinstance(v, list) else v for k, v in identity_items(cfg).items() if k != "init"}


def check_checkpoint_settings(path: Path, saved: dict, cfg: Config, name: str) -> None:
    """Refuse a checkpoint of another run (its recorded settings differ from `cfg`'s: another seed, lr, ...); a
    key the checkpoint does not know (added since) must be at its default. One written before checkpoints
    recorded their settings resumes with a note."""
    recorded = saved.get("settings")
    if not isinstance(recorded, dict):
        say(f"[{name}] note: {path.name} was written before checkpoints recorded their run's settings; resuming it "
            f"as the run of {rf.CONFIG}")
        return
    plain = settings_record(defaults())
    diff = [f"{k}: {recorded.get(k, plain[k])} vs {v}" for k, v in settings_record(cfg).items()
            if recorded.get(k, plain[k]) != v]
    if diff:
        raise UsageError(f"{path} is the checkpoint of another run ({'; '.join(diff)}): put back this run's "
                         f"checkpoint, or delete it to train the run again from iteration 0")


def check_settings(folder: Path, cfg: Config) -> None:
    """Refuse a folder whose config.yaml holds other settings than `cfg` (every reuse: resume or finished).
    The init file is compared by its contents (`check_recorded_inputs`), not its path, so a copy of it matches."""
    saved = read_config(folder)
    if saved is None:
        return
    old, new = identity_items(saved), identity_items(cfg)
    diff = [f"{k}: {old[k]} vs {new[k]}" for k in new if old.get(k) != new[k] and k != "init"]
    if diff:
        raise UsageError(f"{folder} holds a run with other settings ({'; '.join(diff)}); use another run_dir or "
                         f"remove it")


def check_recorded_inputs(folder: Path, recorded: dict, inputs: dict, where: str) -> None:
    """Refuse a folder whose checkpoint or result (`where`) recorded other data or init weights than `inputs`;
    records from before these were kept have none and pass."""
    for key in INPUTS:
        if recorded.get(key, inputs.get(key)) != inputs.get(key):
            what = "other data" if key == "data_fingerprint" else "other init weights"
            raise UsageError(f"{folder} was trained on {what} ({key} {recorded[key]} in {where}, {inputs[key]} now): "
                             f"use another run_dir, or remove the folder to train the run again")


class RunWriter:
    """Writes one run folder; `last_row` is the latest metrics line, `result` result.json once written.
    `inputs` (data fingerprint, init hash) go into every checkpoint and the result, `settings` into every
    checkpoint; both are checked on reuse. `lines` counts each .jsonl file's lines and keeps its last one, for
    the checkpoint that covers them."""

    def __init__(self, cfg: Config, folder: Path, name: str, inputs: dict | None = None) -> None:
        self.cfg, self.dir, self.name = cfg, folder, name
        self.inputs = inputs or {}
        self.settings = settings_record(cfg)
        self.commit = rf.git_commit()  # the code this process trains with
        self.elapsed, self.interval_seconds, self.best = 0.0, 0.0, math.inf
        self.last_row: dict = {}
        self.lines: dict[str, list] = {name: [0, None] for name in LINES}  # count, last line
        self.result: dict | None = None
        self.tracker: tracking.Tracker | None = None
        self.lock: FolderLock | None = None
        self.capture_s: float | None = None  # CUDA graph warm-up and capture in this process (None: eager)

    def existing_result(self) -> dict | None:
        """result.json when the folder holds this run finished (these settings and inputs), else None; a folder
        that is not a run folder, of other settings or inputs, or with a file that cannot be read
        (`rf.check_readable`), is refused; so is one the package names (not run_dir=) that is a link."""
        if not self.cfg.run_dir and os.path.islink(self.dir):
            raise rf.linked(self.dir)
        if not os.path.isdir(self.dir):
            return None
        check_run_folder(self.dir)
        check_settings(self.dir, self.cfg)
        result = rf.check_readable(self.dir)
        if result is not None:
            check_recorded_inputs(self.dir, result, self.inputs, rf.RESULT)
        return result

    def claim(self) -> None:
        """Create the folder, take its lock (refusing while another process trains it), remove temp files a
        killed writer left, refuse a folder that is not a run folder or holds other settings, write config.yaml."""
        if not self.cfg.run_dir and os.path.islink(self.dir):
            raise rf.linked(self.dir)
        rf.create_folder(self.dir, "run_dir" if self.cfg.run_dir else "runs_root")
        self.lock = FolderLock.acquire(self.dir)
        try:
            for stale in rf.remove_stale_temps(self.dir):
                say(f"[{self.name}] removed {stale.name}, left by a writer that was killed")
            check_run_folder(self.dir)
            check_settings(self.dir, self.cfg)
            rf.write_text(self.dir / rf.CONFIG, rf.config_text(to_yaml(self.cfg)))
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        """Close the tracker and give up the folder's lock (the process's death releases it too)."""
        self.close()
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def resume(self) -> dict | None:
        """The latest checkpoint (its clock restored here), or None for a fresh run; a checkpoint of another run,
        other data or init weights is refused, and training a folder with metrics but no checkpoint again says
        so."""
        path = self.dir / rf.CHECKPOINT
        saved = checkpoint.load(path)
        if saved is None:
            self._say_restart()
            return None
        check_checkpoint_settings(path, saved, self.cfg, self.name)
        check_recorded_inputs(self.dir, saved, self.inputs, rf.CHECKPOINT)
        self.elapsed, self.best, self.interval_seconds = saved["elapsed"], saved["best"], saved["interval_seconds"]
        say(f"[{self.name}] resuming from iteration {saved['iteration']}")
        return saved

    def _say_restart(self) -> None:
        rows = rf.read_jsonl(self.dir / rf.METRICS)
        if rows:
            say(f"[{self.name}] {self.dir} has {len(rows)} metrics lines (up to iteration {rows[-1]['iteration']}) "
                f"but no {rf.CHECKPOINT}: training again from iteration 0, which replaces them")

    def start_from(self, saved: dict | None) -> None:
        """Make the .jsonl files hold the lines the checkpoint `saved` covers, no more (a killed predecessor's
        lines past it are dropped; a fresh start, None, keeps none) and no fewer (a covered last line that is
        torn or gone is put back from the checkpoint; other lost ones are said). Both files are read first, so a
        damaged one leaves both as they are. Then open the tracker."""
        for name in LINES:
            rf.read_jsonl(self.dir / name)
        iteration = saved["iteration"] if saved is not None else 0
        for name in LINES:
            self._keep_covered(name, saved)
        self.tracker = tracking.open_tracker(self.cfg.logger, self.dir, self.name, self.cfg, iteration)

    def _keep_covered(self, name: str, saved: dict | None) -> None:
        path = self.dir / name
        last = saved["iteration"] if saved is not None else -1
        rows = [r for r in rf.read_jsonl(path) if r["iteration"] <= last]
        count, kept = ((saved or {}).get("lines") or {}).get(name, (None, None))
        if count is not None and len(rows) < count and isinstance(kept, dict) and \
                (not rows or rows[-1]["iteration"] < kept.get("iteration", -1)):
            say(f"[{self.name}] {name}: its line of iteration {kept['iteration']} was torn or lost; put back from "
                f"{rf.CHECKPOINT}")
            rows.append(kept)
        if count is not None and len(rows) < count:
            say(f"[{self.name}] {name} holds {len(rows)} of the {count} lines {rf.CHECKPOINT} covers (up to iteration "
                f"{last}); the others were cut or edited away and are lost: the run goes on without them")
        rf.rewrite_jsonl(path, rows)
        self.lines[name] = [len(rows), rows[-1] if rows else None]

    def lines_record(self) -> dict[str, list]:
        """For a checkpoint: each .jsonl file's line count and last line."""
        return {name: list(value) for name, value in self.lines.items()}

    def add_time(self, seconds: float, interval: bool = True) -> None:
        """Count training time (`interval`: also towards the next metrics line's img/s) or overhead."""
        self.elapsed += seconds
        self.interval_seconds += seconds if interval else 0.0

    def write_checkpoint(self, state: RunState) -> None:
        """Make the metrics and probe lines so far durable, then write the checkpoint that claims them
        (`checkpoint.contents`: what it holds)."""
        rf.sync_files(self.dir / rf.METRICS, self.dir / rf.PROBES)
        checkpoint.save(self.dir / rf.CHECKPOINT, checkpoint.contents(state, self))

    def log_probe(self, iteration: int, norms: dict) -> None:
        self._append(rf.PROBES, {"iteration": iteration, **norms})

    def _append(self, name: str, row: dict) -> None:
        rf.append_jsonl(self.dir / name, row)
        self.lines[name] = [self.lines[name][0] + 1, row]

    def write_responses(self, responses: dict) -> None:
        rf.write_json(self.dir / rf.RESPONSES, responses)

    def log_metrics(self, row: dict, images: int) -> None:
        """Append a metrics line (with img/s over the interval and the elapsed time), send it to the tracker,
        print the progress line, and start the next interval."""
        row.update(img_per_s=round(images / max(self.interval_seconds, 1e-9), 1), elapsed_s=round(self.elapsed, 2))
        self._append(rf.METRICS, row)
        if self.tracker is not None:
            self.tracker.log(row, row["iteration"])
        self.last_row, self.best = row, min(self.best, row["test_error"])
        left = (self.cfg.iterations - row["iteration"]) * self.cfg.batch_size / max(row["img_per_s"], 1e-9)
        say(metrics_line(self.name, row, self.cfg.iterations, self.elapsed, left))
        self.interval_seconds = 0.0

    def write_result(self, result: dict) -> None:
        """result.json (closing the tracker first), with the run's inputs."""
        self.close()
        rf.sync_files(self.dir / rf.METRICS, self.dir / rf.PROBES)
        self.result = result = {**result, **self.inputs}
        rf.write_json(self.dir / rf.RESULT, result)
        status, reason = result["status"], result.get("reason")
        say(f"[{self.name}] {status}" + (f": {reason}" if reason else "") + f" -> {self.dir}")

    def close(self) -> None:
        """Flush and close the tracker (a resumed run opens a new one)."""
        if self.tracker is not None:
            self.tracker.close()
            self.tracker = None
