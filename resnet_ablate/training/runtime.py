"""What a training process sets up before any run starts: the device, the precision, CPU threads and
determinism switches; and the data, each data set loaded once and put on the device for the runs that share
it. `prepare_inputs` checks (and fetches) the data and init weights of a whole sweep before anything runs."""
from __future__ import annotations

import os
import platform
import re
import warnings

import torch

from ..errors import UsageError, first_line, unknown
from ..models import transfer
from . import cifar_archive, datasets
from .config import Config, data_root
from .progress import cores, data_line, say


def resolve_device(name: str) -> torch.device:
    """The device `name` means (auto: a GPU when there is one); one line for a name that is none of auto, cpu,
    cuda, cuda:N."""
    if name not in ("auto", "cpu", "cuda") and re.fullmatch(r"cuda:\d+", name) is None:
        raise unknown("device", name, ["auto", "cpu", "cuda", "cuda:N"])
    available, why = _cuda()
    if name == "auto":
        return torch.device("cuda" if available else "cpu")
    if name.startswith("cuda") and not available:
        raise UsageError(f"device={name} but no CUDA GPU is available{f' (torch: {why})' if why else ''}; use "
                         f"device=cpu or device=auto")
    if name.startswith("cuda:") and int(name[5:]) >= torch.cuda.device_count():
        raise UsageError(f"device={name} but this machine has {torch.cuda.device_count()} CUDA GPU(s), cuda:0.."
                         f"cuda:{torch.cuda.device_count() - 1}; use one of them or device=cuda")
    return torch.device(name)


def _cuda() -> tuple[bool, str]:
    """Whether a CUDA GPU is usable, and why not in torch's words: its warning (a failed CUDA initialization) is
    kept for the one-line error rather than printed above it."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        available = torch.cuda.is_available()
    return available, first_line(str(caught[0].message)) if caught and not available else ""


def check_threads(cfgs: list[Config], cores: int, what: str, raise_it: str = "") -> None:
    """More threads than the machine's cores only wait for each other (threads=1000 did not finish 4 iterations in
    a minute): one line naming the cores (`what`: whose they are; `raise_it`: how to get more)."""
    most = max(c.threads for c in cfgs)
    if most > cores:
        raise UsageError(f"threads={most} is more than the {cores} {what}; use threads={cores} or fewer (0 = "
                         f"torch's choice){raise_it}")


def graph_device(device: torch.device) -> bool:
    """Whether training steps on `device` can be captured as CUDA graphs: on a CUDA GPU. (The CPU tests of the
    capture code, tests/standins.py, say yes for the CPU; `step.py` and `wide.py` ask here, by module attribute.)"""
    return device.type == "cuda"


def resolve_precision(name: str, device: torch.device) -> str:
    """`auto`: bf16 on GPUs that support it, fp32 elsewhere."""
    if name == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    return name


def setup(cfg: Config) -> tuple[torch.device, str]:
    """Device, precision, CPU threads and determinism switches for a process that trains `cfg`."""
    device = resolve_device(cfg.device)
    check_threads([cfg], cores(), "cores this process may use")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(cfg.deterministic)  # either way: a process may train several packs in turn
    torch.backends.cudnn.benchmark = not cfg.deterministic
    precision = resolve_precision(cfg.precision, device)
    if device.type == "cuda" and precision == "fp32":  # PyTorch lets cuDNN convolve in TF32 unless told otherwise
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    return device, precision


def device_name(device: torch.device) -> str:
    """The GPU's or CPU's name, for result.json."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"


def data_key(cfg: Config) -> tuple:
    """The settings that make a data set: runs with the same key share one copy on the device."""
    return cfg.dataset, cfg.data_dir, cfg.normalize, cfg.val_split, cfg.synthetic_size, cfg.image_size


def load_data(cfgs: list[Config], device: torch.device) -> dict[tuple, datasets.Data]:
    """Each distinct data set once, on the device, shared by the runs that use it."""
    cache: dict[tuple, datasets.Data] = {}
    for cfg in cfgs:
        key = data_key(cfg)
        if key not in cache:
            root, create = data_root(cfg)
            cache[key] = datasets.load(cfg.dataset, root, cfg.download, cfg.normalize, cfg.val_split,
                                      cfg.synthetic_size, cfg.image_size, create).to(device)
            say(data_line(cfg, cache[key]))
        if cfg.batch_size > len(cache[key].train):  # parse checks the sets whose size it knows; this, every one
            raise UsageError(f"batch_size={cfg.batch_size} is larger than the {len(cache[key].train)} training images "
                             f"of dataset={cfg.dataset} ({cache[key].source}); use batch_size={len(cache[key].train)} "
                             f"or less")
    return cache


def prepare_inputs(cfgs: list[Config]) -> None:
    """Before a sweep runs or submits anything: each data set is there (CIFAR fetched and extracted here, once,
    rather than by every job at the same time) and each init= file reads as a state dict; one-line UsageErrors
    otherwise, so that a missing data set is one message and not 50 crashed jobs."""
    for cfg in {data_key(c): c for c in cfgs}.values():
        root, create = data_root(cfg)
        if cfg.dataset in cifar_archive.CIFAR:
            cifar_archive.locate(cfg.dataset, root, cfg.download, create)
        elif cfg.dataset == "folder":
            datasets.folder_splits(root)
    for path in sorted({c.init for c in cfgs if c.init}):
        transfer.read_state_dict(path)
