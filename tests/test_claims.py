"""The papers' claims as checks: specs declare them (one-line errors for bad ones), the report judges them on
hand-made run folders (held, not held, undecided, not run, a failed arm), the seed advice against closed forms,
and the report on the committed results/ shows its Claims section."""
import contextlib
import io
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from helpers import REPO, TINY, cli_env, layout_table, make_run_folder
from scipy import stats

from resnet_ablate.analysis import paper
from resnet_ablate.analysis.scan import group_by_settings, scan
from resnet_ablate.claims import judge as judged
from resnet_ablate.claims.kinds import CLAIM_KINDS, Counting, KindKey
from resnet_ablate.claims.metrics import value
from resnet_ablate.claims.spec import read_claims
from resnet_ablate.claims.stats import (
    LEVEL,
    POWER,
    adjust,
    count_seeds,
    decision_level,
    rank_link,
    rank_p,
    rank_seeds,
    separation,
    smallest_count_n,
    smallest_rank_n,
)
from resnet_ablate.errors import UsageError
from resnet_ablate.folders.sweepfolder import SweepRecord, write_sweep
from resnet_ablate.models.cifar import build_model
from resnet_ablate.models.probes import gradient_norms
from resnet_ablate.report import main as report_main
from resnet_ablate.report import write_report
from resnet_ablate.run import main as run_main
from resnet_ablate.sweeps.specs import check_setting, load_spec
from resnet_ablate.training.parse import parse
from resnet_ablate.training.trainer import train

WHERE = {"dataset": "synthetic", "depth": 8}


def make_runs(root: Path, arms: dict[str, list], extra: tuple[str, ...] = ()) -> list:
    """Run folders per shortcut: a number is a done run's final test error, ('fail', e) a failed run with
    error e; returns the seed groups."""
    for shortcut, errors in arms.items():
        for seed, error in enumerate(errors):
            failed = isinstance(error, tuple)
            make_run_folder(root / f"{shortcut}_{'_'.join(extra)}_s{seed}",
                            [*TINY, f"shortcut={shortcut}", f"seed={seed}", *extra],
                            status="fail" if failed else "done", error=error[1] if failed else error)
    return group_by_settings(scan(root).runs)


def claim(kind: str, arms: dict, **extra):
    data = [{"id": "c", "claim": "a claim", "paper": "the words", "source": "Table 9", "kind": kind,
             "where": WHERE, "arms": arms, **extra}]
    return read_claims(Path("spec.yaml"), "spec", data, check_setting)[0]


def judge_one(c, groups):
    rows = judged.judge_all([c], groups, set())
    assert len(rows) == 1
    return rows[0]


IDENTITY, PLAIN, SCALED = {"shortcut": "identity"}, {"shortcut": "none"}, {"shortcut": "scaling"}


def test_held_and_not_held_from_three_seeds_each(tmp_path):
    groups = make_runs(tmp_path, {"identity": [5.0, 5.1, 5.2], "none": [9.0, 9.1, 9.2]})
    held = judge_one(claim("lower", {"identity": IDENTITY, "plain": PLAIN}), groups)
    assert held.verdict == "held" and held.outcome.p == pytest.approx(1 / 20)  # every split: C(6, 3) = 20
    assert judged.arms_text(held) == "3 per arm" and held.advice == ""
    reverse = judge_one(claim("lower", {"plain": PLAIN, "identity": IDENTITY}), groups)
    assert reverse.verdict == "not held" and reverse.outcome.p == pytest.approx(1 / 20)
    assert "plain 9.1" in judged.observed(reverse) and "identity 5.1" in judged.observed(reverse)


