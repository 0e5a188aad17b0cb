"""The typed run configuration: dataclass defaults = the papers' recipe, `key=value` overrides parsed
by OmegaConf, validation with one-line errors, and the `--help` text (allowed names from the registries)."""
from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .imagenet import resolve_imagenet_block
from .model import resolve_block, resolve_downsample, shortcut_parameters
from .registry import UsageError, closest
from .shortcuts import SHORTCUTS
from .tracking import TRACKERS, require as require_logger
from .units import BLOCKS, UNITS, check_body

ARCHS = ("cifar", "imagenet")
DATASETS = ("cifar10", "cifar100", "synthetic", "folder")
NORMALIZATIONS = ("channel", "pixel_mean")
PRECISIONS = ("auto", "bf16", "fp32")
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("step", "cosine", "onecycle")
LOGGERS = ("none", *TRACKERS)
DATA_ENV = "RESNET_ABLATE_DATA"


def _shortcut_default(name: str, param: str) -> Any:
    """A shortcut parameter's default, read from its class so the two cannot drift apart."""
    return shortcut_parameters(SHORTCUTS.get(name))[param]


def opt(default: Any, help: str, section: str, identity: bool = True, choices: Callable[[], list[str]] | None = None):
    """A config field with its help line; `identity=False` marks fields that do not change what is
    trained (paths, devices, logging), which are left out of run names and report groups."""
    meta = {"help": help, "section": section, "identity": identity, "choices": choices}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class Config:
    """One training run. Defaults are the papers' CIFAR recipe (2016 paper: warm-up for every run)."""

    # model
    depth: int = opt(110, "arch=cifar: 6n+2 (basic units) or 9n+2 (bottleneck units); arch=imagenet: 18, 34, 50, "
                     "101, 152", "model")
    arch: str = opt("cifar", "network layout: cifar = 3x3 stem, 3 stages (the papers' CIFAR nets); imagenet = 7x7 "
                    "stem + max-pool, 4 stages (torchvision's ResNet-18...152)", "model", choices=lambda: list(ARCHS))
    unit: str = opt("original", "residual unit (2016 paper, Fig. 4)", "model", choices=UNITS.names)
    shortcut: str = opt("identity", "shortcut (2016 paper, Fig. 2); none = plain net", "model", choices=SHORTCUTS.names)
    block: str = opt("auto", "unit body; auto = papers' choice (bottleneck for 164, 1001; arch=imagenet: 50 and up)",
                     "model", choices=lambda: ["auto", *BLOCKS])
    downsample: str = opt("auto", "shortcut where the dimension increases; auto = zeropad (basic), conv1x1 "
                          "(bottleneck; every arch=imagenet net, as torchvision)", "model",
                          choices=lambda: ["auto", "zeropad", "conv1x1"])
    groups: int = opt(1, "ResNeXt cardinality: groups of the bottleneck's 3x3 conv (1 = ResNet)", "model")
    width_per_group: int = opt(64, "ResNeXt width per group: the bottleneck's 3x3 has int(planes * width_per_group "
                               "/ 64) * groups channels (64 = ResNet)", "model")
    scale: float = opt(_shortcut_default("scaling", "scale"), "scaling: lambda on the shortcut", "model")
    residual_scale: float = opt(_shortcut_default("scaling", "residual_scale"), "scaling: factor on F", "model")
    gate_bias: float = opt(_shortcut_default("gating", "gate_bias"), "gating, shortcut_gating: initial b_g", "model")
    p: float = opt(_shortcut_default("dropout", "p"), "dropout: drop probability on the shortcut", "model")
    inverted: bool = opt(_shortcut_default("dropout", "inverted"), "dropout: rescale by 1/(1-p) (PyTorch) instead "
                         "of the paper's plain mask", "model")
    init: str = opt("", "arch=imagenet: start from this torchvision state_dict file (torch.save; its classifier "
                    "is replaced when the class count differs); empty = He init", "model")
    freeze: list[str] = opt([], "parts kept fixed (no gradient, not in the optimizer, BN in eval mode): stem, "
                            "stage1, stage2, ... or all_but_head", "model")
    stage_lr_mult: list[float] = opt([], "lr multipliers per stage, the stem with stage1 (one per stage: 3 for "
                                     "arch=cifar, 4 for arch=imagenet); the head keeps 1.0; empty = all 1.0",
                                     "model")
    # data
    dataset: str = opt("cifar10", "data set; folder = an ImageFolder-style tree at data_dir (train/ and test/ "
                       "or val/, one folder per class)", "data", choices=lambda: list(DATASETS))
    data_dir: str = opt("", f"where the data sets live; empty = ${DATA_ENV} or ~/.cache/resnet_ablate "
                        "(dataset=folder: the tree itself, required)", "data", identity=False)
    image_size: int = opt(32, "dataset=folder: images are resized (short side) and centre-cropped to this "
                          "square once, when loaded (CIFAR and synthetic images are 32)", "data")
    download: bool = opt(True, "download CIFAR when missing (torchvision's utilities, checksum checked)", "data",
                         identity=False)
    normalize: str = opt("channel", "channel = per-channel mean/std (2016); pixel_mean = per-pixel mean "
                         "subtraction (2015)", "data", choices=lambda: list(NORMALIZATIONS))
    augment: bool = opt(True, "4-pixel zero pad, random crop of the image size, horizontal flip", "data")
    val_split: int = opt(0, "hold out this many training images as a validation set (2015: 5000)", "data")
    synthetic_size: int = opt(512, "training images of dataset=synthetic (test: a quarter of it)", "data")
    # recipe
    iterations: int = opt(64000, "training iterations", "recipe")
    milestones: list[int] = opt([32000, 48000], "iterations where lr is divided by 10", "recipe")
    optim: str = opt("sgd", "optimizer (the papers: SGD with momentum)", "recipe", choices=lambda: list(OPTIMIZERS))
    schedule: str = opt("step", "step = /10 at milestones (papers); cosine = to 0 at the end; onecycle = "
                        "PyTorch's OneCycleLR shape", "recipe", choices=lambda: list(SCHEDULES))
    lr: float = opt(0.1, "learning rate after warm-up (onecycle: the peak)", "recipe")
    warmup_iters: int = opt(400, "iterations at warmup_lr first (2016: all CIFAR runs; 2015: ResNet-110)", "recipe")
    warmup_lr: float = opt(0.01, "learning rate during warm-up", "recipe")
    momentum: float = opt(0.9, "SGD momentum", "recipe")
    nesterov: bool = opt(False, "SGD: Nesterov momentum", "recipe")
    betas: list[float] = opt([0.9, 0.999], "adam, adamw: moment decay rates", "recipe")
    eps: float = opt(1e-8, "adam, adamw: denominator epsilon", "recipe")
    onecycle_pct: float = opt(0.3, "onecycle: fraction of the schedule spent rising to lr", "recipe")
    weight_decay: float = opt(1e-4, "weight decay (adamw: decoupled)", "recipe")
    decay_bn: bool = opt(True, "apply weight decay to BN scale/shift too (as the papers' Torch/Caffe code)", "recipe")
    bn_momentum: float = opt(0.1, "BN running-statistics momentum (PyTorch convention)", "recipe")
    batch_size: int = opt(128, "mini-batch size", "recipe")
    seed: int = opt(0, "fixes init, data order, augmentation and dropout", "recipe")
    fail_threshold: float = opt(20.0, "final test error (%) above which a run is recorded as fail", "recipe")
    # execution
    eval_every: int = opt(1000, "iterations between test evaluations (and checkpoints)", "run", identity=False)
    grad_probe_every: int = opt(0, "record per-unit gradient norms every this many iterations (0 = off)", "run",
                                identity=False)
    grad_probe_at: list[int] = opt([], "also probe at these iterations (0 = at initialization)", "run",
                                   identity=False)
    device: str = opt("auto", "auto = cuda when available, else cpu", "run", identity=False)
    precision: str = opt("auto", "auto = bf16 on GPUs that have it, else fp32", "run", choices=lambda: list(PRECISIONS))
    cuda_graph: bool = opt(True, "on a GPU, capture each training step in a CUDA graph (false = eager loop)", "run",
                           identity=False)
    deterministic: bool = opt(False, "ask the GPU for deterministic kernels too", "run", identity=False)
    runs_root: str = opt("runs", "parent folder of auto-named run folders", "run", identity=False)
    run_dir: str = opt("", "run folder; empty = <runs_root>/<name from the settings>", "run", identity=False)
    logger: str = opt("none", "also log the metrics to TensorBoard (<run>/tensorboard/) or Weights & Biases; "
                      "the run folder stays the record", "run", identity=False, choices=lambda: list(LOGGERS))
    time_limit_s: float = opt(0.0, "checkpoint and stop after this many seconds (0 = none); rerun to resume",
                              "run", identity=False)


