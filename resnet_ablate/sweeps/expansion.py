"""Expanding a sweep into its runs, safely and fast (`specs.expand` drives it):

- counted before anything is built, from the lists' lengths alone (`check_size`): a grid of a million runs,
  or `sweep.trials=200000`, is one line at once unless `max_runs=` allows it;
- parsed in groups (`parse_runs`): runs that differ only in plain values share one full parse, and each gets
  its own values set and checked by the same `validate`, so 10,000 runs take seconds, not minutes;
- refused when two runs would share a folder (`check_collisions`): runs of one name must be one config;
- a command-line sweep's default folder named from its grid (`sweep_name`), as a run's is from its settings.
"""
from __future__ import annotations

import copy
import hashlib
import math
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ..errors import UsageError
from ..training.config import Config, config_type, defaults, fields, not_applying, selectors
from ..training.configfile import MAX_NAME, identity_items, run_name
from ..training.parse import dotlist_item, parse, validate
from ..values import name_token

# Keys a run's other values are resolved from (a recipe's values; which keys apply: `selectors()` adds those):
# runs that differ in one of these are parsed apart.
RESOLVING = ("recipe", "dataset", "val_split", "synthetic_size", "depth", "batch_size", "unit")


def check_size(spec: Any, budget: str, trials: int, grid: list[list[str]], bound: int) -> None:
    """Refuse a sweep of more than `bound` runs (the spec's variants x grid x seeds, the random trials, the
    command line's comma lists), counted from the lists' lengths: nothing is built or parsed first."""
    parts = []
    if spec is not None:
        seeds = spec.budget(budget).get("seeds", spec.seeds)
        parts.append(("spec runs", len(spec.variants) * math.prod(len(v) for v in spec.grid_of(budget).values())
                      * len(seeds)))
    parts += [("random trials", trials)] if trials else []
    parts += [(f"values of {axis[0].split('=', 1)[0]}", len(axis)) for axis in grid if len(axis) > 1]
    total = math.prod(n for _, n in parts)
    if total > bound:
        shown = " x ".join(f"{n:,} {what}" for what, n in parts)
        raise UsageError(f"this sweep has {total:,} runs ({shown}), more than max_runs={bound:,}: check the lists, or "
                         f"set max_runs={total} to launch it")


def check_list_axes(grid: list[list[str]]) -> None:
    """A comma list for a list-valued key (`freeze=stem,stage1`) is a list written without its brackets, not
    a sweep over one-item lists: one line saying how to write either."""
    for axis in (a for a in grid if len(a) > 1):
        key = axis[0].split("=", 1)[0]
        values = [a.split("=", 1)[1] for a in axis]
        if key in fields() and str(fields()[key].type).startswith("list") and \
                not all(v.strip().startswith("[") for v in values):
            raise UsageError(f"{key}={','.join(values)}: {key} is a list; write one list in brackets, "
                             f"{key}=[{','.join(values)}], or a sweep over lists as {key}=[{values[0]}],[{values[1]}]")


def parse_runs(runs: list[list[str]], notes: list[str] | None = None) -> list[Config]:
    """`[parse(r, notes) for r in runs]`, the same configs and the same errors, in a fraction of the time: the
    runs with the same keys, the same RESOLVING values and no interpolation share one full parse, and each
    other run of such a group is that config with its own values (typed once per distinct text) set, then
    checked by `validate`."""
    templates: dict[tuple, tuple[dict[str, str], Config, set[str]]] = {}
    values: dict[tuple[str, str], Any] = {}
    resolving = list(dict.fromkeys([*RESOLVING, *selectors()]))
    out = []
    for overrides in runs:
        given = _given(overrides)
        group = (tuple(sorted(given)), tuple(given.get(k) for k in resolving))
        if group not in templates or any("${" in v for v in given.values()):
            cfg = parse(overrides, notes)
            templates.setdefault(group, (given, cfg, set(not_applying(lambda k: getattr(cfg, k)))))
            out.append(cfg)
            continue
        out.append(_from_template(*templates[group], given, values) or parse(overrides, notes))
    return out


def _given(overrides: list[str]) -> dict[str, str]:
    """key -> value text of `key=value` overrides, the last one winning (as in `parse`)."""
    return dict(o.split("=", 1) if "=" in o else (o, "") for o in overrides)


