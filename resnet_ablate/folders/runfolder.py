"""The run folder, the only interface between training and everything after it (launcher, status, report):

    config.yaml      resolved config, written at start; every reuse of the folder is checked against it. Its
                     first line is a comment holding a checksum of the rest (`config_text`), so a cut or
                     edited file reads as damaged without the registries; one without that line (older, or
                     made by hand) is read as it is. A run of a plugin's entry adds `plugins:`, the plugin
                     that provided it (`training/configfile.plugin_record`)
    metrics.jsonl    one line per evaluation, appended; fsynced at each checkpoint
    probes.jsonl     one line per gradient probe (when asked for), appended; fsynced at each checkpoint
    responses.json   layer responses (2015 Fig. 7) of the final net, or of a checkpoint on demand:
                     {iteration, source (end | checkpoint), split, images, std (one per 3x3 layer)}
    checkpoint.pt    latest state, written atomically (temp file + rename + folder fsync); what it holds is
                     `training/checkpoint.py`'s (the one file here that needs torch to read)
    result.json      written once at the end: status done | fail, and the final numbers
    .lock            the trainer's lock (`lock.py`)

Where a run stands follows from these files (`folder_state`; the words are `states.py`'s): result.json makes it
done or fail; without one it is running while the lock is held, else paused when it has a checkpoint (the next
run of the same command resumes it) and not started when it has none.
Files are created with the process's umask (as any file), so teammates on a shared file system can read them.
Temp files of atomic writes are `.<file>.<8 hex digits>.tmp` (`TEMP`); a killed writer's are removed by the next
trainer, and nothing else is.

A folder holding files but no config.yaml is not a run folder (`check_run_folder`): damaged when some are run
files (a checkpoint without its settings), another tool's otherwise; the lock and temp files a trainer killed
before it wrote config.yaml leaves do not count.

Damaged state is one UsageError naming the file and what to do (`Damaged`), never a silent repair: a torn
last line of a .jsonl file is what a kill leaves and is dropped; any other unreadable line is an error and
the file is left as it is.

Every file of a run or sweep folder is opened through `files.py`, which follows no link; an atomic write
renames over a file and never over a link.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import secrets
import subprocess
from pathlib import Path
from typing import IO, Any, Callable

import yaml

from ..errors import UsageError, first_line
from .files import Damaged, linked, open_file, present, read_text, refuse_links
from .lock import LOCK, holder
from .states import FINISHED, State

CONFIG, METRICS, PROBES, CHECKPOINT, RESULT = ("config.yaml", "metrics.jsonl", "probes.jsonl", "checkpoint.pt",
                                               "result.json")
RESPONSES = "responses.json"
# The run files, once: a folder holding any of them is a run folder (the report finds runs by them)
RUN_FILES = (CONFIG, METRICS, PROBES, RESPONSES, CHECKPOINT, RESULT)
TRACKER_DIRS = ("tensorboard", "wandb")  # what logger=tensorboard|wandb add to a run folder
TEMP_BYTES = 4  # random bytes in a temp file's name, as hex digits: `.<file>.<8 hex digits>.tmp`
TEMP = re.compile(rf"\.(?P<file>.+)\.[0-9a-f]{{{2 * TEMP_BYTES}}}\.tmp")
CONFIG_HEADER = "# resnet_ablate run settings; sha256 of the lines below: "
_YAML = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _create_temp(path: Path) -> tuple[int, Path]:
    """A new temp file beside `path` (mode 0666 less the umask), as (fd, path)."""
    tmp = path.parent / f".{path.name}.{secrets.token_hex(TEMP_BYTES)}.tmp"
    return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp


def sync_folder(folder: Path) -> None:
    """fsync a folder, so a rename or a new file in it survives a node crash (a no-op where unsupported)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _cannot_write(path: Path, error: BaseException) -> UsageError:
    """The one-line error for a failed write (a full disk, a quota, a read-only file system)."""
    reason = error.strerror if isinstance(error, OSError) and error.strerror else first_line(error)
    try:
        st = os.statvfs(path.parent)
        reason += f"; {st.f_bavail * st.f_frsize / 2**20:.0f} MB free there"
    except OSError:
        pass
    kept = f"the previous {path.name} is kept; " if path.exists() else ""
    return UsageError(f"cannot write {path} ({reason}): {kept}free space (or fix the file system) and run the "
                      f"same command again")


