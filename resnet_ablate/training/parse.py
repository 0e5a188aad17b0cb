"""`key=value` overrides -> a validated Config: OmegaConf does the typing, `validate` the meaning, each
mistake one line naming the value and what is allowed; and the `--help` text, built from the same fields
(allowed names from the registries)."""
from __future__ import annotations

import copy
import dataclasses
import math
import os
import re
import types
from typing import Any, Sequence

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ..errors import UsageError, closest, unknown
from ..models.resnet import ARCHS
from ..models.units import UNITS, check_body
from ..registry import check_value
from ..values import override_text, yaml_verbatim
from .config import FAMILIES, Config, config_type, defaults, fields, not_applying
from .optim import optimizer_of, schedule_of
from .recipes import EPOCHS, RECIPES, Recipe, train_images
from .tracking import require as require_logger


def _type_name(f: dataclasses.Field) -> str:
    """A key's type for messages and --help: int, float, list of int, ..."""
    name = str(f.type) if isinstance(f.type, (str, types.GenericAlias)) else f.type.__name__
    return name.replace("list[int]", "list of int")


def dotlist_item(key: str, value: str) -> str:
    """`key=value` as OmegaConf's dotlist reads it as meant: a bare word for a list-of-strings key is a one-item
    list (`freeze=all_but_head` -> `freeze=[all_but_head]`), and a text key's value is taken verbatim (a path with
    ' #' is no YAML comment)."""
    kind = str(fields()[key].type)
    if kind == "list[str]" and not value.startswith("["):
        return f"{key}=[{value}]"
    return f"{key}={yaml_verbatim(value)}" if kind in ("str", "<class 'str'>") else f"{key}={value}"


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
    Keys of a shortcut, optimizer or schedule other than the chosen one are put back to their defaults (so
    they stay out of the run name, and a grid over shortcuts and their parameters has no duplicates); `notes`
    gets one line saying so."""
    base = _conf({})
    named = [o.split("=", 1)[1] for o in overrides if o.startswith("recipe=")]
    recipe = RECIPES.get(named[-1] if named else defaults().recipe)  # an unknown name fails in validate
    if recipe is not None and recipe.values:
        base.merge_with(_recipe_values(recipe, _merged(_conf(recipe.flat()), overrides), overrides))
    cfg: Config = OmegaConf.to_object(_merged(base, overrides))  # type: ignore[assignment]
    validate(cfg)
    ignored = _drop_foreign_keys(cfg, {o.split("=", 1)[0] for o in overrides})
    if ignored and notes is not None:
        notes.append(ignored_note(ignored))
    return cfg


def _merged(conf, overrides: list[str]):
    """`conf` with the `key=value` overrides merged in, in order: all at once (one merge costs about as much
    as ten values), and one by one when that fails, to name the bad value."""
    dotlist = [dotlist_item(*split_override(override)) for override in overrides]
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
    return recipe.resolve(first.depth, first.batch_size, images, first.unit)


def _drop_foreign_keys(cfg: Config, given: set[str]) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Put the keys that change nothing under the settings (another shortcut's, optimizer's or schedule's;
    milestones under schedule=cosine, ...: `not_applying`), where they are given or differ from their defaults
    (a recipe's), back to their defaults; returns them with what rules each out."""
    plain = defaults()
    ignored = {key: why for key, why in not_applying(lambda k: getattr(cfg, k)).items()
               if key in given or getattr(cfg, key) != getattr(plain, key)}
    for key in ignored:
        setattr(cfg, key, getattr(plain, key))
    return ignored


def ignored_note(ignored: dict[str, tuple[str, Sequence[str]]], kept: str = "left out of the run name") -> str:
    """The one line saying which keys were ignored, under which settings (`not_applying`'s), where each applies,
    and what that keeps them out of."""
    chosen = list(dict.fromkeys(setting for setting, _ in ignored.values()))
    return (f"note: {', '.join(ignored)} {'does' if len(ignored) == 1 else 'do'} not apply to {', '.join(chosen)} ("
            + "; ".join(f"{k}: {', '.join(allowed)}" for k, (_, allowed) in ignored.items())
            + f"); ignored, and {kept}")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise UsageError(message)


def _validate_numbers(cfg: Config) -> None:
    """Every float finite (nan and inf are refused for every key, registered ones included), and each numeric
    key in the range declared with it."""
    for name, f in fields().items():
        value = getattr(cfg, name)
        if any(isinstance(v, float) and not math.isfinite(v) for v in (value if isinstance(value, list) else [value])):
            raise UsageError(f"{name}={override_text(value)} is not a finite number")
        check_value(name, value, f.metadata["range"], None)


