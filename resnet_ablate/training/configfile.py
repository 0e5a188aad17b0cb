"""A run's config as its run folder holds it: the folder's name, made from the settings that define what is
trained (`identity_items`, `run_name`, `run_dir`), and config.yaml, the whole config with the plugins that provided
the run's entries (`to_yaml`, `from_yaml`, `missing_entry`).

Kept apart from `config.py`, which declares the keys: this only reads them (`fields`, `defaults`, `config_type`),
and nothing there needs a name or a file. config.yaml's checksum line and its reading without following a link
are the run-folder format's (`folders/runfolder.py`).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

from .. import plugins
from ..values import name_token
from .config import ENTRIES, Config, config_type, defaults, fields

MAX_NAME = 200  # bytes of a run folder's name: below the 255 of common file systems, with room for prefixes
PLUGINS = "plugins"  # config.yaml's record of the plugins that provided a run's entries (`plugin_record`)


def identity_items(cfg: Config) -> dict[str, Any]:
    """The settings that define what is trained (everything but paths, devices and logging)."""
    return {k: getattr(cfg, k) for k, f in fields().items() if f.metadata["identity"]}


def run_name(cfg: Config) -> str:
    """A readable folder name: data set (a folder data set with its folder's name), depth, unit, shortcut,
    every other changed setting, seed. Past MAX_NAME bytes the settings are cut at a setting's end and a hash
    of all of them is added (`~<hash>`), so the name stays unique and fits every file system; config.yaml
    holds the full settings."""
    base = ("dataset", "depth", "unit", "shortcut", "seed")
    plain = defaults()
    changed = [f"{k}={name_token(v)}" for k, v in identity_items(cfg).items()
               if k not in base and v != getattr(plain, k)]
    data = f"folder-{Path(cfg.data_dir).name}" if cfg.dataset == "folder" and cfg.data_dir else cfg.dataset
    head, tail = [data, f"d{cfg.depth}", cfg.unit, cfg.shortcut], f"s{cfg.seed}"
    name = "_".join([*head, *changed, tail])
    if len(name.encode()) <= MAX_NAME:
        return name
    digest = "~" + hashlib.sha1("_".join(changed).encode()).hexdigest()[:10]
    kept = []
    for part in changed:
        if len("_".join([*head, *kept, part, digest, tail]).encode()) > MAX_NAME:
            break
        kept.append(part)
    return "_".join([*head, *kept, digest, tail])[:MAX_NAME]


def run_dir(cfg: Config) -> Path:
    return Path(cfg.run_dir) if cfg.run_dir else Path(cfg.runs_root) / run_name(cfg)


def plugin_record(cfg: Config) -> dict[str, str]:
    """The plugins that provided the entries `cfg` names, by key: {'shortcut': 'ablate-extra 0.1'}."""
    return {key: who for key, registry in ENTRIES.items() if (who := registry.provider(getattr(cfg, key)))}


def missing_entry(saved: dict[str, Any]) -> str | None:
    """For a run's config.yaml as data: its first entry that is not registered here, in one line naming the plugin
    to install where the run recorded one (`plugins.missing`); None when every entry it names is registered."""
    plugins.load()
    record = saved.get(PLUGINS) if isinstance(saved.get(PLUGINS), dict) else {}
    for key, registry in ENTRIES.items():
        name = saved.get(key)
        if isinstance(name, str) and name not in registry:
            return plugins.missing(key, name, record.get(key))
    return None


def to_yaml(cfg: Config) -> str:
    """config.yaml's settings, and under `plugins:` the plugins that provided the run's entries (not a setting:
    what a reader that lacks one needs to install)."""
    record = plugin_record(cfg)
    return OmegaConf.to_yaml(OmegaConf.structured(cfg)) + (yaml.safe_dump({PLUGINS: record}) if record else "")


def from_yaml(path: Path) -> Config:
    """A config as written to a run folder (unknown keys from newer versions are an error)."""
    return from_yaml_text(path.read_text())


def from_yaml_text(text: str) -> Config:
    """`from_yaml` of the file's text (read by the caller: a run folder's without following a link); the plugins
    a run records are not config keys."""
    saved = OmegaConf.create(text)
    saved.pop(PLUGINS, None)
    conf = OmegaConf.merge(OmegaConf.structured(config_type()), saved)
    return OmegaConf.to_object(conf)  # type: ignore[return-value]
