"""The report: tables' numbers against scipy on the runs' own result.json, the papers' values, sweeps,
broken and running folders, the CLI's errors, and figures that are written and not empty.

The run folders are built once per module: tiny real trainings (CPU, synthetic data, packed into one
call) plus hand-written folders for the paper's settings and for broken, partial and running runs.
"""
import contextlib
import io
import json
import re

import numpy as np
import pandas as pd
import pytest
from helpers import layout_table, make_run_folder, make_seed_runs, run_cli
from scipy import stats

from resnet_ablate import report
from resnet_ablate.analysis import figures, frames, paper, scan
from resnet_ablate.folders.sweepfolder import SweepRecord, write_sweep
from resnet_ablate.training import failrule
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
    with contextlib.redirect_stdout(io.StringIO()), pytest.MonkeyPatch.context() as patch:
        # judged as whole schedules (the paper's rule), so that fail_threshold=0 makes the gating run fail
        patch.setattr(failrule, "full_iterations", lambda settings, default: settings["iterations"])
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
                        "done", error, data_official=True)
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
    assert set(zip(depth["net"], depth["depth"])) == {("ResNet", "8"), ("ResNet", "14"), ("plain", "8"),
                                                      ("plain", "14")}
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
    groups = [g for g in scan.group_by_settings(found.runs)
              if g.settings["depth"] == 8 and g.settings["fail_threshold"] == 100]
    frame = frames.curve_frame(groups, lambda g: scan.variant_label(g.settings, {"unit", "shortcut"}))
    assert set(frame["variant"]) == {"original, identity", "original, none", "full_preact, identity",
                                     "original, scaling (scale=0.5, residual_scale=1)"}
    fig = figures.training_curves(frame)
    ax, loss = fig.axes[:2]
    drawn = [line for line in ax.lines if len(line.get_xdata())]
    assert len(drawn) == 4 * 2 and {len(line.get_xdata()) for line in drawn} == {2}  # evaluations at 5 and 10
    assert sorted(line.get_linewidth() for line in drawn) == [0.7] * 4 + [1.6] * 4
    # below the error, the training loss of metrics.jsonl: one thin dashed line per variant, the mean over seeds
    assert loss.get_ylabel() == "training loss" and len(loss.lines) == 4
    assert {(line.get_linestyle(), line.get_linewidth()) for line in loss.lines} == {("--", 0.7)}
    plain = [json.loads(line)["train_loss"] for s in range(2)
             for line in (runs / "tiny" / f"plain_s{s}" / "metrics.jsonl").read_text().splitlines()]
    expected = [np.mean(plain[0::2]), np.mean(plain[1::2])]  # iterations 5 and 10, over seeds 0 and 1
    assert sum(list(line.get_ydata()) == pytest.approx(expected) for line in loss.lines) == 1
    probes = frames.probe_frame(groups, lambda g: g.settings["shortcut"])  # identity, none, scaling probed
    fig = figures.gradient_norms(probes)
    assert [ax.get_title() for ax in fig.axes] == ["total, iteration 0", "shortcut path, iteration 0",
                                                   "total, iteration 10", "shortcut path, iteration 10"]
    assert all(ax.get_yscale() == "log" for ax in fig.axes)  # one line per probed variant, a point per unit; the
    assert [len([x for x in ax.lines if len(x.get_xdata()) == 3]) for ax in fig.axes] == [3, 2, 3, 2]  # plain: no path


