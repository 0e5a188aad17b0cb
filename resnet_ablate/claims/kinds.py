"""Claim kinds, one registered class each (as shortcuts and optimizers are): what a claim asserts about its arms
and how runs test it. A kind declares how many arms it takes (`arms`), its own claim keys with the numbers they
allow (`keys`: a margin, bounds), and whether it compares arms (`Comparison`: the rank-sum test over the pairs
it links) or counts the runs of each arm (`Counting`: the sign test of "the median run satisfies it"). The
judge asks a kind for a claim's comparisons (`links`), the observed statistic in words (`observed`), whether
arms that ran can be judged at all (`linked`), the smallest seeds it can decide with (`smallest`) and the seeds
the papers' own numbers would need (`paper_seeds`). A new kind is one registered class (here or in a plugin),
its test and a docs line; nothing outside these classes branches on a kind's name. Torch-free.

    @CLAIM_KINDS.register("lower")
    class Lower(Comparison):
        '''the first arm's metric is lower than every other arm's'''

        def pairs(self, arms):
            return [(arms[0], other, 0.0) for other in arms[1:]]
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence, TypeVar

import numpy as np

from ..errors import UsageError
from ..folders.states import State
from ..registry import Range, Registry
from ..values import statistic
from .stats import Link, count_link, count_seeds, rank_link, rank_seeds, smallest_count_n, smallest_rank_n, superiority

T = TypeVar("T")


@dataclass(frozen=True)
class KindKey:
    """A claim key that a kind takes: what it means and the numbers it allows (an interval, `registry.Range`);
    `pair`: a [low, high] list of two such numbers, low < high."""

    help: str
    range: str
    pair: bool = False


class ClaimKind:
    """What a claim asserts about its arms (the class's docstring says it in one line), with the values of its
    own keys."""

    arms: ClassVar[tuple[int, int | None]] = (2, None)  # how many arms it takes: (at least, at most or None)
    keys: ClassVar[dict[str, KindKey]] = {}  # its own claim keys
    counting: ClassVar[bool] = False  # it counts each arm's runs (sign test), rather than comparing arms
    takes_metric: ClassVar[bool] = True  # False: it counts run states (failed, done), not a metric
    distinct_arms: ClassVar[bool] = True  # two arms may not select the same runs

    def __init__(self, name: str, **values: Any) -> None:
        self.name = name
        self.values = values

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.values!r})"

    @classmethod
    def meaning(cls) -> str:
        """What a claim of this kind asserts, in one line (the class's docstring)."""
        return " ".join((cls.__doc__ or "").split())

    @classmethod
    def read(cls, name: str, where: str, item: dict[str, Any]) -> "ClaimKind":
        """The kind with its own keys read from a claim's mapping `item`, each checked against its range."""
        values = {}
        for key, declared in cls.keys.items():
            value, allowed = item.get(key), Range(declared.range)
            numbers = value if declared.pair else [value]
            ok = isinstance(numbers, list) and len(numbers) == (2 if declared.pair else 1) and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and float(v) in allowed for v in numbers)
            if not ok or (declared.pair and not numbers[0] < numbers[1]):
                shape = "[low, high] with low < high, each" if declared.pair else "a number"
                raise UsageError(f"{where}: a '{name}' claim needs {key}: {shape} {allowed.allowed(key)} "
                                 f"({declared.help}), got {value!r}")
            values[key] = tuple(map(float, numbers)) if declared.pair else float(value)
        return cls(name, **values)

    def pairs(self, arms: Sequence[T]) -> list[tuple[T, T, float]]:
        """(lower, higher, shift) for each order the claim asserts between two arms (none for a count of runs)."""
        return []

    def links(self, arms: Sequence[Any], fallback_sd: float | None) -> list[Link]:
        """The claim's comparisons that the arms' values allow (none: nothing to judge yet)."""
        raise NotImplementedError

    def linked(self, present: Sequence[bool]) -> bool:
        """Whether arms with runs where `present` is true give the claim a comparison to judge."""
        raise NotImplementedError

    def observed(self, arms: Sequence[Any], metric: str) -> str:
        """The observed statistic in words (`metric`: the metric's name in words)."""
        raise NotImplementedError

    def smallest(self, level: float) -> int:
        """The smallest seeds per arm at which the test can reach `level` at all."""
        raise NotImplementedError

    def paper_seeds(self, paper: Sequence[float | None], sd: float | None, level: float) -> int | None:
        """Seeds per arm that decide the claim at `level` with the stats' power if the arms' values were the
        papers' (`paper`, per arm; None: a paper "fail") with spread `sd`; None when that cannot be said."""
        raise NotImplementedError


CLAIM_KINDS: Registry[type[ClaimKind]] = Registry("claim kind")


def median_text(values: list[float]) -> str:
    """An arm's median (failures counted as the worst), 'fail' when it lands on a failed run."""
    return statistic(float(np.median(values)), ".4g") if values else "not run"


class Comparison(ClaimKind):
    """A claim about the order of the arms' metrics, judged by the rank-sum test over the pairs it links."""

    def pairs(self, arms: Sequence[T]) -> list[tuple[T, T, float]]:
        """(lower, higher, shift) for each comparison the claim makes: lower's values minus shift below higher's."""
        raise NotImplementedError

    def links(self, arms: Sequence[Any], fallback_sd: float | None) -> list[Link]:
        return [rank_link(f"{lo.arm.label}{f' - {shift:g}' if shift else ''} < {hi.arm.label}",
                          [v - shift for v in lo.values], hi.values, fallback_sd)
                for lo, hi, shift in self.pairs(arms) if lo.values and hi.values]

    def linked(self, present: Sequence[bool]) -> bool:
        return any(present[lo] and present[hi] for lo, hi, _ in self.pairs(range(len(present))))

    def observed(self, arms: Sequence[Any], metric: str) -> str:
        run = [a for a in arms if a.values]
        return f"median {metric}: " + "; ".join(f"{a.arm.label} {median_text(a.values)}" for a in run)

    def smallest(self, level: float) -> int:
        return smallest_rank_n(level)

    def paper_seeds(self, paper: Sequence[float | None], sd: float | None, level: float) -> int | None:
        if sd is None:
            return None
        seeds = []
        for lo, hi, shift in self.pairs(list(range(len(paper)))):
            if paper[lo] is None and paper[hi] is None:
                return None
            worst = [math.inf if paper[i] is None else paper[i] for i in (lo, hi)]
            seeds.append(rank_seeds(superiority([worst[0] - shift], [worst[1]], sd), level))
        return None if not seeds or None in seeds else max(seeds)


class Ordering(Comparison):
    """The first arm against every other: the observed statistic names the closest of the others."""

    closest: ClassVar[Any] = min  # which of the others' medians is closest to the first arm's: min or max

    def observed(self, arms: Sequence[Any], metric: str) -> str:
        first, others = arms[0], [a for a in arms[1:] if a.values]
        if len(arms) == 2 or not first.values or not others:
            return super().observed(arms, metric)
        closest = type(self).closest(others, key=lambda a: float(np.median(a.values)))
        return (f"median {metric}: {first.arm.label} {median_text(first.values)}; closest of the {len(others)} "
                f"others run: {closest.arm.label} {median_text(closest.values)}")


@CLAIM_KINDS.register("lower")
class Lower(Ordering):
    """the first arm's metric is lower than every other arm's"""

    def pairs(self, arms: Sequence[T]) -> list[tuple[T, T, float]]:
        return [(arms[0], other, 0.0) for other in arms[1:]]


@CLAIM_KINDS.register("higher")
class Higher(Ordering):
    """the first arm's metric is higher than every other arm's"""

    closest = max

    def pairs(self, arms: Sequence[T]) -> list[tuple[T, T, float]]:
        return [(other, arms[0], 0.0) for other in arms[1:]]


class Trend(Comparison):
    """A claim along the arms in the order listed: the observed statistic is the medians joined by arrows."""

    def observed(self, arms: Sequence[Any], metric: str) -> str:
        return f"median {metric}: " + " → ".join(f"{a.arm.label} {median_text(a.values)}" for a in arms if a.values)


@CLAIM_KINDS.register("decreasing")
class Decreasing(Trend):
    """the metric falls from each arm to the next, in the order listed"""

    def pairs(self, arms: Sequence[T]) -> list[tuple[T, T, float]]:
        return [(b, a, 0.0) for a, b in zip(arms, arms[1:])]


@CLAIM_KINDS.register("increasing")
class Increasing(Trend):
    """the metric rises from each arm to the next, in the order listed"""

    def pairs(self, arms: Sequence[T]) -> list[tuple[T, T, float]]:
        return [(a, b, 0.0) for a, b in zip(arms, arms[1:])]


@CLAIM_KINDS.register("close")
class Close(Comparison):
    """the two arms' metrics differ by less than `margin`: an equivalence, by two one-sided tests"""

    arms = (2, 2)
    keys = {"margin": KindKey("the largest difference that counts as close, in the metric's units", "(0, inf)")}

    def pairs(self, arms: Sequence[T]) -> list[tuple[T, T, float]]:
        a, b = arms
        return [(a, b, self.values["margin"]), (b, a, self.values["margin"])]

    def observed(self, arms: Sequence[Any], metric: str) -> str:
        text = super().observed(arms, metric)
        if all(a.values for a in arms):
            gap = abs(float(np.median(arms[0].values)) - float(np.median(arms[1].values)))
            text += f" (|Δ| {gap:.3g}, margin {self.values['margin']:g})" if math.isfinite(gap) else ""
        return text


class Counting(ClaimKind):
    """A claim about each arm's median run, judged by the sign test of "more than half the runs satisfy it"."""

    counting = True
    distinct_arms = False
    arms = (1, None)
    what = ""  # what a run that satisfies it did, in words

    def tally(self, arm: Any) -> tuple[int, int] | None:
        """(runs satisfying it, runs counted) of one arm (None: nothing to count)."""
        raise NotImplementedError

    def links(self, arms: Sequence[Any], fallback_sd: float | None) -> list[Link]:
        return [count_link(a.arm.label, *found) for a in arms if (found := self.tally(a)) is not None]

    def linked(self, present: Sequence[bool]) -> bool:
        return any(present)

    def observed(self, arms: Sequence[Any], metric: str) -> str:
        return "; ".join(f"{a.arm.label}: {k}/{n} {self.what}" for a in arms if (found := self.tally(a))
                         for k, n in [found])

    def smallest(self, level: float) -> int:
        return smallest_count_n(level)

    def paper_seeds(self, paper: Sequence[float | None], sd: float | None, level: float) -> int | None:
        return count_seeds(1.0, level)  # the paper's claim: every run does it


class StateCount(Counting):
    """A count of the runs that ended in `state`, failed runs included."""

    takes_metric = False
    state: ClassVar[State]

    def tally(self, arm: Any) -> tuple[int, int] | None:
        runs = arm.runs()
        return (sum(r.status == self.state for r in runs), len(runs)) if runs else None


@CLAIM_KINDS.register("fails")
class Fails(StateCount):
    """each arm's median run fails (status fail: above fail_threshold, or diverged)"""

    state, what = State.FAIL, "failed"


@CLAIM_KINDS.register("trains")
class Trains(StateCount):
    """each arm's median run does not fail"""

    state, what = State.DONE, "trained"


@CLAIM_KINDS.register("within")
class Within(Counting):
    """each arm's median run has its metric within `bounds` [low, high]"""

    keys = {"bounds": KindKey("the metric's allowed values, [low, high], inclusive ('.inf' for no bound)",
                              "[-inf, inf]", pair=True)}

    @property
    def what(self) -> str:  # type: ignore[override]
        low, high = self.values["bounds"]
        return f"within [{low:g}, {high:g}]"

    def tally(self, arm: Any) -> tuple[int, int] | None:
        low, high = self.values["bounds"]
        return (sum(low <= v <= high for v in arm.values), len(arm.values)) if arm.values else None
