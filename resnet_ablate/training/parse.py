"""`key=value` overrides -> a validated Config: OmegaConf does the typing, `validate` the meaning, each
mistake one line naming the value and what is allowed; and the `--help` text, built from the same fields
(allowed names from the registries)."""
from __future__ import annotations

import copy
import dataclasses
import math
import os
import re
from typing import Any, Callable

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ..models.resnet import ARCHS
from ..models.shortcuts import GATE_INITS
from ..models.units import UNITS, check_body
from ..registry import UsageError, closest, unknown
from .config import Config, config_type, defaults, fields, fmt, shortcut_keys
from .recipes import EPOCHS, RECIPES, Recipe, train_images
from .tracking import require as require_logger


def _type_name(f: dataclasses.Field) -> str:
    return getattr(f.type, "__name__", str(f.type)).replace("list[int]", "list of int")


def _as_list(key: str, override: str) -> str:
    """`freeze=all_but_head` -> `freeze=[all_but_head]`: a bare word for a list-of-strings key is a one-item list."""
    value = override.split("=", 1)[1]
    return f"{key}=[{value}]" if str(fields()[key].type) == "list[str]" and not value.startswith("[") else override


def split_override(override: str) -> tuple[str, str]:
    """(key, value) of a `key=value` string; one-line errors for a missing '=' or an unknown key."""
    if "=" not in override:
        raise UsageError(f"expected key=value, got '{override}'; see --help")
    key, value = override.split("=", 1)
    if key not in fields():
        raise UsageError(f"unknown key '{key}'{closest(key, list(fields()))}; see --help for the keys")
    return key, value


def check_unique(overrides: list[str]) -> None:
    """A key given twice on one command line (`depth=20 depth=32`) is a mistake, not "the last one wins"."""
    seen: dict[str, str] = {}
    for override in overrides:
        key = override.split("=", 1)[0] if "=" in override else ""
        if key in seen:
            raise UsageError(f"{key} is set twice ({seen[key]}, {override}); keep one")
        if key:
            seen[key] = override


def parse(overrides: list[str], notes: list[str] | None = None) -> Config:
    """Config from `key=value` strings: unknown keys, wrong types and bad values raise one-line UsageErrors.
    A `recipe=NAME` among them sets its defaults first (wherever it stands), the other keys then win.
    Parameters of another shortcut than the chosen one are put back to their defaults (so they stay out of
    the run name, and a grid over shortcuts and their parameters has no duplicates); `notes` gets a line
    saying so."""
    base = _conf({})
    named = [o.split("=", 1)[1] for o in overrides if o.startswith("recipe=")]
    recipe = RECIPES.get(named[-1] if named else defaults().recipe)  # an unknown name fails in validate
    if recipe is not None and recipe.values:
        base.merge_with(_recipe_values(recipe, _merged(_conf(recipe.flat()), overrides), overrides))
    cfg: Config = OmegaConf.to_object(_merged(base, overrides))  # type: ignore[assignment]
    validate(cfg)
    ignored = _drop_foreign_params(cfg, {o.split("=", 1)[0] for o in overrides})
    if ignored and notes is not None:
        owners = shortcut_keys()
        notes.append(f"note: {', '.join(ignored)} {'does' if len(ignored) == 1 else 'do'} not apply to "
                     f"shortcut={cfg.shortcut} (" + "; ".join(f"{k}: {', '.join(owners[k][1])}" for k in ignored)
                     + "); ignored, and left out of the run name")
    return cfg


def _merged(conf, overrides: list[str]):
    """`conf` with the `key=value` overrides merged in, in order: all at once (one merge costs about as much
    as ten values), and one by one when that fails, to name the bad value."""
    dotlist = [_as_list(split_override(override)[0], override) for override in overrides]
    try:
        conf.merge_with(OmegaConf.from_dotlist(dotlist))
        return conf
    except OmegaConfBaseException:
        pass
    for override, item in zip(overrides, dotlist):
        key, value = split_override(override)
        try:
            conf.merge_with(OmegaConf.from_dotlist([item]))
        except OmegaConfBaseException as e:
            raise UsageError(f"bad value for {key}: '{value}' is not a valid {_type_name(fields()[key])}") from e
    return conf


