"""The report's Claims section and claims.csv: one row per claim and context (`claims.judge_all`), the test and
level under the table, the papers' wording and sources below it."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .claims import ClaimRow, arms_text, differing, judge_all, medians, observed, spec_claims
from .claimstats import LEVEL, POWER, TEST
from .scan import Scan, copy_lines, group_by_settings
from .tables import markdown

CSV = "claims.csv"
CSV_COLUMNS = ("spec", "id", "claim", "kind", "metric", "source", "context", "n_per_arm", "observed", "medians",
               "verdict", "p", "p_claim", "p_against", "level", "test", "seeds_per_arm", "decides_as", "extra_runs",
               "extra_gpu_hours", "to_decide", "weaker_than_paper", "paper")
CAPTION = (f"Test: {TEST}. p: the p-value behind the verdict (undecided: the claim's own). To decide: the seeds per "
           f"arm at which the test would decide the claim with {POWER:.0%} power if the observed difference and "
           f"spread held (Noether's rank-sum sample size; for one arm's median run, the binomial test's exact "
           f"power), at least the smallest n at which the test can reach {LEVEL:g} at all (3 per arm for a "
           f"comparison, 5 for a median run); with one seed per arm the spread is the papers' (sd 0.16 of "
           f"ResNet-110's test error, 2015 Table 6); the cost is the GPU-hours of the runs still missing (bench "
           f"speed table, else the architecture estimate of `resnet_ablate.sweeps.cost`). Weaker than the "
           f"paper's: a reduced schedule or budget, or data that is not the official set.")


def claims_section(found: Scan, out: Path) -> list[str]:
    """The Claims section of report.md (and claims.csv in `out`) for the finished runs found."""
    claims, problems = spec_claims()
    sweeps = {r.sweep.name for r in found.runs if r.sweep is not None}
    rows = judge_all(claims, group_by_settings(found.runs), sweeps)
    contexts = differing(rows)
    records = [_record(row, contexts.get(i, "")) for i, row in enumerate(rows)]
    pd.DataFrame(records, columns=list(CSV_COLUMNS)).to_csv(out / CSV, index=False)
    lines = ["## Claims", ""]
    if not rows:
        lines += [f"No claim of the specs in ablations/ applies to these runs (none of their settings matches a "
                  f"claim's arm; {len(claims)} claims read).", ""]
    else:
        shown = pd.DataFrame([_cells(r) for r in records])
        lines += [markdown(shown), "", CAPTION, "", *copy_lines(found.runs), "The papers' words:", ""]
        shown_claims = {(r.claim.spec, r.claim.id): r.claim for r in rows}.values()
        lines += [f"- {c.spec}/{c.id}: {c.paper} ({c.source})" + (f". Note: {c.note}" if c.note else "")
                  for c in shown_claims]
        lines.append("")
    return lines + [f"- {p}" for p in problems] + ([""] if problems else [])


def _record(row: ClaimRow, context: str) -> dict:
    claim, outcome = row.claim, row.outcome
    return {"spec": claim.spec, "id": claim.id, "claim": claim.claim, "kind": claim.kind, "metric": claim.metric,
            "source": claim.source, "context": context, "n_per_arm": arms_text(row), "observed": observed(row),
            "medians": medians(row), "verdict": row.verdict, "p": outcome.p if outcome else None,
            "p_claim": outcome.p_claim if outcome else None, "p_against": outcome.p_against if outcome else None,
            "level": LEVEL, "test": TEST, "seeds_per_arm": row.seeds,
            "decides_as": outcome.decides_as if outcome else "", "extra_runs": row.extra_runs,
            "extra_gpu_hours": row.extra_hours, "to_decide": row.advice, "weaker_than_paper": "; ".join(row.labels),
            "paper": claim.paper}


def _cells(record: dict) -> dict[str, str]:
    """The markdown row of a record."""
    name = f"{record['spec']}: {record['claim']}" + (f" ({record['context']})" if record["context"] else "")
    p = record["p"]
    return {"claim": name, "source": record["source"], "n per arm": record["n_per_arm"], "observed": record["observed"],
            "verdict": f"**{record['verdict']}**", "p": "" if p is None else f"{p:.2g}",
            "to decide": record["to_decide"], "weaker than the paper's": record["weaker_than_paper"]}
