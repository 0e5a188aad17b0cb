"""`python -m resnet_ablate.run key=value ...`: one run in this process, or a sweep through the launcher.

Without launcher keys and comma lists it parses the overrides and trains in this process (`dry_run=true` says
what the same command would do and trains nothing). Launcher keys (launcher=, ablation=, slurm.*, ... see
--help) or a comma list (`seed=0,1,2`) make it a sweep: the launcher expands, skips what is finished and runs
or submits the rest.

Bad input (unknown key, a key given twice, wrong type, bad value, missing data or spec) ends with one line on
stderr and exit 2. A run that diverges or ends above `fail_threshold` is a result (status fail), not an error:
exit 0. A run stopped before its end (Ctrl-C, SIGTERM, time_limit_s) exits 75 (see `cli.py`).
"""
from __future__ import annotations

import sys

from .cli import EXIT_PAUSED, guarded
from .folders import runfolder as rf
from .sweeps import launcher, settings
from .sweeps.specs import is_sweep
from .training.config import Config, run_dir
from .training.parse import check_unique, help_text, parse
from .training.trainer import train


def main(argv: list[str] | None = None) -> int:
    return guarded(_main, argv)


def _main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(f"{help_text()}\n{settings.help_text()}")
        return 0
    check_unique(argv)
    launch_overrides, run_overrides = launcher.split_overrides(argv)
    if is_sweep([o for o in launch_overrides if settings.key_of(o) != "dry_run"], run_overrides):
        return launcher.launch_main(launch_overrides, run_overrides, launcher.command_line(argv))
    notes: list[str] = []
    cfg = parse(run_overrides, notes)
    for note in notes:
        print(note, flush=True)
    if launch_overrides and launcher.parse_launch(launch_overrides).dry_run:
        print(dry_run_line(cfg))
        return 0
    summaries = train([cfg])
    return EXIT_PAUSED if any(s["status"] == "paused" for s in summaries) else 0


def dry_run_line(cfg: Config) -> str:
    """What running this single-run command would do, from its run folder's files."""
    folder = run_dir(cfg)
    result = rf.read_result(folder)
    rows = rf.read_jsonl(folder / rf.METRICS)
    if result is not None and result.get("status") in rf.FINISHED:
        state = f"finished ({result['status']}): nothing to do"
    elif (folder / rf.CHECKPOINT).is_file():
        state = f"to resume from its checkpoint (last evaluation at iteration {rows[-1]['iteration'] if rows else 0})"
    else:
        state = "to train from the start"
    return f"1 run in {folder}: {state}; dry_run=true trains nothing"


if __name__ == "__main__":
    sys.exit(main())
