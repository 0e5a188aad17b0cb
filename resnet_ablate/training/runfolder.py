"""The run folder, the only interface between training and everything after it (launcher, status, report).

    config.yaml      resolved config, written at start
    metrics.jsonl    one line per evaluation
    probes.jsonl     one line per gradient probe (when asked for)
    responses.json   layer responses (2015 Fig. 7) of the final net, or of a checkpoint on demand:
                     {iteration, source (end | checkpoint), split, images, std (one per 3x3 layer)}
    checkpoint.pt    latest state, written atomically (temp file + rename)
    result.json      written once at the end: status done | fail, and the final numbers

A folder with result.json is finished; one with config.yaml but no result.json is unfinished (running,
paused or killed: the next run of the same command resumes it).
"""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import torch

CONFIG, METRICS, PROBES, CHECKPOINT, RESULT = "config.yaml", "metrics.jsonl", "probes.jsonl", "checkpoint.pt", "result.json"
RESPONSES = "responses.json"
FINISHED = ("done", "fail")


def _atomic(path: Path, write) -> None:
    """Write through a temp file in the same folder and rename, so a reader never sees half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    _atomic(path, lambda f: f.write(text.encode()))


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2) + "\n")


def append_jsonl(path: Path, obj: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(obj) + "\n")


def save_checkpoint(path: Path, state: dict) -> None:
    _atomic(path, lambda f: torch.save(state, f))


def load_checkpoint(path: Path) -> dict | None:
    return torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None


def read_jsonl(path: Path) -> list[dict]:
    """Lines of a .jsonl file; a torn last line (a killed writer) is ignored."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows


def read_responses(folder: Path) -> dict | None:
    """responses.json, or None when the run has none (or an unreadable one: the report then draws without it)."""
    path = folder / RESPONSES
    try:
        data = json.loads(path.read_text()) if path.is_file() else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("std"), list) else None


def read_result(folder: Path) -> dict | None:
    path = folder / RESULT
    return json.loads(path.read_text()) if path.is_file() else None


def truncate_jsonl(path: Path, last_iteration: int) -> None:
    """Drop lines written after `last_iteration` (by a run killed after its last checkpoint)."""
    rows = [r for r in read_jsonl(path) if r["iteration"] <= last_iteration]
    if path.is_file():
        write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def git_commit() -> str | None:
    """The package's git commit (with '-dirty' for uncommitted changes), or None outside a checkout:
    recorded in result.json and sweep.yaml, read when a run starts (not whatever HEAD is at its end)."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("-dirty" if dirty else "")