def write_atomic(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write through a temp file in the same folder, fsync, rename and fsync the folder, so a reader never
    sees half a file and a node crash leaves the old or the new one."""
    try:
        fd, tmp = _create_temp(path)
    except OSError as e:
        raise _cannot_write(path, e) from e
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if os.path.islink(path):  # a rename would replace the link; the package refuses it instead
            raise linked(path)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # torch.save reports a failed write as RuntimeError ("unexpected pos")
        tmp.unlink(missing_ok=True)
        raise _cannot_write(path, e) from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    sync_folder(path.parent)


def write_text(path: Path, text: str) -> None:
    write_atomic(path, lambda f: f.write(text.encode()))


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2) + "\n")


def append_jsonl(path: Path, obj: dict) -> None:
    """Append one line (made durable by `sync_files` at the next checkpoint); a link is refused (`open_file`)."""
    try:
        with os.fdopen(open_file(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT), "a") as f:
            f.write(json.dumps(obj) + "\n")
    except OSError as e:
        raise _cannot_write(path, e) from e


def sync_files(*paths: Path) -> None:
    """fsync appended files that exist (before a checkpoint claims their lines)."""
    for path in paths:
        try:
            fd = open_file(path)
        except FileNotFoundError:
            continue
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def read_jsonl(path: Path, required: str | None = "iteration") -> list[dict]:
    """The lines of a .jsonl file as dicts, each with the key `required`. A torn last line (a killed writer)
    is dropped; any other line that is not such a JSON object is Damaged, naming the file and line."""
    text = read_text(path, errors="replace")
    if text is None:
        return []
    lines = text.splitlines()
    rows = []
    for number, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
            problem = "" if isinstance(row, dict) and (required is None or required in row) else \
                f"a line without '{required}'"
        except json.JSONDecodeError as e:
            row, problem = None, f"not JSON: {e.msg}"
        if problem and number == len(lines) and not problem.startswith("a line"):
            break  # torn last line
        if problem:
            raise Damaged(f"{path} line {number} is damaged ({problem}); nothing was changed: repair or delete "
                          f"that line and run again")
        rows.append(row)
    return rows


def rewrite_jsonl(path: Path, rows: list[dict]) -> None:
    """Make a .jsonl file hold exactly `rows` (lines past a checkpoint dropped, a torn last line dropped, a
    line the checkpoint kept put back); the file is rewritten only when that changes it."""
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if text != (read_text(path, errors="replace") or ""):
        write_text(path, text)


def probe_stages(shapes: list) -> list[int]:
    """The stage (1, 2, ...) of every unit of a probes.jsonl line, from its `unit_shape`: a new one starts where
    the unit's input shape changes."""
    out: list[int] = []
    for i, shape in enumerate(shapes):
        out.append(1 if i == 0 else out[-1] + (shape != shapes[i - 1]))
    return out


def read_responses(folder: Path) -> dict | None:
    """responses.json, or None when the run has none (or an unreadable one: the report then draws without it)."""
    path = folder / RESPONSES
    try:
        text = read_text(path)
        data = json.loads(text) if text is not None else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("std"), list) else None


def read_result(folder: Path) -> dict | None:
    """result.json as a dict, None when there is none; Damaged when it is not a JSON object with a status."""
    path = folder / RESULT
    try:
        text = read_text(path)
        if text is None:
            return None
        result = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise Damaged(f"{path} is damaged (not JSON: {first_line(e)}): delete it to resume the run from its "
                      f"checkpoint") from e
    if not isinstance(result, dict) or result.get("status") not in FINISHED:
        raise Damaged(f"{path} is damaged (no status done or fail): delete it to resume the run from its checkpoint")
    return result


def config_text(body: str) -> str:
    """config.yaml's text: `body` (the resolved config as YAML) under a comment line holding its checksum."""
    return f"{CONFIG_HEADER}{_checksum(body)}\n{body}"


