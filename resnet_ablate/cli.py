"""What every command-line module shares: bad input is one line on stderr and exit code 2, never a
traceback; and the exit codes a script can act on (`run ... && report ...` must not go on after a run that
stopped before its end):

    0    finished: every run done or fail (a failed run is a result), or nothing to do
    1    a sweep's job crashed (after its retries); `status` says why
    2    bad input (one line on stderr)
    75   stopped before the end (Ctrl-C, SIGTERM, time_limit_s): checkpointed; the same command resumes
    130  interrupted by a second Ctrl-C: the run folder keeps its last checkpoint
    141  the output pipe was closed (`... | head`)
"""
from __future__ import annotations

import os
import sys
from typing import Callable

from .errors import UsageError, first_line

EXIT_CRASHED, EXIT_USAGE, EXIT_PAUSED, EXIT_INTERRUPTED, EXIT_PIPE = 1, 2, 75, 130, 141


def guarded(main: Callable[[list[str]], int], argv: list[str] | None = None) -> int:
    """Call `main(argv)` (default: the process's arguments); a UsageError becomes `error: <message>` on
    stderr and exit code 2 (so does a file system error no caller turned into one), a second Ctrl-C one line
    and 130, a closed output pipe a quiet 141."""
    try:
        code = main(sys.argv[1:] if argv is None else argv)
        sys.stdout.flush()  # here, where a closed pipe can still be answered quietly
        return code
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("\ninterrupted; a run folder keeps its last checkpoint and the same command resumes from it",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _quiet_stdout()
        return EXIT_PIPE
    except OSError as e:  # the file system refused what no caller expected: a full disk, a read-only mount, a name
        where = f" ({e.filename})" if e.filename else ""  # past its limit; one line here too, never a traceback
        print(f"error: {e.strerror or first_line(e)}{where}: fix that (free space, permissions, a shorter name) and "
              f"run the same command again", file=sys.stderr)
        return EXIT_USAGE


def _quiet_stdout() -> None:
    """After the reader of stdout went away: point stdout at /dev/null, so that the flush at exit does not
    raise (and print) a second BrokenPipeError (the recipe in Python's signal documentation)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass
