"""Issue 15, the first hour as a user: nonsense values refused, every bad input one line, a run that says what it
is doing (start-up lines, heartbeat, exit codes, Ctrl-C), and the launcher's and tools' messages."""

import pytest
from helpers import TINY, run_cli

from resnet_ablate import run
from resnet_ablate.registry import UsageError
from resnet_ablate.training.config import run_name
from resnet_ablate.training.parse import parse

DONE = [*TINY, "fail_threshold=100"]  # tiny runs end above the papers' 20% "fail" line; count them as done

# ---------------------------------------------------------------------------------------------- nonsense refused


@pytest.mark.parametrize("overrides,message", [
    (["momentum=5"], "momentum=5.0 is out of range; allowed: 0 <= momentum < 1"),
    (["weight_decay=-1"], "weight_decay=-1.0 is out of range; allowed: >= 0"),
    (["bn_momentum=2"], "bn_momentum=2.0 is out of range; allowed: 0 < bn_momentum <= 1"),
    (["fail_threshold=-1"], "fail_threshold=-1.0 is out of range; allowed: a test error in %, 0..100"),
    (["time_limit_s=-5"], "time_limit_s=-5.0 is out of range; allowed: >= 0"),
    (["seed=-1"], "seed=-1 is out of range; allowed: 0 <= seed < 2**32"),
])
def test_values_out_of_range_are_refused(overrides, message):
    with pytest.raises(UsageError) as e:
        parse(overrides)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


@pytest.mark.parametrize("key", ["lr", "warmup_lr", "weight_decay", "momentum", "gate_bias", "scale", "eps",
                                 "time_limit_s", "fail_threshold"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_every_float_key_refuses_nan_and_inf(key, value):
    owner = {"gate_bias": ["shortcut=gating"], "scale": ["shortcut=scaling"]}.get(key, [])
    with pytest.raises(UsageError, match=rf"^{key}={value} is not a finite number$"):
        parse([*owner, f"{key}={value}"])


def test_a_list_of_floats_refuses_nan():
    with pytest.raises(UsageError, match=r"^betas=\[0.9, nan\] is not a finite number$"):
        parse(["optim=adam", "betas=[0.9,nan]"])


@pytest.mark.parametrize("overrides,message", [
    (["iterations=4000"], "milestones=[32000, 48000] reach past iterations=4000, so the lr would never drop at "
                          "32000, 48000; set milestones=[2000,3000] (the papers' 1/2 and 3/4 of the run) or "
                          "milestones=[] for a constant lr"),
    (["iterations=100", "milestones=[50,100]", "warmup_iters=0"], "milestones=[50, 100] reach past iterations=100"),
    (["iterations=300", "milestones=[100]"], "warmup_iters=400 is not shorter than iterations=300, so the run "
                                             "never leaves warm-up; set warmup_iters=0 or fewer than 300"),
])
def test_a_schedule_that_never_takes_effect_is_refused(overrides, message):
    with pytest.raises(UsageError) as e:
        parse(overrides)
    assert str(e.value).startswith(message)


def test_milestones_are_not_checked_for_schedules_that_do_not_use_them():
    assert parse(["iterations=4000", "schedule=cosine", "warmup_iters=0"]).milestones == [32000, 48000]


def test_the_readme_random_sweep_example_now_names_its_milestones(tmp_path, monkeypatch, capsys):
    """The README's random-sweep example kept the 64k milestones with iterations=4000 (lr never dropped)."""
    monkeypatch.chdir(tmp_path)
    old = ["depth=20", "iterations=4000", "search.lr=loguniform:0.001:1", "search.optim=choice:sgd,adamw",
           "sweep.trials=16", "sweep.seed=0", "dry_run=true"]
    assert run.main(old) == 2
    assert "milestones=[32000, 48000] reach past iterations=4000" in capsys.readouterr().err
    assert run.main([*old, "milestones=[2000,3000]"]) == 0


def test_the_same_key_twice_is_refused(tmp_path):
    proc = run_cli("depth=20", "depth=32", "dry_run=true", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr == "error: depth is set twice (depth=20, depth=32); keep one\n"


def test_parameters_of_another_shortcut_are_ignored_with_a_note_and_kept_out_of_the_name():
    notes: list[str] = []
    cfg = parse(["shortcut=identity", "gate_bias=-3", "p=0.9"], notes)
    assert (cfg.gate_bias, cfg.p) == (-6.0, 0.5)
    assert run_name(cfg) == run_name(parse([]))
    assert notes == ["note: gate_bias, p do not apply to shortcut=identity (gate_bias: gating, shortcut_gating; "
                     "p: dropout); ignored, and left out of the run name"]
    assert parse(["shortcut=gating", "gate_bias=-3"], notes).gate_bias == -3.0 and len(notes) == 1


def test_a_grid_over_shortcuts_and_their_parameters_has_no_duplicate_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run.main([*TINY, "shortcut=identity,gating", "gate_bias=0,-6", "dry_run=true"]) == 0
    out = capsys.readouterr().out
    assert ": 3 runs in runs/sweep" in out
    assert out.count("note: gate_bias does not apply to shortcut=identity") == 1


