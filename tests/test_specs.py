"""Ablation specs and their expansion (`sweeps/specs.py`, `sweeps/expansion.py`): a grid whose runs coincide
once foreign keys are dropped, one-line errors for a broken spec, and what the papers' specs hold (each names its
recipe; Table 1's open choices, recipe_gap's and gradnorm's runs)."""
import dataclasses

import pytest
from helpers import REPO, TINY

from resnet_ablate import run
from resnet_ablate.analysis.scan import settings_of
from resnet_ablate.analysis.tables import recipe_label
from resnet_ablate.sweeps.launcher import parse_launch
from resnet_ablate.sweeps.specs import expand, load_spec
from resnet_ablate.training.recipes import RECIPES


def test_a_grid_over_shortcuts_and_their_parameters_has_no_duplicate_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run.main([*TINY, "shortcut=identity,gating", "gate_bias=0,-6", "dry_run=true"]) == 0
    out = capsys.readouterr().out
    assert ": 3 runs in runs/sweep" in out
    assert out.count("note: gate_bias does not apply to shortcut=identity") == 1


@pytest.mark.parametrize("text,message", [
    ("overrides: {depth: 20\nseeds: [0]\n", "mine.yaml: not valid YAML: did not find expected ',' or '}' (line 2, "
                                            "column 6)"),
    ("", "mine.yaml: empty spec, nothing to run; a spec sets overrides, variants, grid, seeds or search"),
    ("{}\n", "mine.yaml: empty spec, nothing to run"),
])
def test_a_spec_with_a_syntax_error_or_nothing_in_it_is_one_line(text, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.yaml").write_text(text)
    assert run.main(["ablation=mine.yaml", "dry_run=true"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1


def test_every_spec_names_its_recipe_and_recipe_gap_lists_its_runs():
    for path in sorted((REPO / "ablations").glob("*.yaml")):
        spec = load_spec(str(path))
        assert spec.overrides.get("recipe") in RECIPES, path.name
    plan = expand(parse_launch(["ablation=recipe_gap", "budget=quick"]), [])
    assert len(plan.cfgs) == 26 and plan.layout == "recipe_gap"  # 13 settings (d56's warm-up knob is he2015) x 2
    knobs = {recipe_label(settings_of(dataclasses.asdict(c))) for c in plan.cfgs}
    assert knobs == {"he2015", "fb_torch", "he2015 + nesterov=True", "he2015 + normalize=channel",
                     "he2015 + warmup_iters=0", "he2015 + iterations=64063, milestones=31250,47266",
                     "he2015 + bn_batch=0"}


def test_table1_spec_holds_the_open_choices_as_variant_rows():
    """Issue 28 item 5: gate_weight_decay=false for exclusive gating -6 and -7 and shortcut-only gating -6;
    inverted dropout."""
    spec = load_spec(str(REPO / "ablations" / "table1_shortcuts.yaml"))
    rows = [dict(v) for v in spec.variants]
    for shortcut, bias in (("gating", -6), ("gating", -7), ("shortcut_gating", -6)):
        assert {"shortcut": shortcut, "gate_bias": bias} in rows
        assert {"shortcut": shortcut, "gate_bias": bias, "gate_weight_decay": False} in rows
    assert {"shortcut": "dropout", "p": 0.5} in rows and {"shortcut": "dropout", "p": 0.5, "inverted": True} in rows
    plan = expand(parse_launch(["ablation=table1_shortcuts", "budget=quick"]), [])
    assert len(plan.cfgs) == len(rows) * len(spec.budget("quick")["seeds"])  # every row trained, none merged


def test_recipe_gap_spec_evaluates_every_epoch():
    """Issue 28 item 7: the best error is comparable between its rows only at one evaluation interval, fb's."""
    plan = expand(parse_launch(["ablation=recipe_gap", "budget=quick"]), [])
    assert {c.eval_every for c in plan.cfgs} == {391}


def test_gradnorm_spec_measures_full_preact_units_beside_the_original_ones():
    """Issue 28 item 8: Eq. 5 holds for a pure identity path."""
    plan = expand(parse_launch(["ablation=gradnorm", "budget=cpu_init"]), [])
    assert {c.unit for c in plan.cfgs} == {"original", "full_preact"} and len(plan.cfgs) == 6 * 3 * 2 * 2


def test_the_cpu_prefix_budget_trains_the_first_500_iterations_of_the_paper_schedule_at_depths_20_and_56():
    spec = load_spec("degradation")
    runs = spec.runs("cpu_prefix")
    assert len(runs) == 2 * 2 * 5 == len({tuple(r) for r in runs})
    settings = [dict(item.split("=", 1) for item in r) for r in runs]
    assert {(s["depth"], s["shortcut"]) for s in settings} == {(d, c) for d in ("20", "56")
                                                               for c in ("none", "identity")}
    assert all((s["iterations"], s["milestones"], s["eval_every"], s["recipe"]) == ("500", "[]", "100", "he2015")
               for s in settings)


def test_a_budget_grid_key_outside_the_spec_grid_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.yaml").write_text("grid: {depth: [8, 14]}\nbudgets:\n  small:\n    grid: {width: [2]}\n")
    assert run.main([*TINY, "ablation=mine.yaml", "budget=small", "dry_run=true"]) == 2
    err = capsys.readouterr().err
    assert err == "error: mine.yaml: budgets.small.grid.width is not a key of the spec's grid (depth); a budget's " \
                  "grid replaces the values of those\n"
