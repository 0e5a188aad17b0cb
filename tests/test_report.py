"""The report: tables' numbers against scipy on the runs' own result.json, the papers' values, sweeps,
broken and running folders, the CLI's errors, and figures that are written and not empty.

The run folders are built once per module: tiny real trainings (CPU, synthetic data, packed into one
call) plus hand-written folders for the paper's settings and for broken, partial and running runs.
"""
import contextlib
import io
import json

import numpy as np
import pandas as pd
import pytest
from helpers import make_run_folder, run_cli
from scipy import stats

from resnet_ablate import report
from resnet_ablate.analysis import curves, figures, paper, scan
from resnet_ablate.folders.sweepfolder import SweepRecord, write_sweep
from resnet_ablate.training.parse import parse
from resnet_ablate.training.trainer import train

TINY = ["device=cpu", "dataset=synthetic", "batch_size=8", "synthetic_size=64", "warmup_iters=0", "eval_every=5",
        "iterations=10", "milestones=[8]", "fail_threshold=100"]
PROBE = "grad_probe_at=[0,10]"
REAL = {  # folder name: settings (depth 8 unless given)
    **{f"identity_s{s}": [f"seed={s}", PROBE] for s in range(3)},
    **{f"plain_s{s}": ["shortcut=none", f"seed={s}", PROBE] for s in range(2)},
    **{f"scaling_s{s}": ["shortcut=scaling", f"seed={s}", PROBE] for s in range(2)},
    **{f"preact_s{s}": ["unit=full_preact", f"seed={s}"] for s in range(2)},
    "gating_allfail_s0": ["shortcut=gating", "fail_threshold=0"],
    "identity_d14_s0": ["depth=14"],
    "plain_d14_s0": ["depth=14", "shortcut=none"],
}
PAPER110 = {"identity_s0": ("identity", 6.5), "identity_s1": ("identity", 6.9), "identity_s2": ("identity", 6.8),
            "gating_s0": ("gating", 8.0), "gating_s1": ("gating", 8.6), "gating_s2": ("gating", 8.1)}


def _result(folder):
    return json.loads((folder / "result.json").read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """runs/tiny: real runs and edge cases; runs/paper110: a table1 sweep of hand-written ResNet-110 runs;
    runs/units: a reduced-budget table2 sweep of copies of real runs."""
    root = tmp_path_factory.mktemp("runs")
    tiny = root / "tiny"
    with contextlib.redirect_stdout(io.StringIO()):
        train([parse([*TINY, "depth=8", *extra, f"run_dir={tiny / name}"]) for name, extra in REAL.items()])
    settings = {name: [*TINY, "depth=8", *extra] for name, extra in REAL.items()}
    # one more scaling run that failed: the group holds done and fail runs
    make_run_folder(tiny / "scaling_s7", [*settings["scaling_s1"], "seed=7"], "fail", None, copy_of=tiny / "scaling_s1",
                    seed=7)
    # running: same settings as identity, no result.json yet
    make_run_folder(tiny / "identity_s5_running", settings["identity_s0"], None, copy_of=tiny / "identity_s0")
    # broken and partial folders
    make_run_folder(tiny / "broken_result", settings["identity_s1"], copy_of=tiny / "identity_s1")
    (tiny / "broken_result" / "result.json").write_text('{"status": "do')
    (tiny / "partial").mkdir()
    (tiny / "partial" / "metrics.jsonl").write_text('{"iteration": 10, "test_error": 50.0}\n')
    (tiny / "bad_config").mkdir()
    (tiny / "bad_config" / "config.yaml").write_text("depth: [1\n")
    # a table1 sweep at the papers' settings
    sweep = root / "paper110"
    for name, (shortcut, error) in PAPER110.items():
        make_run_folder(sweep / name, ["dataset=cifar10", "depth=110", f"shortcut={shortcut}", f"seed={name[-1]}"],
                        "done", error)
    write_sweep(SweepRecord(sweep, "paper110", "table1", runs=(*PAPER110, "identity_s3"),
                            command="python -m resnet_ablate.run ablation=table1", git_commit="abc"))
    units = root / "units"
    for name in ("identity_s0", "identity_s1", "preact_s0", "preact_s1"):
        make_run_folder(units / name, settings[name], copy_of=tiny / name)
    write_sweep(SweepRecord(units, "units", "table2", budget="smoke"))
    return root


@pytest.fixture(scope="module")
def built(runs, tmp_path_factory):
    """The report over all runs, built once in-process: (out folder, printed text)."""
    out = tmp_path_factory.mktemp("report")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert report.main([str(runs), "--out", str(out)]) == 0
    return out, printed.getvalue()


def _csv(path):
    """A table's CSV as strings (blank cells stay '')."""
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _md_rows(text):
    """The cells of a markdown table's rows, stripped (cells are padded to the column width)."""
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in text.splitlines()
            if line.startswith("|") and not set(line) <= set("|:- ")]