def _conf(values: dict):
    """The config's OmegaConf structure with `values` merged in. The structure is built once per config type
    and copied: `OmegaConf.structured` takes ~20 ms, a copy ~2 ms, and a sweep spec parses thousands."""
    kind = config_type()
    if kind not in _STRUCTURES:
        _STRUCTURES[kind] = OmegaConf.structured(kind)
    conf = copy.deepcopy(_STRUCTURES[kind])
    conf.merge_with(values)
    return conf


_STRUCTURES: dict[type, Any] = {}


def _recipe_values(recipe: Recipe, first, overrides: list[str]) -> dict:
    """The recipe's values for this run: its depth, batch size and training-set size taken from the recipe's
    plain values with the command line on top (a schedule in epochs needs the size, unless both iterations
    and milestones are given)."""
    images = train_images(first.dataset, first.val_split, first.synthetic_size)
    given = {o.split("=", 1)[0] for o in overrides}
    if images is None and EPOCHS in recipe.values and not {"iterations", "milestones"} <= given:
        raise UsageError(f"recipe={recipe.name} gives its schedule in epochs and dataset={first.dataset}'s size is "
                         f"known only when it is loaded; set iterations= and milestones= too")
    if first.batch_size <= 0:
        raise UsageError(f"batch_size={first.batch_size} must be positive")
    return recipe.resolve(first.depth, first.batch_size, images)


def _drop_foreign_params(cfg: Config, given: set[str]) -> list[str]:
    """Put the given parameters of other shortcuts back to their defaults; returns their names."""
    plain, ignored = defaults(), []
    for key, (_, owners, _) in shortcut_keys().items():
        if cfg.shortcut not in owners and key in given:
            setattr(cfg, key, getattr(plain, key))
            ignored.append(key)
    return ignored


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise UsageError(message)


# Allowed ranges of numeric keys: (test, the allowed values in words). Every float key is also finite.
RANGES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "iterations": (lambda v: v > 0, "> 0"), "batch_size": (lambda v: v > 0, "> 0"),
    "eval_every": (lambda v: v > 0, "> 0"), "synthetic_size": (lambda v: v > 0, "> 0"),
    "image_size": (lambda v: v > 0, "> 0"), "lr": (lambda v: v > 0, "> 0"),
    "warmup_lr": (lambda v: v > 0, "> 0"), "warmup_iters": (lambda v: v >= 0, ">= 0"),
    "eps": (lambda v: v > 0, "> 0"), "onecycle_pct": (lambda v: 0 < v < 1, "0 < onecycle_pct < 1"),
    "momentum": (lambda v: 0 <= v < 1, "0 <= momentum < 1"), "weight_decay": (lambda v: v >= 0, ">= 0"),
    "bn_momentum": (lambda v: 0 < v <= 1, "0 < bn_momentum <= 1 (the weight of a new batch, PyTorch convention)"),
    "seed": (lambda v: 0 <= v < 2**32, "0 <= seed < 2**32"),
    "fail_threshold": (lambda v: 0 <= v <= 100, "a test error in %, 0..100"),
    "val_split": (lambda v: 0 <= v < 50000, "0..49999"), "grad_probe_every": (lambda v: v >= 0, ">= 0 (0 = off)"),
    "time_limit_s": (lambda v: v >= 0, ">= 0 (0 = none)"), "heartbeat_s": (lambda v: v >= 0, ">= 0 (0 = off)"),
    "threads": (lambda v: v >= 0, ">= 0 (0 = torch's choice)"), "p": (lambda v: 0 <= v < 1, "0 <= p < 1"),
}


def _validate_numbers(cfg: Config) -> None:
    """Every float finite (nan and inf are refused for every key, shortcut parameters included), and each
    numeric key in its range."""
    for name in fields():
        value = getattr(cfg, name)
        if any(isinstance(v, float) and not math.isfinite(v) for v in (value if isinstance(value, list) else [value])):
            raise UsageError(f"{name}={fmt(value) if not isinstance(value, list) else value} is not a finite number")
        test, allowed = RANGES.get(name, (None, ""))
        if test is not None and not test(value):
            raise UsageError(f"{name}={fmt(value)} is out of range; allowed: {allowed}")