def test_a_seed_in_two_sweep_folders_counts_once(tmp_path, monkeypatch):
    """The same 3 seeds per arm in two sweeps (the specs overlap by design): pooled, 6 copies per arm read
    "held" at p = 0.015; counted once they are 3 per arm, p = 0.10, undecided. The report lists each copy not
    counted under the table, flagging a copy whose numbers differ; the tables' sd and Welch p count it once."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ablations").mkdir()
    (tmp_path / "ablations" / "mine.yaml").write_text(yaml.safe_dump({"claims": [
        {"id": "c", "claim": "identity below plain", "paper": "p", "source": "s", "kind": "lower", "where": WHERE,
         "arms": {"identity": IDENTITY, "plain": PLAIN}}]}))
    errors = {"identity": [5.0, 5.1, 5.3], "none": [5.2, 5.4, 5.5]}  # identity's rank sum 7: 2 of 20 splits
    for sweep in ("sweep_a", "sweep_b"):
        make_runs(tmp_path / "runs" / sweep, errors)
        write_sweep(SweepRecord(tmp_path / "runs" / sweep, sweep, "table1"))
    differ = tmp_path / "runs" / "sweep_b" / "none__s2" / "result.json"
    differ.write_text(differ.read_text().replace('"final_test_error": 5.5', '"final_test_error": 5.6'))
    found = scan(tmp_path / "runs")
    assert len(found.runs) == 12
    row = judge_one(claim("lower", {"identity": IDENTITY, "plain": PLAIN}), group_by_settings(found.runs))
    assert row.verdict == "undecided" and row.outcome.p == pytest.approx(2 / 20)
    assert judged.arms_text(row) == "3 per arm"
    text = write_report(found, tmp_path / "out", None, ("png",))
    claims_part = text.split("## Claims", 1)[1].split("\n## ", 1)[0]
    (shown,) = [line for line in claims_part.splitlines() if line.startswith("| mine: identity below plain")]
    assert "**undecided**" in shown and "3 per arm" in shown
    copies = [line for line in claims_part.splitlines() if line.startswith("- not counted")]
    assert len(copies) == 6 and all("/sweep_b/" in line.rsplit(": ", 1)[1] for line in copies)
    (flagged,) = [line for line in copies if "differ" in line]
    assert "final_test_error 5.6 vs 5.5" in flagged and flagged.endswith(str(differ.parent))
    table = layout_table(tmp_path / "runs", "table1").frame
    plain = table[table["shortcut"] == "none"].iloc[0]
    assert plain["n"] == 3 and plain["std"] == pytest.approx(np.std(errors["none"], ddof=1))
    assert plain["p_welch"] == pytest.approx(stats.ttest_ind(errors["none"], errors["identity"],
                                                             equal_var=False).pvalue)


def test_a_copy_inside_one_sweep_is_listed_under_its_tables(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sweep = tmp_path / "runs" / "s"
    make_runs(sweep / "first", {"identity": [5.0, 5.1], "none": [9.0]})
    make_runs(sweep / "second", {"identity": [5.0]})
    write_sweep(SweepRecord(sweep, "s", "table1"))
    text = write_report(scan(tmp_path / "runs"), tmp_path / "out", None, ("png",))
    section = text.split("## sweep s", 1)[1]
    assert "1 finished run not counted: each a copy of a run above" in section
    assert f"- not counted (a copy of {sweep / 'first' / 'identity__s0'}, the same settings and seed 0; the same " \
           f"numbers): {sweep / 'second' / 'identity__s0'}" in section
    table = pd.read_csv(tmp_path / "out" / "s-table1.csv")
    assert table.set_index("shortcut")["n"].to_dict() == {"identity": 2, "none": 1}


def test_two_seeds_per_arm_never_decide_and_the_advice_says_how_many_would(tmp_path):
    groups = make_runs(tmp_path, {"identity": [5.0, 5.1], "none": [9.0, 9.1]})
    row = judge_one(claim("lower", {"identity": IDENTITY, "plain": PLAIN}), groups)
    assert row.verdict == "undecided" and row.outcome.p == pytest.approx(1 / 6)  # the smallest p at 2 seeds
    # completely separated: P(X < Y) = 1; Noether's n = (z_.95 + z_.8)^2 / (6 * 0.5^2) = 4.12 -> 5 overstates
    # it: the arms (56 sd apart) separate at any n, and 3 per arm apart reach p = 0.05
    assert row.seeds == 3 and row.extra_runs == 2 and row.extra_hours > 0
    assert row.advice.startswith("3 per arm (held): +2 runs") and "GPU-h on H200 (estimate)" in row.advice
    assert "reduced: 30 it" in row.labels and "synthetic data" in row.labels


def test_an_arm_not_run_and_a_spec_whose_arms_never_ran(tmp_path):
    groups = make_runs(tmp_path, {"identity": [5.0, 5.1, 5.2], "none": [9.0, 9.1, 9.2]})
    row = judge_one(claim("lower", {"identity": IDENTITY, "plain": PLAIN, "scaled": SCALED}), groups)
    assert row.verdict == "undecided"  # the arms that ran agree, but the claim names one more
    assert judged.arms_text(row) == "3 per arm (2 of 3 arms); not run: scaled"
    assert row.seeds == smallest_rank_n(LEVEL) == 3 and row.extra_runs == 3
    nothing = claim("lower", {"scaled": SCALED, "dropout": {"shortcut": "dropout"}})
    assert judged.judge_all([nothing], groups, set()) == []  # no arm ran: not this spec's runs
    (row,) = judged.judge_all([nothing], groups, {"spec"})  # ...unless the spec's own sweep is present
    assert row.verdict == "not run" and judged.arms_text(row) == "not run: scaled, dropout"


def test_a_claim_whose_runs_are_on_other_data_says_so(tmp_path):
    """Issue 38: a degradation sweep on synthetic data read 'not run' against the CIFAR-10 claims."""
    groups = make_runs(tmp_path, {"identity": [5.0, 5.1, 5.2], "none": [9.0, 9.1, 9.2]})
    data = [{"id": "c", "claim": "a claim", "paper": "the words", "source": "Table 9", "kind": "lower",
             "where": {"dataset": "cifar10", "depth": 8}, "arms": {"identity": IDENTITY, "plain": PLAIN}}]
    (row,) = judged.judge_all(read_claims(Path("spec.yaml"), "spec", data, check_setting), groups, {"spec"})
    assert row.verdict == "not run"
    assert judged.arms_text(row) == "ran on other data (dataset=synthetic); the claim is about CIFAR-10"


def test_a_failed_arm_counts_as_the_papers_median_does(tmp_path):
    groups = make_runs(tmp_path, {"identity": [5.0, 5.1, 5.2], "none": [("fail", 3.0)] * 5,
                                  "scaling": [("fail", 30.0)] * 4 + [9.0]})
    fails = judge_one(claim("fails", {"plain": PLAIN}), groups)
    assert fails.verdict == "held" and fails.outcome.p == pytest.approx(1 / 32)  # 5 of 5 failed
    assert judged.observed(fails) == "plain: 5/5 failed"
    four = judge_one(claim("fails", {"scaled": SCALED}), groups)  # median of 5 lands on a failure, p = 6/32
    assert four.verdict == "undecided" and four.outcome.p == pytest.approx(6 / 32)
    assert four.seeds == count_seeds(0.8, LEVEL) == 18
    both = judge_one(claim("fails", {"plain": PLAIN, "scaled": SCALED}), groups)
    assert both.verdict == "undecided" and both.outcome.p == pytest.approx(6 / 32)  # every arm must hold
    # a failed run is worse than any error, whatever error it recorded (3.0 here)
    lower = judge_one(claim("lower", {"identity": IDENTITY, "plain": PLAIN}), groups)
    assert lower.verdict == "held" and "plain fail" in judged.observed(lower)
    trains = judge_one(claim("trains", {"plain": PLAIN}), groups)
    assert trains.verdict == "not held"


def test_close_and_trend_claims(tmp_path):
    groups = make_runs(tmp_path, {"identity": [5.0, 5.1, 5.2, 5.3, 5.4], "none": [5.3, 5.4, 5.5, 5.6, 5.7],
                                  "scaling": [7.0, 7.1, 7.2, 7.3, 7.4]})
    close = judge_one(claim("close", {"plain": PLAIN, "identity": IDENTITY}, margin=1.0), groups)
    assert close.verdict == "held" and "|Δ| 0.3, margin 1" in judged.observed(close)
    far = judge_one(claim("close", {"scaled": SCALED, "identity": IDENTITY}, margin=1.0), groups)
    assert far.verdict == "not held"
    rising = judge_one(claim("increasing", {"identity": IDENTITY, "plain": PLAIN, "scaled": SCALED}), groups)
    assert rising.verdict == "held" and rising.outcome.p == pytest.approx(rank_p([5.0, 5.1, 5.2, 5.3, 5.4],
                                                                                  [5.3, 5.4, 5.5, 5.6, 5.7]))
    assert "identity 5.2 → plain 5.5 → scaled 7.2" in judged.observed(rising)


def test_holm_and_benjamini_hochberg_adjust_as_their_closed_forms():
    ps = [0.01, 0.04, 0.03, 0.005]
    # Holm, sorted 0.005, 0.01, 0.03, 0.04: 4 x 0.005, 3 x 0.01, 2 x 0.03, max(1 x 0.04, 0.06): monotone
    assert adjust(ps, "holm") == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # Benjamini-Hochberg: 4/1 x 0.005, 4/2 x 0.01, 4/3 x 0.03, 4/4 x 0.04, each the smallest from its rank up
    assert adjust(ps, "bh") == pytest.approx([0.02, 0.04, 0.04, 0.02])
    assert adjust(ps, "none") == ps and adjust([0.3], "holm") == [0.3] and adjust([], "holm") == []
    assert adjust([0.6, 0.7], "holm") == [1.0, 1.0]  # at most 1
    assert decision_level("holm", 10) == decision_level("bh", 10) == LEVEL / 10 and decision_level("none", 10) == LEVEL


def test_the_family_of_claims_is_corrected_and_a_claim_with_no_run_is_not_in_it(tmp_path):
    """Alone, 5 of 5 failed runs hold a "fails" claim at p = 1/32; judged beside a claim at p = 0.05 (3 seeds per
    arm, every run apart), Holm asks 0.025 of the smaller p, and both are undecided: 6 runs would decide the
    count at 0.025 (2^-6 = 0.016), and 4 per arm the comparison (all apart: 1/70). Beside a claim at
    1/252 the count holds at Holm's second step (0.05 / 1). A claim whose arms did not run is not in the family.
    Uncorrected, both hold."""
    groups = make_runs(tmp_path / "runs", {"identity": [5.0, 5.1, 5.2], "none": [("fail", 30.0)] * 5,
                                           "scaling": [9.0, 9.1, 9.2]})
    fails = claim("fails", {"plain": PLAIN})
    lower = claim("lower", {"identity": IDENTITY, "scaled": SCALED})
    unrun = claim("lower", {"gated": {"shortcut": "gating"}, "dropout": {"shortcut": "dropout"}})
    (alone,) = judged.judge_all([fails], groups, set())
    assert alone.verdict == "held" and alone.outcome.p == alone.outcome.p_adjusted == pytest.approx(1 / 32)
    rows = judged.judge_all([fails, lower, unrun], groups, {"spec"})
    assert [r.verdict for r in rows] == ["undecided", "undecided", "not run"] and {r.family for r in rows} == {2}
    assert rows[0].outcome.p == pytest.approx(1 / 32) and rows[0].outcome.p_adjusted == pytest.approx(2 / 32)
    assert rows[1].outcome.p == pytest.approx(1 / 20) and rows[1].outcome.p_adjusted == pytest.approx(2 / 32)
    assert rows[0].seeds == 6 and rows[0].advice.startswith("6 per arm (held): +1 runs")
    assert rows[1].seeds == 4 and rows[1].advice.startswith("4 per arm (held): +2 runs")
    assert rows[2].seeds == smallest_rank_n(LEVEL / 3) == 4  # it would join a family of 3
    assert [r.verdict for r in judged.judge_all([fails, lower], groups, set(), "none")] == ["held", "held"]
    strong = make_runs(tmp_path / "more", {"identity": [5.0, 5.1, 5.2, 5.3, 5.4], "none": [("fail", 30.0)] * 5,
                                           "scaling": [9.0, 9.1, 9.2, 9.3, 9.4]})
    assert [r.verdict for r in judged.judge_all([fails, lower], strong, set())] == ["held", "held"]


def test_the_report_states_the_family_and_its_correction(tmp_path, monkeypatch, capsys):
    (tmp_path / "ablations").mkdir()
    both = [{"id": "below", "claim": "identity below plain", "paper": "p", "source": "s", "kind": "lower",
             "where": WHERE, "arms": {"identity": IDENTITY, "plain": PLAIN}},
            {"id": "above", "claim": "plain above identity", "paper": "p", "source": "s", "kind": "higher",
             "where": WHERE, "arms": {"plain": PLAIN, "identity": IDENTITY}}]
    (tmp_path / "ablations" / "mine.yaml").write_text(yaml.safe_dump({"claims": both}, sort_keys=False))
    monkeypatch.chdir(tmp_path)
    make_runs(tmp_path / "runs", {"identity": [5.0, 5.1, 5.2], "none": [9.0, 9.1, 9.2]})
    assert report_main([str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--formats", "png"]) == 0
    text = capsys.readouterr().out
    assert "The family: the 2 rows with data in this report; Holm's step-down over the family" in text
    assert "at 0.025 (the level a row's raw p must reach whatever the other rows show: 0.05 / 2)" in text
    csv = pd.read_csv(tmp_path / "out" / "claims.csv")
    assert list(csv["verdict"]) == ["undecided", "undecided"] and list(csv["family"]) == [2, 2]
    assert list(csv["p"]) == pytest.approx([0.05, 0.05]) and list(csv["p_adjusted"]) == pytest.approx([0.1, 0.1])
    assert list(csv["correction"]) == ["holm"] * 2 and list(csv["seeds_per_arm"]) == [4, 4]
    assert report_main([str(tmp_path / "runs"), "--out", str(tmp_path / "none"), "--formats", "png",
                        "--claims-correction", "none"]) == 0
    assert list(pd.read_csv(tmp_path / "none" / "claims.csv")["verdict"]) == ["held", "held"]
    assert report_main([str(tmp_path / "runs"), "--out", str(tmp_path / "x"), "--claims-correction", "bonf"]) == 2
    assert "invalid choice: 'bonf'" in capsys.readouterr().err


def test_the_seeds_each_kind_needs_against_the_familys_size_are_the_docs_table():
    """docs/reports.md tabulates the smallest seeds at which each kind can be decided at all, at Holm's first
    step 0.05 / m: every run of one arm apart from the other's (1/C(2n, n)), or every run satisfying it (2^-n)."""
    text = (REPO / "docs" / "reports.md").read_text().split("| family size m |", 1)[1].split("\n\n", 1)[0]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()[2:]]
    assert [int(r[0]) for r in rows] == [1, 2, 3, 5, 10, 20, 33]
    for m, level, rank, count in rows:
        alpha = decision_level("holm", int(m))
        assert float(level) == pytest.approx(alpha, rel=0.01)
        assert (int(rank), int(count)) == (smallest_rank_n(alpha), smallest_count_n(alpha))
        assert 1 / math.comb(2 * int(rank), int(rank)) <= alpha < 1 / math.comb(2 * int(rank) - 2, int(rank) - 1)
        assert 2.0 ** -int(count) <= alpha < 2.0 ** (1 - int(count))
    assert max(m for m in range(1, 40) if smallest_rank_n(decision_level("holm", m)) <= 5) == 12  # the docs' "12"


