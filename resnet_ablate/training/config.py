"""The run configuration: its keys (dataclass defaults = `recipe=default`'s values, on which a bare command
applies the default recipe, he2016; with the help line, section, allowed values and whether a key names what
is trained) and the keys registered entries add. What a config becomes in a run folder, its name and
config.yaml, is `configfile.py`'s.

The parameters of registered shortcuts, optimizers and schedules (`FAMILIES`) become config keys by being
registered (`config_type()` builds the dataclass from the core keys and the registries), so a new variant
needs no edit here; a parameter whose name clashes with another key fails at registration. Parsing and
validation are in `parse.py`.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from .. import plugins
from ..errors import UsageError
from ..models.cifar import DOWNSAMPLES
from ..models.resnet import ARCHS
from ..models.shortcuts import SHORTCUTS, Shortcut
from ..models.units import BLOCKS, PREACT_INPUTS, UNITS
from ..registry import Key, KeyedRegistry, Range, as_range, parameters
from ..values import override_text
from .optim import OPTIMIZERS, SCHEDULES
from .recipes import DEFAULT_RECIPE, RECIPES
from .tracking import TRACKERS

DATASETS = ("cifar10", "cifar100", "synthetic", "folder")
NORMALIZATIONS = ("channel", "pixel_mean")
PRECISIONS = ("auto", "bf16", "fp32")
PACK_MODES = ("streams", "wide")
SAMPLINGS = ("buffered", "eager")
LOGGERS = ("none", *TRACKERS)
DATA_ENV = "RESNET_ABLATE_DATA"
SECTIONS = ("model", "data", "recipe", "run")


def opt(default: Any, help: str, section: str, identity: bool = True,
        choices: Callable[[], Sequence[str]] | Sequence[str] | None = None, range: str | Range | None = None,
        family: str | None = None, applies: dict[str, Callable[[], Sequence[str]] | Sequence[str]] | None = None):
    """A config field with its help line; `identity=False` marks fields that do not change what is
    trained (paths, devices, logging), which are left out of run names and report groups. `choices`: the
    allowed names (or a function giving them, for a registry); `range`: the allowed numbers, an interval such
    as "[0, 1)" or a `Range` with its own words; `family`: the selector of the entries that declare the key
    (registered keys only); `applies`: the values other keys must have for this one to change what is trained
    (`{"schedule": ["step"]}`; a registered entry's key: its family's selector and the entries taking it).
    Elsewhere it is ignored with a note and left out of the run name (`not_applying`)."""
    if choices is not None and not callable(choices):
        choices = functools.partial(list, tuple(choices))
    where = {k: v if callable(v) else functools.partial(tuple, tuple(v)) for k, v in (applies or {}).items()}
    meta = {"help": help, "section": section, "identity": identity, "choices": choices, "range": as_range(range),
            "family": family, "applies": where}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class Config:
    """One training run's core keys. Defaults are `recipe=default`'s values (one BN over the whole batch,
    per-channel normalisation, precision auto); a bare command applies the default recipe (he2016, the 2016
    paper's: `recipes.py`) on top of them. The parameters of the registered shortcuts, optimizers and schedules
    are keys too: `config_type()` adds them; use its instances."""

    # model
    depth: int = opt(110, "arch=cifar: 6n+2 (basic units) or 9n+2 (bottleneck units); arch=imagenet: 18, 34, 50, "
                     "101, 152", "model")
    arch: str = opt("cifar", "network layout: cifar = 3x3 stem, 3 stages (the papers' CIFAR nets); imagenet = 7x7 "
                    "stem + max-pool, 4 stages (torchvision's ResNet-18...152)", "model", choices=ARCHS.names)
    unit: str = opt("original", "residual unit (2016 paper, Fig. 4)", "model", choices=UNITS.names)
    shortcut: str = opt("identity", "shortcut (2016 paper, Fig. 2); none = plain net", "model", choices=SHORTCUTS.names)
    block: str = opt("auto", "unit body; auto = papers' choice (bottleneck for 164, 1001; arch=imagenet: 50 and up)",
                     "model", choices=lambda: ["auto", *BLOCKS])
    downsample: str = opt("auto", "shortcut where the dimension increases; auto = zeropad (basic), conv1x1 "
                          "(bottleneck; every arch=imagenet net, as torchvision)", "model",
                          choices=lambda: ["auto", *DOWNSAMPLES])
    groups: int = opt(1, "ResNeXt cardinality: groups of the bottleneck's 3x3 conv (1 = ResNet)", "model")
    width_per_group: int = opt(64, "ResNeXt width per group: the bottleneck's 3x3 has int(planes * width_per_group "
                               "/ 64) * groups channels (64 = ResNet)", "model")
    init: str = opt("", "arch=imagenet: start from this torchvision state_dict file (torch.save; its classifier "
                    "is replaced when the class count differs); empty = He init", "model")
    freeze: list[str] = opt([], "parts kept fixed (no gradient, not in the optimizer, BN in eval mode): stem, "
                            "stage1, stage2, ... or all_but_head", "model")
    stage_lr_mult: list[float] = opt([], "lr multipliers per stage, the stem with stage1 (one per stage: 3 for "
                                     "arch=cifar, 4 for arch=imagenet); the head keeps 1.0; empty = all 1.0",
                                     "model")
    preact_shortcut_input: str = opt("raw", "pre-activation units: what a zero-pad (option A) shortcut reads where "
                                     "a stage's first unit changes the shape: raw = x (package; the 2016 paper does "
                                     "not say), shared = the unit's BN-ReLU output, as fb.resnet.torch "
                                     "models/preresnet.lua:65-67,118-120", "model",
                                     choices=lambda: list(PREACT_INPUTS), applies={"shortcut": lambda: downsampling()})
    # data
    dataset: str = opt("cifar10", "data set; folder = an ImageFolder-style tree at data_dir (train/ and test/ "
                       "or val/, one folder per class)", "data", choices=lambda: list(DATASETS))
    data_dir: str = opt("", f"where the data sets live; empty = ${DATA_ENV} or ~/.cache/resnet_ablate "
                        "(dataset=folder: the tree itself, required)", "data", identity=False)
    image_size: int = opt(32, "dataset=folder: images are resized (short side) and centre-cropped to this "
                          "square once, when loaded (CIFAR and synthetic images are 32)", "data", range="(0, inf)")
    download: bool = opt(True, "download CIFAR when missing (torchvision's utilities, checksum checked)", "data",
                         identity=False)
    normalize: str = opt("channel", "channel = per-channel mean/std (fb.resnet.torch datasets/cifar10.lua:38-46, "
                         "the 2016 code); pixel_mean = per-pixel mean subtraction (2015 paper Sec. 4.2; the 2016 "
                         "paper: same as 2015)", "data", choices=lambda: list(NORMALIZATIONS))
    augment: bool = opt(True, "4-pixel zero pad, random crop of the image size, horizontal flip", "data")
    val_split: int = opt(0, "hold out this many training images as a validation set (2015: 5000)", "data",
                         range=Range("[0, 50000)", "0..49999"))
    synthetic_size: int = opt(512, "training images of dataset=synthetic (test: a quarter of it)", "data",
                              range="(0, inf)")
    # recipe
    recipe: str = opt(DEFAULT_RECIPE, f"a named bundle of defaults, applied before the command line's keys (which "
                      f"win) and printed in the resolved config; see 'recipes:' at the end of --help for each value "
                      f"and its source. A bare command trains {DEFAULT_RECIPE}, the 2016 paper's recipe (its values "
                      f"replace the defaults shown here); recipe=default keeps the defaults shown. Not part of a run's "
                      f"identity: its resolved settings are", "recipe", identity=False, choices=lambda: list(RECIPES))
    iterations: int = opt(64000, "training iterations", "recipe", range="(0, inf)")
    milestones: list[int] = opt([32000, 48000], "iterations where lr is divided by 10 (schedule=step)", "recipe",
                                applies={"schedule": ["step"]})
    optim: str = opt("sgd", "optimizer; each one's keys follow it", "recipe", choices=OPTIMIZERS.names)
    schedule: str = opt("step", "learning-rate schedule after warm-up; each one's keys follow it", "recipe",
                        choices=SCHEDULES.names)
    lr: float = opt(0.1, "learning rate after warm-up (onecycle: the peak)", "recipe", range="(0, inf)")
    warmup_iters: int = opt(400, "iterations at warmup_lr first (2016: all CIFAR runs; 2015: ResNet-110)", "recipe",
                            range="[0, inf)")
    warmup_lr: float = opt(0.01, "learning rate during warm-up", "recipe", range="(0, inf)")
    weight_decay: float = opt(1e-4, "weight decay (adamw: decoupled)", "recipe", range="[0, inf)")
    decay_bn: bool = opt(True, "apply weight decay to BN scale/shift too (as the papers' Torch/Caffe code)", "recipe")
    bn_momentum: float = opt(0.1, "BN running-statistics momentum (PyTorch convention)", "recipe",
                             range=Range("(0, 1]", "0 < bn_momentum <= 1 (the weight of a new batch, PyTorch "
                                                   "convention)"))
    batch_size: int = opt(128, "mini-batch size", "recipe", range="(0, inf)")
    bn_batch: int = opt(0, "ghost batch norm: training-mode BN statistics over consecutive groups of this many "
                        "images (0 = the whole batch, recipe=default; the other recipes set batch_size/2). 2015 and "
                        "2016 papers: 128 on two GPUs, 64 per BN (2015 Sec. 4.2, 2016 Appendix); fb.resnet.torch "
                        "TRAINING.md:9,15: 64; resnet-1k-layers README.md:62: 32", "recipe")
    residual_fp32: bool = opt(True, "precision=bf16: keep the residual stream (merges, unit outputs) in fp32; "
                              "false = in bf16, rounded at every unit (faster; the gate's conv and sigmoid stay fp32)",
                              "recipe", applies={"precision": ["auto", "bf16"]})
    seed: int = opt(0, "fixes init, data order, augmentation and dropout", "recipe",
                    range=Range(f"[0, {2**32})", "0 <= seed < 2**32"))
    fail_threshold: float = opt(20.0, "final test error (%) above which a run is recorded as fail", "recipe",
                                range=Range("[0, 100]", "a test error in %, 0..100"))
    # execution
    eval_every: int = opt(1000, "iterations between test evaluations (and checkpoints)", "run", identity=False,
                          range="(0, inf)")
    grad_probe_every: int = opt(0, "record per-unit gradient norms every this many iterations (0 = off)", "run",
                                identity=False, range=Range("[0, inf)", ">= 0 (0 = off)"))
    grad_probe_at: list[int] = opt([], "also probe at these iterations (0 = at initialization)", "run",
                                   identity=False)
    device: str = opt("auto", "auto = cuda when available, else cpu", "run", identity=False)
    precision: str = opt("auto", "auto = bf16 on GPUs that have it, else fp32; the recipes (he2016, the default, too) "
                         "set fp32, as the papers trained; fp32 on a GPU turns TF32 off; result.json records the "
                         "precision a run trained in, and the report groups by it", "run",
                         choices=lambda: list(PRECISIONS))
    cuda_graph: bool = opt(True, "on a GPU, capture each training step in a CUDA graph (false = eager loop)", "run",
                           identity=False)
    deterministic: bool = opt(False, "ask the GPU for deterministic kernels too", "run", identity=False)
    pack_mode: str = opt("streams", "how packed runs (a job's runs_per_job) step: streams = each run its own CUDA "
                         "graph on its own stream (numbers equal to the run alone); wide = K runs of one "
                         "architecture as one wide net (grouped convs, one optimizer; equal to alone to rounding, "
                         "see docs/speed.md)", "run", identity=False, choices=lambda: list(PACK_MODES))
    compile: bool = opt(False, "torch.compile the net (fused kernels, no CUDA graphs of its own; the step's own graph "
                        "captures them); start-up costs a compile, cached between a job's runs", "run", identity=False)
    sampling: str = opt("buffered", "buffered = each epoch's indices, crop offsets and flips drawn ahead into device "
                        "buffers read at a device step counter, so sampling and augmentation run inside the CUDA "
                        "graph; eager = drawn every step outside it; the same draws either way", "run",
                        identity=False, choices=lambda: list(SAMPLINGS))
    runs_root: str = opt("runs", "parent folder of auto-named run folders", "run", identity=False)
    run_dir: str = opt("", "run folder; empty = <runs_root>/<name from the settings>", "run", identity=False)
    logger: str = opt("none", "also log the metrics to TensorBoard (<run>/tensorboard/) or Weights & Biases; "
                      "the run folder stays the record", "run", identity=False, choices=lambda: list(LOGGERS))
    time_limit_s: float = opt(0.0, "checkpoint and stop before this many seconds are spent (checked every "
                              "iteration; 0 = none); the same command resumes", "run", identity=False,
                              range=Range("[0, inf)", ">= 0 (0 = none)"))
    heartbeat_s: float = opt(30.0, "print a progress line (iteration, lr, img/s, elapsed, ETA) every this many "
                             "seconds between evaluations (0 = only at evaluations)", "run", identity=False,
                             range=Range("[0, inf)", ">= 0 (0 = off)"))
    threads: int = opt(0, "CPU threads torch uses (0 = torch's choice: $OMP_NUM_THREADS, else one per core), at "
                       "most the cores (a SLURM job's slurm.cpus_per_task); on a busy or small machine 1 can be "
                       "several times faster", "run", identity=False,
                       range=Range("[0, inf)", ">= 0 (0 = torch's choice)"))


CORE_KEYS = tuple(f.name for f in dataclasses.fields(Config))


@dataclass(frozen=True)
class Family:
    """Registered entries whose parameters are config keys: the core key that names the entry in use
    (`selector`), their registry, and the core key their keys follow in run names (None: the end of the
    selector's section), fixed so that the names of existing runs stay as they are."""

    selector: str
    registry: KeyedRegistry
    after: str | None = None


FAMILIES = (Family("shortcut", SHORTCUTS), Family("optim", OPTIMIZERS, after="warmup_lr"),
            Family("schedule", SCHEDULES, after="warmup_lr"))
# The core keys that name a registered entry, with its registry: where packing reads what the entries declare they
# can do, and the entries a run records the plugins of.
ENTRIES = {"arch": ARCHS, "unit": UNITS, "shortcut": SHORTCUTS, "optim": OPTIMIZERS, "schedule": SCHEDULES}


def _state() -> tuple[int, ...]:
    """The registries' state, which every key is read through: the installed plugins are loaded first."""
    plugins.load()
    return tuple(f.registry.version for f in FAMILIES)


def registered_keys() -> dict[str, tuple[Family, Key]]:
    """Every registered entry's key with its family, in the order of FAMILIES (read-only; computed once per
    state of the registries: a sweep asks thousands of times)."""
    state = _state()
    if state not in _REGISTERED:
        _REGISTERED[state] = {k: (f, key) for f in FAMILIES for k, key in f.registry.keys().items()}
    return _REGISTERED[state]


_REGISTERED: dict[tuple[int, ...], dict[str, tuple[Family, Key]]] = {}


def shortcut_keys() -> dict[str, Key]:
    """Every registered shortcut parameter: (default, the shortcuts taking it, help text, ...) by name."""
    return SHORTCUTS.keys()


def _no_clash(family: Family) -> Callable[[str, type], None]:
    """Registration check: an entry's parameter may not reuse a core key or another family's key (a key has
    one meaning)."""

    def check(name: str, cls: type) -> None:
        for param in parameters(cls):
            if param in CORE_KEYS:
                raise UsageError(f"{family.registry.kind} '{name}': parameter '{param}' clashes with the config key "
                                 f"'{param}'; rename the parameter")
            for other in (f.registry for f in FAMILIES if f is not family and param in f.registry.keys()):
                raise UsageError(f"{family.registry.kind} '{name}': parameter '{param}' clashes with the {other.kind} "
                                 f"key '{param}' ({', '.join(other.keys()[param].owners)}); rename the parameter")

    return check


for _family in FAMILIES:
    _family.registry.add_check(_no_clash(_family))
_TYPES: dict[tuple, type[Config]] = {}


def config_type() -> type[Config]:
    """The Config dataclass with a field per registered key (in its selector's section, its help prefixed by
    the entries taking it), rebuilt when a registry changes; instances pickle by value (submitit jobs rebuild
    them)."""
    state = _state()
    if state not in _KINDS:
        keys = registered_keys()
        signature = tuple((k, repr(key)) for k, (_, key) in keys.items())
        if signature not in _TYPES:
            sections = {f.name: f.metadata["section"] for f in dataclasses.fields(Config)}
            extra = [(k, key.type, opt(key.default, f"{', '.join(key.owners)}: {key.help}".rstrip(": "),
                                       sections[family.selector], choices=key.choices, range=key.range,
                                       family=family.selector, applies={family.selector: key.owners}))
                     for k, (family, key) in keys.items()]
            _TYPES[signature] = dataclasses.make_dataclass(
                "Config", extra, bases=(Config,), namespace={"__reduce__": _reduce, "__module__": __name__})
        _KINDS[state] = _TYPES[signature]
    return _KINDS[state]


_KINDS: dict[tuple[int, ...], type[Config]] = {}


def _reduce(cfg: Config) -> tuple:
    return _rebuild, ({f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)},)


def _rebuild(values: dict[str, Any]) -> Config:
    return config_type()(**values)


def fields() -> dict[str, dataclasses.Field]:
    """Every config key (core and registered) with its field, grouped by section, each family's keys after its
    `after` key (read-only; one per config type)."""
    kind = config_type()
    if kind not in _FIELDS:
        found = {f.name: f for f in dataclasses.fields(kind)}
        following: dict[str, list[str]] = {}
        for k, (family, _) in registered_keys().items():
            section = found[family.selector].metadata["section"]
            anchor = family.after or [c for c in CORE_KEYS if found[c].metadata["section"] == section][-1]
            following.setdefault(anchor, []).append(k)
        order = [k for section in SECTIONS for c in CORE_KEYS if found[c].metadata["section"] == section
                 for k in (c, *following.get(c, ()))]
        _FIELDS[kind] = {k: found[k] for k in order}
    return _FIELDS[kind]


_FIELDS: dict[type, dict[str, dataclasses.Field]] = {}


def downsampling() -> list[str]:
    """The registered shortcuts that reach a changed shape through `downsample` (Shortcut's own projection; the
    1x1-conv shortcut convolves x itself, so a pre-activation unit feeds it its shared BN-ReLU, and the plain net
    has none): those `preact_shortcut_input` applies to."""
    return [s for s in SHORTCUTS.names() if SHORTCUTS.get(s).make_projection is Shortcut.make_projection]


def not_applying(value_of: Callable[[str], Any]) -> dict[str, tuple[str, tuple[str, ...]]]:
    """The keys that change nothing under these settings (`value_of(key)`; declared with `applies=`): each with
    the setting that rules it out ('schedule=cosine') and the values of that key under which it applies."""
    out = {}
    for key, where in _conditional().items():
        for selector, allowed in where.items():
            if value_of(selector) not in allowed:
                out[key] = (f"{selector}={override_text(value_of(selector))}", allowed)
                break
    return out


def _conditional() -> dict[str, dict[str, tuple[str, ...]]]:
    """Every key declared with `applies=`, with the allowed values of each key it depends on (computed once per
    state of the registries: a sweep asks thousands of times)."""
    state = _state()
    if state not in _CONDITIONAL:
        _CONDITIONAL[state] = {k: {sel: tuple(values()) for sel, values in f.metadata["applies"].items()}
                               for k, f in fields().items() if f.metadata["applies"]}
    return _CONDITIONAL[state]


_CONDITIONAL: dict[tuple, dict[str, dict[str, tuple[str, ...]]]] = {}


def selectors() -> list[str]:
    """The keys other keys' use depends on (shortcut, optim, schedule, unit, precision, ...)."""
    return list(dict.fromkeys(sel for where in _conditional().values() for sel in where))


def defaults() -> Config:
    """A config of all defaults."""
    return config_type()()


def default_data_dir() -> Path:
    return Path(os.environ.get(DATA_ENV) or Path.home() / ".cache" / "resnet_ablate")


def data_root(cfg: Config) -> tuple[Path, bool]:
    """Where the run's data sets live, and whether that folder may be created: only the built-in cache may; a
    data_dir or $RESNET_ABLATE_DATA that does not exist is more likely a typo than a wish for a new folder."""
    if cfg.data_dir:
        return Path(cfg.data_dir), False
    return default_data_dir(), not os.environ.get(DATA_ENV)
