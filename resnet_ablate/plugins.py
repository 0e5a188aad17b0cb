"""Plugins: installed packages that add registered entries (shortcuts, units, optimizers, schedules, figures, ...)
without an edit to this package, by Python's convention for plugins: a package declares an entry point in the
group `resnet_ablate.plugins` (pyproject.toml: `[project.entry-points."resnet_ablate.plugins"]`, `name = "module"`)
and importing that module registers its entries.

Every process of the package loads the group once, before it reads a key (`training/config.py` reads every key
through the registries' state, which loads them first): a run, its local and SLURM jobs, `report`, `lr_find`.
Which plugin registered an entry is kept (`Registry.provider`), so a run records the plugins of its entries in
config.yaml and a report that lacks one names it (`missing`). A plugin that fails to import is one warning line;
the command goes on without its entries. Only installed entry points are imported, never a module a run folder
names. Torch-free (a plugin itself may import torch)."""
from __future__ import annotations

import sys
from importlib.metadata import EntryPoint, entry_points

from .errors import first_line
from .registry import providing

GROUP = "resnet_ablate.plugins"
_loaded: list[str] | None = None  # the plugins this process loaded; None before the first `load`


def label(entry: EntryPoint) -> str:
    """A plugin as one installs it: its distribution's name and version (the entry point's name without one)."""
    dist = entry.dist
    return f"{dist.metadata['Name']} {dist.version}" if dist is not None else entry.name


def load() -> list[str]:
    """Import every installed plugin, once per process; the plugins that loaded. One that fails to import is one
    warning line on stderr."""
    global _loaded
    if _loaded is not None:
        return _loaded
    _loaded = []
    for entry in entry_points(group=GROUP):
        name = label(entry)
        try:
            with providing(name):
                entry.load()
        except Exception as e:  # noqa: BLE001 - a plugin fails in any way its code can; it is one line
            print(f"warning: plugin {name} ({entry.value}) did not load, so its entries are missing: "
                  f"{type(e).__name__}: {first_line(e)}", file=sys.stderr, flush=True)
            continue
        _loaded.append(name)
    return _loaded


def missing(key: str, name: str, provider: str | None) -> str:
    """What a run's entry that is not registered here needs, in one line: the plugin to install, as the run's
    record names it (`provider`: 'ablate-extra 0.1'), else that the entry is unknown."""
    if provider is None:
        return f"unknown {key} '{name}' (no plugin recorded for it: register it, or install what provides it)"
    return f"{key} '{name}' comes from the plugin {provider}, which is not installed here: pip install " \
           f"{provider.split()[0]}"