def test_the_chance_of_complete_separation_matches_simulation_and_caps_noethers_n():
    rng = np.random.default_rng(0)
    for shift, n in ((1.0, 3), (2.0, 5), (3.0, 4)):
        simulated = np.mean(rng.normal(0, 1, (20000, n)).max(1) < rng.normal(shift, 1, (20000, n)).min(1))
        assert separation(shift, n) == pytest.approx(simulated, abs=0.01)
    # 6.61 against 8.70 (sd 0.16): Noether asks 8 per arm at 0.05 / 8, yet 5 per arm separate almost surely
    p_sup = stats.norm.cdf((8.70 - 6.61) / (0.16 * math.sqrt(2)))
    z = stats.norm.ppf(1 - LEVEL / 8) + stats.norm.ppf(POWER)
    assert math.ceil(z * z / (6 * (p_sup - 0.5) ** 2)) == 8 and rank_seeds(p_sup, LEVEL / 8) == 5
    assert rank_seeds(0.76, LEVEL) == 16  # a moderate effect: Noether's n stands


def test_exact_rank_test_matches_scipy_and_its_smallest_n():
    rng = np.random.default_rng(1)
    x, y = list(rng.normal(size=6)), list(rng.normal(size=5) + 1)
    assert rank_p(x, y) == pytest.approx(stats.mannwhitneyu(x, y, alternative="less", method="exact").pvalue)
    assert rank_p([1, 2], [3, 4]) == pytest.approx(1 / 6) and 1 / 6 > LEVEL  # 2 seeds per arm never decide
    assert rank_p([1, 2, 3], [4, 5, 6]) == pytest.approx(0.05) and rank_p([1, 2, 3], [4, 5, 6]) <= LEVEL
    assert smallest_rank_n(LEVEL) == 3 and smallest_count_n(LEVEL) == 5  # 1/C(6,3) = 0.05; 2^-5 = 0.031


