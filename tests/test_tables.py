"""The report's tables (`analysis/tables.py`) on hand-written run folders: the median counts failed runs and the
papers' cells compare like with like; the recipe_gap layout gives each knob's delta against he2015."""
import functools

import pytest
from helpers import layout_table, make_seed_runs

# run folders read from the official CIFAR files, so the papers' values stand beside them
_runs = functools.partial(make_seed_runs, data_official=True)


def test_the_median_counts_failures_and_paper_cells_compare_like_with_like(tmp_path):
    t1 = ["depth=110", "recipe=he2016"]
    _runs(tmp_path / "t1", "identity", t1, [6.5, 6.7, 6.6, 6.9, 6.4])
    _runs(tmp_path / "t1", "gating2", [*t1, "shortcut=gating"], [8.0, None, 9.0, None, 10.0])
    _runs(tmp_path / "t1", "gating3", [*t1, "shortcut=gating", "gate_bias=-7"], [9.0, None, None, 9.5, None])
    table = layout_table(tmp_path / "t1", "table1")
    frame, shown = table.frame.set_index("setting"), table.shown.set_index("setting")
    two = frame.loc["gate_bias=-6"]
    assert (two["n"], two["fail"], two["median"], two["mean"]) == (5, 2, 10.0, 9.0)  # mean of the 3 done: optimistic
    assert two["diff"] == pytest.approx(10.0 - 8.70) and shown.loc["gate_bias=-6", "Δ"] == "+1.30 (median)"
    assert shown.loc["gate_bias=-6", "paper"] == "8.70 (median of 5)"
    three = shown.loc["gate_bias=-7"]
    assert (three["median"], three["error (%)"], three["fail"], three["Δ"]) == \
        ("fail", "9.25 ± 0.35 (over 2 of 5)", "3", "")
    assert list(shown.columns[shown.columns.get_loc("n"):][:5]) == ["n", "fail", "median", "error (%)", "min"]
    assert "median over all n runs, a failed run counting as above any error" in table.caption

    _runs(tmp_path / "t6", "r110", ["depth=110", "recipe=he2015"], [6.3, 6.5, 6.6, 6.7, 6.9])
    row = layout_table(tmp_path / "t6", "depth")
    r110, cells = row.frame.iloc[0], row.shown.iloc[0]
    assert cells["paper"] == "6.43 (best of 5); 6.61±0.16 (mean±sd)"
    assert r110["diff"] == pytest.approx(6.3 - 6.43) and r110["diff_mean"] == pytest.approx(6.6 - 6.61)
    assert cells["Δ"] == "-0.13 (best); -0.01 (mean)"


def test_recipe_gap_layout_gives_each_knobs_delta_against_he2015(tmp_path):
    _runs(tmp_path, "he", ["depth=56", "recipe=he2015"], [7.0, 7.2, 7.1])
    _runs(tmp_path, "nesterov", ["depth=56", "recipe=he2015", "nesterov=true"], [6.8, 6.9, 7.0])
    _runs(tmp_path, "fb", ["depth=56", "recipe=fb_torch"], [6.5, 6.6, 6.7])
    table = layout_table(tmp_path, "recipe_gap")
    shown = table.shown.set_index("recipe")
    assert shown.loc["he2015", "Δ he2015"] == "baseline"
    assert shown.loc["he2015 + nesterov=True", "Δ he2015"] == "-0.20 (median); -0.20 (mean)"
    assert shown.loc["fb_torch", "Δ he2015"] == "-0.50 (median); -0.50 (mean)"
    assert shown.loc["fb_torch", "schedule"] == "64063 it"
    assert shown.loc["he2015", "paper"] == "6.97 (as reported)"
