"""CIFAR-10/100 from the standard python layout (found, extracted or downloaded by `cifar_archive`),
synthetic data, ImageFolder-style trees (`dataset=folder`), and the papers' augmentation written as tensor ops
so it runs where the data lives (CPU or GPU).

Images are kept as uint8 (N, 3, S, S) tensors (S = 32 for CIFAR, `image_size` for a folder, decoded and
resized once); a batch is drawn, normalised, cropped and flipped on the data's device. A CIFAR folder
that is already there is read as it is (shapes and counts validated), so faithful copies such as a re-encoded
CIFAR-10 load too; only an archive `cifar_archive` downloads has its checksum checked before use. Every batch
file read is also compared with the official md5 sums (`OFFICIAL_MD5`): a label, never a refusal, which a run
records as `data_official` and the report needs before it compares a number with the papers'. A CIFAR folder's
decoded arrays and checks are kept in a cache outside it (`datacache.py`), so later processes skip them.
"""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from .. import safepickle
from ..errors import UsageError, first_line
from . import datacache
from .cifar_archive import CIFAR, locate
from .signals import check_stop

if TYPE_CHECKING:
    from torchvision.datasets import ImageFolder

# md5 of each official batch file, as torchvision 0.29 lists them (torchvision/datasets/cifar.py: CIFAR10 and
# CIFAR100 train_list, test_list).
OFFICIAL_MD5 = {
    "cifar10": {"data_batch_1": "c99cafc152244af753f735de768cd75f", "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
                "data_batch_3": "54ebc095f3ab1f0389bbae665268c751", "data_batch_4": "634d18415352ddfa80567beed471001a",
                "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb", "test_batch": "40351d587109b95175f43aff81a1287e"},
    "cifar100": {"train": "16019d7e3df5f24257cddd939b257f8d", "test": "f0ef6b0ae62326f3e7ffdfab6717acfc"},
}
OFFICIAL_COUNTS = (50000, 10000)
PAD = 4


@dataclass
class Split:
    """Images (N, 3, S, S) uint8 and labels (N,) int64 of one split."""

    images: torch.Tensor
    labels: torch.Tensor

    def to(self, device: torch.device) -> "Split":
        return Split(self.images.to(device), self.labels.to(device))

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Data:
    """A data set's splits, class count, normalisation (mean, std broadcastable to (3, S, S)) and
    `fingerprint`, the hash of what was read (see `fingerprint`)."""

    train: Split
    test: Split
    val: Split | None
    num_classes: int
    mean: torch.Tensor
    std: torch.Tensor
    fingerprint: str = ""
    source: str = ""  # where it was read from, for the start-up line
    official: bool = False  # every batch file has the official md5 (CIFAR only)

    def to(self, device: torch.device) -> "Data":
        val = self.val.to(device) if self.val is not None else None
        return Data(self.train.to(device), self.test.to(device), val, self.num_classes,
                    self.mean.to(device), self.std.to(device), self.fingerprint,
                    self.source, self.official)


def fingerprint(train: Split, test: Split, num_classes: int) -> str:
    """The data's identity: a hash of every image and label as read (before any hold-out), so the same data
    under another path or a copied archive matches, and another data set or a re-encoded copy does not. A run
    folder records it; reusing the folder with other data is refused."""
    h = hashlib.blake2b(digest_size=8)
    h.update(str((num_classes, tuple(train.images.shape), tuple(test.images.shape))).encode())
    for tensor in (train.images, train.labels, test.images, test.labels):
        h.update(tensor.contiguous().numpy().data)
    return h.hexdigest()


def _read_batch(path: Path, label_key: bytes, num_classes: int) -> tuple[np.ndarray, np.ndarray, str]:
    """One pickled CIFAR batch, validated: (n, 3072) uint8 images, n labels in range, and the file's md5. The
    pickle is read with an unpickler that builds only what a CIFAR batch holds (dicts, lists, bytes, numpy
    arrays), so a file in data_dir cannot run code."""
    try:
        raw = path.read_bytes()  # a pickle holds its arrays: none may ask for more than the file's size
        batch = safepickle.load(io.BytesIO(raw), safepickle.NUMPY_ARRAYS, encoding="bytes", max_bytes=len(raw))
        if not isinstance(batch, dict):
            raise TypeError(f"it holds a {type(batch).__name__}, not a dict")
        images = np.asarray(batch[b"data"])
        labels = np.asarray(batch[label_key], dtype=np.int64)
    except Exception as e:  # noqa: BLE001 - a file from elsewhere: whatever its allowed globals raise (LookupError...)
        raise UsageError(f"{path} is not a readable CIFAR batch file ({type(e).__name__}: {first_line(e)})") from e
    if images.dtype != np.uint8:  # float pixels were cast to uint8 without a word (0.7 became 0)
        raise UsageError(f"{path}: its images are {images.dtype}, not the uint8 pixels (0..255) of a CIFAR batch "
                         f"file; write them as uint8")
    if images.ndim != 2 or images.shape[1] != 3072 or len(labels) != len(images):
        raise UsageError(f"{path}: expected (n, 3072) images and n labels, got {images.shape} and {len(labels)}")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise UsageError(f"{path}: labels outside 0..{num_classes - 1}")
    return images, labels, md5(raw)


