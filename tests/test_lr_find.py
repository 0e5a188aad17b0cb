"""The lr range test: curve, suggestion and figure in the run folder; bad settings are one line."""
import json
import re

import pytest
import torch
from helpers import TINY, run_cli

from resnet_ablate import lr_find, zoo
from resnet_ablate.errors import UsageError
from resnet_ablate.lr_find import RangeTest, edge_warning, range_test, split_args, suggest
from resnet_ablate.training.parse import parse
from resnet_ablate.training.state import build_state


def test_range_test_writes_curve_suggestion_and_figure(tmp_path, monkeypatch, capsys):
    """In-process through lr_find.main (test_cli_bad_key_exits_2 runs the CLI as a real process)."""
    monkeypatch.chdir(tmp_path)
    code = lr_find.main([*TINY, "steps=60", "end_lr=100", f"run_dir={tmp_path / 'f'}"])
    out, err = capsys.readouterr()
    assert code == 0, err
    rows = [json.loads(line) for line in (tmp_path / "f" / "lr_find.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in rows]
    assert lrs[0] == pytest.approx(1e-5) and lrs == sorted(lrs) and 3 <= len(rows) <= 60
    found = json.loads((tmp_path / "f" / "lr_find.json").read_text())
    best = min(rows, key=lambda r: r["loss"])
    assert found["min_loss_lr"] == best["lr"] and found["suggested_lr"] == pytest.approx(best["lr"] / 10)
    assert f"suggested lr {found['suggested_lr']:.3g}" in out
    assert (tmp_path / "f" / "lr_find.png").stat().st_size > 10_000


def test_suggestion_on_a_known_curve():
    lrs = [10 ** (k / 10 - 4) for k in range(40)]
    losses = [2.0 - 1.5 / (1 + 10 ** (-(k - 20) / 3)) if k <= 30 else 0.5 + (k - 30) for k in range(40)]
    found = suggest(lrs, losses)
    assert found["min_loss_lr"] == lrs[30] and found["suggested_lr"] == pytest.approx(lrs[30] / 10)
    assert found["steepest_lr"] == pytest.approx(lrs[20])


@pytest.mark.parametrize("args, message", [
    (["start_lr=1", "end_lr=0.1"], "need 0 < start_lr < end_lr < inf and steps >= 2"),
    (["end_lr=inf"], "need 0 < start_lr < end_lr < inf and steps >= 2"),
    (["start_lr=nan"], "need 0 < start_lr < end_lr < inf and steps >= 2"),
    (["steps=many"], "bad range-test setting in steps=many"),
])
def test_bad_range_settings_are_one_line(args, message):
    with pytest.raises(UsageError, match=message):
        split_args(args)


def test_cli_bad_key_exits_2(tmp_path):
    proc = run_cli("sped=3", cwd=tmp_path, module="resnet_ablate.lr_find")
    assert (proc.returncode == 2 and proc.stderr.startswith("error: unknown key 'sped'") and
            "Traceback" not in proc.stderr)


def test_each_step_trains_at_its_lr_of_the_range(tmp_path):
    """The recipe's schedule (lr 0.1 here) must not overwrite the range test's lr (it did before the fix)."""
    cfg = parse([*TINY, f"run_dir={tmp_path / 'r'}"])
    state = build_state(cfg, torch.device("cpu"))
    seen = []
    step = state.step
    state.step = lambda: (seen.append(state.optimizer.param_groups[0]["lr"].item()), step())
    lrs, _ = range_test(state, RangeTest(start_lr=1e-4, end_lr=1e-2, steps=3))
    assert lrs == pytest.approx([1e-4, 1e-3, 1e-2]) and seen == pytest.approx(lrs)


def test_range_test_prints_progress_every_heartbeat(tmp_path, capsys):
    """Minutes of range test on a CPU must not be silent: a line per heartbeat_s, as in training."""
    cfg = parse([*TINY, "heartbeat_s=0.000001", f"run_dir={tmp_path / 'r'}"])
    state = build_state(cfg, torch.device("cpu"))
    capsys.readouterr()
    range_test(state, RangeTest(start_lr=1e-4, end_lr=1e-2, steps=4))
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(",")[0] for line in lines] == [f"range test: step {i}/4" for i in (1, 2, 3, 4)]
    assert re.fullmatch(r"range test: step 4/4, smoothed loss [\d.]+ \| \d+ img/s \| \d+:\d\d:\d\d elapsed, ETA "
                        r"0:00:00 at most", lines[-1])


def test_range_test_is_quiet_with_heartbeat_off(tmp_path, capsys):
    cfg = parse([*TINY, "heartbeat_s=0", f"run_dir={tmp_path / 'r'}"])
    state = build_state(cfg, torch.device("cpu"))
    capsys.readouterr()
    range_test(state, RangeTest(steps=3))
    assert capsys.readouterr().out == ""


def test_lr_find_refuses_a_run_folder_and_leaves_it_as_it_was(tmp_path, monkeypatch, capsys):
    from resnet_ablate.training.trainer import train

    folder = tmp_path / "r"
    train([parse([*TINY, "fail_threshold=100", f"run_dir={folder}"])])
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert lr_find.main([*TINY, "steps=5", f"run_dir={folder}"]) == 2
    assert capsys.readouterr().err == f"error: run_dir={folder} is a run folder (it holds metrics.jsonl), not a " \
                                      f"range-test folder: choose another run_dir\n"
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_lr_find_refuses_a_folder_of_the_users_files_or_of_other_settings(tmp_path, capsys):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "config.yaml").write_text("my: settings\n")
    assert lr_find.main([*TINY, "steps=5", f"run_dir={tmp_path / 'mine'}"]) == 2
    assert capsys.readouterr().err == f"error: run_dir={tmp_path / 'mine'} holds files a range test did not write " \
                                      f"(config.yaml): choose a new or empty run_dir\n"
    assert (tmp_path / "mine" / "config.yaml").read_text() == "my: settings\n"
    assert lr_find.main([*TINY, "steps=3", f"run_dir={tmp_path / 'f'}"]) == 0
    assert lr_find.main([*TINY, "steps=3", "lr=0.5", f"run_dir={tmp_path / 'f'}"]) == 2
    assert "holds a run with other settings (lr: 0.1 vs 0.5)" in capsys.readouterr().err