FIELDS = {f.name: f for f in dataclasses.fields(Config)}


def default_data_dir() -> Path:
    return Path(os.environ.get(DATA_ENV) or Path.home() / ".cache" / "resnet_ablate")


def _type_name(f: dataclasses.Field) -> str:
    return str(f.type).replace("list[int]", "list of int")


def _as_list(override: str) -> str:
    """`freeze=all_but_head` -> `freeze=[all_but_head]`: a bare word for a list-of-strings key is a one-item list."""
    key, value = override.split("=", 1)
    return f"{key}=[{value}]" if FIELDS[key].type == "list[str]" and not value.startswith("[") else override


def _split(override: str) -> tuple[str, str]:
    if "=" not in override:
        raise UsageError(f"expected key=value, got '{override}'; see --help")
    key, value = override.split("=", 1)
    if key not in FIELDS:
        raise UsageError(f"unknown key '{key}'{closest(key, list(FIELDS))}; see --help for the keys")
    return key, value


def parse(overrides: list[str]) -> Config:
    """Config from `key=value` strings: unknown keys, wrong types and bad values raise one-line UsageErrors."""
    conf = OmegaConf.structured(Config)
    for override in overrides:
        key, value = _split(override)
        try:
            conf.merge_with(OmegaConf.from_dotlist([_as_list(override)]))
        except OmegaConfBaseException as e:
            expected = _type_name(FIELDS[key])
            raise UsageError(f"bad value for {key}: '{value}' is not a valid {expected}") from e
    cfg: Config = OmegaConf.to_object(conf)  # type: ignore[assignment]
    validate(cfg)
    return cfg


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise UsageError(message)