def md5(raw: bytes) -> str:
    """A batch file's md5, compared with OFFICIAL_MD5."""
    return hashlib.md5(raw, usedforsecurity=False).hexdigest()


def _read_split(folder: Path, files: list[str], label_key: bytes, num_classes: int) -> tuple[Split, dict[str, str]]:
    """A split's batch files as one Split, and each file's md5."""
    parts = [_read_batch(folder / name, label_key, num_classes) for name in files]
    images = np.concatenate([p[0] for p in parts]).reshape(-1, 3, 32, 32)
    labels = np.concatenate([p[1] for p in parts])
    return Split(torch.from_numpy(images), torch.from_numpy(labels)), dict(zip(files, (p[2] for p in parts)))


def read_cifar(name: str, root: Path, download: bool = True, create: bool = True) -> tuple[Split, Split, int]:
    """Train and test splits of CIFAR-10/100 from the standard python layout."""
    return read_cifar_folder(name, locate(name, root, download, create))[:3]


def read_cifar_folder(name: str, folder: Path) -> tuple[Split, Split, int, bool]:
    """Train and test splits of CIFAR-10/100 from an extracted folder, and whether every batch file is the
    official one (its md5 in OFFICIAL_MD5): a copy that is not loads all the same, labelled."""
    train, test, classes, md5s = _read_cifar_files(name, folder)
    _note_counts(folder, train, test)
    return train, test, classes, md5s == OFFICIAL_MD5[name]


def _read_cifar_files(name: str, folder: Path) -> tuple[Split, Split, int, dict[str, str]]:
    """The batch files of a CIFAR folder as splits, and each file's md5."""
    _, _, _, train_files, test_files, label_key, classes = CIFAR[name]
    train, train_md5 = _read_split(folder, train_files, label_key, classes)
    test, test_md5 = _read_split(folder, test_files, label_key, classes)
    return train, test, classes, {**train_md5, **test_md5}


def _note_counts(folder: Path, train: Split, test: Split) -> None:
    if (len(train), len(test)) != OFFICIAL_COUNTS:
        print(f"note: {folder} holds {len(train)} training and {len(test)} test images "
              f"(official: {OFFICIAL_COUNTS[0]} and {OFFICIAL_COUNTS[1]})", flush=True)


def _cifar_checked(name: str, folder: Path, normalize: str, val_split: int) -> Data:
    """A CIFAR folder read and checked (md5s, fingerprint, statistics), from the cache where it holds an
    entry for these files as they are now; what was computed is written back for the next process."""
    _, _, _, train_files, test_files, _, classes = CIFAR[name]
    entry = datacache.entry_dir(folder, [*train_files, *test_files])
    cached = datacache.read(entry, lambda arrays: fingerprint(*_splits(arrays), classes))
    changed = cached is None
    if cached is None:
        train, test, _, md5s = _read_cifar_files(name, folder)
        checks = {"md5": md5s, "fingerprint": fingerprint(train, test, classes), "stats": {}}
        arrays = {"train_images": train.images.numpy(), "train_labels": train.labels.numpy(),
                  "test_images": test.images.numpy(), "test_labels": test.labels.numpy()}
    else:
        (train, test), (arrays, checks) = _splits(cached[0]), (None, cached[1])
    _note_counts(folder, train, test)
    _check_val_split(val_split, train, name)
    train, val = hold_out(train, val_split)
    key = datacache.stats_key(normalize, val_split)
    if key in checks["stats"]:
        mean, std = (torch.tensor(v, dtype=torch.float32) for v in checks["stats"][key])
    else:
        mean, std = statistics(train.images, normalize)
        checks["stats"][key], changed = [mean.tolist(), std.tolist()], True
    if changed:
        datacache.write(entry, arrays, checks)
    official = checks["md5"] == OFFICIAL_MD5[name]
    source = f"{folder.resolve()}; " + ("the official files (md5)" if official else
                                        "not the official files (md5 differ): no comparison with the papers")
    return Data(train, test, val, classes, mean, std, checks["fingerprint"], source, official)