def test_lr_find_suggests_the_closest_key_of_either_kind(capsys):
    assert lr_find.main(["stpes=10"]) == 2
    assert capsys.readouterr().err == "error: unknown key 'stpes' (did you mean 'steps'?); see --help for the keys\n"
    assert zoo.main(["depth=20"]) == 2


def test_lr_find_warns_at_the_edges_of_the_range_instead_of_suggesting_them():
    lrs = [10 ** (k / 10 - 5) for k in range(30)]
    falling = [3.0 - k / 30 for k in range(30)]
    found = suggest(lrs, falling, whole_range=True)
    assert found["suggested_lr"] is None and found["min_loss_lr"] == lrs[-1]
    test = RangeTest(start_lr=lrs[0], end_lr=lrs[-1], steps=30)
    assert edge_warning(lrs, found, test) == (f"warning: the loss was still falling at {lrs[-1]:.3g}, the end of the "
                                              f"range; raise end_lr (or steps) to find its minimum")
    rising = suggest(lrs, falling[::-1], whole_range=True)
    assert edge_warning(lrs, rising, test) == ("warning: the loss is lowest at start_lr=1e-05; lower start_lr to find "
                                               "its minimum")
    stopped = suggest(lrs, falling, whole_range=False)  # it stopped when the loss rose: its minimum is real
    assert stopped["suggested_lr"] == pytest.approx(lrs[-1] / 10) and edge_warning(lrs, stopped, test) is None


def test_lr_find_figure_has_a_title_and_marks_the_suggestion(tmp_path):
    lrs = [10 ** (k / 10 - 5) for k in range(30)]
    losses = [2.0 - k / 20 if k < 20 else 1.0 + (k - 20) for k in range(30)]
    found = suggest(lrs, losses)
    fig = lr_find.figure(lrs, losses, found, "lr range test: cifar10_d56_original_identity_s0")
    ax = fig.axes[0]
    assert ax.get_title() == "lr range test: cifar10_d56_original_identity_s0"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [f"lowest loss at {lrs[20]:.3g}",
                                                                   f"suggested lr {lrs[20] / 10:.3g}"]
