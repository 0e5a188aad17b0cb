"""The report's Claims section and claims.csv: every claim of the specs in ablations/ judged on the runs found
(`judge.judge_all`), one row per claim and context, the test, the family and its correction under the table, the
claims' own words and sources below it."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..analysis.scan import Scan, copy_lines, group_by_settings
from ..analysis.tables import markdown
from ..errors import UsageError
from ..sweeps import cost
from ..sweeps.launchkeys import available
from ..sweeps.plancost import SPEED_TABLES
from ..sweeps.specs import load_spec
from .judge import ClaimRow, arms_text, differing, judge_all, medians, observed
from .spec import ORIGINS, Claim
from .stats import CORRECTIONS, DEFAULT_CORRECTION, LEVEL, POWER, TEST, decision_level

CSV = "claims.csv"
CSV_COLUMNS = ("spec", "id", "claim", "kind", "metric", "source", "context", "n_per_arm", "observed", "medians",
               "verdict", "p", "p_adjusted", "p_claim", "p_against", "correction", "family", "level", "test",
               "level_to_decide", "seeds_per_arm", "decides_as", "extra_runs", "extra_gpu_hours", "to_decide",
               "weaker_than_paper", "paper")


def caption(correction: str, family: int) -> str:
    """The text under the claims table: the test, the family and its correction, what 'to decide' means."""
    level = decision_level(correction, family)
    return (f"Test: {TEST}. The family: the {family} row{'s' if family != 1 else ''} with data in this report; "
            f"{CORRECTIONS[correction]} (`--claims-correction`). p: the raw p-value behind the verdict "
            f"(undecided: the claim's own); p adj.: the same adjusted over the family, which decides the verdict. "
            f"To decide: the seeds per arm at which the test would decide the claim at {level:.2g} (the level a "
            f"row's raw p must reach whatever the other rows show: {LEVEL:g}"
            + (f" / {family}" if correction != "none" and family > 1 else "") +
            f") with {POWER:.0%} power if the observed difference and spread held (Noether's rank-sum sample size; "
            f"for one arm's median run, the binomial test's exact power), at least the smallest n at which the "
            f"test can reach that level at all (see docs/reports.md for the table); with one seed per arm the "
            f"spread is the papers' for that data set and depth, where they give one; the cost is the GPU-hours "
            f"of the runs still missing (bench speed table, else the architecture estimate of "
            f"`resnet_ablate.sweeps.cost`). Weaker than the paper's: a reduced schedule or budget (a prefix of the "
            f"schedule tests only the training-error and loss claims), or data that is not the official set.")


def spec_claims() -> tuple[list[Claim], list[str]]:
    """Every claim of the specs in ablations/ (here and in the source checkout), and a line per unreadable spec."""
    claims, problems = [], []
    for name in available("ablations"):
        try:
            claims += load_spec(name).claims
        except UsageError as e:
            problems.append(f"spec {name} not read: {e}")
    return claims, problems


def claims_section(found: Scan, out: Path, correction: str = DEFAULT_CORRECTION) -> list[str]:
    """The Claims section of report.md (and claims.csv in `out`) for the finished runs found."""
    claims, problems = spec_claims()
    sweeps = {r.sweep.name for r in found.runs if r.sweep is not None}
    speed = cost.read_speed_tables(SPEED_TABLES) if SPEED_TABLES.is_dir() else []
    rows = judge_all(claims, group_by_settings(found.runs), sweeps, correction, speed)
    contexts = differing(rows)
    records = [_record(row, contexts.get(i, ""), correction) for i, row in enumerate(rows)]
    pd.DataFrame(records, columns=list(CSV_COLUMNS)).to_csv(out / CSV, index=False)
    lines = ["## Claims", ""]
    if not rows:
        lines += [f"No claim of the specs in ablations/ applies to these runs (none of their settings matches a "
                  f"claim's arm; {len(claims)} claims read).", ""]
    else:
        shown = pd.DataFrame([_cells(r) for r in records])
        lines += [markdown(shown), "", caption(correction, rows[0].family), "", *copy_lines(found.runs)]
        shown_claims = {(r.claim.spec, r.claim.id): r.claim for r in rows}.values()
        for origin, heading in ORIGINS.items():
            mine = [c for c in shown_claims if c.origin == origin]
            lines += [f"{heading}:", "", *(f"- {c.spec}/{c.id}: {c.paper} ({c.source})" +
                                           (f". Note: {c.note}" if c.note else "") for c in mine), ""] if mine else []
    return lines + [f"- {p}" for p in problems] + ([""] if problems else [])


def _record(row: ClaimRow, context: str, correction: str) -> dict:
    claim, outcome = row.claim, row.outcome
    return {"spec": claim.spec, "id": claim.id, "claim": claim.claim, "kind": claim.kind.name, "metric": claim.metric,
            "source": claim.source, "context": context, "n_per_arm": arms_text(row), "observed": observed(row),
            "medians": medians(row), "verdict": row.verdict, "p": outcome.p if outcome else None,
            "p_adjusted": outcome.p_adjusted if outcome else None,
            "p_claim": outcome.p_claim if outcome else None, "p_against": outcome.p_against if outcome else None,
            "correction": correction, "family": row.family, "level": LEVEL, "test": TEST,
            "level_to_decide": row.level, "seeds_per_arm": row.seeds,
            "decides_as": outcome.decides_as if outcome else "", "extra_runs": row.extra_runs,
            "extra_gpu_hours": row.extra_hours, "to_decide": row.advice, "weaker_than_paper": "; ".join(row.labels),
            "paper": claim.paper}


def _cells(record: dict) -> dict[str, str]:
    """The markdown row of a record."""
    name = f"{record['spec']}: {record['claim']}" + (f" ({record['context']})" if record["context"] else "")
    p, adjusted = record["p"], record["p_adjusted"]
    return {"claim": name, "source": record["source"], "n per arm": record["n_per_arm"], "observed": record["observed"],
            "verdict": f"**{record['verdict']}**", "p": "" if p is None else f"{p:.2g}",
            "p adj.": "" if adjusted is None else f"{adjusted:.2g}", "to decide": record["to_decide"],
            "weaker than the paper's": record["weaker_than_paper"]}