def validate(cfg: Config) -> None:
    """Semantic checks, each failing with one line that names the value and what is allowed."""
    for name, f in FIELDS.items():
        choices = f.metadata["choices"]
        if choices is not None and getattr(cfg, name) not in choices():
            value = getattr(cfg, name)
            raise UsageError(f"unknown {name} '{value}'{closest(str(value), choices())}; allowed: {', '.join(choices())}")
    block = (resolve_imagenet_block if cfg.arch == "imagenet" else resolve_block)(cfg.depth, cfg.block)
    resolve_downsample(block, cfg.downsample)
    check_body(block, cfg.groups, cfg.width_per_group)
    _check(0.0 <= cfg.p < 1.0, f"p={cfg.p} is out of range; allowed: 0 <= p < 1")
    for name in ("iterations", "batch_size", "eval_every", "synthetic_size"):
        _check(getattr(cfg, name) > 0, f"{name}={getattr(cfg, name)} must be positive")
    _check(cfg.lr > 0 and cfg.warmup_lr > 0, "lr and warmup_lr must be positive")
    _check(cfg.warmup_iters >= 0, f"warmup_iters={cfg.warmup_iters} must be >= 0")
    _check(list(cfg.milestones) == sorted(cfg.milestones) and all(0 < m for m in cfg.milestones),
           f"milestones={list(cfg.milestones)} must be increasing positive iterations")
    _check(len(cfg.betas) == 2 and all(0 <= b < 1 for b in cfg.betas),
           f"betas={list(cfg.betas)} must be two numbers in [0, 1)")
    _check(cfg.eps > 0, f"eps={cfg.eps} must be positive")
    _check(0 < cfg.onecycle_pct < 1, f"onecycle_pct={cfg.onecycle_pct} must be in (0, 1)")
    _check(not cfg.nesterov or (cfg.optim == "sgd" and cfg.momentum > 0),
           "nesterov=true needs optim=sgd and momentum > 0")
    _check(0 <= cfg.val_split < 50000, f"val_split={cfg.val_split} must be in 0..49999")
    _check(cfg.device in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", cfg.device) is not None,
           f"unknown device '{cfg.device}'; allowed: auto, cpu, cuda, cuda:N")
    _check(cfg.grad_probe_every >= 0 and all(i >= 0 for i in cfg.grad_probe_at),
           "grad_probe_every and grad_probe_at must be >= 0")
    _validate_data(cfg)
    _validate_transfer(cfg)
    require_logger(cfg.logger)


