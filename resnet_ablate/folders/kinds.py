"""Which tool a folder belongs to. The trainer writes run folders, the launcher sweep folders, `lr_find`
range-test folders, the report its --out folder; each tool writes only into a new or empty folder or one of its
own kind, and refuses any other in one line, so that no tool writes over what another one (or the user) wrote:

    kind               marked by                                        written by
    run folder         metrics.jsonl, probes.jsonl, responses.json,     the trainer (and layer_responses)
                       checkpoint.pt, result.json (with config.yaml)
    range-test folder  lr_find.jsonl, lr_find.json, lr_find.png         lr_find (with config.yaml)
    sweep folder       sweep.yaml                                       the launcher
    report folder      .report-files (the report's list of its files)   the report

config.yaml marks no kind by itself (a run and a range test both write one); one without the checksum line
the package writes (`runfolder.config_text`) is taken for the user's own file beside files of their own.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import UsageError
from . import runfolder as rf
from .sweepfolder import SWEEP_FILE, SweepRecord, check_same_sweep

RANGE_TEST_FILES = ("lr_find.jsonl", "lr_find.json", "lr_find.png")  # their format is lr_find.py's
REPORT_MANIFEST = ".report-files"  # one name a line: the files the report wrote into its --out folder
RUN, RANGE_TEST, SWEEP, REPORT = "run folder", "range-test folder", "sweep folder", "report folder"
MARKERS = {RUN: tuple(n for n in rf.RUN_FILES if n != rf.CONFIG), RANGE_TEST: RANGE_TEST_FILES,
           SWEEP: (SWEEP_FILE,), REPORT: (REPORT_MANIFEST,)}


def refuse_other_kinds(folder: Path, own: str, key: str, names: list[str]) -> None:
    """One line when `names` (the folder's contents) mark the folder as another kind than `own`."""
    for kind, markers in MARKERS.items():
        found = [n for n in markers if n in names]
        if kind != own and found:
            raise UsageError(f"{key}={folder} is a {kind} (it holds {found[0]}), not a {own}: choose another {key}")


def _listed(names: list[str], limit: int = 3) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_run_folder(folder: Path, key: str = "run_dir") -> None:
    """Before a trainer reads or writes `folder`: it is new or empty (but for a lock and temp files), or a run
    folder; damaged when it holds run files but no config.yaml; refused when it is another tool's, or holds
    files of the user's own beside a config.yaml the package did not write and no run file."""
    names = rf.contents(folder)
    rf.refuse_links(folder)
    refuse_other_kinds(folder, RUN, key, names)
    missing = rf.missing_config(folder, names)
    if missing is not None:
        raise missing
    if rf.CONFIG not in names and names:
        raise UsageError(f"{key}={folder} is not a run folder: it holds {_listed(names)} and no {rf.CONFIG}; choose "
                         f"a new or empty {key}")
    foreign = [n for n in names if n not in (*rf.RUN_FILES, *rf.TRACKER_DIRS)]
    marked = any(n in MARKERS[RUN] for n in names)  # an older run's folder, a README added beside its files
    if foreign and not marked and not rf.written_by_package(folder):
        raise UsageError(f"{key}={folder} is not a run folder: its {rf.CONFIG} was not written by this package and it "
                         f"holds other files ({_listed(foreign)}); choose a new or empty {key}")


def check_range_test_folder(folder: Path, key: str = "run_dir") -> None:
    """Before lr_find writes `folder`: new or empty, or holding a range test's files only (config.yaml written
    by the package among them); refused otherwise (checking the settings is the caller's)."""
    names = rf.contents(folder)
    rf.refuse_links(folder)
    refuse_other_kinds(folder, RANGE_TEST, key, names)
    foreign = [n for n in names if n not in (rf.CONFIG, *RANGE_TEST_FILES)]
    if rf.CONFIG in names and not rf.written_by_package(folder):
        foreign.insert(0, rf.CONFIG)
    if foreign:
        raise UsageError(f"{key}={folder} holds files a range test did not write ({_listed(foreign)}): choose a new "
                         f"or empty {key}")


def check_sweep_folder(record: SweepRecord) -> None:
    """Before a launch (a dry run too) writes into its sweep folder: a folder, not another tool's, not another
    sweep's, and holding no link (a run folder that is one would train into its target)."""
    if record.folder.exists() and not record.folder.is_dir():
        raise UsageError(f"sweep_dir: {record.folder} is a file, not a folder: choose another sweep_dir")
    rf.refuse_links(record.folder)
    refuse_other_kinds(record.folder, SWEEP, "sweep_dir", rf.contents(record.folder))
    check_same_sweep(record)