def _checksum(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def written_by_package(folder: Path) -> bool:
    """Whether the folder's config.yaml starts with the checksum line the package writes (a trainer, lr_find)."""
    try:
        return (read_text(folder / CONFIG, errors="replace") or "").startswith(CONFIG_HEADER)
    except (OSError, Damaged):
        return False


def read_config_mapping(folder: Path) -> dict[str, Any] | None:
    """config.yaml as plain data (PyYAML's safe loader: no torch, no registries), None when there is none;
    Damaged when it is empty, not YAML, not a mapping, or not what its checksum line says (cut or edited).
    Checking its keys and values against the registries is `training/writer.read_config`'s, which every
    training command does."""
    path = folder / CONFIG
    try:
        text = read_text(path)
        if text is None:
            return None
        data = yaml.load(text, Loader=_YAML)
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise _damaged_config(path, f"not valid YAML: {first_line(e)}") from e
    if not isinstance(data, dict):
        raise _damaged_config(path, "not a mapping" if text.strip() else "empty file")
    first, _, body = text.partition("\n")
    if first.startswith(CONFIG_HEADER) and first.removeprefix(CONFIG_HEADER).strip() != _checksum(body):
        raise _damaged_config(path, "cut or edited since the run wrote it: the checksum on its first line does not "
                                    "match")
    return data


def _damaged_config(path: Path, problem: str) -> Damaged:
    return Damaged(f"{path} is damaged ({problem}): put back the run's config.yaml, or remove the folder to train "
                   f"the run again")


def contents(folder: Path) -> list[str]:
    """The names in a folder but the lock and the temp files of atomic writes (what a trainer killed before it
    wrote config.yaml may leave), sorted; [] for a folder that does not exist."""
    try:
        names = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(n for n in names if n != LOCK and TEMP.fullmatch(n) is None)


def missing_config(folder: Path, names: list[str]) -> Damaged | None:
    """Damaged for a folder holding run files (`names`: its contents) but no config.yaml, else None."""
    found = [n for n in names if n in RUN_FILES]
    if CONFIG in names or not found:
        return None
    return Damaged(f"{folder} holds {', '.join(found)} but no {CONFIG}: put back the run's {CONFIG}, or remove the "
                   f"folder to train the run again")


def check_readable(folder: Path) -> dict | None:
    """Every file of a run folder that says where it stands read as what it should be: config.yaml (present
    beside run files, and sound), result.json, the metrics and probe lines; result.json's contents (None
    without one). Damaged naming the first that is not, or a link among its files."""
    refuse_links(folder)
    missing = missing_config(folder, contents(folder))
    if missing is not None:
        raise missing
    read_config_mapping(folder)
    result = read_result(folder)
    for name in (METRICS, PROBES):
        read_jsonl(folder / name)
    return result


def folder_state(folder: Path, member: bool = False) -> tuple[State, str]:
    """Where a run stands by its folder alone (a sweep's job records may say more, `jobstate.job_state`), with
    fail's reason and damaged's line: done or fail (result.json), running (its lock is held), paused (a
    checkpoint), else not started; damaged when a file that says so cannot be read (`check_readable`), as the
    next launch and the report find it, and (`member`: a sweep's run folder, named by the package) when the
    folder is a link."""
    try:
        if member and os.path.islink(folder):
            raise linked(folder)
        result = check_readable(folder)
    except Damaged as e:
        return State.DAMAGED, str(e)
    if result is not None:
        return State(result["status"]), str(result.get("reason") or "")
    if holder(folder) is not None:
        return State.RUNNING, ""
    return (State.PAUSED if present(folder / CHECKPOINT) else State.NOT_STARTED), ""


def create_folder(folder: Path, key: str = "run_dir") -> None:
    """mkdir -p, as one line when a file is in the way or the parent is not writable."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError as e:
        raise UsageError(f"{key}: {folder} is a file, not a folder: choose another {key}") from e
    except OSError as e:
        raise UsageError(f"{key}: cannot create the folder {folder} ({e.strerror}): choose another {key}") from e


def remove_stale_temps(folder: Path) -> list[Path]:
    """Delete the temp files killed writers of run files left, exactly those (`TEMP`: an editor's swap file
    is not one); call with the folder's lock held. Returns them."""
    stale = [folder / n for n in os.listdir(folder) if (m := TEMP.fullmatch(n)) and m["file"] in RUN_FILES]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def git_commit() -> str | None:
    """The package's git commit (with '-dirty' for uncommitted changes), or None outside a checkout:
    recorded in result.json and sweep.yaml, read when a run starts (not whatever HEAD is at its end)."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("-dirty" if dirty else "")
