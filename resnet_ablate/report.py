"""`python -m resnet_ablate.report RUNS_DIR --out OUT_DIR [--layout L]`: run folders -> the papers'
tables (markdown, CSV, LaTeX booktabs, and printed) with the papers' numbers and Welch's t-tests
beside them, and the papers' figures. report.md opens with the papers' claims judged on the runs (held / not
held / undecided, `claims/`), also written as claims.csv.

Runs are grouped by their settings but the seed. Finished runs (done or fail) are read; the others are
listed in their state (running, paused, not started; the words of `folders/states.py`), and a damaged folder
by path with the reason, and skipped. A `sweep.yaml`
(written by the launcher) in the given folder or above run folders names the layout and the budget
of the runs below it; elsewhere `--layout` chooses (default: every layout the runs fit).

`--layout sweep` (chosen by a random sweep's sweep.yaml) is the sweep view instead of a paper table: the
trials, each searched parameter's rank correlation with the final test error, error vs each parameter,
and the best trials' training curves.

The report writes only its own files: it builds everything in a temporary folder inside --out, and moves the
files into place only when none would replace a file of --out that an earlier report did not write; the
names it wrote are kept in --out's `.report-files` (`folders/kinds.py`), so the same report again replaces
them. --out may not be empty, nor another tool's folder (a run, range-test or sweep folder).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import sys
from pathlib import Path
from typing import Iterator

from .analysis.figures import draw_figures, slug
from .analysis.frames import GRAD_MEASURES, gradient_spread, spread_caption
from .analysis.scan import DATA, RunRecord, Scan, copy_lines, group_by_settings, scan
from .analysis.sweepview import sweep_view
from .analysis.tables import REPORT_LAYOUTS, SWEEP_VIEW, build_table, choose_layouts, emit, left_out, text_cells
from .claims.section import claims_section
from .claims.stats import CORRECTIONS, DEFAULT_CORRECTION
from .cli import guarded
from .errors import UsageError, unknown
from .folders import runfolder as rf
from .folders.kinds import REPORT, REPORT_MANIFEST, refuse_other_kinds
from .folders.lock import describe
from .folders.states import FINISHED, State
from .folders.sweepfolder import SweepRecord

FORMATS = ("png", "pdf")


def sections(found: Scan) -> list[tuple[str, SweepRecord | None, list[RunRecord]]]:
    """The runs split by sweep (runs outside any sweep last), each with a name of its own for its files: the
    sweep's name, or its folder's for a command-line sweep (all named 'sweep'), numbered where two coincide."""
    parts: dict[Path | None, list[RunRecord]] = {}
    for run in found.runs:
        parts.setdefault(run.sweep.folder if run.sweep else None, []).append(run)
    named = [(_file_name(runs[0].sweep), runs[0].sweep, runs) for key, runs in parts.items() if key is not None]
    named += [("runs", None, parts[None])] if None in parts else []
    seen: dict[str, int] = {}
    for i, (name, sweep, runs) in enumerate(named):
        seen[name] = seen.get(name, 0) + 1
        named[i] = (name if seen[name] == 1 else f"{name}-{seen[name]}", sweep, runs)
    return named


def _file_name(sweep: SweepRecord) -> str:
    return sweep.folder.name if sweep.name == "sweep" else sweep.name


def _unread(found: Scan) -> list[str]:
    """Lines for the runs left out, each with its state: running, paused or not started; damaged; not started
    and without a folder yet."""
    how = {State.PAUSED: "nobody trains it; the same command resumes it",
           State.NOT_STARTED: "no checkpoint yet; the same command trains it from the start"}
    lines = []
    for run in (r for r in found.runs if r.status not in FINISHED):
        done = rf.read_jsonl(run.path / rf.METRICS)
        at = f"iteration {done[-1]['iteration']} of {run.settings['iterations']}" if done else "no evaluation yet"
        who = f"trained by {describe(run.result)}" if run.status is State.RUNNING else how.get(run.status, "")
        lines.append(f"- {run.status} (no result.json; {at}; {who}): {run.path}")
    lines += [f"- {State.DAMAGED} (skipped): {path}: {reason}" for path, reason in found.broken]
    lines += [f"- {State.NOT_STARTED} (named in sweep.yaml, no run folder): {path}" for path in found.missing]
    lines += [f"- range test of lr_find (not a training run): {path}" for path in found.range_tests]
    return lines


def _section(runs: list[RunRecord], sweep: SweepRecord | None, out: Path, prefix: str, layout: str | None,
             formats: tuple[str, ...], measure: str = "rms") -> list[str]:
    """One sweep's (or the loose runs') tables and figures; its report.md lines."""
    groups, title = group_by_settings(runs), sweep.label() if sweep else ""
    if not groups:
        return ["No finished runs yet.", ""]
    if (layout if layout not in (None, "auto") else sweep.layout if sweep else None) == SWEEP_VIEW:
        return sweep_view(groups, sweep, out, prefix, title, formats)
    suffix, lines = (f" — {title}" if title else ""), []
    for lay in choose_layouts(layout, sweep, groups):
        table = build_table(lay, groups)
        if table is None:
            lines += [f"No runs fit layout {lay.name} ({lay.title}; it shows {lay.keeps}).", ""]
            continue
        lines += emit(table.shown, table.frame, table.caption, out / f"{prefix}-{lay.name}", lay.title + suffix,
                      tex=True)
        lines += left_out(lay, groups)
    lines += copy_lines(runs)
    spread = gradient_spread(groups, measure)
    if not spread.empty:
        lines += emit(text_cells(spread), spread, spread_caption(measure), out / f"{prefix}-gradnorm",
                      "Gradient spread" + suffix)
    for paths, caption in draw_figures(groups, out, prefix, title, formats, measure):
        lines += [f"![{paths[0].stem}]({paths[0].name})", *([f"*{caption}*"] if caption else []), ""]
    return lines


def _data_note(found: Scan) -> list[str]:
    """A line when the finished runs trained on more than one data set: their groups are kept apart."""
    seen = sorted({r.settings[DATA] for r in found.runs if r.status in FINISHED})
    if len(seen) < 2:
        return []
    names = ", ".join(d or "not recorded" for d in seen)
    return [f"Note: these runs trained on {len(seen)} different data sets (data = {names}: the start of each "
            f"result.json's data_fingerprint); runs with the same settings on different data are kept apart, in "
            f"rows with a data column.", ""]


def write_report(found: Scan, out: Path, layout: str | None, formats: tuple[str, ...], measure: str = "rms",
                 correction: str = DEFAULT_CORRECTION) -> str:
    """Tables (md, csv, tex) and figures of every section into `out`, and report.md; returns its text."""
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"# Report on {found.root}", "", *_data_note(found), *claims_section(found, out, correction)]
    for name, sweep, runs in sections(found):
        lines += [f"## {sweep.label() if sweep else 'Runs outside any sweep'}", ""]
        lines += _section(runs, sweep, out, slug(name), layout, formats, measure)
    unread = _unread(found)
    if unread:
        lines += ["## Not in the tables", "", *unread, ""]
    text = "\n".join(lines)
    (out / "report.md").write_text(text)
    return text


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit code 2 (from main), no usage block
        raise UsageError(f"{message}; see --help")


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line: RUNS_DIR, --out, --layout, --formats."""
    parser = _Parser(prog="python -m resnet_ablate.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs_dir", type=Path,
                        help="a folder of run folders (searched recursively), a sweep or one run")
    parser.add_argument("--out", required=True, help="where the tables, figures and report.md go")
    parser.add_argument("--layout", choices=["auto", *REPORT_LAYOUTS], default=None,
                        help="table layout (default: the sweep.yaml's, else every layout the runs fit)")
    parser.add_argument("--formats", default="png,pdf", help="figure formats, comma-separated (png, pdf)")
    parser.add_argument("--grad-measure", choices=list(GRAD_MEASURES), default="rms",
                        help="the probe's per-unit measure in the gradient figures and spread table: rms = per-element "
                             "RMS (default; compares units of different sizes), l2 = the plain norm")
    parser.add_argument("--claims-correction", choices=list(CORRECTIONS), default=DEFAULT_CORRECTION,
                        help="how the claims' p-values are adjusted over the family of claims the report judges: "
                             "holm = Holm's step-down, the chance of any false verdict at 5%% (default); bh = "
                             "Benjamini-Hochberg, the expected share of false verdicts; none = each claim alone")
    args = parser.parse_args(argv)
    if not args.out.strip():
        raise UsageError("--out is empty: name the folder the report goes to (e.g. --out reports/mine)")
    args.out = Path(args.out)
    args.formats = tuple(f for f in args.formats.split(",") if f)
    if not args.formats:
        raise UsageError("--formats is empty; allowed: png, pdf")
    for bad in (f for f in args.formats if f not in FORMATS):
        raise unknown("figure format", bad, FORMATS)
    return args


