"""Test helpers: fake CIFAR files in the real format, tiny training settings, running the CLI, reading and
building run folders, and the ways a test stops a run (after its first iteration, or at an evaluation).
Imported by the test modules as `helpers` (conftest.py holds only fixtures)."""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from resnet_ablate.training.signals import StopRequest

# A tiny CPU run: depth-8 net on 128 synthetic images, a few dozen iterations; device pinned, so the
# bitwise-equality tests never run under bf16 and cuDNN autotuning on a GPU machine. `recipe=default` keeps the
# config keys' own defaults (one BN over the batch, per-channel normalisation) that the tests were written for;
# a bare command trains he2016.
TINY = ["dataset=synthetic", "depth=8", "batch_size=8", "synthetic_size=64", "warmup_iters=0", "eval_every=10",
        "iterations=30", "milestones=[20]", "device=cpu", "recipe=default"]
DONE = [*TINY, "fail_threshold=100"]  # tiny runs end above the papers' 20% "fail" line; count them as done
PAUSE = "time_limit_s=0.001"  # checked after every iteration: paused after iteration 1, checkpointed, no metrics line
TIMING = ("img_per_s", "elapsed_s", "wall_time_s", "git_commit")
REPO = Path(__file__).resolve().parents[1]


def write_fake_cifar(root: Path, name: str = "cifar10", per_file: int = 12, seed: int = 0, tar: bool = False):
    """Write a small data set in the real CIFAR python format (pickled dicts of bytes keys) under root;
    returns {split: (images (n, 3, 32, 32) uint8, labels)} as written."""
    rng = np.random.default_rng(seed)
    if name == "cifar10":
        folder, files, key, classes = "cifar-10-batches-py", {"train": [f"data_batch_{i}" for i in range(1, 6)],
                                                             "test": ["test_batch"]}, b"labels", 10
    else:
        folder, files, key, classes = "cifar-100-python", {"train": ["train"], "test": ["test"]}, b"fine_labels", 100
    out = root / folder
    out.mkdir(parents=True)
    written = {}
    for split, names in files.items():
        images, labels = [], []
        for fname in names:
            x = rng.integers(0, 256, (per_file, 3072), dtype=np.uint8)
            y = rng.integers(0, classes, per_file).tolist()
            with open(out / fname, "wb") as f:
                pickle.dump({b"batch_label": fname.encode(), key: y, b"data": x,
                             b"filenames": [b"x.png"] * per_file}, f)
            images.append(x), labels.extend(y)
        written[split] = (np.concatenate(images).reshape(-1, 3, 32, 32), np.array(labels))
    if tar:
        archive = root / ("cifar-10-python.tar.gz" if name == "cifar10" else "cifar-100-python.tar.gz")
        with tarfile.open(archive, "w:gz") as t:
            t.add(out, arcname=folder)
        for p in sorted(out.iterdir()):
            p.unlink()
        out.rmdir()
    return written


def merged(base: list[str], *overrides: str) -> list[str]:
    """`base` settings with some replaced: `merged(TINY, "iterations=60")`. The command line refuses a key given
    twice, so `[*TINY, "iterations=60"]` is for parse() only (where the last one wins, as a spec's overrides
    under the command line's)."""
    keys = {o.split("=", 1)[0] for o in overrides}
    return [*(b for b in base if b.split("=", 1)[0] not in keys), *overrides]


def cli_env() -> dict[str, str]:
    """The environment for a CLI subprocess: this checkout's package first (also from a git worktree)."""
    return {**os.environ, "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def run_cli(*args: str, cwd: Path, module: str = "resnet_ablate.run", timeout: float = 300,
            env_path: str | None = None) -> subprocess.CompletedProcess:
    """Run a module of this checkout; `env_path` replaces PATH (e.g. to hide sbatch)."""
    env = {**cli_env(), **({"PATH": env_path} if env_path is not None else {})}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def metrics(folder: Path) -> list[dict]:
    """metrics.jsonl without the timing fields (which differ between identical runs)."""
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def result(folder: Path) -> dict:
    r = json.loads((folder / "result.json").read_text())
    return {k: v for k, v in r.items() if k not in TIMING}


