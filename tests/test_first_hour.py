"""Issue 15, the first hour as a user: nonsense values refused, every bad input one line, a run that says what it
is doing (start-up lines, heartbeat, exit codes, Ctrl-C), and the launcher's and tools' messages."""

import pytest
from helpers import TINY, run_cli, write_fake_cifar

from resnet_ablate import run, status
from resnet_ablate.models.transfer import read_state_dict
from resnet_ablate.registry import UsageError
from resnet_ablate.training import data as datamod
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


# ------------------------------------------------------------------------------------- every bad input one line


def test_a_truncated_archive_is_one_line_and_leaves_no_half_folder(tmp_path):
    write_fake_cifar(tmp_path, per_file=200, tar=True)
    archive = tmp_path / "cifar-10-python.tar.gz"
    whole = archive.read_bytes()
    archive.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(UsageError) as e:
        datamod.read_cifar("cifar10", tmp_path, download=False)
    assert str(e.value).startswith(f"{archive} is truncated or damaged (EOFError: ")
    assert str(e.value).endswith("; delete it and download or copy it again") and "\n" not in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar-10-python.tar.gz"]  # no half-extracted folder
    archive.write_bytes(whole)  # a good archive now extracts
    assert len(datamod.read_cifar("cifar10", tmp_path, download=False)[0]) == 1000


def test_data_dir_one_level_too_deep_says_point_at_the_parent(tmp_path):
    write_fake_cifar(tmp_path)
    with pytest.raises(UsageError) as e:
        datamod.read_cifar("cifar10", tmp_path / "cifar-10-batches-py", download=False)
    assert str(e.value) == (f"data_dir={tmp_path / 'cifar-10-batches-py'} is the cifar-10-batches-py/ folder itself; "
                            f"point data_dir at its parent, {tmp_path}")


def test_a_data_dir_that_does_not_exist_is_reported_not_created(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run.main(["depth=8", "iterations=10", "milestones=[5]", "warmup_iters=0", "data_dir=nope"]) == 2
    assert capsys.readouterr().err == ("error: data_dir nope does not exist; create it (the data is fetched into it) "
                                       "or point data_dir= (or $RESNET_ABLATE_DATA) at where it is\n")
    assert not (tmp_path / "nope").exists()


@pytest.mark.parametrize("content,kind", [(b"hello\n", "KeyError"), (bytes(range(256)) * 8, "UnpicklingError")])
def test_an_init_file_that_is_no_state_dict_is_one_short_line(tmp_path, content, kind):
    path = tmp_path / "weights.pt"
    path.write_bytes(content)
    with pytest.raises(UsageError) as e:
        read_state_dict(str(path))
    assert str(e.value) == (f"init={path} is not a state_dict file (torch.load could not read it: {kind}); save one "
                            f"with torch.save(model.state_dict(), PATH)")


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


def test_status_of_a_missing_path_says_it_does_not_exist(tmp_path, capsys):
    assert status.main([str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'nope'} does not exist\n"


