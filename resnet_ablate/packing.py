"""What packs with what, written once: which runs may train together in one process (a job's `runs_per_job`), in
lockstep on one device; which of them as one wide net (`pack_mode=wide`) and which as CUDA graphs; how a sweep's
runs are split into jobs; and the name of how runs step, which the speed table and the cost line use.

The launcher groups runs by `pack_key` and the cost line costs them as they will step (`stepped`); the trainer
refuses a pack that breaks the lockstep (`check_lockstep`) and steps runs that cannot be one wide net as streams,
saying why (`why_not_wide`). A fast path relies on what the entries a run names declare they can do (their
capabilities, `Registry.can`): `WIDE_NEEDS` and `GRAPH_NEEDS`; an entry that declares nothing takes neither.
Torch-free: it reads configs, and the registries' declarations handed in as `Entries`, never a net."""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence, TypeVar

from .errors import UsageError
from .registry import Registry

C = TypeVar("C")
Entries = Mapping[str, Registry]  # a config key that names a registered entry -> its registry

# Settings packed runs must share: they step together on one device.
LOCKSTEP = ("device", "precision", "cuda_graph", "batch_size", "iterations", "eval_every", "deterministic",
            "threads", "pack_mode", "compile", "sampling")
# Settings the runs of one wide pack may differ in: what only sets the starting point. Every other setting that
# names what is trained, and the data's folder, must be the same.
PER_RUN = ("seed", "init")
# (config key, capability) that the entry a run names must declare, for its runs to step as one wide net (K runs
# side by side as channels: merges, wiring and updates must keep each run's channels and elements to themselves;
# the pack's optimizer state is made by zeroing), and as a captured CUDA graph (warm-up undone by zeroing).
WIDE_NEEDS = (("shortcut", "channelwise"), ("unit", "channelwise"), ("optim", "elementwise"), ("optim", "zero_state"))
GRAPH_NEEDS = (("optim", "capturable"), ("optim", "zero_state"))


def lockstep_key(cfg: Any) -> tuple:
    """The settings that packed runs share."""
    return tuple((k, str(getattr(cfg, k))) for k in LOCKSTEP)


def wide_key(cfg: Any) -> tuple:
    """What runs must share to train as one wide net: every setting that names what is trained but PER_RUN, and
    the data's folder."""
    same = [(f.name, str(getattr(cfg, f.name))) for f in dataclasses.fields(cfg)
            if f.metadata["identity"] and f.name not in PER_RUN]
    return (*same, ("data_dir", cfg.data_dir))


def pack_key(cfg: Any) -> tuple:
    """The compatibility key: runs of one key may share a job. The lockstep settings, and with pack_mode=wide
    the wide key too (a job's runs are then one wide net)."""
    return lockstep_key(cfg) + (wide_key(cfg) if cfg.pack_mode == "wide" else ())


def jobs(cfgs: Sequence[C], runs_per_job: int) -> list[list[C]]:
    """The runs split into jobs of up to `runs_per_job`, each job's runs of one `pack_key`, in their order."""
    by_key: dict[tuple, list[C]] = {}
    for cfg in cfgs:
        by_key.setdefault(pack_key(cfg), []).append(cfg)
    return [g[i:i + runs_per_job] for g in by_key.values() for i in range(0, len(g), runs_per_job)]


def check_lockstep(cfgs: Sequence[Any]) -> None:
    """One-line UsageError unless the runs share the lockstep settings (the trainer's check of a pack)."""
    for key in LOCKSTEP:
        values = {str(getattr(c, key)) for c in cfgs}
        if len(values) > 1:
            raise UsageError(f"packed runs must share {key} (got {', '.join(sorted(values))})")


def lacking(cfg: Any, needs: Sequence[tuple[str, str]], entries: Entries) -> list[str]:
    """What the entries `cfg` names do not declare of `needs`, in words: "shortcut 'x' does not declare
    channelwise"."""
    return [f"{key} '{getattr(cfg, key)}' does not declare {capability}" for key, capability in needs
            if not entries[key].can(getattr(cfg, key), capability)]


def why_not_wide(cfgs: Sequence[Any], entries: Entries) -> str | None:
    """Why these runs cannot train as one wide net, as far as their settings tell, or None (the trainer adds
    what only the built nets tell)."""
    keys = [dict(wide_key(c)) for c in cfgs]
    differ = [k for k in keys[0] if len({key[k] for key in keys}) > 1]
    if differ:
        return f"they differ in {', '.join(differ)}"
    missing = lacking(cfgs[0], WIDE_NEEDS, entries)
    if missing:
        return "; ".join(missing)
    if cfgs[0].freeze:
        return "freeze= keeps BN layers in eval mode, which the wide net does not"
    return None


def why_no_graph(cfg: Any, entries: Entries) -> str | None:
    """Why the run's step cannot be captured as a CUDA graph, as far as its settings tell, or None."""
    return "; ".join(lacking(cfg, GRAPH_NEEDS, entries)) or None


def stepped(cfg: Any, entries: Entries) -> dict[str, Any]:
    """The run's settings as its runs will step: pack_mode=wide only where its entries can be one wide net,
    cuda_graph only where its step can be captured (what the cost line costs)."""
    wide = cfg.pack_mode == "wide" and why_not_wide([cfg], entries) is None
    return {**vars(cfg), "pack_mode": "wide" if wide else "streams",
            "cuda_graph": cfg.cuda_graph and why_no_graph(cfg, entries) is None}


def step_mode(settings: Mapping[str, Any]) -> str:
    """How a run steps, as the speed table names it: eager (cuda_graph=false), wide (pack_mode=wide: one wide net
    per pack) or graph (one CUDA graph per run, packs on streams)."""
    if not settings.get("cuda_graph", True):
        return "eager"
    return "wide" if settings.get("pack_mode", "streams") == "wide" else "graph"
