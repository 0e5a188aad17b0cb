"""The papers' claims as data: the `claims:` block of an ablation spec, read and checked once (one-line errors
naming the file). Each claim says what the paper found in its own words, where (table, figure, section),
which arms it compares (each a selector of run settings) and how: its kind (`kinds.CLAIM_KINDS`: an ordering,
a trend over the arms' order, "fails" / "trains", closeness within a margin, a value range), with the kind's
own keys. `judge` judges them on run folders. Torch-free: the caller passes the check of a setting's value.

    claims:
      - id: conv1x1_worse
        claim: the 1x1-conv shortcut has a higher error than identity
        paper: "... the results are worse (12.22%, Table 1) ..."
        source: 2016 paper, Sec. 3.1, Table 1, p. 5
        kind: higher                  # the first arm is higher than every other
        where: {depth: 110}           # settings every arm shares (optional)
        vary: [warmup_iters]          # settings the arms may differ in besides their own (optional)
        arms:
          1x1 conv: {shortcut: conv1x1}
          identity: {shortcut: identity}
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import UsageError, unknown
from .kinds import CLAIM_KINDS, ClaimKind
from .metrics import METRICS

ORIGINS = {  # where a claim comes from: how the report heads its list of sources
    "paper": "The papers' words",
    "other": "Other sources (not the papers: re-runs, reproductions, open questions)",
}
BASE_KEYS = ("id", "claim", "paper", "source", "kind", "metric", "where", "arms", "vary", "note", "origin",
             "seeds_note")
REQUIRED = ("id", "claim", "paper", "source", "kind", "arms")
TEXTS = ("id", "claim", "paper", "source", "note", "seeds_note")
RECIPE = "recipe"  # a selector key: the arm's runs have exactly that recipe's resolved settings
ANY_VALUE = object()  # passed to the setting check for a key named without a value (`vary`)


def kind_keys() -> dict[str, list[str]]:
    """Every registered kind's own claim keys, each with the kinds that take it."""
    keys: dict[str, list[str]] = {}
    for name in CLAIM_KINDS:
        for key in CLAIM_KINDS.get(name).keys:
            keys.setdefault(key, []).append(name)
    return keys


@dataclass(frozen=True)
class Arm:
    """One side of a claim: a label and the settings its runs have."""

    label: str
    select: dict[str, Any]


@dataclass(frozen=True)
class Claim:
    """One finding of a paper, as a check on runs."""

    spec: str
    id: str
    claim: str
    paper: str
    source: str
    kind: ClaimKind
    arms: tuple[Arm, ...]
    metric: str = "test_error"
    where: dict[str, Any] = field(default_factory=dict)
    vary: tuple[str, ...] = ()
    note: str = ""
    origin: str = "paper"  # a key of ORIGINS
    seeds_note: str = ""  # why the spec's seeds cannot decide it at the papers' effect size ("": they can)

    def keys(self) -> set[str]:
        """The settings the arms are told apart by or may differ in (the rest is the context they are compared
        within)."""
        return {k for arm in self.arms for k in arm.select} | set(self.vary)


def read_claims(path: Path, spec: str, data: Any, check: Callable[[str, Any], None]) -> list[Claim]:
    """The `claims:` block of a spec as Claims; `check(key, value)` raises UsageError for a bad setting."""
    if not isinstance(data, list):
        raise UsageError(f"{path}: claims must be a list of claims (see the specs in ablations/), got {data!r}")
    claims, seen = [], set()
    for i, item in enumerate(data):
        claim = _read_claim(path, spec, i, item, check)
        if claim.id in seen:
            raise UsageError(f"{path}: claims[{i}]: id '{claim.id}' is used twice; ids name a claim in claims.csv")
        seen.add(claim.id)
        claims.append(claim)
    return claims