def test_seed_advice_for_a_normal_difference_matches_the_closed_form():
    z = np.array([-1.5, -0.5, 0.5, 1.5])
    z = (z - z.mean()) / z.std(ddof=1)  # sample sd exactly 1
    delta, sd = 0.5, 0.5
    x, y = list(10 + sd * z), list(10 + delta + sd * z)
    link = rank_link("x < y", x, y, None)
    p_sup = stats.norm.cdf(delta / (sd * math.sqrt(2)))  # P(X < Y) for two normals
    closed = math.ceil((stats.norm.ppf(1 - LEVEL) + stats.norm.ppf(POWER)) ** 2 / (6 * (p_sup - 0.5) ** 2))
    assert link.seeds_for(LEVEL) == closed == 16 and link.supports is True
    # the exact test at that n reaches the level in about POWER of normal samples with that difference
    rng = np.random.default_rng(0)
    hits = [rank_p(list(rng.normal(0, sd, 16)), list(rng.normal(delta, sd, 16))) <= LEVEL for _ in range(200)]
    assert 0.75 <= np.mean(hits) <= 0.97
    # one seed per arm: the papers' spread (sd 0.16, 2015 Table 6) stands in for the unknown one
    one = rank_link("x < y", [6.6], [6.9], paper.spread("cifar10", 110).sd)
    p_one = stats.norm.cdf(0.3 / (0.16 * math.sqrt(2)))
    assert one.seeds_for(LEVEL) == math.ceil(6.182557 / (6 * (p_one - 0.5) ** 2))
    assert rank_link("x < y", [6.6], [6.9], None).seeds_for(LEVEL) is None