def _from_template(given0: dict[str, str], template: Config, unused: set[str], given: dict[str, str],
                   values: dict[tuple[str, str], Any]) -> Config | None:
    """`template` with the values `given` differs in; None where one does not convert (then `parse` says why).
    `unused`: the keys that change nothing under the template's settings (the group's)."""
    changes = {}
    for key, text in given.items():
        if text == given0[key] or key in unused:
            continue  # the same, or a key not in use (put back to its default by parse)
        if (key, text) not in values:
            values[(key, text)] = _typed(key, text)
        if values[(key, text)] is _FAILED:
            return None
        changes[key] = copy.copy(values[(key, text)])
    cfg = object.__new__(type(template))  # a copy without __init__ (a tenth of dataclasses.replace's time)
    cfg.__dict__.update({k: list(v) if isinstance(v, list) else v for k, v in vars(template).items()}, **changes)
    validate(cfg)
    return cfg


_FAILED = object()
_STRUCTURE: dict[type, Any] = {}


def _typed(key: str, text: str) -> Any:
    """The value `key=text` gives the key (OmegaConf's typing, as `parse`), or _FAILED."""
    kind = config_type()
    if kind not in _STRUCTURE:
        _STRUCTURE[kind] = OmegaConf.structured(kind)
    conf = _STRUCTURE[kind]
    try:
        conf.merge_with(OmegaConf.from_dotlist([dotlist_item(key, text)]))  # as parse reads it
        value = conf[key]
        return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
    except (OmegaConfBaseException, ValueError, TypeError):
        return _FAILED


def check_collisions(cfgs: list[Config]) -> dict[str, Config]:
    """The runs by folder name, one of each config (runs of the same settings, e.g. `lr=0.1,0.10`, are one
    run), refusing two configs that would share a run folder: a run's folder name is a function of its
    settings alone (status, the report and every relaunch find it by that), so runs it cannot tell apart
    cannot both be trained."""
    by_name: dict[str, Config] = {}
    for cfg in cfgs:
        name = run_name(cfg)
        first = by_name.setdefault(name, cfg)
        if first != cfg:
            raise _collision(name, first, cfg)
    return by_name


def _collision(name: str, a: Config, b: Config) -> UsageError:
    diff = [k for k in fields() if getattr(a, k) != getattr(b, k)]
    shown = "; ".join(f"{k}={getattr(a, k)} vs {getattr(b, k)}" for k in diff)
    identity = [k for k in diff if fields()[k].metadata["identity"]]
    if identity:
        why = f"{', '.join(identity)} show{'s' if len(identity) == 1 else ''} in a run's name by the file name only: " \
              f"give the files distinct names"
    else:
        why = f"{', '.join(diff)} do{'es' if len(diff) == 1 else ''} not change what is trained, so a run's name " \
              f"leaves {'it' if len(diff) == 1 else 'them'} out: launch one sweep per value (each with its sweep_dir=)"
    return UsageError(f"two runs of this sweep would share the folder {name} (they differ in {shown}): {why}")


def sweep_name(cfgs: list[Config]) -> str:
    """A command-line sweep's folder name, from its grid as a run's is from its settings: 'sweep_', the keys
    that vary ('+'-joined), then the settings all runs share that differ from the defaults; past MAX_NAME
    bytes cut at a setting's end, with a hash of all of them. Extending a list (`seed=0,1` to `seed=0,1,2`) keeps
    the name, and so the folder; another grid gets its own."""
    first, plain = identity_items(cfgs[0]), identity_items(defaults())
    varying = [k for k, v in first.items() if any(getattr(c, k) != v for c in cfgs)]
    shared = [f"{k}={name_token(v)}" for k, v in first.items() if k not in varying and v != plain[k]]
    parts = ["sweep", *(["+".join(varying)] if varying else []), *shared]
    name = "_".join(parts)
    if len(name.encode()) <= MAX_NAME:
        return name
    digest = "~" + hashlib.sha1(name.encode()).hexdigest()[:10]
    kept = []
    for part in parts:
        if len("_".join([*kept, part, digest]).encode()) > MAX_NAME:
            break
        kept.append(part)
    return "_".join([*kept, digest])[:MAX_NAME]