def _read_claim(path: Path, spec: str, i: int, item: Any, check: Callable[[str, Any], None]) -> Claim:
    where = f"{path}: claims[{i}]"
    if not isinstance(item, dict):
        raise UsageError(f"{where}: a claim is a mapping with {', '.join(REQUIRED)}, got {item!r}")
    own = kind_keys()
    for key in (k for k in item if k not in BASE_KEYS and k not in own):
        raise unknown("claim key", key, [*BASE_KEYS, *own], where=where)
    for key in (k for k in REQUIRED if k not in item):
        raise UsageError(f"{where}: missing '{key}' (a claim needs {', '.join(REQUIRED)})")
    for key in (k for k in TEXTS if k in item):
        if not isinstance(item[key], str) or not item[key].strip():
            raise UsageError(f"{where}: {key} must be a non-empty text, got {item[key]!r}")
    if not re.fullmatch(r"[a-z0-9_]+", item["id"]):
        raise UsageError(f"{where}: id '{item['id']}' must be lower-case letters, digits and '_'")
    where = f"{path}: claim {item['id']}"
    name = item["kind"]
    cls = CLAIM_KINDS.get(name) if name in CLAIM_KINDS else None
    if cls is None:
        raise unknown("claim kind", name, CLAIM_KINDS.names(), where=where)
    for key in (k for k in item if k in own and k not in cls.keys):
        raise UsageError(f"{where}: {key} belongs to {' and '.join(repr(n) for n in own[key])} claims, not "
                         f"'{name}'")
    if not cls.takes_metric and "metric" in item:
        raise UsageError(f"{where}: a '{name}' claim counts run states; it takes no metric")
    metric = item.get("metric", "test_error")
    if metric not in METRICS:
        raise unknown("metric", metric, METRICS.names(), where=where)
    if item.get("origin", "paper") not in ORIGINS:
        raise unknown("origin", item["origin"], list(ORIGINS), where=where)
    kind = cls.read(name, where, item)
    arms = _arms(where, kind, item["arms"], check)
    selector = _selector(where, "where", item.get("where", {}), check)
    for arm in arms:
        for key in (k for k in arm.select if k in selector):
            raise UsageError(f"{where}: arm '{arm.label}' sets {key}, which `where` already fixes for every arm")
    return Claim(spec, item["id"], item["claim"].strip(), item["paper"].strip(), item["source"].strip(), kind,
                 arms, metric, selector, _vary(where, item.get("vary", []), check), item.get("note", "").strip(),
                 item.get("origin", "paper"), item.get("seeds_note", "").strip())


def _arms(where: str, kind: ClaimKind, data: Any, check: Callable[[str, Any], None]) -> tuple[Arm, ...]:
    low, high = kind.arms
    if not isinstance(data, dict) or not data:
        raise UsageError(f"{where}: arms must map each arm's label to its settings, e.g. "
                         f"{{identity: {{shortcut: identity}}}}, got {data!r}")
    if len(data) < low or (high is not None and len(data) > high):
        wanted = f"exactly {low}" if low == high else f"at least {low}"
        raise UsageError(f"{where}: a '{kind.name}' claim compares {wanted} arm{'s' if low > 1 else ''}, got "
                         f"{len(data)}")
    arms = tuple(Arm(str(label), _selector(where, f"arms.{label}", select, check)) for label, select in data.items())
    if kind.distinct_arms:
        for a, b in ((a, b) for n, a in enumerate(arms) for b in arms[n + 1:]):
            if _same(a.select, b.select):
                raise UsageError(f"{where}: arms '{a.label}' and '{b.label}' select the same runs")
    return arms


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two selectors name the same values for the same keys."""
    return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)


def same_value(a: Any, b: Any) -> bool:
    """A selector's value against a setting: numbers by value (-6 matches -6.0), lists and tuples element-wise,
    booleans only to booleans, anything else by equality."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(float(a) - float(b)) <= 1e-9 * max(1.0, abs(float(a)))
    return a == b


def _selector(where: str, name: str, data: Any, check: Callable[[str, Any], None]) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise UsageError(f"{where}: {name} must be a mapping of settings, e.g. {{shortcut: identity}}, got {data!r}")
    for key, value in data.items():
        try:
            check(str(key), value)
        except UsageError as e:
            raise UsageError(f"{where}: {name}: {e}") from e
    return {str(k): v for k, v in data.items()}


def _vary(where: str, data: Any, check: Callable[[str, Any], None]) -> tuple[str, ...]:
    if not isinstance(data, list) or not all(isinstance(k, str) for k in data):
        raise UsageError(f"{where}: vary must be a list of setting names, e.g. [warmup_iters], got {data!r}")
    for key in data:
        try:
            check(key, ANY_VALUE)
        except UsageError as e:
            raise UsageError(f"{where}: vary: {e}") from e
    return tuple(data)