def _validate_schedule(cfg: Config) -> None:
    """Warm-up shorter than the run; every step milestone inside it (one beyond it would never drop the lr)."""
    _check(cfg.warmup_iters == 0 or cfg.warmup_iters < cfg.iterations,
           f"warmup_iters={cfg.warmup_iters} is not shorter than iterations={cfg.iterations}, so the run never "
           f"leaves warm-up; set warmup_iters=0 or fewer than {cfg.iterations}")
    _check(list(cfg.milestones) == sorted(cfg.milestones) and all(0 < m for m in cfg.milestones),
           f"milestones={list(cfg.milestones)} must be increasing positive iterations")
    late = [m for m in cfg.milestones if m >= cfg.iterations]
    if cfg.schedule == "step" and late:
        half, three_quarters = cfg.iterations // 2, cfg.iterations * 3 // 4
        scaled = f"milestones=[{half},{three_quarters}] (the papers' 1/2 and 3/4 of the run) or " \
            if 0 < half < three_quarters else ""
        raise UsageError(f"milestones={list(cfg.milestones)} reach past iterations={cfg.iterations}, so the lr "
                         f"would never drop at {', '.join(map(str, late))}; set {scaled}milestones=[] for a constant lr")


def validate(cfg: Config) -> None:
    """Semantic checks, each failing with one line that names the value and what is allowed."""
    for name, f in fields().items():
        choices = f.metadata["choices"]
        if choices is not None and getattr(cfg, name) not in choices():
            raise unknown(name, getattr(cfg, name), choices())
    _validate_numbers(cfg)
    layout = ARCHS.get(cfg.arch)
    block = layout.resolve_block(cfg.depth, cfg.block)
    layout.resolve_downsample(block, cfg.downsample)
    check_body(block, cfg.groups, cfg.width_per_group)
    _validate_schedule(cfg)
    _check(len(cfg.betas) == 2 and all(0 <= b < 1 for b in cfg.betas),
           f"betas={list(cfg.betas)} must be two numbers in [0, 1)")
    _check(not cfg.nesterov or (cfg.optim == "sgd" and cfg.momentum > 0),
           "nesterov=true needs optim=sgd and momentum > 0")
    if cfg.device not in ("auto", "cpu", "cuda") and re.fullmatch(r"cuda:\d+", cfg.device) is None:
        raise unknown("device", cfg.device, ["auto", "cpu", "cuda", "cuda:N"])
    _check(all(i >= 0 for i in cfg.grad_probe_at), "grad_probe_at must be iterations >= 0")
    _validate_fidelity(cfg)
    _validate_data(cfg)
    _validate_transfer(cfg)
    _validate_reach(cfg)
    _validate_paths(cfg)
    require_logger(cfg.logger)


def _validate_reach(cfg: Config) -> None:
    """A batch no larger than the training set (where its size is known before loading; `runtime` checks the
    others once loaded); probes at iterations the run reaches."""
    images = train_images(cfg.dataset, cfg.val_split, cfg.synthetic_size)
    _check(images is None or cfg.batch_size <= images,
           f"batch_size={cfg.batch_size} is larger than the {images} training images of dataset={cfg.dataset}; use "
           f"batch_size={images} or less")
    late = [i for i in cfg.grad_probe_at if i > cfg.iterations]
    _check(not late, f"grad_probe_at={list(cfg.grad_probe_at)}: {', '.join(map(str, late))} "
                     f"{'lies' if len(late) == 1 else 'lie'} past iterations={cfg.iterations}, so no probe would be "
                     f"taken there; use iterations 0..{cfg.iterations}")


PATH_KEYS = ("data_dir", "init", "runs_root", "run_dir")


def _validate_paths(cfg: Config) -> None:
    """A path starting with '~' reached us unexpanded (quoted, or a shell that leaves it after '='): one line,
    not a folder literally named '~'."""
    for key in (k for k in PATH_KEYS if getattr(cfg, k).startswith("~")):
        value = getattr(cfg, key)
        raise UsageError(f"{key}={value}: the shell did not expand '~' here; write the path out, e.g. "
                         f"{key}={os.path.expanduser(value)}")