def _splits(arrays: dict[str, np.ndarray]) -> tuple[Split, Split]:
    return (Split(torch.from_numpy(arrays["train_images"]), torch.from_numpy(arrays["train_labels"])),
            Split(torch.from_numpy(arrays["test_images"]), torch.from_numpy(arrays["test_labels"])))


def synthetic(size: int, num_classes: int = 10) -> tuple[Split, Split, int]:
    """Small learnable random data of CIFAR shape: a colour per class plus noise, always the same
    images (seeded independently of the run seed). Test set: a quarter of `size`."""
    g = torch.Generator().manual_seed(12345)
    colours = torch.randint(40, 216, (num_classes, 3, 1, 1), generator=g)

    def make(n: int) -> Split:
        labels = torch.arange(n) % num_classes
        noise = torch.randint(-40, 41, (n, 3, 32, 32), generator=g)
        return Split((colours[labels] + noise).clamp(0, 255).to(torch.uint8), labels)

    return make(size), make(max(size // 4, num_classes)), num_classes


def _image_folder(folder: Path, image_size: int) -> ImageFolder:
    """torchvision's ImageFolder over `folder`, decoding to RGB, resizing the short side to `image_size`
    and centre-cropping a square; a one-line UsageError for a folder without class folders or images."""
    from torchvision import datasets, transforms

    resize = transforms.Compose([transforms.Resize(image_size), transforms.CenterCrop(image_size),
                                 transforms.PILToTensor()])
    try:
        return datasets.ImageFolder(str(folder), transform=resize)
    except (FileNotFoundError, OSError) as e:
        raise UsageError(f"{folder}: {first_line(e)}") from e


def _decode(dataset: ImageFolder) -> Split:
    """Every image of an ImageFolder decoded once into uint8 (N, 3, S, S) and its labels (N,)."""
    try:
        images = torch.stack([check_stop() or dataset[i][0] for i in range(len(dataset))])  # a stop ends it here
    except OSError as e:
        raise UsageError(f"cannot decode an image: {e}") from e
    return Split(images, torch.tensor(dataset.targets, dtype=torch.int64))


def folder_splits(root: Path) -> tuple[Path, Path]:
    """The train/ and test/ (or val/) folders of a dataset=folder tree; one-line UsageErrors when missing."""
    if not (root / "train").is_dir():
        raise UsageError(f"dataset=folder needs {root / 'train'}/ with one folder per class (and test/ or val/)")
    test_dir = next((root / n for n in ("test", "val") if (root / n).is_dir()), None)
    if test_dir is None:
        raise UsageError(f"dataset=folder needs {root / 'test'}/ or {root / 'val'}/ next to train/")
    classes = sorted(d.name for d in (root / "train").iterdir() if d.is_dir())
    if len(classes) == 1:  # trained to 'done' at 0 % error: one class is no classification
        raise UsageError(f"dataset=folder needs at least two class folders in {root / 'train'}/; it has one, "
                         f"{classes[0]}")
    return root / "train", test_dir


def read_folder(root: Path, image_size: int) -> tuple[Split, Split, int]:
    """Train and test splits of an ImageFolder-style tree: `root/train/<class>/*` and `root/test/` (or
    `root/val/`) with the same class folders, resized to `image_size` squares."""
    train_dir, test_dir = folder_splits(root)
    train, test = _image_folder(train_dir, image_size), _image_folder(test_dir, image_size)
    if train.classes != test.classes:
        differ = sorted(set(train.classes) ^ set(test.classes))
        raise UsageError(f"{root / 'train'} and {test_dir} have different class folders: "
                         f"{', '.join(differ[:5])}{' ...' if len(differ) > 5 else ''} only in one of them")
    decoded, memory = (len(train) + len(test)) * 3 * image_size ** 2, available_memory()
    if memory is not None and decoded > memory:  # image_size=100000 grew past 10 GB in 50 s before
        raise UsageError(f"image_size={image_size}: the {len(train) + len(test)} images of {root} decode to "
                         f"{decoded / 1e9:.3g} GB (N*3*S^2 bytes), more than the {memory / 1e9:.3g} GB of memory "
                         f"available; use a smaller image_size")
    return _decode(train), _decode(test), len(train.classes)


def available_memory() -> int | None:
    """The bytes of memory available to a new allocation (Linux's MemAvailable), None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError, IndexError):
        return None


def hold_out(train: Split, n: int) -> tuple[Split, Split | None]:
    """Split off `n` training images as a validation set: a fixed choice (seed 0), the same for all runs."""
    if n == 0:
        return train, None
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
    keep, val = order[:-n].sort().values, order[-n:].sort().values
    return Split(train.images[keep], train.labels[keep]), Split(train.images[val], train.labels[val])


def statistics(images: torch.Tensor, normalize: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std on the [0, 255] scale: per channel (mean/std), or per pixel (mean image, std 1)."""
    x = images.double()
    if normalize == "pixel_mean":
        return x.mean(0).float(), torch.ones(1, 1, 1)
    return x.mean((0, 2, 3)).float().view(3, 1, 1), x.std((0, 2, 3)).float().view(3, 1, 1)


def load(dataset: str, data_dir: Path, download: bool, normalize: str, val_split: int, synthetic_size: int,
         image_size: int = 32, create: bool = True) -> Data:
    """The data set with its training split's normalisation statistics, on the CPU (`create`: see `locate`)."""
    if dataset in CIFAR:
        return _cifar_checked(dataset, locate(dataset, data_dir, download, create), normalize, val_split)
    if dataset == "synthetic":
        (train, test, classes), source = synthetic(synthetic_size), "generated, seed 12345"
    else:
        (train, test, classes), source = read_folder(data_dir, image_size), str(data_dir.resolve())
    _check_val_split(val_split, train, dataset)
    identity = fingerprint(train, test, classes)
    train, val = hold_out(train, val_split)
    mean, std = statistics(train.images, normalize)
    return Data(train, test, val, classes, mean, std, identity, source)


def _check_val_split(val_split: int, train: Split, dataset: str) -> None:
    if val_split >= len(train):
        raise UsageError(f"val_split={val_split} leaves no training images (dataset={dataset} has {len(train)}); use "
                         f"val_split={len(train) - 1} or less")


def normalize_images(images: torch.Tensor, data: Data) -> torch.Tensor:
    """uint8 images to float, normalised with the training statistics."""
    return (images.float() - data.mean) / data.std


def augment(images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, data: Data) -> torch.Tensor:
    """Normalise, then zero-pad by 4 (zeros in normalised space, as the papers' Torch code), crop SxS (the
    images' size) at `offsets` (B, 2) in 0..8 and flip where `flips` (B,) is true; written as gathers so it
    runs on the data's device. Normalising first keeps a per-pixel mean (`pixel_mean`) aligned with the pixels
    it was computed on; a per-channel one gives the same either way."""
    b, s = images.shape[0], images.shape[-1]
    ar = torch.arange(s, device=images.device)
    rows = offsets[:, :1] + ar - PAD
    cols = offsets[:, 1:] + torch.where(flips[:, None], s - 1 - ar, ar) - PAD
    valid = ((rows >= 0) & (rows < s))[:, None, :, None] & ((cols >= 0) & (cols < s))[:, None, None, :]
    rows, cols = rows.clamp(0, s - 1), cols.clamp(0, s - 1)
    x = normalize_images(images, data)
    x = x.gather(2, rows[:, None, :, None].expand(b, 3, s, s))
    x = x.gather(3, cols[:, None, None, :].expand(b, 3, s, s))
    return x * valid


class Sampler:
    """The training stream: shuffled epochs back to back, and per-image crop offsets and flips, all
    drawn from one generator seeded with the run seed; its state is part of a checkpoint."""

    def __init__(self, n: int, batch_size: int, seed: int, device: torch.device, augment: bool) -> None:
        self.n, self.batch_size, self.device, self.augment = n, batch_size, device, augment
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.order = torch.randperm(n, generator=self.generator, device=device)
        self.pos = 0

    def next(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Indices (B,), crop offsets (B, 2) and flips (B,) of the next batch. On a GPU `order` may have been
        made on the main stream (start, resume) and is used, and dropped at an epoch's end, on the run's stream:
        `record_stream` keeps the allocator from reusing its memory before this stream is done with it."""
        if self.device.type == "cuda":
            self.order.record_stream(torch.cuda.current_stream(self.device))
        parts, need = [], self.batch_size
        while need:
            if self.pos == self.n:
                self.order = torch.randperm(self.n, generator=self.generator, device=self.device)
                self.pos = 0
            take = min(need, self.n - self.pos)
            parts.append(self.order[self.pos : self.pos + take])
            self.pos, need = self.pos + take, need - take
        idx = torch.cat(parts) if len(parts) > 1 else parts[0]
        if not self.augment:
            return idx, torch.full((self.batch_size, 2), PAD, device=self.device), torch.zeros(
                self.batch_size, dtype=torch.bool, device=self.device)
        offsets = torch.randint(0, 2 * PAD + 1, (self.batch_size, 2), generator=self.generator, device=self.device)
        flips = torch.randint(0, 2, (self.batch_size,), generator=self.generator, device=self.device).bool()
        return idx, offsets, flips

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "order": self.order.cpu(), "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.order, self.pos = state["order"].to(self.device), state["pos"]
