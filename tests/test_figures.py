"""The report's figures (`analysis/figures.py`, drawn from `analysis/frames.py`'s frames): legends and titles
laid out inside the figure, and the gradient-spread table and figure on the per-element RMS by default."""
import json

import pandas as pd
from helpers import TINY, make_run_folder
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection, PathCollection

from resnet_ablate import report
from resnet_ablate.analysis import figures
from resnet_ablate.analysis.frames import gradient_spread, spread_caption
from resnet_ablate.analysis.scan import group_by_settings, scan


def _degradation_frame():
    return pd.DataFrame([{"net": net, "depth": d, "seed": s, "iteration": it, "split": split,
                          "error": 50 - it / 50 + d / 10 + (5 if split == "test" else 0)}
                         for net in ("plain", "ResNet") for d in (20, 56, 110) for s in (0, 1)
                         for it in range(0, 1000, 100) for split in ("test", "train")])


def test_the_degradation_legend_keeps_train_and_test_under_their_heading():
    fig = figures.degradation(_degradation_frame(), "degradation")
    FigureCanvasAgg(fig).draw()
    texts = {t.get_text(): t.get_window_extent() for t in fig.legends[0].get_texts() if t.get_text()}
    assert texts["split"].x0 == texts["test"].x0 == texts["train"].x0
    assert texts["split"].y0 > texts["test"].y0 > texts["train"].y0
    assert texts["layers"].x0 == texts["20-layer"].x0 == texts["110-layer"].x0 != texts["split"].x0


def test_a_long_figure_title_is_wrapped_inside_the_figure():
    probes = pd.DataFrame([{"variant": v, "seed": 0, "iteration": 0, "unit": u, "norm": 1.0 + u}
                           for v in ("identity", "none") for u in range(9)])
    fig = figures.gradient_norms(probes, "sweep gradnorm_quick, budget quick (reduced), depth=110, reduced: 4000 it")
    FigureCanvasAgg(fig).draw()
    title = next(t for t in fig.texts if t.get_text().startswith("sweep gradnorm_quick"))
    box = title.get_window_extent()
    assert 0 <= box.x0 and box.x1 <= fig.bbox.width


def test_spread_table_and_figures_use_the_rms_by_default(tmp_path):
    folder = make_run_folder(tmp_path / "r", TINY)
    (folder / "probes.jsonl").write_text(json.dumps({"iteration": 0, "unit_input": [8.0, 2.0],
                                                     "unit_input_rms": [1.0, 0.5], "conv_weight": [1.0]}) + "\n")
    groups = group_by_settings(scan(tmp_path).runs)
    assert gradient_spread(groups)["first/last"].tolist() == [2.0]
    assert gradient_spread(groups, "l2")["first/last"].tolist() == [4.0]
    assert "per-element RMS" in spread_caption()
    assert report.main([str(tmp_path), "--out", str(tmp_path / "out"), "--formats", "png"]) == 0
    spread = (tmp_path / "out" / "runs-gradnorm.csv").read_text().splitlines()
    assert (spread[0].split(",")[-4:] == ["n", "first/last", "min", "max"] and
            spread[1].split(",")[-4:-2] == ["1", "2.0"])
    assert "per-element RMS" in (tmp_path / "out" / "runs-gradnorm.md").read_text()
    assert (tmp_path / "out" / "runs-gradnorm.png").is_file()


def _drawn(ax) -> bool:
    """Whether an axes holds data a reader sees: a line of two finite points or more, a marker at a finite
    point, scattered points or bars (a band alone is not: a band at one point is a sliver)."""
    for line in ax.lines:
        x, y = (pd.to_numeric(pd.Series(v), errors="coerce") for v in line.get_data())
        finite = int((x.notna() & y.notna()).sum())
        if line.get_visible() and (finite >= 2 and line.get_linestyle() not in ("None", "")
                                   or finite >= 1 and line.get_marker() not in ("None", "", None)):
            return True
    return bool(ax.patches) or any(isinstance(c, (PathCollection, LineCollection)) for c in ax.collections)


def _runs_for_every_figure(root):
    """Plain nets and ResNets of two depths, two seeds: one evaluation each (the case that drew empty panels),
    with gradient probes and layer responses."""
    for depth in (8, 14):
        for shortcut in ("none", "identity"):
            for seed in (0, 1):
                folder = make_run_folder(root / f"{shortcut}_d{depth}_s{seed}",
                                         [*TINY, f"depth={depth}", f"shortcut={shortcut}", f"seed={seed}"],
                                         "done", 40.0 + seed)
                (folder / "metrics.jsonl").write_text(json.dumps(
                    {"iteration": 30, "train_error": 50.0 + seed, "test_error": 40.0 + seed, "train_loss": 1.5,
                     "test_loss": 1.4}) + "\n")
                units = (depth - 2) // 2
                path = [0.0] * units if shortcut == "none" else [1.0] * units
                (folder / "probes.jsonl").write_text(json.dumps(
                    {"iteration": 0, "unit_input": [1.0 + u for u in range(units)],
                     "unit_input_rms": [1.0 + u for u in range(units)], "shortcut_path": path,
                     "shortcut_path_rms": path, "conv_weight": [1.0]}) + "\n")
                (folder / "responses.json").write_text(json.dumps(
                    {"source": "end", "iteration": 30, "std": [1.0 + layer for layer in range(depth - 2)]}))


def test_every_registered_figure_draws_data_in_every_panel_also_from_runs_evaluated_once(tmp_path):
    _runs_for_every_figure(tmp_path / "runs")
    groups = sorted(group_by_settings(scan(tmp_path / "runs").runs),
                    key=lambda g: figures.sort_key(g.settings, figures.model_variant()))
    drawn = set()
    for name in figures.FIGURES:
        entry = figures.FIGURES.get(name)
        for scope in entry.per.scopes(groups, "t", "rms"):
            frame = entry.frame(scope)
            if entry.shows(frame):
                fig = entry.draw(frame, scope)
                empty = [ax.get_title() or str(i) for i, ax in enumerate(fig.axes) if not _drawn(ax)]
                assert not empty, f"figure {name}, scope {scope.context!r}: empty panels {empty}"
                drawn.add(name)
    assert drawn == set(figures.FIGURES), f"figures never drawn from these runs: {set(figures.FIGURES) - drawn}"
