"""Where a CIFAR data set's extracted folder is: found under data_dir, extracted from its .tar.gz there (safely:
whole or not at all, plain files of bounded size only), or downloaded with its checksum checked; and the one-line
errors that say where to put the data otherwise."""
from __future__ import annotations

import secrets
import shutil
import tarfile
import zlib
from pathlib import Path

from ..errors import UsageError, first_line

# name: (folder in the archive, archive, md5 of the archive, train files, test files, label key, classes)
CIFAR = {
    "cifar10": ("cifar-10-batches-py", "cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a",
                [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], b"labels", 10),
    "cifar100": ("cifar-100-python", "cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85",
                 ["train"], ["test"], b"fine_labels", 100),
}
URL = "https://www.cs.toronto.edu/~kriz/"
WHERE = "point data_dir= (or $RESNET_ABLATE_DATA) at where it is"


def _extract(archive: Path, root: Path, folder_name: str) -> None:
    """Extract `folder_name`/ from the archive into a temporary folder beside it and rename it into place when
    complete, so a truncated archive or a killed extraction never leaves a half folder that later runs
    would take for the data set. Only plain files and folders under `folder_name`/ are written, with the
    process's umask (as every file the package writes), none larger than the real data set's
    (`EXTRACT_LIMITS`); a member escaping `root`, a link or a device is refused as unsafe, and nothing is kept."""
    tmp = root / f".{folder_name}.{secrets.token_hex(4)}.tmp"
    try:
        tmp.mkdir()  # with the umask (tempfile.mkdtemp would make it 0700)
        with tarfile.open(archive) as tar:
            _extract_members(tar, archive, tmp, folder_name)
        if not (tmp / folder_name).is_dir():
            raise UsageError(f"{archive} holds no {folder_name}/ folder")
        try:
            (tmp / folder_name).rename(root / folder_name)
        except OSError:  # another process extracted it first
            if not (root / folder_name).is_dir():
                raise
    except (tarfile.TarError, EOFError, zlib.error) as e:
        raise UsageError(f"{archive} is truncated or damaged ({type(e).__name__}: {first_line(e)}); delete it and "
                         f"download or copy it again") from e
    except OSError as e:
        raise UsageError(f"cannot extract {archive}: {first_line(e)}") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# The most a member and a whole CIFAR folder may hold when extracted, about a tenth above the real data sets'
# (CIFAR-10: five 31 MB training batches and a 31 MB test batch; CIFAR-100: a 155 MB training file, 31 MB test)
EXTRACT_LIMITS = {"cifar-10-batches-py": (34_000_000, 205_000_000), "cifar-100-python": (171_000_000, 205_000_000)}


def _extract_members(tar: tarfile.TarFile, archive: Path, into: Path, folder_name: str) -> None:
    """Write the archive's members under `folder_name`/ into `into`, one pass, each checked first (`_unsafe`,
    the size limits); other plain members are skipped."""
    member_limit, total_limit = EXTRACT_LIMITS[folder_name]
    total = 0
    for member in tar:
        why = _unsafe(member)
        if why:
            raise UsageError(f"{archive}: unsafe member {member.name} ({why}); nothing was extracted: get the archive "
                             f"from {URL} again")
        parts = Path(member.name).parts
        if not parts or parts[0] != folder_name:
            continue
        total += member.size
        if member.size > member_limit or total > total_limit:
            what = f"member {member.name} is {member.size:,} bytes" if member.size > member_limit else \
                f"its members add up to more than {total_limit:,} bytes"
            raise UsageError(f"{archive}: {what}, more than the real {folder_name}/ holds; nothing was extracted: get "
                             f"the archive from {URL} again")
        target = into.joinpath(*parts)
        if member.isdir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with tar.extractfile(member) as source, open(target, "xb") as out:  # open: mode 0666 less the umask
            shutil.copyfileobj(source, out, 1 << 20)


def _unsafe(member: tarfile.TarInfo) -> str:
    """Why a member may not be extracted (a path leaving the folder, a link, a device), or ''."""
    path = Path(member.name)
    if path.is_absolute() or ".." in path.parts:
        return "a path outside data_dir"
    if member.issym() or member.islnk():
        return "a link"
    if not (member.isfile() or member.isdir()):
        return "a device or other special file"
    return ""


def _too_deep(name: str, root: Path) -> bool:
    """Whether `root` is the extracted CIFAR folder itself rather than its parent."""
    folder_name, _, _, train_files, _, _, _ = CIFAR[name]
    return root.name == folder_name or (root / train_files[0]).is_file()


def locate(name: str, root: Path, download: bool, create: bool = True) -> Path:
    """The extracted folder of `name` under `root`: extracted from a .tar.gz there if needed, or
    downloaded (checksum checked) when allowed; otherwise a UsageError saying where to put the data.
    `root` is created for a download only when `create` (the built-in cache; a data_dir the user named that
    does not exist is a typo to report, not a folder to make)."""
    folder_name, archive_name, md5, *_ = CIFAR[name]
    folder, archive = root / folder_name, root / archive_name
    if folder.is_dir():
        return folder
    if _too_deep(name, root):
        raise UsageError(f"data_dir={root} is the {folder_name}/ folder itself; point data_dir at its parent, "
                         f"{root.parent}")
    if root.exists() and not root.is_dir():
        raise UsageError(f"data_dir {root} is a file, not a folder: {WHERE}, the folder holding {folder_name}/")
    if not root.is_dir() and not create:
        raise UsageError(f"data_dir {root} does not exist; create it (the data is fetched into it) or {WHERE}")
    if not archive.is_file() and download:
        from torchvision.datasets.utils import download_url

        try:
            download_url(URL + archive_name, str(root), archive_name, md5)
        except Exception as e:  # network errors come in many types (URLError, socket, SSL, HTTP)
            raise UsageError(
                f"{name} is not in {root} and could not be downloaded from {URL + archive_name} "
                f"({type(e).__name__}); put {archive_name} or its extracted {folder_name}/ folder there, or {WHERE}"
            ) from e
    if archive.is_file():
        _extract(archive, root, folder_name)
        return folder
    raise UsageError(f"{name} not found in {root}: put {archive_name} or its extracted {folder_name}/ folder there, "
                     f"or {WHERE} (download=false)")