def _row(frame, **where):
    rows = frame
    for key, value in where.items():
        rows = rows[rows[key] == str(value)]
    assert len(rows) == 1, where
    return rows.iloc[0]


def test_table_numbers_match_the_runs_and_scipy(runs, built):
    out, _ = built
    tiny = runs / "tiny"
    table = _csv(out / "runs-table1.csv")
    errors = {name: _result(tiny / name)["final_test_error"] for name in REAL}
    identity = [errors[f"identity_s{s}"] for s in range(3)]
    scaling = [errors[f"scaling_s{s}"] for s in range(2)]  # scaling_s7 failed: counted, not averaged
    base = _row(table, shortcut="identity", depth=8, unit="original", fail_threshold=100.0)
    assert (base["n"], base["fail"], base["baseline"]) == ("3", "0", "True")
    assert float(base["mean"]) == pytest.approx(np.mean(identity))
    assert float(base["std"]) == pytest.approx(np.std(identity, ddof=1))
    assert float(base["median"]) == pytest.approx(np.median(identity))
    assert float(base["min"]) == pytest.approx(min(identity))
    row = _row(table, shortcut="scaling", depth=8)
    assert (row["n"], row["fail"], row["setting"]) == ("3", "1", "scale=0.5, residual_scale=1")
    assert float(row["mean"]) == pytest.approx(np.mean(scaling))
    assert float(row["std"]) == pytest.approx(np.std(scaling, ddof=1))
    assert float(row["p_welch"]) == pytest.approx(stats.ttest_ind(scaling, identity, equal_var=False).pvalue)
    assert (row["schedule"], row["iterations"], row["paper"]) == ("reduced: 10 it", "10", "")
    single = _row(table, shortcut="identity", depth=14)  # one run: no sd, no p-value
    assert (single["n"], single["std"], single["p_welch"]) == ("1", "", "")
    allfail = _row(table, shortcut="gating")
    assert (allfail["n"], allfail["fail"], allfail["mean"], allfail["p_welch"]) == ("1", "1", "", "")
    # issue 17: the median counts failures (scaling: 2 done, 1 failed) and comes before mean ± sd
    assert float(row["median"]) == pytest.approx(max(scaling))
    assert allfail["median"] == "inf"
    shown = _md_rows((out / "runs-table1.md").read_text())
    assert ["gating", "gate_bias=-6", "8", "original", "0", "1", "1", "fail", "fail"] in [r[:9] for r in shown]
    assert ["identity", "", "8", "original", "100", "3", "0", f"{np.median(identity):.2f}",
            f"{np.mean(identity):.2f} ± {np.std(identity, ddof=1):.2f}"] in [r[:9] for r in shown]
    tex = (out / "runs-table1.tex").read_text()
    assert "\\toprule" in tex and "\\bottomrule" in tex and "gate\\_bias=-6" in tex and "$\\pm$" in tex


def test_auto_layouts_follow_what_varies(built):
    out, printed = built
    assert {p.name for p in out.glob("runs-*.csv")} == {f"runs-{t}.csv" for t in ("table1", "table2", "table3", "depth",
                                                                                         "gradnorm")}
    depth = _csv(out / "runs-depth.csv")
    assert set(zip(depth["net"], depth["depth"])) == {("ResNet", "8"), ("ResNet", "14"), ("plain", "8"), ("plain", "14")}
    assert _row(depth, net="ResNet", depth=8, unit="original")["params"] == "0.08M"
    assert "### error vs depth, plain vs ResNet (2015, Table 6)" in printed


