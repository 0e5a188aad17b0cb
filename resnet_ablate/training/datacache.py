"""The checks of a CIFAR folder done once per machine, not once per process: a sweep's hundred jobs read the
same batch files, and decoding their pickles, the md5 of every file, the data's fingerprint and the per-pixel
mean took ~2.5 s of each job's start-up.

An entry holds the decoded images and labels (`arrays.npz`) and `checks.json`: each file's md5, the
fingerprint, and the normalisation statistics by (normalize, val_split). It is keyed on the folder's real
path and each batch file's size, `mtime_ns` and inode, so a changed or replaced file makes a new entry. It
lives under $RESNET_ABLATE_DATA_CACHE (default ~/.cache/resnet_ablate-data-cache, or under $XDG_CACHE_HOME),
never in a data folder (the default data_dir is ~/.cache/resnet_ablate). Files are written to a temporary name and
renamed. An entry that cannot be read, or whose arrays do not hash to its fingerprint, is ignored and rewritten, never
trusted; a cache that cannot be written is skipped with one note.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import first_line

ENV = "RESNET_ABLATE_DATA_CACHE"
VERSION = 1
ARRAYS, CHECKS = "arrays.npz", "checks.json"
SPLIT_ARRAYS = ("train_images", "train_labels", "test_images", "test_labels")


def cache_root() -> Path:
    """Where entries live: $RESNET_ABLATE_DATA_CACHE, else a folder of the user's cache beside the default data_dir."""
    if os.environ.get(ENV):
        return Path(os.environ[ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "resnet_ablate-data-cache"


def entry_dir(folder: Path, files: list[str]) -> Path:
    """The entry of these batch files as they are now (their size, mtime_ns and inode)."""
    stamps = [[name, st.st_size, st.st_mtime_ns, st.st_ino] for name in files for st in [(folder / name).stat()]]
    key = json.dumps([VERSION, str(folder.resolve()), stamps]).encode()
    return cache_root() / hashlib.blake2b(key, digest_size=12).hexdigest()


def read(entry: Path, verify: Callable[[dict[str, np.ndarray]], str]) -> tuple[dict[str, np.ndarray], dict] | None:
    """The entry's arrays and checks, or None where it is missing, unreadable, or its arrays' fingerprint
    (`verify(arrays)`) is not the one it recorded."""
    try:
        checks = json.loads((entry / CHECKS).read_text())
        with np.load(entry / ARRAYS, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in SPLIT_ARRAYS}
        if not isinstance(checks, dict) or not isinstance(checks.get("md5"), dict) or \
                not isinstance(checks.get("stats", {}), dict) or verify(arrays) != checks.get("fingerprint"):
            return None
        return arrays, checks
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile):
        return None


def write(entry: Path, arrays: dict[str, np.ndarray] | None, checks: dict[str, Any]) -> None:
    """Write the entry's arrays (unless None: they are there already) and checks, each atomically."""
    try:
        entry.mkdir(parents=True, exist_ok=True)
        if arrays is not None:
            _atomic(entry / ARRAYS, lambda f: np.savez(f, **arrays))
        _atomic(entry / CHECKS, lambda f: f.write(json.dumps(checks).encode()))
    except OSError as e:
        print(f"note: the data cache in {cache_root()} was not written ({first_line(e)}); set {ENV}= to a "
              f"writable folder to skip the data checks in later runs", flush=True)


def stats_key(normalize: str, val_split: int) -> str:
    """What the normalisation statistics depend on besides the files."""
    return f"{normalize}/val_split={val_split}"


def _atomic(path: Path, fill: Callable[[Any], Any]) -> None:
    """Write `path` through a temporary file in its folder, renamed over it once complete."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            fill(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
