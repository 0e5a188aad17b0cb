"""The sweep folder, the interface between the launcher and everything after it (status, report), as
`runfolder.py` is for one run:

    sweep.yaml               written at each launch: name, layout, budget, command, git_commit, launcher,
                             created, method (grid | random; random adds trials, seed, search), runs
    <run name>/              one run folder per run (runfolder.py's format)
    .lock                    the launcher's lock (`launching`), held while a launch checks what is to run and
                             records what it starts (an inline or local launch: until its runs end)
    .submitit/               submitit's pickles and logs (launcher=local|slurm|debug), read by `jobstate.py`
    .submitit/jobs.jsonl     one line per submitted job: job_id, launcher, runs (the run names it trains)

`layout` names the report layout the runs feed (one of LAYOUTS, or null). sweep.yaml is read with PyYAML's
safe loader here and nowhere else; a folder without it is not a sweep folder. A launch into a sweep folder adds
its runs to those sweep.yaml lists (a relaunch with more seeds or trials extends the sweep, and none is
forgotten); a launch of another sweep (another name, budget, method or layout) is refused (`check_same_sweep`).
"""
from __future__ import annotations

import contextlib
import datetime
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import yaml

from ..errors import UsageError, first_line, unknown
from . import runfolder as rf
from .files import not_a_name
from .lock import FolderLock

SWEEP_FILE, SUBMITIT_DIR, JOBS_FILE = "sweep.yaml", ".submitit", "jobs.jsonl"
LAYOUTS = ("table1", "table2", "table3", "depth", "degradation", "gradnorm", "recipe_gap", "sweep")
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class SweepFileError(UsageError):
    """A missing or unreadable sweep.yaml: one line for status and the launcher; the report lists the
    folder as broken and goes on."""


@dataclass(frozen=True)
class SweepRecord:
    """A sweep.yaml's contents (`folder` is where it lies, not a key of the file)."""

    folder: Path
    name: str
    layout: str | None = None
    budget: str = "full"
    runs: tuple[str, ...] = ()
    command: str = ""
    git_commit: str | None = None
    launcher: str = ""
    created: str = ""
    method: str = "grid"
    trials: int = 0
    seed: int = 0
    search: dict[str, Any] = field(default_factory=dict)  # random: each searched key's distribution

    def label(self) -> str:
        """'sweep NAME' ('command-line sweep' for a grid or search given on the command line, whose name is
        'sweep'; with its folder's name where that says more) plus the budget when it is not the full one."""
        name = f"sweep {self.name}" if self.name != "sweep" else "command-line sweep" + (
            f" {self.folder.name}" if self.folder.name != "sweep" else "")
        return name + ("" if self.budget == "full" else f", budget {self.budget} (reduced)")


def write_sweep(record: SweepRecord) -> None:
    """sweep.yaml in the record's folder (created if needed): the record, with the runs an earlier launch into
    the folder listed (first) and its `created` kept; `created` is now for a new one."""
    rf.create_folder(record.folder, "sweep_dir")
    before = read_sweep(record.folder) if rf.present(record.folder / SWEEP_FILE) else None
    data = {k: v for k, v in asdict(record).items() if k != "folder"}
    data["created"] = (before.created if before else "") or data["created"] or \
        datetime.datetime.now().isoformat(timespec="seconds")
    data["runs"] = list(dict.fromkeys([*(before.runs if before else ()), *record.runs]))
    if record.method != "random":
        for key in ("trials", "seed", "search"):
            del data[key]
    rf.write_text(record.folder / SWEEP_FILE, yaml.safe_dump(data, sort_keys=False))


def check_same_sweep(record: SweepRecord) -> None:
    """Refuse to launch `record` into a folder whose sweep.yaml holds another sweep (name, budget, method or
    layout differ), or one that cannot be read."""
    if not rf.present(record.folder / SWEEP_FILE):
        return
    try:
        before = read_sweep(record.folder)
    except SweepFileError as e:
        raise SweepFileError(f"{e}; delete it (the launch writes it again) or choose another sweep_dir") from e
    mine, theirs = ((r.name, r.budget, r.method, r.layout) for r in (record, before))
    if mine != theirs:
        raise UsageError(f"sweep_dir={record.folder} holds another sweep ({before.label()}, method {before.method}); "
                         f"this one is {record.label()}, method {record.method}: choose another sweep_dir")