def test_paper_values_beside_the_sweeps_runs(runs, built):
    out, printed = built
    table = _csv(out / "paper110-table1.csv")
    identity, gating = [6.5, 6.9, 6.8], [8.0, 8.6, 8.1]
    base, row = _row(table, shortcut="identity"), _row(table, shortcut="gating")
    # issue 17: the 2016 cells are medians of 5, compared with our median
    assert base["paper"] == "6.61 (median of 5)" and float(base["diff"]) == pytest.approx(np.median(identity) - 6.61)
    assert row["paper"] == "8.70 (median of 5)" and row["paper_row"] == "2016-T1: exclusive gating, init b_g = -6"
    assert float(row["diff"]) == pytest.approx(np.median(gating) - 8.70)
    assert float(row["p_welch"]) == pytest.approx(stats.ttest_ind(gating, identity, equal_var=False).pvalue)
    assert base["schedule"] == "64k" and base["baseline"] == "True"
    assert "## sweep paper110\n" in printed
    assert f"- not started (named in sweep.yaml, no run folder): {runs / 'paper110' / 'identity_s3'}" in printed


def test_sweep_layout_and_reduced_budget_label(built):
    out, printed = built
    assert sorted(p.name for p in out.glob("units-*.csv")) == ["units-gradnorm.csv", "units-table2.csv"]
    table = _csv(out / "units-table2.csv")
    assert list(table["unit"]) == ["original", "full_preact"] and list(table["n"]) == ["2", "2"]
    assert "## sweep units, budget smoke (reduced)" in printed


def test_paper_lookup():
    cell = {"dataset": "cifar10", "depth": 110, "unit": "original", "shortcut": "gating", "gate_bias": -3.0}
    table, row = paper.lookup(cell, ("2016-T1",))
    assert (table.key, row.value, row.text()) == ("2016-T1", None, "fail (median of 5)")
    assert paper.lookup({**cell, "gate_bias": -7.0})[1].value == 9.81
    assert paper.lookup({**cell, "gate_bias": -5.5}) is None
    plain = paper.lookup({**cell, "shortcut": "none"})[1]
    assert plain.value is None and plain.note == "this is a plain net"
    frozen = {**cell, "shortcut": "scaling", "scale": 0.5, "residual_scale": 0.5}
    assert paper.lookup(frozen)[1].value == 12.35
    preact = {"dataset": "cifar100", "depth": 164, "unit": "full_preact", "shortcut": "identity"}
    assert paper.lookup(preact)[1].value == 24.33
    assert paper.lookup({**preact, "dataset": "cifar10"}, ("2016-T2",))[1].value == 5.46
    resnet110 = paper.lookup({**cell, "shortcut": "identity"}, ("2015-T6",))[1]
    assert (resnet110.value, resnet110.statistic, resnet110.text()) == \
        (6.43, "best of 5", "6.43 (best of 5); 6.61±0.16 (mean±sd)")
    assert paper.lookup({**preact, "dataset": "synthetic"}) is None
    assert paper.TABLES["2016-T1"].units == "test error (%) on CIFAR"


def test_broken_partial_and_running_folders_are_listed_and_skipped(runs, built):
    out, printed = built
    tiny = runs / "tiny"
    assert f"- paused (no result.json; iteration 10 of 10; nobody trains it; the same command resumes it): " \
           f"{tiny / 'identity_s5_running'}" in printed
    assert f"- damaged (skipped): {tiny / 'broken_result'}: result.json is damaged (not JSON: " in printed
    assert f"- damaged (skipped): {tiny / 'partial'}: no config.yaml" in printed
    assert f"- damaged (skipped): {tiny / 'bad_config'}: config.yaml is damaged (not valid YAML: " in printed
    assert printed.strip() == (out / "report.md").read_text().strip()


def test_missing_folder_is_one_line_and_exit_2(tmp_path):
    proc = run_cli(str(tmp_path / "nope"), "--out", str(tmp_path / "out"), cwd=tmp_path, module="resnet_ablate.report")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [f"error: {tmp_path / 'nope'}: no such folder"]


