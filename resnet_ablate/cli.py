"""What every command-line module shares: bad input is one line on stderr and exit code 2, never a
traceback."""
from __future__ import annotations

import sys
from typing import Callable

from .registry import UsageError


def guarded(main: Callable[[list[str]], int], argv: list[str] | None = None) -> int:
    """Call `main(argv)` (default: the process's arguments); a UsageError becomes `error: <message>` on
    stderr and exit code 2."""
    try:
        return main(sys.argv[1:] if argv is None else argv)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
