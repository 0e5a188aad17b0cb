"""Stopping a training process cleanly: SIGTERM/SIGUSR2 (preemption, a time limit) or a first Ctrl-C ask the
loop to checkpoint at the next iteration and stop; the runs are then paused and the same command resumes them.
The job wrapper (`sweeps/jobs.py`) hands the signal on to submitit afterwards.

A command-line process holds SIGINT/SIGTERM/SIGUSR2 from its first line (`hold_stop_signals`): one that comes
while it starts (imports, data, model) is kept and taken up by the StopRequest once it listens, and one that comes
while a stopped process exits is answered and ignored (`ignore_stop_signals` once its exit code is known), so
either way the process exits 75, as a stop does (a Ctrl-C in its first second was a KeyboardInterrupt
traceback); a second Ctrl-C meanwhile ends it at once, exit 130."""
from __future__ import annotations

import contextlib
import os
import signal
import sys
from typing import Any, Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)
HELD_SIGNALS = STOP_SIGNALS
_held: list[str] = []  # stop signals that came while no StopRequest listened, by name
_listening: list[StopRequest] = []  # the StopRequests installed now, the innermost last


def hold_stop_signals() -> None:
    """From now on, SIGINT, SIGTERM and SIGUSR2 are kept rather than fatal while no StopRequest listens (start-up,
    exit): the next StopRequest to listen takes one up. For a process's first line; a library caller keeps its
    own."""
    for sig in HELD_SIGNALS:
        signal.signal(sig, _hold)


def release_stop_signals() -> None:
    """Undo `hold_stop_signals` (a launcher that trains nothing itself dies of SIGTERM as any process): the
    default handlers back, and a signal kept meanwhile raised again now."""
    for sig in HELD_SIGNALS:
        if signal.getsignal(sig) is _hold:
            signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL)
    for name in _held:
        signal.raise_signal(signal.Signals[name])


def ignore_stop_signals() -> None:
    """For a command-line process about to exit with its code: the stop signals ignored from here on (Python puts
    the default handlers back while it shuts down, so a held one would end the process with 143 there)."""
    for sig in HELD_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def _hold(num: int, _frame) -> None:
    if num == signal.SIGINT and "SIGINT" in _held:  # Ctrl-C twice while no training listens: at once, as a second
        _answer("\ninterrupted; a run folder keeps its last checkpoint and the same command resumes from it\n")
        os._exit(130)  # Ctrl-C in training does (cli.EXIT_INTERRUPTED), without a traceback even among the imports
    _held.append(signal.Signals(num).name)
    _answer(f"{signal.Signals(num).name}: stopping (after a checkpoint, where training has begun); the same "
            f"command resumes\n")


def passes_on(handler: Any) -> bool:
    """Whether a handler a StopRequest replaced is one to hand its signal on to (submitit's), not the hold."""
    return callable(handler) and handler is not _hold


class Stopped(Exception):
    """A stop asked for before training began, taken up by long work that comes first (decoding a folder data
    set): nothing was trained or written, and the same command starts again."""


def check_stop() -> None:
    """Raise Stopped when the StopRequest listening now was asked to stop (for long work before the first
    iteration, which would otherwise finish first: SIGTERM did not stop a data set decoding for minutes)."""
    if _listening and _listening[-1].reason:
        raise Stopped(_listening[-1].reason)


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
        if _held and self.reason is None:  # kept while the process started: stop at the first iteration
            self.reason = _held[0]
        _held.clear()
        _listening.append(self)

    @contextlib.contextmanager
    def installed(self) -> Iterator[dict[str, Any]]:
        """`install` for the block, then the handlers it replaced back (so a notebook's Ctrl-C interrupts again
        once training returns); yields them by signal name."""
        saved = {s: signal.getsignal(s) for s in STOP_SIGNALS}
        self.install()
        try:
            yield {s.name: h for s, h in saved.items()}
        finally:
            _listening.remove(self)
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
