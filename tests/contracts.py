"""Every registered entry with its test settings, for the tests that run an invariant over the registries (as
composer's tests/algorithms/algorithm_settings.py): one table, SETTINGS; `entries` gives each registered entry of
the kinds asked for once, with the others at their defaults (what CI runs), `combinations` their cross product
under the `slow` mark. A registered entry without settings here is an xfail that names it, so a new shortcut,
unit, optimizer or schedule shows up in every contract the moment it is registered, not by a test's list.

An entry registered by a test (a plugin's, say) goes through the same contracts: `Entry.cls` is registered while
its test runs (`with entry.registered():`) and unregistered after, so the registries stay the package's for the
other tests."""
from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass
from typing import Iterator

import pytest

from resnet_ablate.models.shortcuts import SHORTCUTS
from resnet_ablate.models.units import UNITS
from resnet_ablate.training.optim import OPTIMIZERS, SCHEDULES

# the config key that names an entry -> its registry
KINDS = {"shortcut": SHORTCUTS, "unit": UNITS, "optim": OPTIMIZERS, "schedule": SCHEDULES}

# (kind, name) -> the settings a tiny run of the entry needs besides TINY and the entry's own key
SETTINGS: dict[tuple[str, str], tuple[str, ...]] = {
    ("shortcut", "identity"): (),
    ("shortcut", "scaling"): (),
    ("shortcut", "gating"): (),
    ("shortcut", "shortcut_gating"): (),
    ("shortcut", "conv1x1"): (),
    ("shortcut", "dropout"): (),
    ("shortcut", "none"): (),
    ("shortcut", "highway_gating"): (),
    ("unit", "original"): (),
    ("unit", "bn_after_add"): (),
    ("unit", "relu_before_add"): (),
    ("unit", "relu_preact"): (),
    ("unit", "full_preact"): (),
    ("unit", "no_relu_after_add"): (),
    ("optim", "sgd"): ("nesterov=true",),
    ("optim", "adam"): ("lr=0.003",),
    ("optim", "adamw"): ("lr=0.003", "weight_decay=0.05"),
    ("schedule", "step"): (),
    ("schedule", "cosine"): (),
    ("schedule", "onecycle"): (),
}


@dataclass(frozen=True)
class Entry:
    """One registered entry and its test settings (None: it has none); `cls` for an entry a test registers while
    it runs, declaring `capabilities`."""

    kind: str
    name: str
    settings: tuple[str, ...] | None
    cls: type | None = None
    capabilities: tuple[str, ...] = ()

    def args(self) -> list[str]:
        """The entry's key and settings, for `parse`."""
        return [f"{self.kind}={self.name}", *(self.settings or ())]

    @contextlib.contextmanager
    def registered(self) -> Iterator[None]:
        """The entry in its registry while the block runs (an entry of the package's is there already)."""
        if self.cls is None:
            yield
            return
        KINDS[self.kind].register(self.name, **dict.fromkeys(self.capabilities, True))(self.cls)
        try:
            yield
        finally:
            KINDS[self.kind].unregister(self.name)

    def __str__(self) -> str:
        return f"{self.kind}={self.name}"


def _param(*parts: Entry, marks=()) -> pytest.param:
    """One test case: a tuple of entries; an xfail naming each of them that has no test settings."""
    why = [pytest.mark.xfail(reason=f"{p} has no test settings in tests/contracts.py", run=False)
           for p in parts if p.settings is None]
    return pytest.param(parts, marks=[*why, *marks], id="-".join(map(str, parts)))


def registered(kind: str, plugins: tuple[Entry, ...] = ()) -> list[Entry]:
    """Every entry of `kind`: those registered now (with their settings from SETTINGS), then `plugins` of it."""
    found = [Entry(kind, name, SETTINGS.get((kind, name))) for name in KINDS[kind]]
    return found + [p for p in plugins if p.kind == kind]


def entries(*kinds: str, plugins: tuple[Entry, ...] = ()) -> list[pytest.param]:
    """Each entry of `kinds` once, as a one-entry case (the others at their defaults)."""
    return [_param(e) for kind in kinds for e in registered(kind, plugins)]


def combinations(*kinds: str, plugins: tuple[Entry, ...] = ()) -> list[pytest.param]:
    """Every combination of the entries of `kinds` (one of each kind per case), under the `slow` mark."""
    return [_param(*combo, marks=[pytest.mark.slow])
            for combo in itertools.product(*(registered(kind, plugins) for kind in kinds))]


@contextlib.contextmanager
def all_registered(parts: tuple[Entry, ...]) -> Iterator[list[str]]:
    """The entries of one test case registered while the block runs; yields their settings for `parse`."""
    with contextlib.ExitStack() as stack:
        for part in parts:
            stack.enter_context(part.registered())
        yield [a for p in parts for a in p.args()]
