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

if __name__ == "__main__":  # first, before the imports below take their second: a SIGTERM from here on is a stop
    from .training.signals import hold_stop_signals, ignore_stop_signals

    hold_stop_signals()

from .cli import EXIT_PAUSED, guarded  # noqa: E402
from .folders import runfolder as rf  # noqa: E402
from .folders.kinds import check_run_folder  # noqa: E402
from .folders.lock import describe, holder  # noqa: E402
from .folders.states import State  # noqa: E402
from .sweeps import launcher, launchkeys  # noqa: E402
from .sweeps.specs import is_sweep  # noqa: E402
from .training import checkpoint  # noqa: E402
from .training.config import Config  # noqa: E402
from .training.configfile import run_dir, run_name  # noqa: E402
from .training.parse import check_unique, help_text, ignored_note, parse  # noqa: E402
from .training.trainer import train  # noqa: E402
from .training.writer import check_checkpoint_settings, check_recorded_inputs, check_settings, file_sha256  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    return guarded(_main, argv)


def _main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(f"{help_text()}\n{launchkeys.help_text()}")
        return 0
    check_unique(argv)
    launch_overrides, run_overrides = launcher.split_overrides(argv)
    ignored = launchkeys.sweeps_only(launch_overrides)
    if is_sweep([o for o in launch_overrides if launchkeys.key_of(o) not in ("dry_run", *ignored)], run_overrides):
        return launcher.launch_main(launch_overrides, run_overrides, launcher.command_line(argv))
    dry_run = bool(launch_overrides) and launcher.parse_launch(launch_overrides).dry_run
    notes = [ignored_note(ignored, "the run keeps its own folder")] if ignored else []
    cfg = parse(run_overrides, notes)
    for note in notes:
        print(note, flush=True)
    if dry_run:
        print(dry_run_line(cfg))
        return 0
    summaries = train([cfg])
    return EXIT_PAUSED if any(s["status"] == "paused" for s in summaries) else 0


def dry_run_line(cfg: Config) -> str:
    """What running this single-run command would do, from its run folder's files and lock (the same checks
    and refusals as the run itself: another tool's folder, other settings, a damaged file, another run's
    checkpoint or init weights; the data are compared when the run loads them)."""
    folder = run_dir(cfg)
    check_run_folder(folder)
    check_settings(folder, cfg)
    state, reason = rf.folder_state(folder)
    if state is State.DAMAGED:
        raise rf.Damaged(reason)
    if state.finished:
        what = f"finished ({state}): nothing to do"
    elif state is State.RUNNING:
        what = f"being trained by another process ({describe(holder(folder) or {})}): the same command is refused " \
               f"until it ends"
    elif state is State.PAUSED:  # its checkpoint read and checked as the run would (not the data: not loaded here)
        saved = checkpoint.load(folder / rf.CHECKPOINT)
        check_checkpoint_settings(folder / rf.CHECKPOINT, saved, cfg, run_name(cfg))
        check_recorded_inputs(folder, saved, {**saved, "init_sha256": file_sha256(cfg.init)}, rf.CHECKPOINT)
        rows = rf.read_jsonl(folder / rf.METRICS)
        what = f"to resume from its checkpoint (last evaluation at iteration {rows[-1]['iteration'] if rows else 0})"
    else:
        what = "to train from the start"
    return f"1 run in {folder}: {what}; dry_run=true trains nothing"


if __name__ == "__main__":
    code = main()
    ignore_stop_signals()  # the run has stopped or ended: a late SIGTERM must not turn its code into 143
    sys.exit(code)