def test_gradient_spread_is_first_over_last_unit_geometric_mean_over_seeds(runs, built):
    found = scan.scan(runs / "tiny")
    groups = [g for g in scan.group_by_settings(found.runs)
              if g.settings["depth"] == 8 and g.settings["fail_threshold"] == 100]
    spread = frames.gradient_spread(groups)
    assert set(spread["iteration"]) == {0, 10} and set(spread["n"]) == {2, 3}  # identity 3 seeds, plain/scaling 2
    for shortcut, label in (("identity", "original, identity"), ("none", "original, none")):
        probes = [json.loads(line) for s in range(3 if shortcut == "identity" else 2)
                  for line in (runs / "tiny" / f"{'plain' if shortcut == 'none' else shortcut}_s{s}" / "probes.jsonl")
                  .read_text().splitlines()]
        for it in (0, 10):
            # RMS: the default (issue 17)
            ratios = [p["unit_input_rms"][0] / p["unit_input_rms"][-1] for p in probes if p["iteration"] == it]
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
        make_run_folder(tmp_path / "runs" / f"cifar_s{seed}", ["depth=110", "recipe=default", f"seed={seed}"], "done",
                        error, data_official=True)
    make_run_folder(tmp_path / "runs" / "r18", ["arch=imagenet", "depth=18", "dataset=synthetic"], "done", 30.0)
    assert report.main([str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--formats", "png"]) == 0
    rows = [line for line in (tmp_path / "out" / "report.md").read_text().splitlines() if line.startswith("| original")]
    assert any("| cifar " in r and "6.70 ± 0.28" in r and "6.61 (median of 5)" in r for r in rows)  # the paper's value
    assert any("| imagenet " in r and "30.00" in r for r in rows)


# --- issue 28: the data's identity, the precision trained, the open choices, fb's best error -----------------

_folders = make_seed_runs  # hand-written run folders with these final errors (None: failed), seeds 0, 1, ...


def _t1(root):
    return layout_table(root, "table1")


def test_a_report_on_a_copy_of_cifar_shows_no_paper_value_and_says_why(tmp_path):
    """Item 1: a Δ against the paper only for groups whose runs all read the official files."""
    settings = ["depth=110", "recipe=he2016"]
    _folders(tmp_path / "copy", "identity", settings, [12.0, 12.2], data_official=False)
    _folders(tmp_path / "copy", "gating", [*settings, "shortcut=gating"], [13.0, 13.4])  # written before the flag
    table = _t1(tmp_path / "copy")
    assert set(table.shown["paper"]) == {""} and set(table.shown["Δ"]) == {""}
    assert table.frame["diff"].isna().all()
    assert table.caption.startswith("No paper value or Δ in every row that has one: not all of its runs read the "
                                    "official CIFAR files")
    _folders(tmp_path / "real", "identity", settings, [6.5, 6.7], data_official=True)
    _folders(tmp_path / "real", "gating", [*settings, "shortcut=gating"], [8.6, 8.8], data_official=True)
    make_run_folder(tmp_path / "real" / "gating_s2", [*settings, "shortcut=gating", "seed=2"], "done", 8.7)  # no flag
    table = _t1(tmp_path / "real")
    shown = table.shown.set_index("shortcut")
    assert shown.loc["identity", "paper"] == "6.61 (median of 5)" and shown.loc["identity", "Δ"] == "-0.01 (median)"
    assert shown.loc["gating", "paper"] == "" and table.caption.startswith("No paper value or Δ in 1 of 2 rows")
    text = report.write_report(scan.scan(tmp_path / "copy"), tmp_path / "out", "table1", ("png",))
    assert "not all of its runs read the official CIFAR files" in text


def test_bf16_and_fp32_seeds_of_one_name_are_two_groups_by_the_precision_they_trained_in(tmp_path):
    """Item 2: `auto` resolves where a run trains; result.json's precision is what the report groups by."""
    auto = ["depth=110", "recipe=default"]  # precision=auto
    make_run_folder(tmp_path / "gpu_s0", [*auto, "seed=0"], "done", 6.4, precision="bf16")
    make_run_folder(tmp_path / "gpu_s1", [*auto, "seed=1"], "done", 6.6, precision="bf16")
    make_run_folder(tmp_path / "cpu_s2", [*auto, "seed=2"], "done", 7.0, precision="fp32")
    make_run_folder(tmp_path / "old_s3", [*auto, "seed=3"], "done", 7.2)  # a result without it: the config's value
    groups = scan.group_by_settings(scan.scan(tmp_path).runs)
    assert sorted((g.settings["precision"], len(g.runs)) for g in groups) == [("auto", 1), ("bf16", 2), ("fp32", 1)]
    table = _t1(tmp_path)
    assert sorted(table.frame["precision"]) == ["auto", "bf16", "fp32"]


def test_open_choices_are_variants_below_their_paper_rows_never_in_their_place(tmp_path):
    """Item 5: gate_weight_decay=false and inverted dropout rows sit under the rows they vary, not compared."""
    settings = ["depth=110", "recipe=he2016"]
    official = {"data_official": True}
    _folders(tmp_path, "identity", settings, [6.5, 6.7], **official)
    _folders(tmp_path, "nodecay", [*settings, "shortcut=gating", "gate_weight_decay=false"], [7.9, 8.1], **official)
    _folders(tmp_path, "gating", [*settings, "shortcut=gating"], [8.6, 8.8], **official)
    _folders(tmp_path, "inverted", [*settings, "shortcut=dropout", "inverted=true"], [9.0, 9.2], **official)
    table = _t1(tmp_path)
    rows = list(zip(table.shown["shortcut"], table.shown["setting"], table.shown["paper"], table.shown["Δ"]))
    assert rows == [
        ("identity", "", "6.61 (median of 5)", "-0.01 (median)"),
        ("gating", "gate_bias=-6", "8.70 (median of 5)", "+0.00 (median)"),
        ("gating", "gate_bias=-6, gate_weight_decay=False", "variant of: exclusive gating, init b_g = -6", ""),
        ("dropout", "p=0.5, inverted=True", "variant of: dropout shortcut, ratio 0.5", ""),
    ]
    assert table.frame["variant_of"].tolist()[2] == "2016-T1: exclusive gating, init b_g = -6"
    assert "'variant of': the row differs from that paper row only in a choice the paper leaves open" in table.caption
    alone = tmp_path / "alone"  # without its paper row the variant still takes no paper value
    _folders(alone, "nodecay", [*settings, "shortcut=gating", "gate_weight_decay=false"], [7.9, 8.1], **official)
    assert _t1(alone).frame["paper"].isna().all()


def test_recipe_gap_shows_the_best_error_fb_prints_beside_the_final_one(tmp_path):
    """Item 7: fb.resnet.torch prints the best epoch's test error; the package reports the final one."""
    from resnet_ablate.analysis.tables import BEST_SEEN, build_table, layouts
    for seed, (final, best) in enumerate(((6.1, 5.9), (6.0, 5.95), (6.3, 6.0))):
        make_run_folder(tmp_path / f"fb_s{seed}", ["depth=110", "recipe=fb_torch", f"seed={seed}"], "done", final,
                        best_test_error=best, data_official=True)
    make_run_folder(tmp_path / "he_s0", ["depth=110", "recipe=he2015"], "done", 6.5, best_test_error=6.4)
    table = build_table(layouts()["recipe_gap"], scan.group_by_settings(scan.scan(tmp_path).runs))
    shown = table.shown.set_index("recipe")
    assert (shown.loc["fb_torch", "median"], shown.loc["fb_torch", BEST_SEEN]) == ("6.10", "5.95")
    assert shown.loc["he2015", BEST_SEEN] == "6.40"
    assert list(table.shown.columns).index(BEST_SEEN) == list(table.shown.columns).index("median") + 1
    assert "what fb.resnet.torch prints" in table.caption


def test_a_mean_and_p_over_the_runs_that_survived_say_over_k_of_n(tmp_path):
    """Item 12: beside a 'fail' median, the mean and Welch's p are over the surviving runs."""
    settings = ["depth=110", "recipe=he2016"]
    _folders(tmp_path, "identity", settings, [6.5, 6.7, 6.6])
    _folders(tmp_path, "gating", [*settings, "shortcut=gating", "gate_bias=-7"], [9.0, None, None, 9.5, None])
    shown = _t1(tmp_path).shown.set_index("shortcut")
    assert shown.loc["gating", "median"] == "fail"
    assert shown.loc["gating", "error (%)"] == "9.25 ± 0.35 (over 2 of 5)"
    assert shown.loc["gating", "p (Welch)"].endswith(" (over 2 of 5)")
    assert shown.loc["identity", "error (%)"] == "6.60 ± 0.10"  # no failure, no label


def test_the_spread_table_gives_per_stage_factors_in_total_and_through_the_shortcuts(tmp_path):
    """Item 8: within a stage (a zero-pad transition changes the RMS by geometry), per unit."""
    folder = make_run_folder(tmp_path / "r", ["depth=20", "recipe=he2016", "unit=full_preact", "shortcut=scaling"])
    shapes = [[16, 32, 32]] * 4 + [[32, 16, 16]] * 3 + [[64, 8, 8]] * 2
    path = [0.5 ** (8 - i) for i in range(9)]  # scaling 0.5: the shortcut term halves at every unit
    total = [4.0, 2.0, 1.0, 0.5, 2.0, 1.0, 0.5, 2.0, 1.0]
    (folder / "probes.jsonl").write_text(json.dumps({"iteration": 0, "unit_input": total, "unit_input_rms": total,
                                                     "shortcut_path": path, "shortcut_path_rms": path,
                                                     "unit_shape": shapes, "conv_weight": [1.0]}) + "\n")
    groups = scan.group_by_settings(scan.scan(tmp_path).runs)
    row = frames.gradient_spread(groups).iloc[0]
    assert [row[f"stage {k} shortcut"] for k in (1, 2, 3)] == pytest.approx([0.5, 0.5, 0.5])
    assert [row[f"stage {k} total"] for k in (1, 2, 3)] == pytest.approx([2.0, 2.0, 2.0])
    assert row["first/last"] == 4.0 and list(frames.gradient_spread(groups).columns)[-4:] == ["n", "first/last",
                                                                                               "min", "max"]
    frame = frames.probe_frame(groups, lambda g: "scaling")
    assert sorted(set(frame["path"])) == ["shortcut path", "total"] and frame["stage"].max() == 3
    fig = figures.gradient_norms(frame, "t")
    assert len(fig.axes) == 2 and fig._suptitle.get_text() == "t"  # what the panels measure is the caption's
    caption = figures.FIGURES.get("gradnorm").caption(frame, figures.Scope(groups, "", "t", "rms", frozenset()))
    assert "pure identity path" in caption and caption.startswith("Per-unit input-gradient grad. RMS (log scale)")
    assert len([line for line in fig.axes[1].lines if line.get_linestyle() == ":"]) == 2  # two stage changes


def test_committed_reports_on_the_jpeg75_copy_show_no_paper_values():
    """Item 13: the results/ reports were rebuilt; their runs read a JPEG-75 copy, not the official files."""
    from helpers import REPO
    text = (REPO / "results" / "resnet20_cpu_2k" / "report" / "report.md").read_text()
    tables = text.split("## Runs outside any sweep")[1]  # the Claims section above quotes the papers' words
    assert "No paper value or Δ in every row that has one" in tables and "8.75" not in tables


def test_a_run_named_with_an_unused_optimizers_key_groups_with_the_plain_run(tmp_path):
    """Folders written before unused optimizer and schedule keys were ignored hold e.g. optim=sgd with betas:
    the report groups them by what was trained, as it does for another shortcut's parameters."""
    base = ["depth=20", "recipe=default"]
    make_run_folder(tmp_path / "plain_s0", [*base, "seed=0"], "done", 8.0)
    folder = make_run_folder(tmp_path / "betas_s1", [*base, "seed=1"], "done", 8.4)
    config = folder / "config.yaml"
    config.write_text(config.read_text().replace("- 0.999", "- 0.99"))  # as the old parse wrote betas=[0.9,0.99]
    groups = scan.group_by_settings(scan.scan(tmp_path).runs)
    assert [len(g.runs) for g in groups] == [2] and groups[0].settings["betas"] is None


def test_a_caption_lists_no_key_that_the_runs_optimizer_or_schedule_does_not_use(tmp_path):
    """sgd runs have no betas, eps or onecycle_pct: the caption's common settings must not list them empty."""
    for seed in (0, 1):
        make_run_folder(tmp_path / "runs" / f"r{seed}", ["depth=20", "recipe=default", f"seed={seed}"], "done", 8.0)
    assert report.main([str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--formats", "png"]) == 0
    caption = next(line for line in (tmp_path / "out" / "report.md").read_text().splitlines()
                   if "Common settings" in line)
    assert "depth=20" in caption and not any(f"{key}=" in caption for key in ("betas", "eps", "onecycle_pct"))


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


def test_a_report_into_another_reports_folder_replaces_it_whole(two_runs, tmp_path):
    """Issue 38: report A --out R; report B --out R left A's figures beside B's report.md."""
    other = tmp_path / "other"
    make_run_folder(other / "sweep_x" / "r0", [*TINY, "shortcut=none"], error=7.0)
    (other / "sweep_x" / "r0" / "metrics.jsonl").write_text('{"iteration": 10, "train_error": 50, "test_error": 7}\n')
    write_sweep(SweepRecord(other / "sweep_x", "sweep", runs=("r0",)))
    out = tmp_path / "out"
    assert report.main([str(other), "--out", str(out), "--formats", "png"]) == 0
    first = set((out / ".report-files").read_text().splitlines())
    assert any(name.startswith("sweep_x-") for name in first)
    (out / "notes.txt").write_text("mine")
    assert report.main([str(two_runs), "--out", str(out), "--formats", "png"]) == 0
    second = set((out / ".report-files").read_text().splitlines())
    assert not any(name.startswith("sweep_x-") for name in second)
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == sorted([*second, "notes.txt"])
    assert "sweep_x" not in (out / "report.md").read_text()


def test_a_manifest_line_outside_the_folder_is_never_removed(two_runs, tmp_path):
    out = tmp_path / "out"
    assert report.main([str(two_runs), "--out", str(out), "--formats", "png"]) == 0
    (tmp_path / "precious.txt").write_text("keep")
    with (out / ".report-files").open("a") as f:
        f.write("../precious.txt\n")
    assert report.main([str(two_runs), "--out", str(out), "--formats", "png"]) == 0
    assert (tmp_path / "precious.txt").read_text() == "keep"


@pytest.mark.parametrize("out,message", [("", "--out is empty: name the folder the report goes to"),
                                         ("runs/r0", "--out=runs/r0 is a run folder (it holds result.json), not a "
                                                     "report folder: choose another --out")])
def test_an_empty_out_or_another_tools_folder_is_refused(out, message, two_runs, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert report.main([str(two_runs), "--out", out]) == 2
    assert capsys.readouterr().err.startswith(f"error: {message}")
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_a_figure_registered_outside_the_package_is_drawn_by_the_report(two_runs, tmp_path):
    """Walk (c): a new figure is its drawing function and one entry; the report draws it for every scope with
    nothing else changed, names its file as every figure's and lists it (report.md, .report-files)."""
    from matplotlib.figure import Figure
    for seed in (0, 1):
        lines = [{"iteration": it, "test_error": 50.0 - it - seed, "train_error": 40.0} for it in (5, 10)]
        (two_runs / f"r{seed}" / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))
    drawn = []

    def draw_test_errors(frame, scope):
        drawn.append(sorted(frame.loc[frame["split"] == "test", "error"]))
        fig = Figure()
        fig.subplots().plot(frame["iteration"], frame["error"], "o")
        return fig

    entry = figures.FigureInfo(figures.VARIANTS, lambda scope: frames.curve_frame(scope.groups, scope.label),
                               draw_test_errors)
    figures.FIGURES.register("test_errors")(entry)
    try:
        assert report.main([str(two_runs), "--out", str(tmp_path / "out"), "--formats", "png"]) == 0
    finally:
        figures.FIGURES.unregister("test_errors")
    out = tmp_path / "out"
    assert drawn == [[39.0, 40.0, 44.0, 45.0]]  # one scope: both seeds' test errors at 5 and 10
    assert (out / "runs-test_errors.png").stat().st_size > 1000
    assert "![runs-test_errors](runs-test_errors.png)" in (out / "report.md").read_text()
    assert "runs-test_errors.png" in (out / ".report-files").read_text().splitlines()
    assert "test_errors" not in figures.FIGURES


def test_report_answers_help(capsys):
    with pytest.raises(SystemExit) as e:
        report.main(["--help"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("usage: python -m resnet_ablate.report")


def _runs_of_table1(root):
    """8 finished runs in the shape of Table 1: 4 shortcuts x 2 seeds, ResNet-110."""
    for shortcut, extra in (("identity", []), ("gating", ["gate_bias=-6"]), ("scaling", ["scale=0.5"]),
                            ("none", [])):
        for seed in (0, 1):
            make_run_folder(root / f"{shortcut}_s{seed}", [f"shortcut={shortcut}", *extra, f"seed={seed}"],
                            error=6.0 + seed)


def test_a_report_layout_lists_the_runs_it_leaves_out(tmp_path):
    _runs_of_table1(tmp_path / "runs")
    assert report.main([str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--layout", "table2",
                        "--formats", "png"]) == 0
    text = (tmp_path / "out" / "report.md").read_text()
    assert ("Left out of this table (layout table2 shows runs with the identity shortcut): 3 of 4 groups, 6 runs: "
            "scaling (scale=0.5, residual_scale=1) (2 runs); gating (gate_bias=-6) (2 runs); none (2 runs).") in text
    assert "## Runs outside any sweep" in text and "runs under" not in text


def test_the_report_names_a_command_line_sweep_once(tmp_path):
    folder = tmp_path / "runs" / "sweep"
    _runs_of_table1(folder)
    write_sweep(SweepRecord(folder, "sweep", runs=tuple(sorted(p.name for p in folder.iterdir()))))
    assert report.main([str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--formats", "png"]) == 0
    text = (tmp_path / "out" / "report.md").read_text()
    assert "## command-line sweep\n" in text and "sweep sweep" not in text


def test_two_command_line_sweeps_in_one_report_each_get_their_own_figures(tmp_path):
    """Both were named 'sweep', so both sections drew into sweep-curves.png and showed the last one's curves."""
    for folder, shortcut in (("sweep_shortcut_a", "identity"), ("sweep_shortcut_b", "none")):
        for seed in (0, 1):
            run = make_run_folder(tmp_path / "runs" / folder / f"r{seed}",
                                  [*TINY, f"shortcut={shortcut}", f"seed={seed}"], "done", 40.0 + seed)
            (run / "metrics.jsonl").write_text("".join(json.dumps({"iteration": it, "train_error": 50.0 - it,
                                                                   "test_error": 45.0 - it}) + "\n" for it in (5, 10)))
        write_sweep(SweepRecord(tmp_path / "runs" / folder, "sweep", runs=("r0", "r1")))
    assert report.main([str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--formats", "png"]) == 0
    text = (tmp_path / "out" / "report.md").read_text()
    images = re.findall(r"!\[[^]]*\]\(([^)]*curves[^)]*)\)", text)
    assert len(images) == len(set(images)) == 2 and all((tmp_path / "out" / i).is_file() for i in images)
    assert [i.split("-curves")[0] for i in images] == ["sweep_shortcut_a", "sweep_shortcut_b"]


def test_a_range_test_folder_is_not_listed_as_a_training_run(tmp_path):
    """Issue 38: the README's flow (lr_find, then report runs/) always showed the range test as 'not started'."""
    make_run_folder(tmp_path / "runs" / "r0", TINY, "done", 40.0)
    test = tmp_path / "runs" / "lr_find_tiny"
    test.mkdir()
    (test / "config.yaml").write_text((tmp_path / "runs" / "r0" / "config.yaml").read_text())
    (test / "lr_find.jsonl").write_text('{"step": 0, "lr": 1e-05, "loss": 2.3}\n')
    (test / "lr_find.json").write_text('{"suggested_lr": 0.1}')
    assert report.main([str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--formats", "png"]) == 0
    text = (tmp_path / "out" / "report.md").read_text()
    assert "not started" not in text and f"- range test of lr_find (not a training run): {test}" in text
    assert scan.scan(tmp_path / "runs").range_tests == [test]


def test_the_best_epoch_column_says_it_is_chosen_on_the_test_set_and_names_the_validation_split(tmp_path):
    from resnet_ablate.analysis.tables import BEST_SEEN, build_table, layouts
    for recipe in ("fb_torch", "he2015"):
        _folders(tmp_path / recipe, "identity", ["depth=110", f"recipe={recipe}"], [6.0, 6.2], best_test_error=5.9)
    table = build_table(layouts()["recipe_gap"], scan.group_by_settings(scan.scan(tmp_path).runs))
    assert BEST_SEEN == "best epoch, chosen on test (fb prints)" and BEST_SEEN in table.shown.columns
    assert "chosen on the test set itself" in table.caption and "(val_split=5000)" in table.caption