@pytest.mark.parametrize("args", [["--layout", "table9"], ["--formats", "gif"], []])
def test_bad_arguments_are_one_line_and_exit_2(runs, tmp_path, capsys, args):
    argv = [str(runs), *args] + (["--out", str(tmp_path)] if args else [])
    assert report.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1


def test_each_figure_is_written_in_both_formats(built):
    out, printed = built
    for name in ("runs-curves-depth=8_fail_threshold=100", "runs-gradnorm-depth=8_fail_threshold=100",
                 "runs-degradation-unit=original", "runs-depth-unit=original", "units-curves", "units-gradnorm"):
        for fmt in ("png", "pdf"):
            assert (out / f"{name}.{fmt}").stat().st_size > 5000, name
        assert f"![{name}]({name}.png)" in printed


def test_figures_draw_one_line_per_variant_and_split(runs):
    found = scan.scan(runs / "tiny")
    groups = [g for g in scan.group_by_settings(found.runs) if g.settings["depth"] == 8 and g.settings["fail_threshold"] == 100]
    frame = curves.curve_frame(groups, lambda g: scan.variant_label(g.settings, {"unit", "shortcut"}))
    assert set(frame["variant"]) == {"original, identity", "original, none", "full_preact, identity",
                                     "original, scaling (scale=0.5, residual_scale=1)"}
    ax = figures.training_curves(frame).axes[0]
    drawn = [line for line in ax.lines if len(line.get_xdata())]
    assert len(drawn) == 4 * 2 and {len(line.get_xdata()) for line in drawn} == {2}  # evaluations at 5 and 10
    assert sorted(line.get_linewidth() for line in drawn) == [0.7] * 4 + [1.6] * 4
    probes = curves.probe_frame(groups, lambda g: g.settings["shortcut"])  # identity, none, scaling probed
    fig = figures.gradient_norms(probes)
    assert [ax.get_title() for ax in fig.axes] == ["iteration 0", "iteration 10"]
    assert all(ax.get_yscale() == "log" and len([x for x in ax.lines if len(x.get_xdata()) == 3]) == 3
               for ax in fig.axes)  # one line per probed variant, a point per unit


def test_gradient_spread_is_first_over_last_unit_geometric_mean_over_seeds(runs, built):
    found = scan.scan(runs / "tiny")
    groups = [g for g in scan.group_by_settings(found.runs) if g.settings["depth"] == 8 and g.settings["fail_threshold"] == 100]
    spread = curves.gradient_spread(groups)
    assert set(spread["iteration"]) == {0, 10} and set(spread["n"]) == {2, 3}  # identity 3 seeds, plain/scaling 2
    for shortcut, label in (("identity", "original, identity"), ("none", "original, none")):
        probes = [json.loads(line) for s in range(3 if shortcut == "identity" else 2)
                  for line in (runs / "tiny" / f"{'plain' if shortcut == 'none' else shortcut}_s{s}" / "probes.jsonl")
                  .read_text().splitlines()]
        for it in (0, 10):
            ratios = [p["unit_input_rms"][0] / p["unit_input_rms"][-1] for p in probes if p["iteration"] == it]  # RMS: the default (issue 17)
            row = spread[(spread["variant"] == label) & (spread["iteration"] == it)]
            assert row["first/last"].item() == pytest.approx(stats.gmean(ratios))
            assert row["min"].item() == pytest.approx(min(ratios)) and row["max"].item() == pytest.approx(max(ratios))
    out, printed = built
    assert "### Gradient spread" in printed
    assert (out / "runs-gradnorm.csv").is_file() and (out / "runs-gradnorm.md").read_text().startswith("| ")