def _validate_schedule(cfg: Config) -> None:
    """Warm-up shorter than the run; milestones in order."""
    _check(cfg.warmup_iters == 0 or cfg.warmup_iters < cfg.iterations,
           f"warmup_iters={cfg.warmup_iters} is not shorter than iterations={cfg.iterations}, so the run never "
           f"leaves warm-up; set warmup_iters=0 or fewer than {cfg.iterations}")
    m = cfg.milestones
    _check(all(a < b for a, b in zip(m, m[1:])) and all(0 < i for i in m),
           f"milestones={override_text(m)} must be increasing positive iterations (each later than the one "
           f"before)")


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
    schedule_of(cfg).check(cfg)  # the chosen schedule's and optimizer's own rules (step: milestones in the run)
    optimizer_of(cfg).check(cfg)
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
    total = None if images is None else images + cfg.val_split
    _check(images is None or images > 0, f"val_split={cfg.val_split} leaves no training images (dataset={cfg.dataset} "
                                         f"has {total}); use val_split={(total or 1) - 1} or less")
    _check(images is None or cfg.batch_size <= images,
           f"batch_size={cfg.batch_size} is larger than the {images} training images of dataset={cfg.dataset}; use "
           f"batch_size={images} or less")
    late = [i for i in cfg.grad_probe_at if i > cfg.iterations]
    _check(not late, f"grad_probe_at={override_text(cfg.grad_probe_at)}: {', '.join(map(str, late))} "
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
    pre-activation units."""
    n, b = cfg.bn_batch, cfg.batch_size
    _check(n == 0 or 2 <= n <= b, f"bn_batch={n} must be 0 (off) or 2..batch_size ({b})")
    _check(n == 0 or b % n == 0, f"bn_batch={n} does not divide batch_size={b} into whole groups; use a divisor "
                                 f"of {b}, or bn_batch=0 for one BN over the batch" + (
                                     f" (recipe {cfg.recipe} sets the BN group to half the batch: an even batch_size "
                                     f"keeps it)" if n == b // 2 and b % 2 else ""))
    _check(cfg.preact_shortcut_input == "raw" or UNITS.get(cfg.unit).is_preact(),
           f"preact_shortcut_input={cfg.preact_shortcut_input} applies to pre-activation units "
           f"({', '.join(u for u in UNITS.names() if UNITS.get(u).is_preact())}), not unit={cfg.unit}")


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
    _check(all(m > 0 for m in cfg.stage_lr_mult),
           f"stage_lr_mult={override_text(cfg.stage_lr_mult)} must be positive")


def help_text() -> str:
    """Every key with its type, default, meaning and allowed values; under the key that chooses a shortcut,
    optimizer or schedule, each registered one with its own keys."""
    lines = ["usage: python -m resnet_ablate.run [key=value ...]", ""]
    section, every = None, fields()
    for name, f in every.items():
        if f.metadata["family"] is not None:
            continue  # listed under its entry
        if f.metadata["section"] != section:
            section = f.metadata["section"]
            lines.append(f"{section}:")
        lines.append(f"  {_key_line(name, f, f.metadata['help'])}")
        lines += _entry_lines(name, every)
    lines += ["", "recipes (recipe=NAME: each value and its source; P15/P16 = the 2015/2016 paper, fb = "
              "fb.resnet.torch, 1k = resnet-1k-layers; epochs become iterations from the training-set size):"]
    lines += [line for recipe in RECIPES.values() for line in recipe.lines()]
    return "\n".join(lines)


def _key_line(name: str, f: dataclasses.Field, text: str) -> str:
    """`name=DEFAULT  (type)  text  [allowed: ...]`."""
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
    line = f"{name}={override_text(default)}  ({_type_name(f)})  {text}"
    if f.metadata["choices"] is not None:
        line += f"  [allowed: {', '.join(f.metadata['choices']())}]"
    if f.metadata["range"] is not None:
        line += f"  [allowed: {f.metadata['range'].allowed(name)}]"
    return line


def _entry_lines(selector: str, every: dict[str, dataclasses.Field]) -> list[str]:
    """For a key that chooses a registered entry: each entry (its docstring's first line) and its keys; a key
    already listed under an earlier entry is named with that entry."""
    family = next((f for f in FAMILIES if f.selector == selector), None)
    if family is None:
        return []
    keys, lines, shown = family.registry.keys(), [], set()
    for entry in family.registry:
        lines.append(f"    {entry}: {family.registry.about(entry)}".rstrip().rstrip(":"))
        own = [k for k, key in keys.items() if entry in key.owners]
        lines += [f"      {_key_line(k, every[k], keys[k].help)}" for k in own if k not in shown]
        earlier: dict[str, list[str]] = {}
        for k in (k for k in own if k in shown):
            earlier.setdefault(keys[k].owners[0], []).append(k)
        lines += [f"      {', '.join(ks)}: as {owner}" for owner, ks in earlier.items()]
        shown.update(own)
    return lines
