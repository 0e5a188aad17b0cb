"""The papers' claims judged on run folders: every claim (`spec`) is matched to the finished runs' seed groups,
within each context (the settings outside the claim's arms), its kind (`kinds`) makes its comparisons, and the
rows with data are judged as one family with the tests of `stats`: held, not held or undecided, with the raw and
the family-adjusted p-value behind the verdict, and for a claim not decided the seeds per arm that would decide
it and what those runs cost (`sweeps.cost`). `section` writes the rows into report.md and claims.csv. Imports no
trainer: the speed tables for the cost are the caller's.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..analysis import paper
from ..analysis.scan import SeedGroup, context_of, group_keys, shortcut_params
from ..analysis.tables import PAPER_ITERATIONS, recipe_diff, recipe_keys, recipe_values, schedule
from ..sweeps import cost
from ..training.config import defaults
from ..values import report_text
from .kinds import median_text
from .metrics import METRICS, value
from .spec import RECIPE, Arm, Claim, same_value
from .stats import DEFAULT_CORRECTION, MAX_SEEDS, Link, Verdict, adjust, combine, decision_level, raw_p


@dataclass
class ArmRuns:
    """One arm of a claim in one context: the seed group it selects (several: ambiguous) and its metric values
    (+inf: a failed run, for error metrics)."""

    arm: Arm
    groups: list[SeedGroup]
    values: list[float] = field(default_factory=list)

    def runs(self) -> list:
        return [r for g in self.groups for r in g.runs] if len(self.groups) == 1 else []


@dataclass
class ClaimRow:
    """A claim judged in one context."""

    claim: Claim
    context: dict[str, Any]  # the settings the arms share
    arms: list[ArmRuns]
    verdict: str  # held | not held | undecided | not run | not measured
    outcome: Verdict | None
    seeds: int | None = None  # per arm, to decide it (undecided or not run)
    extra_runs: int = 0
    extra_hours: float | None = None
    advice: str = ""
    labels: list[str] = field(default_factory=list)
    links: list[Link] = field(default_factory=list)  # the comparisons that can be computed (none: not in the family)
    family: int = 0  # the rows with data in the report, over which the p-values are adjusted
    level: float = 0.0  # the raw level the seeds to decide are computed at (`stats.decision_level`)
    note: str = ""  # why a claim is not run where runs of its spec are: they ran on other data


def _matches(settings: dict[str, Any], select: dict[str, Any]) -> bool:
    return all(not recipe_diff(settings, v) if k == RECIPE else same_value(settings.get(k), v)
               for k, v in select.items())


def variant_keys(claim: Claim) -> set[str]:
    """The settings a claim's arms are told apart by: its own keys, every shortcut parameter with the shortcut,
    every recipe setting with a recipe."""
    keys = claim.keys()
    if "shortcut" in keys:
        keys |= set(shortcut_params())
    if RECIPE in keys:
        keys = (keys - {RECIPE}) | set(recipe_keys())
    return keys


def _pick(groups: list[SeedGroup], arm: Arm, keys: set[str]) -> list[SeedGroup]:
    """The groups an arm selects; where several do, those whose other variant settings are at their defaults
    (the paper's row, not a variant of it such as gate_weight_decay=false)."""
    found = [g for g in groups if _matches(g.settings, arm.select)]
    if len(found) > 1:
        plain = defaults()
        found = [g for g in found if all(g.settings[k] is None or same_value(g.settings[k], getattr(plain, k))
                                         for k in keys - arm.select.keys() if hasattr(plain, k))] or found
    return found


def contexts(claim: Claim, groups: list[SeedGroup]) -> list[tuple[dict[str, Any], list[ArmRuns]]]:
    """The contexts in which some arm of the claim has runs, each with its arms."""
    keys = variant_keys(claim)
    parts: dict[tuple, list[SeedGroup]] = {}
    for g in (g for g in groups if _matches(g.settings, claim.where)):
        parts.setdefault(context_of(g.settings, tuple(keys)), []).append(g)
    found = []
    for context, gs in parts.items():
        arms = [ArmRuns(arm, _pick(gs, arm, keys)) for arm in claim.arms]
        if any(a.groups for a in arms):
            found.append((dict(context), arms))
    return found


def judge(claim: Claim, context: dict[str, Any], arms: list[ArmRuns]) -> ClaimRow:
    """The claim's comparisons in one context (its verdict waits for the family: `judge_all`)."""
    for a in arms:
        a.values = [v for v in (value(r, claim.metric) for r in a.runs()) if v is not None]
    row = ClaimRow(claim, context, arms, "", None, labels=_labels(claim, context, arms))
    row.links = claim.kind.links(arms, fallback_sd(claim, context))
    if not row.links:
        row.verdict = "not run" if any(not a.runs() for a in arms) else "not measured"
    return row


def decide(row: ClaimRow, adjusted: tuple[float, float] | None, level: float, speed: list[dict[str, str]]) -> None:
    """A row's verdict from its family-adjusted p-values (None: a row outside the family), and for a row not
    decided the seeds that would decide it at `level` and their cost."""
    if row.links:
        row.outcome = combine(row.links, complete=all(a.values for a in row.arms), adjusted=adjusted, level=level)
        row.verdict = row.outcome.verdict
    if row.verdict not in ("held", "not held", "not measured"):
        _advise(row, row.links, level, speed)


def fallback_sd(claim: Claim, context: dict[str, Any]) -> float | None:
    """The papers' seed spread of test error for the context's data set and depth (`paper.spread`), used where
    each arm has one seed; None for other metrics, or where the papers give none."""
    found = paper.spread(context.get("dataset"), context.get("depth")) if claim.metric == "test_error" else None
    return found.sd if found else None


def _advise(row: ClaimRow, links: list[Link], level: float, speed: list[dict[str, str]]) -> None:
    """Seeds per arm that would decide the claim at `level` (at least the test's smallest n there for arms not
    run) and the GPU-hours of the runs that takes."""
    smallest = row.claim.kind.smallest(level)
    unrun = [a.arm.label for a in row.arms if not a.values]
    seeds = row.outcome.seeds if row.outcome else None
    if seeds is None and not unrun:
        estimates = [link.estimate for link in links]
        row.advice = ("no number of seeds: the runs show no difference" if None not in estimates else
                      "unknown: one seed per arm and no spread known for this metric, data set and depth; run 2 seeds "
                      "per arm to measure it")
        return
    seeds = max(seeds or 0, smallest)
    row.seeds = seeds
    if seeds > MAX_SEEDS:
        row.advice = f"more than {MAX_SEEDS} seeds per arm"
        return
    gpu = cost.choose_gpu(None, speed)
    hours, sources = 0.0, set()
    for a in row.arms:
        extra = max(0, seeds - len(a.values))
        row.extra_runs += extra
        if extra:
            each, source = cost.run_hours(arm_settings(row.context, a.arm), gpu, speed)
            hours += extra * each
            sources.add(source.split(" (")[0])
    row.extra_hours = hours
    towards = f" ({row.outcome.decides_as})" if row.outcome and row.outcome.decides_as else ""
    unrun_text = f", {len(unrun)} arm{'s' if len(unrun) > 1 else ''} not run among them" if unrun else ""
    row.advice = (f"{seeds} per arm{towards}: +{row.extra_runs} runs{unrun_text}, {hours:.2g} GPU-h on {gpu} "
                  f"({', '.join(sorted(sources))})")


def arm_settings(context: dict[str, Any], arm: Arm) -> dict[str, Any]:
    """The settings of one run of an arm in a context (for its cost; defaults where the context has none)."""
    settings = {**vars(defaults()), **context, **{k: v for k, v in arm.select.items() if k != RECIPE}}
    if RECIPE in arm.select:
        settings.update(recipe_values(arm.select[RECIPE], settings))
    return settings


TRAINING_METRICS = ("train_error", "train_loss")  # what a prefix of the schedule shows: training itself


def prefix_tests(claim: Claim) -> bool:
    """Whether a prefix of the papers' schedule tests the claim: one about training error or loss, and not a gain
    from depth (the deeper arm better), which the papers show at the end of training. Test error, layer
    responses and depth gains are the trained net's."""
    if claim.metric not in TRAINING_METRICS:
        return False
    depths = [arm.select.get("depth") for arm in claim.arms]
    return not any(isinstance(depths[lo], int) and isinstance(depths[hi], int) and depths[lo] > depths[hi]
                   for lo, hi, _ in claim.kind.pairs(list(range(len(depths)))))


def _labels(claim: Claim, context: dict[str, Any], arms: list[ArmRuns]) -> list[str]:
    """What makes a verdict weaker than the papers': a reduced schedule or budget (and, for a claim that a
    prefix of the schedule does not test, that), data that is not the official set (result.json's
    data_official; absent counts as not official)."""
    runs = [r for a in arms for r in a.runs()]
    labels = []
    its = {r.settings["iterations"] for r in runs} or {context.get("iterations", PAPER_ITERATIONS)}
    if min(its) < PAPER_ITERATIONS:
        labels.append(", ".join(sorted({schedule(i) for i in its})))
        if not prefix_tests(claim):
            labels.append("not tested by a prefix of the schedule (a claim about the trained net)")
    budgets = sorted({r.sweep.budget for r in runs if r.sweep and r.sweep.budget != "full"})
    if budgets:
        labels.append(f"budget {', '.join(budgets)}")
    official = [r.result.get("data_official") for r in runs]
    if context.get("dataset") == "synthetic":
        labels.append("synthetic data")
    elif False in official:
        labels.append("data not the official set")
    elif any(v is not True for v in official):
        labels.append("data not known to be official")
    return labels


def judge_all(claims: list[Claim], groups: list[SeedGroup], sweeps: set[str],
              correction: str = DEFAULT_CORRECTION, speed: list[dict[str, str]] | None = None) -> list[ClaimRow]:
    """Every claim in every context where some arm has runs; a claim of a spec whose sweep is present but none of
    whose arms ran gets one 'not run' row. The rows with data are the family: their p-values are adjusted over
    it by `correction`, the verdicts follow the adjusted ones, and the seeds to decide are computed at the level
    a row must reach whatever the others show (`decision_level`; for a row outside the family, of the family it
    would join), their cost from the bench's `speed` rows (none: the architecture estimate)."""
    rows = []
    for claim in claims:
        found = [judge(claim, ctx, arms) for ctx, arms in contexts(claim, groups)]
        if not found and claim.spec in sweeps:
            found = [judge(claim, dict(claim.where), [ArmRuns(a, []) for a in claim.arms])]
            found[0].note = other_data(claim, groups)
        rows += found
    family = [r for r in rows if r.links]
    p_claim, p_against = zip(*(raw_p(r.links) for r in family)) if family else ((), ())
    adjusted = dict(zip(map(id, family), zip(adjust(list(p_claim), correction), adjust(list(p_against), correction))))
    for row in rows:
        row.family, row.level = len(family), decision_level(correction, len(family) + (not row.links))
        decide(row, adjusted.get(id(row)), row.level, speed or [])
    return rows


DATA_NAMES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}


