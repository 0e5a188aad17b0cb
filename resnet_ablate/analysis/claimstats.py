"""The one test and the one level the claims are judged with, and how many seeds would decide a claim.

Test: one-sided exact tests over seeds at LEVEL = 5 %, decided when p <= LEVEL.
- A comparison of two arms (x below y) is the exact Mann-Whitney (Wilcoxon rank-sum) test: the p-value is the
  share of all C(n+m, n) ways of splitting the pooled runs into the two arms whose rank sum for x is as small
  as observed or smaller (mid-ranks for ties). A failed run counts as worse than any error (+inf), as the
  papers' median of runs counts it. With n seeds per arm the smallest p is 1 / C(2n, n): 1/6 at 2 seeds (never
  decides), 1/20 = 0.05 at 3 seeds (decides only when every run of one arm is below every run of the other).
- A claim about one arm's median run (fails, trains, a value range) is the exact binomial (sign) test of
  "more than half the runs satisfy it": p = P(X >= k | n, 1/2) for k of n runs. Its smallest p is 2^-n:
  5 seeds at least (1/32), all of them satisfying it.
A claim of several comparisons (an ordering, a trend) holds when every comparison holds: p is their largest p
(an intersection-union test needs no correction). It is not held when any comparison is reversed at LEVEL
divided by their number (Bonferroni). Anything else is undecided: never held on noise.

Seeds to decide: for a comparison, Noether's (1987) sample size for the rank-sum test at POWER = 80 %,
n per arm = (z_(1-a) + z_0.8)^2 / (6 (p - 1/2)^2) with p = P(X < Y) estimated from a normal model with the
observed means and pooled sd, at least the smallest n at which the exact test can reach the level at all.
For a count: the smallest n whose exact binomial test at the level has 80 % power at the observed fraction.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

LEVEL = 0.05
POWER = 0.8
MAX_SEEDS = 1000  # seeds per arm beyond which the advice says "more than"
TEST = (f"one-sided exact tests over seeds at {LEVEL:.0%} (decided when p <= {LEVEL:g}): Mann-Whitney rank-sum "
        f"for a comparison (failed runs worst), binomial sign test for a median run; several comparisons must "
        f"all hold (largest p), one reversed at {LEVEL:g}/m says not held")


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


def rank_seeds(p_superior: float | None, alpha: float) -> int | None:
    """Seeds per arm for the rank-sum test to decide "X below Y" at `alpha` with POWER (Noether 1987), at least
    `smallest_rank_n`; None when P(X < Y) is unknown or not above 1/2 (the data point the other way or nowhere)."""
    if p_superior is None or p_superior <= 0.5:
        return None
    z = stats.norm.ppf(1 - alpha) + stats.norm.ppf(POWER)
    n = math.ceil(z * z / (6 * (p_superior - 0.5) ** 2) - 1e-9)
    return min(max(n, smallest_rank_n(alpha)), MAX_SEEDS + 1)


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
    """One comparison inside a claim: its p-value, the reversed comparison's, and the seeds per arm that would
    decide it either way (None: cannot be said)."""

    label: str
    p: float
    p_reverse: float
    seeds_for: int | None  # to show it holds at LEVEL
    seeds_against: int | None  # to show it reversed at LEVEL / m
    supports: bool | None  # whether the observed data point the claimed way (None: no difference, or unknown)
    estimate: float | None  # P(X < Y), or the share of runs satisfying it (None: cannot be estimated)


def _enough(p: float, alpha: float, seeds: int | None, have: int) -> int | None:
    """Seeds that decide a comparison: those it has when p already reaches alpha, else the advice but at
    least one more than it has."""
    if reaches(p, alpha):
        return have
    return None if seeds is None else max(seeds, have + 1)


def rank_link(label: str, lower: list[float], higher: list[float], links: int, fallback_sd: float | None) -> Link:
    """The comparison "`lower` below `higher`" of a claim with `links` comparisons."""
    p_sup = superiority(lower, higher, fallback_sd)
    against = None if p_sup is None else 1 - p_sup
    p, p_reverse, have = rank_p(lower, higher), rank_p(higher, lower), min(len(lower), len(higher))
    return Link(label, p, p_reverse, _enough(p, LEVEL, rank_seeds(p_sup, LEVEL), have),
                _enough(p_reverse, LEVEL / links, rank_seeds(against, LEVEL / links), have),
                None if p_sup is None or p_sup == 0.5 else p_sup > 0.5, p_sup)


def count_link(label: str, k: int, n: int, links: int) -> Link:
    """The claim "more than half of an arm's runs satisfy it", k of n runs doing so."""
    fraction = k / n if n else None
    p, p_reverse = count_p(k, n), count_p(n - k, n)
    return Link(label, p, p_reverse, _enough(p, LEVEL, count_seeds(fraction, LEVEL), n),
                _enough(p_reverse, LEVEL / links, count_seeds(None if fraction is None else 1 - fraction,
                                                                LEVEL / links), n),
                None if fraction is None or fraction == 0.5 else fraction > 0.5, fraction)


@dataclass(frozen=True)
class Verdict:
    """A claim's verdict from its comparisons: held, not held or undecided, with the p-value behind it."""

    verdict: str
    p: float  # the p-value behind the verdict (undecided: the claim's own, the largest link p)
    p_claim: float
    p_against: float
    seeds: int | None  # seeds per arm that would decide it (undecided only; MAX_SEEDS + 1 = more than that)
    decides_as: str  # what those seeds would show: "held" or "not held" ("" when nothing can be said)


def combine(links: list[Link], complete: bool) -> Verdict:
    """The claim holds when every link holds (`complete`: no arm is missing); not held when a link is reversed
    at LEVEL / number of links; else undecided, with the seeds that would decide it."""
    m = len(links)
    p_claim = max(link.p for link in links)
    p_against = min(1.0, m * min(link.p_reverse for link in links))
    if reaches(p_against, LEVEL):
        return Verdict("not held", p_against, p_claim, p_against, None, "")
    if reaches(p_claim, LEVEL) and complete:
        return Verdict("held", p_claim, p_claim, p_against, None, "")
    reversed_ = [link.seeds_against for link in links if link.supports is False]
    if reversed_:
        seeds = min((s for s in reversed_ if s is not None), default=None)
        return Verdict("undecided", p_claim, p_claim, p_against, seeds, "not held" if seeds else "")
    if any(link.supports is None for link in links):
        return Verdict("undecided", p_claim, p_claim, p_against, None, "")
    needed = [link.seeds_for for link in links]
    seeds = None if None in needed else max(needed)
    return Verdict("undecided", p_claim, p_claim, p_against, seeds, "held" if seeds else "")
