"""The run folder's lock, `.lock`: flock(2)ed while a process trains the folder (released by the kernel when it
dies, so never stale) and holding its owner as JSON (pid, host, slurm_job, started); left in place after the
run (removing it would race with the next trainer). The trainer takes it; status, the launcher and the report
only ask who holds it. A sweep folder has one too, the launcher's (`sweepfolder.launching`), held while a
launch checks what is to run and records what it submits."""
from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Callable

from ..errors import UsageError
from .files import linked

LOCK = ".lock"
LOCK_TRIES = 10  # a reader (status) may hold the lock shared for an instant: retry briefly before refusing


class Busy(UsageError):
    """The folder is being trained by another process: one line naming the owner."""


def owner() -> dict[str, Any]:
    """Who this process is, as the lock file records it: pid, host, SLURM job (or null), start time."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    job = f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID")
    return {"pid": os.getpid(), "host": socket.gethostname(), "slurm_job": job,
            "started": time.strftime("%Y-%m-%d %H:%M:%S")}


def describe(who: dict[str, Any]) -> str:
    """An owner in words: 'pid 12 on node1, SLURM job 34_5, since 2024-01-01 12:00:00'."""
    if not who:
        return "an unknown process"
    parts = [f"pid {who.get('pid')} on {who.get('host')}"]
    parts += [f"SLURM job {who['slurm_job']}"] if who.get("slurm_job") else []
    parts += [f"since {who['started']}"] if who.get("started") else []
    return ", ".join(parts)


class FolderLock:
    """The one-trainer-per-folder lock: an exclusive flock on `<folder>/.lock`, held until `release()` or the
    process's death. `acquire` refuses with Busy, naming the owner, when another process holds it."""

    def __init__(self, fd: int, folder: Path) -> None:
        self.fd, self.folder = fd, folder

    @classmethod
    def acquire(cls, folder: Path, busy: Callable[[str], str] | None = None) -> FolderLock:
        """The lock of `folder`; Busy with `busy(the owner in words)` (default: the trainer's line) when another
        process holds it."""
        busy = busy or (lambda who: f"{folder} is being trained by another process ({who}): wait for it to end, "
                                    f"or stop it; the same command then resumes the run")
        path = folder / LOCK
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise linked(path) from e
            raise UsageError(f"cannot create {path} ({e.strerror}): the folder must be writable") from e
        for attempt in range(LOCK_TRIES):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt == LOCK_TRIES - 1:
                    os.close(fd)
                    raise Busy(busy(describe(holder(folder) or {}))) from None
                time.sleep(0.05)
            except OSError as e:  # a file system without flock (e.g. Lustre mounted noflock)
                print(f"warning: cannot lock {path} ({e.strerror}); nothing stops a second process from taking this "
                      f"folder", flush=True)
                break
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(owner()) + "\n").encode(), 0)
        except OSError as e:  # a full disk, a quota, a file system gone read-only
            os.close(fd)
            raise UsageError(f"cannot write {path} ({e.strerror}): free space (or fix the file system) and run the "
                             f"same command again") from e
        return cls(fd, folder)

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing the last descriptor releases the flock
            self.fd = -1


def holder(folder: Path) -> dict[str, Any] | None:
    """The owner recorded in the folder's lock while a process holds it ({} when it is held but the record is
    unreadable); None when nobody trains the folder."""
    try:
        fd = os.open(folder / LOCK, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:  # none, or a link (which `runfolder.refuse_links` refuses): held by no trainer
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    except BlockingIOError:
        try:
            who = json.loads(os.pread(fd, 4096, 0) or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError):
            who = {}
        return who if isinstance(who, dict) else {}
    except OSError:
        return None
    finally:
        os.close(fd)
