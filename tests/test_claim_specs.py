"""Each spec's seeds against its own claims: the family a report of the spec's full runs would judge (every
claim of every spec that the runs give a comparison), the seeds each of its claims needs at the papers' own
numbers (their tables' values, their spread for that data set and depth) at the level of that family, and a
`seeds_note` on exactly those claims that the spec's seeds cannot decide; docs/reports.md's claims table is this
computation."""
from __future__ import annotations

import functools
import re

import pytest
import yaml
from helpers import REPO

from resnet_ablate.analysis import paper
from resnet_ablate.analysis.scan import DATA, SeedGroup, settings_of
from resnet_ablate.claims.judge import contexts
from resnet_ablate.claims.stats import DEFAULT_CORRECTION, decision_level
from resnet_ablate.sweeps.launchkeys import available
from resnet_ablate.sweeps.specs import load_spec
from resnet_ablate.training.configfile import to_yaml
from resnet_ablate.training.parse import parse

PROBED = {"shortcut_path_ratio", "input_gradient_ratio"}  # read from probes.jsonl at iteration 0 only
spec = functools.cache(load_spec)  # each spec read once
SPECS = [name for name in available("ablations") if spec(name).claims]  # the specs with claims


@functools.cache
def planned_groups(name: str) -> tuple[SeedGroup, ...]:
    """The seed groups a report would find once every run of the spec's full budget has finished."""
    groups: dict[tuple, SeedGroup] = {}
    unseeded = {tuple(o for o in overrides if not o.startswith("seed=")) for overrides in spec(name).runs("full")}
    for overrides in sorted(unseeded):
        settings = {**settings_of(yaml.safe_load(to_yaml(parse(list(overrides))))), DATA: ""}
        groups.setdefault(tuple(settings.items()), SeedGroup(settings, []))
    return tuple(groups.values())


def recorded(name: str, metric: str) -> bool:
    """Whether the spec's runs record `metric` (the gradient ratios need a probe at iteration 0)."""
    return metric not in PROBED or 0 in spec(name).overrides.get("grad_probe_at", [])


@functools.cache
def family(name: str) -> int:
    """The rows with data in a report of the spec's runs: every spec's claims, in every context."""
    claims = [c for other in available("ablations") for c in spec(other).claims]
    return sum(recorded(name, c.metric) and c.kind.linked([len(a.groups) == 1 for a in arms])
               for c in claims for _, arms in contexts(c, list(planned_groups(name))))


def needed(name: str, claim) -> int | None:
    """Seeds per arm that decide `claim` at the papers' numbers at the spec's family level (None: the papers
    give no number for some arm, or the spec's runs never have every arm)."""
    complete = [arms for _, arms in contexts(claim, list(planned_groups(name)))
                if all(len(a.groups) == 1 for a in arms)]
    if not complete or not recorded(name, claim.metric):
        return None
    settings = [a.groups[0].settings for a in complete[0]]
    if claim.kind.counting:
        values = [None] * len(settings)
    elif claim.metric != "test_error" or any(paper.lookup(s) is None for s in settings):
        return None
    else:
        values = [paper.lookup(s)[1].value for s in settings]
    spread = paper.spread(settings[0]["dataset"], settings[0]["depth"])
    return claim.kind.paper_seeds(values, spread.sd if spread else None, decision_level(DEFAULT_CORRECTION,
                                                                                         family(name)))


@pytest.mark.parametrize("name", SPECS)
def test_each_specs_seeds_decide_its_claims_or_the_spec_says_which_they_cannot(name):
    seeds = len(spec(name).seeds)
    for claim in spec(name).claims:
        n = needed(name, claim)
        short = n is None or n > seeds
        assert short == bool(claim.seeds_note), (f"{name}/{claim.id}: needs {n} per arm at 0.05 / {family(name)}, "
                                                 f"the spec has {seeds}: " + ("give it a seeds_note" if short else
                                                                              "its seeds_note is wrong"))


def claims_table() -> list[list[str]]:
    """docs/reports.md's claims table, computed: spec, claim, kind, metric, family, seeds needed, spec's seeds,
    what it says."""
    rows = []
    for name in SPECS:
        for claim in spec(name).claims:
            n = needed(name, claim)
            rows.append([name, claim.id, claim.kind.name, claim.metric, str(family(name)),
                         "no paper number" if n is None else str(n), str(len(spec(name).seeds)), claim.claim])
    return rows


def test_the_docs_list_every_claim_by_spec_with_its_family_and_seeds():
    text = (REPO / "docs" / "reports.md").read_text().split("| spec | claim | kind | metric | family |", 1)[1]
    lines = text.split("\n\n", 1)[0].splitlines()[2:]
    shown = [[re.sub(r"`", "", c).strip() for c in line.strip("|").split("|")] for line in lines]
    assert shown == claims_table()