def make_run_folder(folder: Path, settings: list[str], status: str | None = "done", error: float | None = 5.0,
                    copy_of: Path | None = None, **result_fields) -> Path:
    """A run folder built by hand: config.yaml resolved from `settings` (or `copy_of`'s files with the config
    rewritten from `settings`), and result.json with `status` and `error` (status None: no result.json, an
    unfinished run). Extra keyword arguments go into result.json."""
    from resnet_ablate.training.configfile import to_yaml
    from resnet_ablate.training.parse import parse

    folder.mkdir(parents=True)
    if copy_of is not None:
        for name in ("metrics.jsonl", "probes.jsonl", "checkpoint.pt"):
            if (copy_of / name).is_file():
                (folder / name).write_bytes((copy_of / name).read_bytes())
        if (copy_of / "result.json").is_file():
            result_fields = {**json.loads((copy_of / "result.json").read_text()), **result_fields}
    (folder / "config.yaml").write_text(to_yaml(parse(settings)))
    if status is not None:
        result = {"reason": "", "iterations": 64000, "parameters": 1727962, **result_fields,
                  "status": status, "final_test_error": error}
        (folder / "result.json").write_text(json.dumps(result))
    return folder


needs_cuda = pytest.mark.cuda  # skipped without a GPU (conftest.py); `python -m pytest -m cuda` selects them all


def metrics_lines(folder: Path) -> int:
    """How many lines the run in `folder` has written to metrics.jsonl (0 before its first evaluation)."""
    path = folder / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.is_file() else 0


def stop_now(reason: str = "test stop") -> StopRequest:
    """A stop request already made: train() checkpoints and pauses its runs after their first iteration."""
    stop = StopRequest()
    stop.reason = reason
    return stop


class StopAtEvaluation(StopRequest):
    """A stop request (as a SIGTERM) that arrives once `folder` holds `lines` metrics lines: a run started fresh
    pauses at that evaluation, checkpointed there. For train() in this process; a real signal to a process is
    `signal_at_evaluation` or `wait_for_lines`."""

    def __init__(self, folder: Path, lines: int = 1) -> None:
        self.folder, self.lines = folder, lines
        super().__init__()

    @property
    def reason(self) -> str | None:
        return "SIGTERM" if metrics_lines(self.folder) >= self.lines else self._reason

    @reason.setter
    def reason(self, value: str | None) -> None:
        self._reason = value


def signal_at_evaluation(folder: Path, sig: int, lines: int = 1, timeout: float = 120) -> None:
    """Send `sig` to this process (from a thread) once the run in `folder` has written `lines` metrics lines: the
    signal handlers of whatever trains here (train(), a job, a sweep) get it as from outside."""
    def send() -> None:
        deadline = time.time() + timeout
        while time.time() < deadline and metrics_lines(folder) < lines:
            time.sleep(0.01)
        os.kill(os.getpid(), sig)
    threading.Thread(target=send, daemon=True).start()


def wait_for_lines(folder: Path, lines: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Wait until the run that subprocess `proc` trains in `folder` has written `lines` metrics lines (then a
    signal sent to it lands after that evaluation); fails if `proc` ends first or nothing comes in time."""
    deadline = time.time() + timeout
    while metrics_lines(folder) < lines:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else f"exit code {proc.returncode}"
        assert time.time() < deadline, f"{folder}: no {lines} metrics lines after {timeout:g} s"
        time.sleep(0.02)


def make_seed_runs(root: Path, name: str, settings: list[str], errors: list[float | None], **result_fields) -> None:
    """Run folders `name`_s0, `name`_s1, ... under `root` built by hand (`make_run_folder`), seed i with final
    error errors[i] (None: a failed run); extra keyword arguments go into every result.json."""
    for seed, error in enumerate(errors):
        make_run_folder(root / f"{name}_s{seed}", [*settings, f"seed={seed}"], "fail" if error is None else "done",
                        error, **result_fields)


def layout_table(root: Path, layout: str):
    """The report's table of `layout` (analysis/tables.py) over the run folders under `root`."""
    from resnet_ablate.analysis.scan import group_by_settings, scan
    from resnet_ablate.analysis.tables import build_table, layouts
    return build_table(layouts()[layout], group_by_settings(scan(root).runs))


def use_cli_env(monkeypatch, *paths: Path) -> None:
    """Give this process the environment `cli_env()` gives a CLI subprocess (one thread, this checkout first on
    PYTHONPATH), with `paths` after it: for a launch run in-process whose jobs are processes of their own
    (submitit's local jobs and sbatch inherit it), so that they import this checkout and the plugins there."""
    monkeypatch.setenv("OMP_NUM_THREADS", cli_env()["OMP_NUM_THREADS"])
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), *map(str, paths),
                                                                    os.environ.get("PYTHONPATH")])))