@pytest.mark.parametrize("edit, message", [
    ({"kind": "smaller"}, "claim c: unknown claim kind 'smaller'"),
    ({"paper": ""}, "claims[0]: paper must be a non-empty text"),
    ({"arms": {"a": {"shortcut": "gatng"}, "b": IDENTITY}},
     "arms.a: unknown shortcut 'gatng' (did you mean 'gating'?)"),
    ({"arms": {"a": {"depht": 20}, "b": IDENTITY}}, "arms.a: unknown setting 'depht' (did you mean 'depth'?)"),
    ({"arms": {"a": {"scale": "half"}, "b": IDENTITY}}, "arms.a: scale: 'half' is not a float"),
    ({"kind": "close"}, "a 'close' claim needs margin"),
    ({"kind": "fails", "metric": "test_error"}, "a 'fails' claim counts run states; it takes no metric"),
    ({"margin": 0.3}, "margin belongs to 'close' claims, not 'lower'"),
    ({"kind": "close", "margin": -1}, "a 'close' claim needs margin: a number > 0"),
    ({"kind": "within", "bounds": [2, 1]}, "a 'within' claim needs bounds: [low, high] with low < high"),
    ({"metric": "accuracy"}, "unknown metric 'accuracy'"),
    ({"origin": "blog"}, "unknown origin 'blog'"),
    ({"arms": {"a": IDENTITY, "b": IDENTITY}}, "arms 'a' and 'b' select the same runs"),
    ({"where": {"shortcut": "none"}}, "arm 'a' sets shortcut, which `where` already fixes"),
    ({"colour": "red"}, "unknown claim key 'colour'"),
])
def test_bad_claims_are_one_line_errors_naming_the_file(tmp_path, edit, message):
    good = {"id": "c", "claim": "x", "paper": "p", "source": "s", "kind": "lower",
            "arms": {"a": IDENTITY, "b": PLAIN}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({"overrides": {"depth": 20}, "claims": [{**good, **edit}]}))
    with pytest.raises(UsageError) as e:
        load_spec(str(path))
    assert str(e.value).startswith(f"{path}: ") and message in str(e.value) and "\n" not in str(e.value)