def _validate_data(cfg: Config) -> None:
    """dataset=folder needs its tree; image_size applies to it only."""
    _check(cfg.dataset != "folder" or bool(cfg.data_dir), "dataset=folder needs data_dir=PATH (the folder with "
           "train/ and test/ or val/)")
    _check(cfg.image_size > 0, f"image_size={cfg.image_size} must be positive")
    _check(cfg.dataset == "folder" or cfg.image_size == 32,
           f"image_size={cfg.image_size} applies to dataset=folder only; {cfg.dataset} images are 32x32")


def stage_names(arch: str) -> list[str]:
    """The freezable/lr-scaled stages of an arch: stage1..stage3 (cifar) or stage1..stage4 (imagenet)."""
    return [f"stage{i}" for i in range(1, (4 if arch == "imagenet" else 3) + 1)]


def _validate_transfer(cfg: Config) -> None:
    """init needs arch=imagenet; freeze names parts of this arch; one lr multiplier per stage."""
    _check(not cfg.init or cfg.arch == "imagenet", "init= loads torchvision weights into arch=imagenet nets only")
    parts = ["stem", *stage_names(cfg.arch)]
    for name in cfg.freeze:
        _check(name in [*parts, "all_but_head"],
               f"unknown freeze part '{name}'; allowed: {', '.join(parts)}, all_but_head")
    _check("all_but_head" not in cfg.freeze or len(cfg.freeze) == 1, "freeze=all_but_head stands alone")
    _check(not cfg.freeze or not (cfg.grad_probe_every or cfg.grad_probe_at),
           "gradient probes need every weight trainable; drop freeze= or the grad_probe settings")
    stages = len(stage_names(cfg.arch))
    _check(not cfg.stage_lr_mult or len(cfg.stage_lr_mult) == stages,
           f"stage_lr_mult needs {stages} values for arch={cfg.arch} (stem+stage1 ... stage{stages}), "
           f"got {len(cfg.stage_lr_mult)}")
    _check(all(m > 0 for m in cfg.stage_lr_mult), f"stage_lr_mult={list(cfg.stage_lr_mult)} must be positive")


def identity_items(cfg: Config) -> dict[str, Any]:
    """The settings that define what is trained (everything but paths, devices and logging)."""
    return {k: getattr(cfg, k) for k, f in FIELDS.items() if f.metadata["identity"]}


def run_name(cfg: Config) -> str:
    """A readable folder name: data set, depth, unit, shortcut, every other changed setting, seed."""
    base = ("dataset", "depth", "unit", "shortcut", "seed")
    defaults = Config()
    changed = [
        f"{k}={_fmt(v)}" for k, v in identity_items(cfg).items() if k not in base and v != getattr(defaults, k)
    ]
    return "_".join([cfg.dataset, f"d{cfg.depth}", cfg.unit, cfg.shortcut, *changed, f"s{cfg.seed}"])


def _fmt(value: Any) -> str:
    """A value for a folder name: lists joined by '-', a path by its file name."""
    if isinstance(value, list):
        return "-".join(map(str, value))
    return Path(value).name if isinstance(value, str) and os.sep in value else str(value)


def run_dir(cfg: Config) -> Path:
    return Path(cfg.run_dir) if cfg.run_dir else Path(cfg.runs_root) / run_name(cfg)


def to_yaml(cfg: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def from_yaml(path: Path) -> Config:
    """A config as written to a run folder (unknown keys from newer versions are an error)."""
    conf = OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.load(path))
    return OmegaConf.to_object(conf)  # type: ignore[return-value]


def help_text() -> str:
    """Every key with its type, default, meaning and, for registries, the allowed names."""
    lines = ["usage: python -m resnet_ablate.run [key=value ...]", ""]
    section = None
    for name, f in FIELDS.items():
        if f.metadata["section"] != section:
            section = f.metadata["section"]
            lines.append(f"{section}:")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        text = f"  {name}={_fmt(default) if not isinstance(default, list) else default}  ({_type_name(f)})  " \
               f"{f.metadata['help']}"
        if f.metadata["choices"] is not None:
            text += f"  [allowed: {', '.join(f.metadata['choices']())}]"
        lines.append(text)
    return "\n".join(lines)
