"""Random sweeps: seeded draws within their distributions, the example spec, one-line errors for bad
distributions, dry runs, and a tiny inline random sweep whose report's importance table matches scipy on
the runs' own result.json."""
import json

import numpy as np
import pandas as pd
import pytest
from helpers import DONE, TINY, merged
from scipy import stats

from resnet_ablate import report, run
from resnet_ablate.folders.sweepfolder import read_sweep
from resnet_ablate.sweeps.launcher import parse_launch
from resnet_ablate.sweeps.specs import draw_trials, expand
from resnet_ablate.training.configfile import run_name

SEARCH = ["search.lr=loguniform:0.001:0.1", "search.optim=choice:sgd,adamw"]
SHORT = merged(DONE, "iterations=10", "milestones=[8]", "eval_every=5")


def trials(*extra):
    """(lr, optim) of each run of a command-line random sweep."""
    return [(c.lr, c.optim) for c in expand(parse_launch([*SEARCH, *extra]), ["depth=8"]).cfgs]


def test_same_seed_draws_the_same_trials_and_another_seed_others():
    first = trials("sweep.trials=6", "sweep.seed=1")
    assert len(first) == 6 and first == trials("sweep.trials=6", "sweep.seed=1")
    assert set(first).isdisjoint(trials("sweep.trials=6", "sweep.seed=2"))
    assert {o for _, o in first} <= {"sgd", "adamw"} and all(0.001 <= lr <= 0.1 for lr, _ in first)


def test_draws_stay_in_bounds_and_loguniform_spreads_over_decades():
    space = {"lr": {"dist": "loguniform", "low": 1e-4, "high": 1.0}, "momentum": {"dist": "uniform", "low": 0.2,
             "high": 0.5}, "depth": {"dist": "int", "low": 1, "high": 3}, "optim": {"choice": ["sgd", "adamw"]}}
    drawn = pd.DataFrame(draw_trials(space, 4000, seed=0))
    lr, momentum = drawn["lr"].astype(float), drawn["momentum"].astype(float)
    assert lr.between(1e-4, 1.0).all() and momentum.between(0.2, 0.5).all()
    decades = np.histogram(np.log10(lr), bins=[-4, -3, -2, -1, 0])[0] / len(lr)
    assert np.allclose(decades, 0.25, atol=0.03)  # a uniform draw would put 90% in the top decade
    assert abs(momentum.mean() - 0.35) < 0.01
    assert set(drawn["depth"]) == {"1", "2", "3"} and set(drawn["optim"]) == {"sgd", "adamw"}


def test_example_spec_is_sixteen_resnet20_trials_with_a_quick_budget():
    full = expand(parse_launch(["ablation=random_lr_optim"]), [])
    assert (len(full.cfgs), full.layout, str(full.folder)) == (16, "sweep", "runs/random_lr_optim")
    assert {(c.depth, c.iterations, c.schedule) for c in full.cfgs} == {(20, 16000, "cosine")}
    assert {c.optim for c in full.cfgs} == {"sgd", "adamw"} and all(1e-4 <= c.lr <= 1 for c in full.cfgs)
    assert full.search == {"method": "random", "trials": 16, "seed": 0, "search": {
        "lr": {"dist": "loguniform", "low": 0.0001, "high": 1.0}, "optim": {"choice": ["sgd", "adamw"]}}}
    quick = expand(parse_launch(["ablation=random_lr_optim", "budget=quick", "sweep.seed=5"]), ["seed=0,1"])
    assert len(quick.cfgs) == 16 and {c.iterations for c in quick.cfgs} == {4000}
    assert len({(c.lr, c.optim) for c in quick.cfgs}) == 8  # 8 trials x 2 seeds


