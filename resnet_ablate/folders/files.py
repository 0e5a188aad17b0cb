"""How a run or sweep folder's files are opened, and the one error a file that cannot be read as it should
gives (`Damaged`). The package makes no link in such a folder, so it follows none: each file is opened without
following a link (`open_file`, O_NOFOLLOW, at every open: a link placed after a run started is refused as
well), and the folders inside one (a sweep's run folders, .submitit/, a tracker's) may not be links
(`refuse_links`). A link is one line, refused: whoever may place one in a shared folder could otherwise make a
resume append to, or train into, a file or folder elsewhere. A folder the user names (run_dir, sweep_dir,
runs_root) may be reached through a link. Names that become folder or file names are checked as names
(`not_a_name`)."""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from ..errors import UsageError


class Damaged(UsageError):
    """A run-folder file that cannot be read as what it should be: one line naming it and what to do."""


def linked(path: Path) -> Damaged:
    """The one line for a link in a run or sweep folder (the package makes none there)."""
    return Damaged(f"{path} is a link, and the package makes none in a run or sweep folder: remove it (or put the "
                   f"file or folder itself there) and run again")


def refuse_links(folder: Path, names: list[str] | None = None) -> None:
    """Refuse a link among `names` in `folder` (default: all it holds), as `open_file` does for each file."""
    for name in os.listdir(folder) if names is None and os.path.isdir(folder) else names or []:
        if os.path.islink(folder / name):
            raise linked(folder / name)


def not_a_name(name: str) -> str:
    """Why `name`, which becomes a folder or file name (a spec's or budget's, a run's in sweep.yaml), is not one
    ('' when it is): a '/' or '..' in it would put what is written there outside its folder."""
    if name in ("", ".", ".."):
        return f"'{name}' names no folder of its own"
    bad = next((c for c in ("/", "\0") if c in name), None)
    return f"'{name}' holds {bad!r}, which makes it a path" if bad else ""


def open_file(path: Path, flags: int = os.O_RDONLY, mode: int = 0o666) -> int:
    """`os.open` of a run or sweep folder's file that follows no link at `path` (O_NOFOLLOW) and waits for no
    FIFO: a link, or anything but a regular file, is refused in one line (FileNotFoundError passes)."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK, mode)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise linked(path) from e
        if e.errno == errno.ENXIO:  # a FIFO opened for writing without a reader
            raise Damaged(f"{path} is not a regular file: remove it and run again") from e
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise Damaged(f"{path} is not a regular file: remove it and run again")
    return fd


def read_bytes(path: Path) -> bytes | None:
    """A run or sweep folder's file (`open_file`'s refusals), None where there is none."""
    try:
        fd = open_file(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    with os.fdopen(fd, "rb") as f:
        return f.read()


def read_text(path: Path, errors: str = "strict") -> str | None:
    data = read_bytes(path)
    return None if data is None else data.decode(errors=errors)


def present(path: Path) -> bool:
    """Whether a run or sweep folder holds an entry named so (a link, broken or not, counts: reading it is
    refused, never taken for a missing file)."""
    return os.path.lexists(path)