def _validate_fidelity(cfg: Config) -> None:
    """bn_batch splits the batch into whole groups of at least 2 images; preact_shortcut_input=shared needs
    pre-activation units; gate_init is he or zero."""
    n, b = cfg.bn_batch, cfg.batch_size
    _check(n == 0 or 2 <= n <= b, f"bn_batch={n} must be 0 (off) or 2..batch_size ({b})")
    _check(n == 0 or b % n == 0, f"bn_batch={n} does not divide batch_size={b} into whole groups; use a divisor "
                                 f"of {b}")
    _check(cfg.preact_shortcut_input == "raw" or UNITS.get(cfg.unit).is_preact(),
           f"preact_shortcut_input={cfg.preact_shortcut_input} applies to pre-activation units "
           f"({', '.join(u for u in UNITS.names() if UNITS.get(u).is_preact())}), not unit={cfg.unit}")
    if cfg.gate_init not in GATE_INITS:
        raise unknown("gate_init", cfg.gate_init, GATE_INITS)


def _validate_data(cfg: Config) -> None:
    """dataset=folder needs its tree; image_size applies to it only."""
    _check(cfg.dataset != "folder" or bool(cfg.data_dir), "dataset=folder needs data_dir=PATH (the folder with "
           "train/ and test/ or val/)")
    _check(cfg.dataset == "folder" or cfg.image_size == 32,
           f"image_size={cfg.image_size} applies to dataset=folder only; {cfg.dataset} images are 32x32")


def stage_names(arch: str) -> list[str]:
    """The freezable/lr-scaled stages of an arch: stage1..stage3 (cifar) or stage1..stage4 (imagenet)."""
    return [f"stage{i}" for i in range(1, ARCHS.get(arch).stages + 1)]


def _validate_transfer(cfg: Config) -> None:
    """init needs arch=imagenet; freeze names parts of this arch; one lr multiplier per stage."""
    _check(not cfg.init or cfg.arch == "imagenet", "init= loads torchvision weights into arch=imagenet nets only")
    parts = ["stem", *stage_names(cfg.arch)]
    for name in cfg.freeze:
        if name not in [*parts, "all_but_head"]:
            raise unknown("freeze part", name, [*parts, "all_but_head"])
    _check("all_but_head" not in cfg.freeze or len(cfg.freeze) == 1, "freeze=all_but_head stands alone")
    _check(not cfg.freeze or not (cfg.grad_probe_every or cfg.grad_probe_at),
           "gradient probes need every weight trainable; drop freeze= or the grad_probe settings")
    stages = len(stage_names(cfg.arch))
    _check(not cfg.stage_lr_mult or len(cfg.stage_lr_mult) == stages,
           f"stage_lr_mult needs {stages} values for arch={cfg.arch} (stem+stage1 ... stage{stages}), "
           f"got {len(cfg.stage_lr_mult)}")
    _check(all(m > 0 for m in cfg.stage_lr_mult), f"stage_lr_mult={list(cfg.stage_lr_mult)} must be positive")


def help_text() -> str:
    """Every key with its type, default, meaning and, for registries, the allowed names."""
    lines = ["usage: python -m resnet_ablate.run [key=value ...]", ""]
    section = None
    for name, f in fields().items():
        if f.metadata["section"] != section:
            section = f.metadata["section"]
            lines.append(f"{section}:")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        text = f"  {name}={fmt(default) if not isinstance(default, list) else default}  ({_type_name(f)})  " \
               f"{f.metadata['help']}"
        if f.metadata["choices"] is not None:
            text += f"  [allowed: {', '.join(f.metadata['choices']())}]"
        lines.append(text)
    lines += ["", "recipes (recipe=NAME: each value and its source; P15/P16 = the 2015/2016 paper, fb = "
              "fb.resnet.torch, 1k = resnet-1k-layers; epochs become iterations from the training-set size):"]
    lines += [line for recipe in RECIPES.values() for line in recipe.lines()]
    return "\n".join(lines)