def test_runs_on_two_data_sets_are_kept_apart_and_named(tmp_path):
    """Same settings on the real data and on a re-encoded copy (two run roots): two rows, not one mean."""
    for root, fp, errors in (("real", "aaaaaaaa11111111", (6.0, 6.2)), ("copy", "bbbbbbbb22222222", (12.0, 12.4))):
        for seed, error in enumerate(errors):
            make_run_folder(tmp_path / "runs" / root / f"s{seed}", ["depth=110", f"seed={seed}"], "done", error,
                            data_fingerprint=fp)
    found = scan.scan(tmp_path / "runs")
    groups = scan.group_by_settings(found.runs)
    assert sorted(round(float(np.mean(g.errors())), 2) for g in groups) == [6.1, 12.2]
    text = report.write_report(found, tmp_path / "out", "table1", ("png",))
    assert "trained on 2 different data sets (data = aaaaaaaa, bbbbbbbb" in text
    table = pd.read_csv(next((tmp_path / "out").glob("*table1.csv")))
    assert sorted(zip(table["data"], table["n"], table["mean"])) == [("aaaaaaaa", 2, 6.1), ("bbbbbbbb", 2, 12.2)]


def test_runs_on_one_data_set_get_no_data_column_or_note(tmp_path):
    for seed in (0, 1):
        make_run_folder(tmp_path / "runs" / f"s{seed}", ["depth=110", f"seed={seed}"], "done", 6.0 + seed,
                        data_fingerprint="aaaaaaaa11111111")
    text = report.write_report(scan.scan(tmp_path / "runs"), tmp_path / "out", "table1", ("png",))
    assert "different data sets" not in text and "data=" not in text
    assert "data" not in pd.read_csv(next((tmp_path / "out").glob("*table1.csv"))).columns


def test_an_imagenet_run_beside_cifar_runs_does_not_block_the_report(tmp_path, capsys):
    """Defect 1 of issue 24: scan applied CIFAR's depth rule (6n+2 or 9n+2) to every run, so one `arch=imagenet
    depth=18` run made the whole report exit 2. Each run's depth is the business of its own ARCHS entry."""
    for seed, error in enumerate((6.5, 6.9)):
        make_run_folder(tmp_path / "runs" / f"cifar_s{seed}", ["depth=110", f"seed={seed}"], "done", error)
    make_run_folder(tmp_path / "runs" / "r18", ["arch=imagenet", "depth=18", "dataset=synthetic"], "done", 30.0)
    assert report.main([str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--formats", "png"]) == 0
    rows = [line for line in (tmp_path / "out" / "report.md").read_text().splitlines() if line.startswith("| original")]
    assert any("| cifar " in r and "6.70 ± 0.28" in r and "6.61 (median of 5)" in r for r in rows)  # the paper's value
    assert any("| imagenet " in r and "30.00" in r for r in rows)


@pytest.fixture
def two_runs(tmp_path):
    """Two finished runs built by hand (no curves: the report is quick)."""
    for seed in (0, 1):
        make_run_folder(tmp_path / "runs" / f"r{seed}", [*TINY, f"seed={seed}"], error=5.0 + seed, seed=seed)
    return tmp_path / "runs"


def test_the_report_writes_over_no_file_it_did_not_write(two_runs, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.md").write_text("my notes")
    (out / "mine.txt").write_text("mine")
    assert report.main([str(two_runs), "--out", str(out), "--formats", "png"]) == 2
    assert capsys.readouterr().err == f"error: --out {out} holds report.md, which the report did not write " \
                                      f"(.report-files does not list it): choose another --out, or move those files " \
                                      f"away\n"
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt", "report.md"]
    assert (out / "report.md").read_text() == "my notes"
    (out / "report.md").unlink()
    assert report.main([str(two_runs), "--out", str(out), "--formats", "png"]) == 0
    written = (out / ".report-files").read_text().splitlines()
    assert "report.md" in written and "mine.txt" not in written
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == sorted([*written, "mine.txt"])
    assert report.main([str(two_runs), "--out", str(out), "--formats", "png"]) == 0  # its own files: replaced
    assert (out / "mine.txt").read_text() == "mine"


@pytest.mark.parametrize("out,message", [("", "--out is empty: name the folder the report goes to"),
                                         ("runs/r0", "--out=runs/r0 is a run folder (it holds result.json), not a "
                                                     "report folder: choose another --out")])
def test_an_empty_out_or_another_tools_folder_is_refused(out, message, two_runs, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert report.main([str(two_runs), "--out", out]) == 2
    assert capsys.readouterr().err.startswith(f"error: {message}")
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