def test_a_bad_claim_stops_the_launch_in_one_line(tmp_path, monkeypatch, capsys):
    """In-process through run.main (tests/test_config.py runs the CLI as a real process)."""
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({"claims": [{"id": "c", "claim": "x", "paper": "p", "source": "s",
                                                "kind": "lower", "arms": {"a": IDENTITY}}]}))
    monkeypatch.chdir(tmp_path)
    assert run_main([f"ablation={path}", "dry_run=true"]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0
    assert f"{path}: claim c: a 'lower' claim compares at least 2 arms, got 1" in err


REQUIRED = {
    "table1_shortcuts": {"identity_lowest", "identity_lowest_train_loss", "scaling_dropout_fail", "plain_fails",
                         "exclusive_gating_0_fails", "exclusive_gating_6_lags_identity", "shortcut_gating_6_close",
                         "conv1x1_worse"},
    "table2_units": {"full_preact_lowest_110", "full_preact_lowest_164", "bn_after_add_worse_110",
                     "relu_before_add_worse_110", "relu_preact_similar_110", "relu_preact_similar_164"},
    "table3_preact": {"preact_110_better_cifar10", "preact_164_better_cifar10", "preact_1001_better_cifar10",
                      "preact_1001_better_cifar100", "preact_164_better_cifar100",
                      "preact_164_higher_train_loss_cifar10"},
    "resnet2015_depths": {"error_falls_with_depth", "resnet1202_worse_than_110", "resnet1202_train_error_below_0_1",
                          "resnet1202_similar_train_error_to_110"},
    "degradation": {"plain56_higher_train_error", "plain_train_error_rises_with_depth",
                    "resnet56_lower_train_error_than_plain56", "resnet110_lower_train_error_than_plain110",
                    "plain56_higher_test_error", "resnet56_lower_test_error", "responses_resnet20_smaller",
                    "responses_smaller_when_deeper"},
    "gradnorm": {"gating_path_shrinks_with_depth", "plain_gradient_does_not_vanish"},
    "open_questions": {"highway_gate_beats_identity", "preact_shortcut_input_does_not_matter"},
}


def test_every_spec_declares_its_claims():
    specs = sorted(p.stem for p in (REPO / "ablations").glob("*.yaml"))
    assert set(REQUIRED) <= set(specs)
    for name in specs:
        assert "claims" in yaml.safe_load((REPO / "ablations" / f"{name}.yaml").read_text()), name
        spec = load_spec(name)
        assert REQUIRED.get(name, set()) <= {c.id for c in spec.claims}, name
        assert all(c.paper and c.source for c in spec.claims)


def test_report_opens_with_the_claims_section_and_writes_claims_csv(tmp_path, monkeypatch):
    (tmp_path / "ablations").mkdir()
    (tmp_path / "ablations" / "mine.yaml").write_text(yaml.safe_dump({"claims": [
        {"id": "identity_below_plain", "claim": "identity below plain", "paper": "\"it is lower\"",
         "source": "Table 9, p. 1", "kind": "lower", "where": WHERE, "arms": {"identity": IDENTITY, "plain": PLAIN}},
        {"id": "scaled_fails", "claim": "scaling fails", "paper": "fail", "source": "Table 9", "kind": "fails",
         "where": WHERE, "arms": {"scaled": SCALED}}]}))
    monkeypatch.chdir(tmp_path)
    make_runs(tmp_path / "runs", {"identity": [5.0, 5.1, 5.2], "none": [9.0, 9.1, 9.2]})
    text = write_report(scan(tmp_path / "runs"), tmp_path / "out", None, ("png",))
    sections = [line for line in text.splitlines() if line.startswith("## ")]
    assert sections[0] == "## Claims"
    (row,) = [line for line in text.splitlines() if "identity below plain" in line]
    assert "**held**" in row and "| 0.05 |" in row and "3 per arm" in row
    assert "mine/identity_below_plain: \"it is lower\" (Table 9, p. 1)" in text
    assert "scaling fails" not in text  # no run of that arm, and no sweep of spec 'mine'
    csv = (tmp_path / "out" / "claims.csv").read_text().splitlines()
    assert csv[0].startswith("spec,id,claim,kind,metric,source")
    assert any(line.startswith("mine,identity_below_plain,") and ",held,0.05," in line for line in csv)


def test_report_without_applicable_claims_says_so_in_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_runs(tmp_path / "runs", {"identity": [5.0]}, ("depth=14",))
    text = write_report(scan(tmp_path / "runs"), tmp_path / "out", None, ("png",))
    block = text.split("## Claims\n\n", 1)[1].split("\n\n", 1)[0]
    assert block.startswith("No claim of the specs in ablations/ applies to these runs") and "\n" not in block


def test_report_on_the_committed_results_shows_the_claims_section(tmp_path):
    runs = REPO / "results" / "gradnorm_cpu" / "runs_early_d20"
    text = write_report(scan(runs), tmp_path, None, ("png",))
    assert text.splitlines()[2] == "## Claims"
    (row,) = [line for line in text.splitlines() if line.startswith("| degradation: ResNet-20's layer responses")]
    assert "**undecided**" in row and "reduced: 100 it" in row and "data not known to be official" in row
    assert "1 per arm" in row  # one seed: with no spread for responses, the advice says to measure one
    assert "run 2 seeds per arm to measure it" in row


def _probed_run(folder: Path, depth: int, shortcut: str, **params) -> Path:
    """A run folder whose probes.jsonl holds the real probe of a fresh full pre-activation net (iteration 0)."""
    torch.manual_seed(0)
    model = build_model(depth, "full_preact", shortcut, **params)
    x, y = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1)), torch.arange(8)
    settings = [*TINY, f"depth={depth}", "unit=full_preact", f"shortcut={shortcut}",
                *(f"{k}={v}" for k, v in params.items())]
    folder = make_run_folder(folder, settings, error=9.0)
    (folder / "probes.jsonl").write_text(json.dumps({"iteration": 0, **gradient_norms(model, x, y)}) + "\n")
    return folder


def test_the_shortcut_path_ratio_compares_units_of_one_input_shape(tmp_path):
    """Within a stretch of units whose inputs have one shape, identity's shortcut path is the same gradient
    (1.000, Eq. 5) and scaling's is 0.5 per unit, 0.5^(n-1) over a net of n units per stage (geometric mean of
    the stretches of n+1, n and n-1 units): identities of a net with its branches detached, checked here, not
    claims. Exclusive gating (b_g = -6) shrinks with depth, as Eq. 8's product of the 1-g(x) does. Across a
    zero-pad transition (the old reading: first and last unit of each third of the net) identity read 0.53 and
    gating rose with depth."""
    gating = {}
    for depth in (20, 56):
        n = (depth - 2) // 6
        runs = {s: scan(_probed_run(tmp_path / f"{s}{depth}", depth, s, **params)).runs[0]
                for s, params in (("identity", {}), ("scaling", {"scale": 0.5}), ("gating", {"gate_bias": -6}))}
        assert value(runs["identity"], "shortcut_path_ratio") == pytest.approx(1.0, abs=1e-6)
        assert value(runs["scaling"], "shortcut_path_ratio") == pytest.approx(0.5 ** (n - 1))
        gating[depth] = value(runs["gating"], "shortcut_path_ratio")
        assert gating[depth] < 1
    assert gating[56] < gating[20] - 0.01  # measured: 0.992 at depth 20, 0.970 at depth 56