@pytest.mark.parametrize("args,message", [
    (["search.lr=logunif:0.01:1"], "search.lr: unknown distribution 'logunif'"),
    (["search.lr=loguniform:0:1"], "search.lr: bad bounds low=0 high=1 for loguniform (need low < high, low > 0)"),
    (["search.lr=uniform:0.5"], "search.lr: expected DIST:LOW:HIGH"),
    (["search.optim=choice:sgd,sgdd"], "search.optim: unknown optim 'sgdd' (did you mean 'sgd'?)"),
    (["search.lrr=uniform:0.1:1"], "search.lrr: unknown key 'lrr' (did you mean 'lr'?)"),
    (["sweep.method=random", "sweep.trials=2"], "sweep.method=random needs distributions"),
    (["sweep.method=grid", "search.lr=uniform:0.1:1"], "search distributions (lr) need sweep.method=random"),
    (["search.lr=uniform:0.1:1", "lr=0.1"], "lr is both searched (search.lr) and set on the command line"),
    (["search.lr=uniform:0.1:1", "sweep.seed=-1"], "sweep.seed=-1 is out of range; allowed: 0 <= sweep.seed < 2**32"),
    (["search.lr=uniform:0.1:1", "sweep.trials=-1"], "sweep.trials=-1 is out of range; allowed: >= 0"),
])
def test_bad_search_is_one_line_exit_2(args, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    trials_arg = [] if any(a.startswith("sweep.trials") for a in args) else ["sweep.trials=2"]
    assert run.main([*TINY, *args, *trials_arg]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not (tmp_path / "runs").exists()


def test_bad_spec_distribution_through_the_cli_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    """In-process through run.main (tests/test_config.py runs the CLI as a real process)."""
    (tmp_path / "bad.yaml").write_text("search:\n  lr: {dist: loguniform, low: 0.1}\ntrials: 2\n")
    monkeypatch.chdir(tmp_path)
    assert run.main(["ablation=bad.yaml", *TINY]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == ("error: bad.yaml: search.lr: loguniform needs numbers low and high (and no other keys), "
                   "got {'dist': 'loguniform', 'low': 0.1}\n")


def test_dry_run_lists_every_trial_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run.main([*TINY, *SEARCH, "sweep.trials=7", "sweep.seed=3", "dry_run=true"]) == 0
    head, cost_line, *rows = capsys.readouterr().out.splitlines()
    assert cost_line.startswith("cost: 7 runs to train in 7 jobs")
    assert "layout sweep, 7 random trials (seed 3)): 7 runs in runs/sweep_optim+lr_depth=8_dataset=synthetic_" \
           "synthetic_size=64_iterations=30_milestones=20_warmup_iters=0_batch_size=8; 0 finished" in head
    assert len(rows) == 7 and all(r.split()[0] == "-" and "lr=" in r for r in rows)
    assert [r.split()[1] for r in rows] == [run_name(c) for c in expand(
        parse_launch([*SEARCH, "sweep.trials=7", "sweep.seed=3"]), TINY).cfgs]
    assert not (tmp_path / "runs").exists()


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A tiny inline random sweep (5 trials of 10 iterations) and its report."""
    root = tmp_path_factory.mktemp("sweep")
    folder, out = root / "runs" / "sweep", root / "report"
    assert run.main([*SHORT, *SEARCH, "sweep.trials=5", "sweep.seed=1", "launcher=inline",
                     f"sweep_dir={folder}"]) == 0
    assert report.main([str(folder), "--out", str(out), "--formats", "png"]) == 0
    return folder, out


def test_sweep_yaml_records_the_method_and_the_search_space(swept):
    sweep = read_sweep(swept[0])
    assert (sweep.layout, sweep.method, sweep.trials, sweep.seed) == ("sweep", "random", 5, 1)
    assert sweep.search == {"lr": {"dist": "loguniform", "low": 0.001, "high": 0.1},
                               "optim": {"choice": ["sgd", "adamw"]}}
    assert len(list(sweep.runs)) == 5


def test_report_importance_matches_scipy_on_the_runs_results(swept):
    folder, out = swept
    runs = [(json.loads((folder / n / "result.json").read_text()), (folder / n / "config.yaml").read_text())
            for n in list(read_sweep(folder).runs)]
    rows = pd.DataFrame([{"lr": float(_value(cfg, "lr")), "optim": _value(cfg, "optim"),
                          "error": res["final_test_error"]} for res, cfg in runs])
    assert set(rows["optim"]) == {"sgd", "adamw"}
    scores = pd.read_csv(out / "sweep-importance.csv").set_index("parameter")
    rho = stats.spearmanr(rows["lr"], rows["error"])
    assert scores.loc["lr", "test"] == "Spearman rho" and scores.loc["lr", "trials"] == 5
    assert scores.loc["lr", "statistic"] == pytest.approx(rho.statistic)
    assert scores.loc["lr", "p"] == pytest.approx(rho.pvalue)
    h = stats.kruskal(*[part["error"] for _, part in rows.groupby("optim")])
    assert scores.loc["optim", "test"] == "Kruskal-Wallis H"
    assert (scores.loc["optim", "statistic"], scores.loc["optim", "p"]) == pytest.approx((h.statistic, h.pvalue))
    table = pd.read_csv(out / "sweep-trials.csv")
    assert list(table["mean"]) == sorted(rows["error"]) and set(table["n"]) == {1}
    text = (out / "report.md").read_text()
    assert "### importance — command-line sweep" in text and "Spearman rho" in text


def test_report_figures_are_written_and_not_empty(swept):
    out = swept[1]
    for name in ("sweep-vs-params.png", "sweep-best-curves.png"):
        assert (out / name).stat().st_size > 5000, name
        assert f"]({name})" in (out / "report.md").read_text()


def _value(config_yaml: str, key: str) -> str:
    """A top-level value from a run's config.yaml text."""
    return next(line.split(": ", 1)[1] for line in config_yaml.splitlines() if line.startswith(f"{key}: "))


def test_the_readme_random_sweep_example_now_names_its_milestones(tmp_path, monkeypatch, capsys):
    """The README's random-sweep example kept the 64k milestones with iterations=4000 (lr never dropped)."""
    monkeypatch.chdir(tmp_path)
    old = ["depth=20", "iterations=4000", "search.lr=loguniform:0.001:1", "search.optim=choice:sgd,adamw",
           "sweep.trials=16", "sweep.seed=0", "dry_run=true"]
    assert run.main(old) == 2
    assert "milestones=[32000,48000] reach past iterations=4000" in capsys.readouterr().err
    assert run.main([*old, "milestones=[2000,3000]"]) == 0


def test_random_trial_i_does_not_depend_on_the_number_of_trials():
    space = {"lr": {"dist": "loguniform", "low": 1e-4, "high": 1.0}, "optim": {"choice": ["sgd", "adamw"]},
             "depth": {"dist": "int", "low": 1, "high": 3}}
    assert draw_trials(space, 4, seed=0) == draw_trials(space, 8, seed=0)[:4] == draw_trials(space, 16, seed=0)[:4]
    assert draw_trials(space, 4, seed=0) != draw_trials(space, 4, seed=1)