def other_data(claim: Claim, groups: list[SeedGroup]) -> str:
    """'ran on other data (dataset=synthetic); the claim is about CIFAR-10' where runs that fit the claim but for
    the data set are there; '' otherwise."""
    wanted = claim.where.get("dataset")
    if wanted is None:
        return ""
    rest = {k: v for k, v in claim.where.items() if k != "dataset"}
    other = sorted({g.settings["dataset"] for g in groups if _matches(g.settings, rest)} - {wanted})
    return (f"ran on other data (dataset={', '.join(other)}); the claim is about {DATA_NAMES.get(wanted, wanted)}"
            if other else "")


def differing(rows: list[ClaimRow]) -> dict[int, str]:
    """For a claim judged in several contexts, the settings that tell its rows apart, by row index."""
    out = {}
    for claim in {id(r.claim): r.claim for r in rows}.values():
        mine = [(i, r) for i, r in enumerate(rows) if r.claim is claim]
        if len(mine) > 1:
            keys = [k for k in group_keys() if len({str(r.context.get(k)) for _, r in mine}) > 1]
            out.update({i: ", ".join(f"{k}={report_text(r.context.get(k))}" for k in keys) for i, r in mine})
    return out


def medians(row: ClaimRow) -> str:
    """Every arm's median, 'label=value'."""
    return "; ".join(f"{a.arm.label}={median_text(a.values)}" for a in row.arms)


