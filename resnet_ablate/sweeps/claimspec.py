"""The papers' claims as data: the `claims:` block of an ablation spec, read and checked once (one-line errors
naming the file). Each claim says what the paper found in its own words, where (table, figure, page), which
arms it compares (each a selector of run settings) and how: an ordering, a sign of a difference, a trend over
the arms' order, "fails" / "trains", closeness within a margin, or a value range. `analysis/claims.py` judges
them on run folders. Torch-free: the caller passes the check of a setting's value.

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

# kind: (what it means, how many arms it takes: (min, max or None))
KINDS: dict[str, tuple[str, tuple[int, int | None]]] = {
    "lower": ("the first arm's metric is lower than every other arm's", (2, None)),
    "higher": ("the first arm's metric is higher than every other arm's", (2, None)),
    "decreasing": ("the metric falls from each arm to the next, in the order listed", (2, None)),
    "increasing": ("the metric rises from each arm to the next, in the order listed", (2, None)),
    "close": ("the two arms' metrics differ by less than `margin`", (2, 2)),
    "fails": ("each arm's median run fails (as the paper's median of runs, failures included)", (1, None)),
    "trains": ("each arm's median run does not fail", (1, None)),
    "within": ("each arm's median run has its metric within `bounds` [low, high]", (1, None)),
}
COUNTING = ("fails", "trains", "within")  # one-arm claims about the median run: a count of runs, not a ranking
# metric: (what it is, whether a failed run counts as worse than any value, as the papers' median counts it)
METRICS: dict[str, tuple[str, bool]] = {
    "test_error": ("final test error (%)", True),
    "train_error": ("final training error (%), the last evaluation's", True),
    "response_std": ("mean over the 3x3 layers of the response std (responses.json, 2015 Fig. 7)", False),
    "shortcut_path_ratio": ("first/last-unit RMS of the gradient through the shortcuts only (probes.jsonl "
                            "shortcut_path_rms at iteration 0), within each stretch of units whose inputs have "
                            "one shape, geometric mean over the stretches", False),
}
CLAIM_KEYS = ("id", "claim", "paper", "source", "kind", "metric", "where", "arms", "vary", "margin", "bounds", "note")
REQUIRED = ("id", "claim", "paper", "source", "kind", "arms")
RECIPE = "recipe"  # a selector key: the arm's runs have exactly that recipe's resolved settings
ANY_VALUE = object()  # passed to the setting check for a key named without a value (`vary`)


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
    kind: str
    arms: tuple[Arm, ...]
    metric: str = "test_error"
    where: dict[str, Any] = field(default_factory=dict)
    vary: tuple[str, ...] = ()
    margin: float | None = None
    bounds: tuple[float, float] | None = None
    note: str = ""

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
    for key in (k for k in item if k not in CLAIM_KEYS):
        raise unknown("claim key", key, CLAIM_KEYS, where=where)
    for key in (k for k in REQUIRED if k not in item):
        raise UsageError(f"{where}: missing '{key}' (a claim needs {', '.join(REQUIRED)})")
    for key in ("id", "claim", "paper", "source", "note"):
        if key in item and (not isinstance(item[key], str) or not item[key].strip()):
            raise UsageError(f"{where}: {key} must be a non-empty text, got {item[key]!r}")
    if not re.fullmatch(r"[a-z0-9_]+", item["id"]):
        raise UsageError(f"{where}: id '{item['id']}' must be lower-case letters, digits and '_'")
    where = f"{path}: claim {item['id']}"
    kind = item["kind"]
    if kind not in KINDS:
        raise unknown("claim kind", kind, KINDS, where=where)
    metric = item.get("metric", "test_error")
    if kind in ("fails", "trains") and "metric" in item:
        raise UsageError(f"{where}: a '{kind}' claim counts failed runs; it takes no metric")
    if metric not in METRICS:
        raise unknown("metric", metric, METRICS, where=where)
    arms = _arms(where, kind, item["arms"], check)
    selector = _selector(where, "where", item.get("where", {}), check)
    for arm in arms:
        for key in (k for k in arm.select if k in selector):
            raise UsageError(f"{where}: arm '{arm.label}' sets {key}, which `where` already fixes for every arm")
    return Claim(spec, item["id"], item["claim"].strip(), item["paper"].strip(), item["source"].strip(), kind,
                 arms, metric, selector, _vary(where, item.get("vary", []), check),
                 _margin(where, kind, item.get("margin")), _bounds(where, kind, item.get("bounds")),
                 item.get("note", "").strip())


def _arms(where: str, kind: str, data: Any, check: Callable[[str, Any], None]) -> tuple[Arm, ...]:
    low, high = KINDS[kind][1]
    if not isinstance(data, dict) or not data:
        raise UsageError(f"{where}: arms must map each arm's label to its settings, e.g. "
                         f"{{identity: {{shortcut: identity}}}}, got {data!r}")
    if len(data) < low or (high is not None and len(data) > high):
        wanted = f"exactly {low}" if low == high else f"at least {low}"
        raise UsageError(f"{where}: a '{kind}' claim compares {wanted} arm{'s' if low > 1 else ''}, got {len(data)}")
    arms = tuple(Arm(str(label), _selector(where, f"arms.{label}", select, check)) for label, select in data.items())
    if kind not in COUNTING:
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


def _margin(where: str, kind: str, value: Any) -> float | None:
    if kind != "close":
        if value is not None:
            raise UsageError(f"{where}: margin belongs to 'close' claims only")
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise UsageError(f"{where}: a 'close' claim needs margin: a positive number in the metric's units, "
                         f"got {value!r}")
    return float(value)


def _bounds(where: str, kind: str, value: Any) -> tuple[float, float] | None:
    if kind != "within":
        if value is not None:
            raise UsageError(f"{where}: bounds belong to 'within' claims only")
        return None
    ok = isinstance(value, list) and len(value) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value) and value[0] < value[1]
    if not ok:
        raise UsageError(f"{where}: a 'within' claim needs bounds: [low, high] with low < high, got {value!r}")
    return float(value[0]), float(value[1])