@contextlib.contextmanager
def launching(folder: Path) -> Iterator[None]:
    """Hold the sweep folder's lock (created with the folder) for the block: one launch at a time checks what
    is to run and records what it starts; another is refused in one line naming the owner."""
    rf.create_folder(folder, "sweep_dir")
    lock = FolderLock.acquire(folder, lambda who: f"{folder} is being launched by another process ({who}): wait "
                                                  f"for it to end (an inline or local launch trains its runs first), "
                                                  f"then launch again")
    try:
        yield
    finally:
        lock.release()


def read_sweep(folder: Path) -> SweepRecord:
    """A sweep folder's sweep.yaml; SweepFileError when it is missing or not a valid record."""
    path = folder / SWEEP_FILE
    if not rf.present(path):
        what = "does not exist" if not folder.exists() else f"is not a sweep folder (no {SWEEP_FILE})"
        raise SweepFileError(f"{folder} {what}")
    try:
        data = yaml.load(rf.read_text(path) or "", Loader=_LOADER)
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as e:
        raise SweepFileError(f"{path}: not valid YAML ({first_line(e)})") from e
    if not isinstance(data, dict):
        raise SweepFileError(f"{path}: not a mapping")
    layout, runs, search = data.get("layout"), data.get("runs") or [], data.get("search") or {}
    if layout is not None and layout not in LAYOUTS:
        raise SweepFileError(str(unknown("layout", layout, LAYOUTS, where=str(path), extra="or null")))
    if not isinstance(runs, list):
        raise SweepFileError(f"{path}: runs is not a list")
    for run in map(str, runs):  # each names a folder in this one: status and the launcher read it there
        if not_a_name(run):
            raise SweepFileError(f"{path}: a run's name {not_a_name(run)}; repair the runs list")
    if not isinstance(search, dict):
        raise SweepFileError(f"{path}: search is not a mapping")
    try:
        trials, seed = int(data.get("trials") or 0), int(data.get("seed") or 0)
    except (TypeError, ValueError) as e:
        raise SweepFileError(f"{path}: trials and seed must be integers ({first_line(e)})") from e
    return SweepRecord(folder, str(data.get("name") or folder.name), layout, str(data.get("budget") or "full"),
                       tuple(map(str, runs)), str(data.get("command") or ""), data.get("git_commit"),
                       str(data.get("launcher") or ""), str(data.get("created") or ""),
                       str(data.get("method") or "grid"), trials, seed, search)


def append_job(folder: Path, job_id: str, launcher: str, runs: list[str]) -> None:
    """Record that job `job_id` trains `runs` (appended to .submitit/jobs.jsonl)."""
    (folder / SUBMITIT_DIR).mkdir(parents=True, exist_ok=True)
    rf.refuse_links(folder, [SUBMITIT_DIR])
    rf.append_jsonl(folder / SUBMITIT_DIR / JOBS_FILE, {"job_id": job_id, "launcher": launcher, "runs": runs})


def latest_jobs(folder: Path) -> dict[str, dict]:
    """Each run's most recent job record (job_id, launcher, runs) from .submitit/jobs.jsonl; Damaged naming the
    line of a record without them."""
    path = folder / SUBMITIT_DIR / JOBS_FILE
    rf.refuse_links(folder, [SUBMITIT_DIR])
    records = rf.read_jsonl(path, required="runs")
    for number, record in enumerate(records, 1):
        if not (isinstance(record.get("job_id"), str) and isinstance(record.get("launcher"), str)
                and isinstance(record["runs"], list)
                and all(isinstance(r, str) and not not_a_name(r) for r in record["runs"])):
            raise rf.Damaged(f"{path} line {number} is damaged (a job record needs job_id, launcher and runs, "
                             f"each a run folder's name); repair or delete that line and run again")
    return {run: record for record in records for run in record["runs"]}
