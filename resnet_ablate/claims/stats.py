"""The one test and the one level the claims are judged with, and how many seeds would decide a claim.

Test: one-sided exact tests over seeds at LEVEL = 5 %, decided when p (adjusted over the family) <= LEVEL.
- A comparison of two arms (x below y) is the exact Mann-Whitney (Wilcoxon rank-sum) test: the p-value is the
  share of all C(n+m, n) ways of splitting the pooled runs into the two arms whose rank sum for x is as small
  as observed or smaller (mid-ranks for ties). A failed run counts as worse than any error (+inf), as the
  papers' median of runs counts it. With n seeds per arm the smallest p is 1 / C(2n, n): 1/6 at 2 seeds (never
  decides), 1/20 = 0.05 at 3 seeds (decides only when every run of one arm is below every run of the other).
- A claim about one arm's median run (fails, trains, a value range) is the exact binomial (sign) test of
  "more than half the runs satisfy it": p = P(X >= k | n, 1/2) for k of n runs. Its smallest p is 2^-n:
  5 seeds at least (1/32), all of them satisfying it.
A claim of several comparisons (an ordering, a trend) holds when every comparison holds: p is their largest p
(an intersection-union test needs no correction). Against it: the smallest reversed comparison's p times their
number (Bonferroni within the claim).

The family: one report judges many claims (one row per claim and context). The rows with data are the family;
their p-values, for and against, are adjusted over it (`adjust`: Holm's step-down by default, which controls
the chance of any false verdict at LEVEL), and a row is held or not held when its adjusted p reaches LEVEL.
Anything else is undecided: never held on noise.

Seeds to decide, at `decision_level` (LEVEL / m for a family of m: Holm's first step, enough whatever the
other rows show): for a comparison, Noether's (1987) sample size for the rank-sum test at POWER = 80 %,
n per arm = (z_(1-a) + z_0.8)^2 / (6 (p - 1/2)^2) with p = P(X < Y) estimated from a normal model with the
observed means and pooled sd, or the smaller n at which the arms would separate completely with POWER (where
the exact test reaches its smallest p; Noether's approximation overstates n for large effects), at least the
smallest n at which the exact test can reach that level at all.
For a count: the smallest n whose exact binomial test at that level has 80 % power at the observed fraction.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

LEVEL = 0.05
POWER = 0.8
MAX_SEEDS = 1000  # seeds per arm beyond which the advice says "more than"
TEST = (f"one-sided exact tests over seeds: Mann-Whitney rank-sum for a comparison (failed runs worst), "
        f"binomial sign test for a median run; several comparisons must all hold (largest p), against a claim the "
        f"smallest reversed p times their number; decided when the p adjusted over the family reaches {LEVEL:g}")


def reaches(p: float, alpha: float) -> bool:
    """p <= alpha, with room for the rounding of an exact p that equals alpha (1/20 at 3 seeds per arm)."""
    return p <= alpha * (1 + 1e-9)


def rank_p(lower: list[float], higher: list[float]) -> float:
    """Exact one-sided p-value of "`lower` tends below `higher`": the permutation distribution of `lower`'s
    rank sum over every split of the pooled values (mid-ranks for ties; +inf is allowed and ties at the top)."""
    n, values = len(lower), np.asarray([*lower, *higher], dtype=float)
    if n == 0 or len(higher) == 0:
        return 1.0
    ranks = np.rint(2 * stats.rankdata(values)).astype(int)  # doubled mid-ranks are integers
    top = int(ranks.sum())
    counts = np.zeros((n + 1, top + 1))
    counts[0, 0] = 1.0
    for r in ranks:
        counts[1:, r:] += counts[:-1, :top + 1 - r].copy()
    dist = counts[n]
    return float(dist[:int(ranks[:n].sum()) + 1].sum() / dist.sum())


def count_p(k: int, n: int) -> float:
    """Exact one-sided p-value of "more than half of the n runs satisfy it" when k of them do."""
    return float(stats.binom.sf(k - 1, n, 0.5)) if n else 1.0


def smallest_rank_n(alpha: float) -> int:
    """The smallest seeds per arm at which the exact rank-sum test can reach `alpha` at all: 1/C(2n, n) <= alpha."""
    n = 1
    while not reaches(1 / math.comb(2 * n, n), alpha):
        n += 1
    return n


def smallest_count_n(alpha: float) -> int:
    """The smallest number of runs at which the exact sign test can reach `alpha` at all: 2^-n <= alpha."""
    return math.ceil(math.log2(1 / alpha) - 1e-12)


def superiority(lower: list[float], higher: list[float], fallback_sd: float | None) -> float | None:
    """P(X < Y) for a run of the first arm against one of the second: from a normal model with the observed
    means and pooled sd (the papers' spread `fallback_sd` where each arm has one seed); from the runs' own
    order (ties count 1/2) where a failed run (+inf) is among them. None when neither can be computed."""
    if not lower or not higher:
        return None
    if any(math.isinf(v) for v in (*lower, *higher)):
        wins = sum((x < y) + 0.5 * (x == y) for x in lower for y in higher)
        return wins / (len(lower) * len(higher))
    delta = float(np.mean(higher) - np.mean(lower))
    dof = len(lower) + len(higher) - 2
    if dof > 0:
        sd = math.sqrt((np.var(lower, ddof=0) * len(lower) + np.var(higher, ddof=0) * len(higher)) / dof)
    elif fallback_sd is not None:
        sd = fallback_sd
    else:
        return None
    if sd == 0:
        return 1.0 if delta > 0 else 0.0 if delta < 0 else 0.5
    return float(stats.norm.cdf(delta / (sd * math.sqrt(2))))


def separation(shift: float, n: int) -> float:
    """P(every one of n draws of N(0, 1) lies below every one of n draws of N(shift, 1)): the chance that two
    arms of n runs separate completely, where the exact rank-sum test reaches its smallest p, 1 / C(2n, n).
    The largest X lies at x with density n phi(x) Phi(x)^(n-1), and every Y above it with (1 - Phi(x - shift))^n."""
    if math.isinf(shift):
        return 1.0
    x = np.linspace(min(-10.0, shift - 10.0), max(10.0, shift + 10.0), 4001)
    density = n * stats.norm.pdf(x) * stats.norm.cdf(x) ** (n - 1) * stats.norm.sf(x - shift) ** n
    return float(np.sum(density) * (x[1] - x[0]))


def rank_seeds(p_superior: float | None, alpha: float) -> int | None:
    """Seeds per arm for the rank-sum test to decide "X below Y" at `alpha` with POWER: Noether's (1987) n, or
    fewer where the two arms would separate completely with POWER at a smaller n at which the exact test reaches
    `alpha` (Noether's approximation overstates n when P(X < Y) is near 1); at least `smallest_rank_n`. None when
    P(X < Y) is unknown or not above 1/2 (the data point the other way or nowhere)."""
    if p_superior is None or p_superior <= 0.5:
        return None
    z = stats.norm.ppf(1 - alpha) + stats.norm.ppf(POWER)
    noether = max(math.ceil(z * z / (6 * (p_superior - 0.5) ** 2) - 1e-9), smallest_rank_n(alpha))
    shift = math.sqrt(2) * stats.norm.ppf(p_superior)  # P(X < Y) = Phi(shift / sqrt(2)) for unit-sd normals
    apart = next((n for n in range(smallest_rank_n(alpha), min(noether, MAX_SEEDS + 1))
                  if separation(shift, n) >= POWER), noether)
    return min(apart, MAX_SEEDS + 1)


def count_seeds(fraction: float | None, alpha: float) -> int | None:
    """Runs for the sign test to decide "more than half satisfy it" at `alpha` with POWER when a `fraction` of
    runs does; None when the fraction is unknown or not above 1/2."""
    if fraction is None or fraction <= 0.5:
        return None
    for n in range(smallest_count_n(alpha), MAX_SEEDS + 1):
        p = stats.binom.sf(np.arange(n + 1) - 1, n, 0.5)  # P(X >= k) for k = 0..n, falling in k
        critical = int(np.argmax(p <= alpha * (1 + 1e-9)))  # the smallest k that decides at alpha
        if stats.binom.sf(critical - 1, n, fraction) >= POWER:
            return n
    return MAX_SEEDS + 1


@dataclass(frozen=True)
class Link:
    """One comparison inside a claim: its p-value, the reversed comparison's, the runs it has (per arm) and the
    effect it estimates (P(X < Y) for a rank comparison, the share of runs satisfying it for a count; None: cannot
    be estimated), from which the seeds that would decide it at a level follow."""

    label: str
    p: float
    p_reverse: float
    have: int
    estimate: float | None
    counting: bool = False  # a count of one arm's runs (sign test), not a rank comparison of two arms

    @property
    def supports(self) -> bool | None:
        """Whether the observed data point the claimed way (None: no difference, or unknown)."""
        return None if self.estimate is None or self.estimate == 0.5 else self.estimate > 0.5

    def seeds_for(self, alpha: float) -> int | None:
        """Seeds that show it holds at `alpha`: those it has when p already reaches alpha, else the advice but
        at least one more than it has (None: cannot be said)."""
        return self._enough(self.p, alpha, self.estimate)

    def seeds_against(self, alpha: float) -> int | None:
        """Seeds that show it reversed at `alpha`."""
        return self._enough(self.p_reverse, alpha, None if self.estimate is None else 1 - self.estimate)

    def _enough(self, p: float, alpha: float, estimate: float | None) -> int | None:
        if reaches(p, alpha):
            return self.have
        seeds = count_seeds(estimate, alpha) if self.counting else rank_seeds(estimate, alpha)
        return None if seeds is None else max(seeds, self.have + 1)


def rank_link(label: str, lower: list[float], higher: list[float], fallback_sd: float | None) -> Link:
    """The comparison "`lower` below `higher`"."""
    return Link(label, rank_p(lower, higher), rank_p(higher, lower), min(len(lower), len(higher)),
                superiority(lower, higher, fallback_sd))


def count_link(label: str, k: int, n: int) -> Link:
    """The claim "more than half of an arm's runs satisfy it", k of n runs doing so."""
    return Link(label, count_p(k, n), count_p(n - k, n), n, k / n if n else None, counting=True)


CORRECTIONS = {  # the family's correction: its one-line description
    "holm": "Holm's step-down over the family",
    "bh": "Benjamini-Hochberg's step-up over the family (controls the false discovery rate, not the family's "
          "error)",
    "none": "no correction (each row at the level on its own)",
}
DEFAULT_CORRECTION = "holm"


def adjust(ps: list[float], correction: str) -> list[float]:
    """The family's p-values adjusted by `correction` (in their order): Holm's p_(i) = max over j <= i of
    (m - j + 1) p_(j); Benjamini-Hochberg's p_(i) = min over j >= i of m p_(j) / j; at most 1."""
    m, order = len(ps), sorted(range(len(ps)), key=lambda i: ps[i])
    out = [0.0] * m
    if correction == "holm":
        running = 0.0
        for rank, i in enumerate(order):
            running = max(running, min(1.0, (m - rank) * ps[i]))
            out[i] = running
    elif correction == "bh":
        running = 1.0
        for rank, i in reversed(list(enumerate(order))):
            running = min(running, min(1.0, m * ps[i] / (rank + 1)))
            out[i] = running
    else:
        out = list(ps)
    return out


def decision_level(correction: str, family: int) -> float:
    """The level one row's raw p must reach to be decided whatever the family's other rows show: LEVEL / m, the
    first step of Holm's (and Benjamini-Hochberg's) procedure, for a family of m; LEVEL uncorrected."""
    return LEVEL if correction == "none" else LEVEL / max(family, 1)


@dataclass(frozen=True)
class Verdict:
    """A claim's verdict from its comparisons: held, not held or undecided, with the p-value behind it, raw and
    adjusted over the family."""

    verdict: str
    p: float  # the raw p-value behind the verdict (undecided: the claim's own, the largest link p)
    p_adjusted: float  # the same, adjusted over the family: the verdict is its comparison with LEVEL
    p_claim: float
    p_against: float
    level: float  # the raw level the seeds to decide are computed at (`decision_level`)
    seeds: int | None  # seeds per arm that would decide it (undecided only; MAX_SEEDS + 1 = more than that)
    decides_as: str  # what those seeds would show: "held" or "not held" ("" when nothing can be said)


def raw_p(links: list[Link]) -> tuple[float, float]:
    """A claim's p-values before the family's correction: for the claim, the largest of its links' (it holds
    when every link holds, an intersection-union test); against it, the smallest reversed link's times their
    number (Bonferroni within the claim)."""
    return max(link.p for link in links), min(1.0, len(links) * min(link.p_reverse for link in links))


def combine(links: list[Link], complete: bool, adjusted: tuple[float, float] | None = None,
            level: float = LEVEL) -> Verdict:
    """The claim holds when its adjusted p reaches LEVEL and no arm is missing (`complete`); not held when its
    adjusted p against reaches LEVEL; else undecided, with the seeds that would decide it at `level` (reversed
    links: at `level` over their number). `adjusted`: the family's adjusted (claim, against) p-values (None:
    the raw ones, a family of one)."""
    p_claim, p_against = raw_p(links)
    adj_claim, adj_against = adjusted or (p_claim, p_against)
    if reaches(adj_against, LEVEL):
        return Verdict("not held", p_against, adj_against, p_claim, p_against, level, None, "")
    if reaches(adj_claim, LEVEL) and complete:
        return Verdict("held", p_claim, adj_claim, p_claim, p_against, level, None, "")
    def undecided(seeds: int | None, towards: str) -> Verdict:
        return Verdict("undecided", p_claim, adj_claim, p_claim, p_against, level, seeds, towards if seeds else "")

    reversed_ = [link.seeds_against(level / len(links)) for link in links if link.supports is False]
    if reversed_:
        return undecided(min((s for s in reversed_ if s is not None), default=None), "not held")
    if any(link.supports is None for link in links):
        return undecided(None, "")
    needed = [link.seeds_for(level) for link in links]
    return undecided(None if None in needed else max(needed), "held")
