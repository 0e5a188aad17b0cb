"""Stopping a training process cleanly: SIGTERM/SIGUSR2 (preemption, a time limit) or a first Ctrl-C ask the
loop to checkpoint at the next iteration and stop; the runs are then paused and the same command resumes them.
The job wrapper (`sweeps/jobs.py`) hands the signal on to submitit afterwards."""
from __future__ import annotations

import contextlib
import os
import signal
import sys
from typing import Any, Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)


class StopRequest:
    """Set by SIGTERM/SIGUSR2 (preemption, time limit) or a first Ctrl-C: runs checkpoint at the next
    iteration and stop. The signal is answered at once with one line on stderr; a second Ctrl-C interrupts
    at once (KeyboardInterrupt)."""

    def __init__(self) -> None:
        self.reason: str | None = None

    def install(self) -> None:
        def handler(num: int, _frame) -> None:
            self.reason = signal.Signals(num).name
            if num == signal.SIGINT:
                signal.signal(signal.SIGINT, signal.default_int_handler)
                _answer("\nCtrl-C: checkpointing after this iteration, then stopping (Ctrl-C again stops at once, "
                        "losing the work since the last checkpoint)\n")
            else:
                _answer(f"{self.reason}: checkpointing after this iteration\n")

        with contextlib.suppress(ValueError):  # not the main thread
            for sig in STOP_SIGNALS:
                signal.signal(sig, handler)

    @contextlib.contextmanager
    def installed(self) -> Iterator[dict[str, Any]]:
        """`install` for the block, then the handlers it replaced back (so a notebook's Ctrl-C interrupts again
        once training returns); yields them by signal name."""
        saved = {s: signal.getsignal(s) for s in STOP_SIGNALS}
        self.install()
        try:
            yield {s.name: h for s, h in saved.items()}
        finally:
            with contextlib.suppress(ValueError, TypeError):  # not the main thread, or a handler set outside Python
                for sig, handler in saved.items():
                    signal.signal(sig, handler)


def _answer(text: str) -> None:
    """Write from a signal handler: straight to stderr's file descriptor (print could re-enter a write the
    handler interrupted); nothing where stderr has none."""
    try:
        os.write(sys.stderr.fileno(), text.encode())
    except (OSError, ValueError, AttributeError):
        pass