def observed(row: ClaimRow) -> str:
    """The observed statistic in words, as the claim's kind states it (k of n runs for a count claim; the arms'
    medians, failures counted as the worst, for a comparison); blank when no arm has values."""
    if not any(a.values for a in row.arms):
        return ""
    return row.claim.kind.observed(row.arms, METRICS.get(row.claim.metric).about.split(" (")[0])


def arms_text(row: ClaimRow) -> str:
    """n per arm ('5 per arm' when every arm has the same), then the arms without runs: not run, not measured,
    or ambiguous (several seed groups match the arm); for a claim whose runs are on other data, that."""
    if row.note:
        return row.note
    measured = [a for a in row.arms if a.values and len(a.groups) == 1]
    counts = {len(a.values) for a in measured}
    if len(counts) == 1:
        some = len(measured) < len(row.arms)
        text = f"{counts.pop()} per arm" + (f" ({len(measured)} of {len(row.arms)} arms)" if some else "")
    else:
        text = ", ".join(f"{a.arm.label} {len(a.values)}" for a in measured)
    why = {"ambiguous": [a.arm.label + f" ({len(a.groups)} groups)" for a in row.arms if len(a.groups) > 1],
           "not run": [a.arm.label for a in row.arms if not a.groups],
           "not measured": [a.arm.label for a in row.arms if len(a.groups) == 1 and not a.values]}
    return "; ".join(filter(None, [text, *(f"{k}: {', '.join(v)}" for k, v in why.items() if v)]))