@contextlib.contextmanager
def staged(out: Path) -> Iterator[Path]:
    """A temporary folder inside `out` for the report to write in; after the block its files move into `out`,
    the files an earlier report listed in `out`'s manifest (.report-files) and this one did not write are
    removed (a report replaces the one before it whole, never mixes with it), and the manifest lists this
    report's files. Whatever writes into the folder is covered, so the files in it are the one list of what the
    report writes. Refused before anything moves, and `out` left as it was, when one would replace a file that is
    not in the manifest, i.e. that no report wrote."""
    refuse_other_kinds(out, REPORT, "--out", rf.contents(out))
    out.mkdir(parents=True, exist_ok=True)
    stage = out / f".report.{secrets.token_hex(4)}.tmp"
    stage.mkdir()
    try:
        yield stage
        written = sorted(str(p.relative_to(stage)) for p in stage.rglob("*") if p.is_file())
        listed = out / REPORT_MANIFEST
        own = set(listed.read_text().splitlines()) if listed.is_file() else set()
        foreign = [n for n in written if os.path.lexists(out / n) and n not in own]
        if foreign:
            raise UsageError(f"--out {out} holds {', '.join(foreign[:3])}{' ...' if len(foreign) > 3 else ''}, which "
                             f"the report did not write ({REPORT_MANIFEST} does not list it): choose another --out, "
                             f"or move those files away")
        for name in written:
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            os.replace(stage / name, out / name)
        for name in sorted(own - set(written)):  # the earlier report's files that this one does not replace
            if _inside(name) and (os.path.islink(out / name) or (out / name).is_file()):
                (out / name).unlink()
        rf.write_text(listed, "".join(f"{n}\n" for n in written))
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _inside(name: str) -> bool:
    """A manifest line that names a file inside --out (a relative path without '..'), never one elsewhere."""
    path = Path(name)
    return bool(name) and not path.is_absolute() and ".." not in path.parts


def _main(argv: list[str]) -> int:
    args = parse_args(argv)
    found = scan(args.runs_dir)
    try:
        with staged(args.out) as stage:
            text = write_report(found, stage, args.layout, args.formats, args.grad_measure, args.claims_correction)
    except OSError as e:
        raise UsageError(f"cannot write the report: {e}") from e
    print(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    return guarded(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