def test_shortcut_path_and_response_metrics_read_the_run_folders(tmp_path):
    """shortcut_path_ratio: first/last unit within each stretch of one input shape at iteration 0, geometric
    mean; response_std: the mean of responses.json's std; a run without them is 'not measured'."""
    per_stage = {"identity": [1.0, 1.0, 1.0], "scaling": [0.25, 0.5, 1.0]}
    shapes = [[16 * 2 ** s, 32 // 2 ** s, 32 // 2 ** s] for s in range(3) for _ in range(3)]
    for shortcut, norms in per_stage.items():
        for seed in range(5):
            folder = make_run_folder(tmp_path / f"{shortcut}{seed}", [*TINY, "depth=20", f"shortcut={shortcut}",
                                                                      f"seed={seed}"], error=9.0)
            rows = [{"iteration": 0, "shortcut_path_rms": [v * 4 ** s for s in range(3) for v in norms],
                     "unit_shape": shapes},
                    {"iteration": 10, "shortcut_path_rms": [1.0] * 9, "unit_shape": shapes}]
            (folder / "probes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
            (folder / "responses.json").write_text(json.dumps({"std": [1.0, 2.0, 3.0 + seed]}))
    make_run_folder(tmp_path / "none0", [*TINY, "depth=20", "shortcut=none"], error=9.0)
    groups = group_by_settings(scan(tmp_path).runs)
    by = {g.settings["shortcut"]: g for g in groups}
    assert value(by["scaling"].runs[0], "shortcut_path_ratio") == pytest.approx(0.25)
    assert value(by["identity"].runs[2], "response_std") == pytest.approx(8 / 3)
    assert value(by["none"].runs[0], "shortcut_path_ratio") is None
    where = {"dataset": "synthetic", "depth": 20}
    near = judge_one(claim("within", {"identity": IDENTITY, "scaled": SCALED}, metric="shortcut_path_ratio",
                           bounds=[0.9, 1.1], where=where), groups)
    assert "identity: 5/5 within [0.9, 1.1]; scaled: 0/5" in judged.observed(near)
    # scaled's 0 of 5 is p = 1/32 against the claim, but over 2 arms Bonferroni asks 0.025: 6 runs would do it
    assert near.verdict == "undecided" and near.outcome.p_against == pytest.approx(2 / 32)
    assert near.seeds == 6 and near.outcome.decides_as == "not held"
    plain = judge_one(claim("within", {"plain": PLAIN}, metric="shortcut_path_ratio", bounds=[0.9, 1.1],
                            where=where), groups)
    assert plain.verdict == "not measured" and judged.arms_text(plain) == "not measured: plain"


def test_a_claim_kind_registered_outside_the_package_is_read_judged_and_reported(tmp_path, monkeypatch):
    """A new kind is one registered class: its key and range declared on it, read from a spec, judged by the
    sign test of its base, written into the report; nothing else of the package changes."""

    @CLAIM_KINDS.register("at_most")
    class AtMost(Counting):
        """each arm's median run has its metric at most `limit`"""

        keys = {"limit": KindKey("the largest value that counts", "[0, inf)")}
        what = "at most the limit"

        def tally(self, arm):
            return (sum(v <= self.values["limit"] for v in arm.values), len(arm.values)) if arm.values else None

    try:
        (tmp_path / "ablations").mkdir()
        mine = {"id": "identity_at_most_6", "claim": "identity stays at or below 6", "paper": "p", "source": "s",
                "kind": "at_most", "limit": 6, "where": WHERE, "arms": {"identity": IDENTITY}}
        (tmp_path / "ablations" / "mine.yaml").write_text(yaml.safe_dump({"claims": [mine]}))
        monkeypatch.chdir(tmp_path)
        make_runs(tmp_path / "runs", {"identity": [5.0, 5.1, 5.2, 5.3, 5.4]})
        write_report(scan(tmp_path / "runs"), tmp_path / "out", None, ("png",))
        row = pd.read_csv(tmp_path / "out" / "claims.csv").set_index("id").loc["identity_at_most_6"]
        assert (row["kind"], row["verdict"], row["observed"]) == ("at_most", "held", "identity: 5/5 at most the limit")
        assert row["p"] == pytest.approx(1 / 32)
        (tmp_path / "ablations" / "mine.yaml").write_text(yaml.safe_dump({"claims": [{**mine, "limit": -1}]}))
        with pytest.raises(UsageError, match=r"a 'at_most' claim needs limit: a number >= 0 \(the largest value"):
            load_spec("mine")
    finally:
        CLAIM_KINDS.unregister("at_most")


def test_the_kinds_are_the_registry_and_no_module_outside_them_branches_on_a_kind():
    assert CLAIM_KINDS.names() == ["lower", "higher", "decreasing", "increasing", "close", "fails", "trains", "within"]
    assert all(CLAIM_KINDS.get(n).meaning() for n in CLAIM_KINDS)
    package = REPO / "resnet_ablate"
    readers = [p for p in package.rglob("*.py") if "claim" in p.read_text() and p.name != "kinds.py"]
    assert package / "claims" / "judge.py" in readers and package / "report.py" in readers
    for path in readers:
        assert not re.search(r"kind(\.name)? *(==|!=|in \(|not in \()", path.read_text()), path


def test_reading_claims_imports_no_torch_and_judging_them_no_trainer():
    """The spec reading, kinds, metrics and statistics load without torch (a spec is checked without it);
    the judge loads without the trainer (it reads run folders, it trains nothing)."""
    code = ("import sys, importlib; importlib.import_module(sys.argv[1]); "
            "print(sorted(m for m in ('torch', 'resnet_ablate.training.trainer', 'resnet_ablate.training.step') "
            "if m in sys.modules))")
    for module, banned in (("spec", "[]"), ("kinds", "[]"), ("metrics", "[]"), ("stats", "[]"),
                           ("judge", "['torch']")):
        out = subprocess.run([sys.executable, "-c", code, f"resnet_ablate.claims.{module}"], capture_output=True,
                             text=True, env=cli_env(), check=True)
        assert out.stdout.strip() == banned, module


def test_final_train_loss_is_written_when_a_run_ends_and_derived_for_older_records(tmp_path):
    with contextlib.redirect_stdout(io.StringIO()):
        train([parse([*TINY, "fail_threshold=100", f"run_dir={tmp_path / 'run'}"])])
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert result["final_train_loss"] == last["train_loss"] > 0
    (run,) = scan(tmp_path).runs
    assert value(run, "train_loss") == pytest.approx(last["train_loss"])
    del result["final_train_loss"]  # a result.json written before it was recorded
    (tmp_path / "run" / "result.json").write_text(json.dumps(result))
    (older,) = scan(tmp_path).runs
    assert value(older, "train_loss") == pytest.approx(last["train_loss"])


def test_the_fallback_spread_depends_on_data_set_and_depth_and_says_where_it_is_from(tmp_path):
    """One seed per arm: the papers' spread of test error for that data set and depth stands in for the unknown
    one; ResNet-1202 has none (one run in the paper), so the advice asks for a second seed."""
    assert ([paper.spread(d, n).sd for d, n in (("cifar10", 20), ("cifar10", 164), ("cifar10", 1001),
                                                 ("cifar100", 164), ("cifar100", 1001))]
            == [0.16, 0.16, 0.14, 0.22, 0.22])
    assert paper.spread("cifar10", 1202) is None and paper.spread("cifar100", 110) is None
    assert "Table 6" in paper.spread("cifar10", 110).source and "Table 4" in paper.spread("cifar100", 164).source
    for depth in (110, 1202):
        for shortcut, error in (("identity", 6.5), ("none", 7.5)):
            make_run_folder(tmp_path / f"{shortcut}{depth}", [*TINY, "dataset=cifar10", f"depth={depth}",
                                                              f"shortcut={shortcut}"], error=error)
    groups = group_by_settings(scan(tmp_path).runs)
    rows = {depth: judge_one(claim("lower", {"identity": IDENTITY, "plain": PLAIN},
                                   where={"dataset": "cifar10", "depth": depth}), groups) for depth in (110, 1202)}
    p_one = stats.norm.cdf(1.0 / (0.16 * math.sqrt(2)))
    assert rows[110].outcome.seeds == rank_seeds(p_one, LEVEL) == 3 and rows[110].advice.startswith("3 per arm")
    assert rows[1202].seeds is None and "no spread known for this metric, data set and depth" in rows[1202].advice


def test_claims_not_from_the_papers_are_listed_apart(tmp_path, monkeypatch):
    (tmp_path / "ablations").mkdir()
    base = {"claim": "identity below plain", "source": "s", "kind": "lower", "where": WHERE,
            "arms": {"identity": IDENTITY, "plain": PLAIN}}
    (tmp_path / "ablations" / "mine.yaml").write_text(yaml.safe_dump({"claims": [
        {**base, "id": "from_paper", "paper": "\"the paper's words\""},
        {**base, "id": "from_rerun", "paper": "a re-run found it", "origin": "other"}]}))
    monkeypatch.chdir(tmp_path)
    make_runs(tmp_path / "runs", {"identity": [5.0, 5.1, 5.2], "none": [9.0, 9.1, 9.2]})
    text = write_report(scan(tmp_path / "runs"), tmp_path / "out", None, ("png",))
    papers, others = text.split("The papers' words:", 1)[1].split("Other sources (not the papers", 1)
    assert "mine/from_paper: \"the paper's words\" (s)" in papers and "from_rerun" not in papers
    assert "mine/from_rerun: a re-run found it (s)" in others.split("\n## ", 1)[0]


def test_a_reduced_schedule_says_which_claims_its_prefix_does_not_test():
    """Issue 34: a prefix of the schedule tests the training-error claims, not test error, layer responses or a
    gain from depth."""
    spec = {c.id: c for c in load_spec("degradation").claims}
    tested = {i for i, c in spec.items() if judged.prefix_tests(c)}
    assert {"plain56_higher_train_error", "plain_train_error_rises_with_depth",
            "resnet56_lower_train_error_than_plain56"} <= tested
    assert not tested & {"plain56_higher_test_error", "resnet56_lower_train_error", "resnet56_lower_test_error",
                         "responses_resnet20_smaller", "responses_smaller_when_deeper"}
