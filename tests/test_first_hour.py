"""Issue 15, the first hour as a user: nonsense values refused, every bad input one line, a run that says what it
is doing (start-up lines, heartbeat, exit codes, Ctrl-C), and the launcher's and tools' messages."""
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers import TINY, cli_env, make_run_folder, merged, write_fake_cifar
from matplotlib.backends.backend_agg import FigureCanvasAgg

from resnet_ablate import lr_find, report, run, status, zoo
from resnet_ablate.analysis import figures
from resnet_ablate.cli import guarded
from resnet_ablate.folders.states import State
from resnet_ablate.folders.sweepfolder import SweepRecord, write_sweep
from resnet_ablate.lr_find import RangeTest, edge_warning, suggest
from resnet_ablate.models.shortcuts import SHORTCUTS, shortcut_parameters
from resnet_ablate.models.transfer import read_state_dict
from resnet_ablate.errors import UsageError
from resnet_ablate.sweeps import launcher
from resnet_ablate.sweeps.launcher import command_line, load_profile, parse_launch
from resnet_ablate.sweeps.expansion import sweep_name
from resnet_ablate.sweeps.specs import draw_trials, expand
from resnet_ablate.training import datasets
from resnet_ablate.training.config import run_name
from resnet_ablate.training.parse import parse
from resnet_ablate.training.progress import cores, day_note, device_line
from resnet_ablate.training.trainer import StopRequest, setup, train

DONE = [*TINY, "fail_threshold=100"]  # tiny runs end above the papers' 20% "fail" line; count them as done

# ---------------------------------------------------------------------------------------------- nonsense refused


@pytest.mark.parametrize("overrides,message", [
    (["momentum=5"], "momentum=5.0 is out of range; allowed: 0 <= momentum < 1"),
    (["weight_decay=-1"], "weight_decay=-1.0 is out of range; allowed: >= 0"),
    (["bn_momentum=2"], "bn_momentum=2.0 is out of range; allowed: 0 < bn_momentum <= 1"),
    (["fail_threshold=-1"], "fail_threshold=-1.0 is out of range; allowed: a test error in %, 0..100"),
    (["time_limit_s=-5"], "time_limit_s=-5.0 is out of range; allowed: >= 0"),
    (["seed=-1"], "seed=-1 is out of range; allowed: 0 <= seed < 2**32"),
    (["heartbeat_s=-1"], "heartbeat_s=-1.0 is out of range"),
    (["threads=-2"], "threads=-2 is out of range"),
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
    with pytest.raises(UsageError, match=r"^betas=\[0.9,nan\] is not a finite number$"):
        parse(["optim=adam", "betas=[0.9,nan]"])


@pytest.mark.parametrize("overrides,message", [
    (["iterations=4000"], "milestones=[32000,48000] reach past iterations=4000, so the lr would never drop at "
                          "32000, 48000; set milestones=[2000,3000] (the papers' 1/2 and 3/4 of the run) or "
                          "milestones=[] for a constant lr"),
    (["iterations=100", "milestones=[50,100]", "warmup_iters=0"], "milestones=[50,100] reach past iterations=100"),
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
    assert "milestones=[32000,48000] reach past iterations=4000" in capsys.readouterr().err
    assert run.main([*old, "milestones=[2000,3000]"]) == 0


def test_the_same_key_twice_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run.main(["depth=20", "depth=32", "dry_run=true"]) == 2
    assert capsys.readouterr().err == "error: depth is set twice (depth=20, depth=32); keep one\n"


def test_parameters_of_another_shortcut_are_ignored_with_a_note_and_kept_out_of_the_name():
    notes: list[str] = []
    cfg = parse(["shortcut=identity", "gate_bias=-3", "p=0.9"], notes)
    assert (cfg.gate_bias, cfg.p) == (-6.0, 0.5)
    assert run_name(cfg) == run_name(parse([]))
    gates = ", ".join(n for n in SHORTCUTS if "gate_bias" in shortcut_parameters(SHORTCUTS.get(n)))
    assert notes == [f"note: gate_bias, p do not apply to shortcut=identity (gate_bias: {gates}; "
                     "p: dropout); ignored, and left out of the run name"]
    assert parse(["shortcut=gating", "gate_bias=-3"], notes).gate_bias == -3.0 and len(notes) == 1


def test_a_grid_over_shortcuts_and_their_parameters_has_no_duplicate_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run.main([*TINY, "shortcut=identity,gating", "gate_bias=0,-6", "dry_run=true"]) == 0
    out = capsys.readouterr().out
    assert ": 3 runs in runs/sweep" in out
    assert out.count("note: gate_bias does not apply to shortcut=identity") == 1


# ------------------------------------------------------------------------------------- a run that says what it does


def _train_out(capsys, overrides):
    """Train in this process; (summary, stdout lines)."""
    capsys.readouterr()
    summary = train([parse(overrides)])[0]
    return summary, capsys.readouterr().out.splitlines()


def test_start_up_lines_say_device_threads_data_size_folder_and_changed_settings(tmp_path, capsys):
    folder = tmp_path / "run"
    _, out = _train_out(capsys, [*TINY, f"run_dir={folder}"])
    name = run_name(parse(TINY))
    assert out[:4] == [
        f"device: CPU, 1 thread on {cores()} cores (threads=N to change), precision fp32, eager steps",
        "data: synthetic (generated, seed 12345): 64 training, 16 test images (32x32), 10 classes",
        f"[{name}] 75,290 parameters; run folder {folder.resolve()}",
        f"[{name}] settings besides the defaults (all in config.yaml): depth=8 dataset=synthetic synthetic_size=64 "
        f"recipe=default iterations=30 milestones=[20] warmup_iters=0 batch_size=8 eval_every=10 device=cpu run_dir={folder}"]
    assert (folder / "config.yaml").read_text().count("\n") > 50  # the full config


def test_threads_key_sets_torch_threads_and_the_start_up_line_shows_it():
    try:
        device, precision = setup(parse([*TINY, "threads=2"]))  # what train() calls first
        assert torch.get_num_threads() == 2
        assert device_line(device, precision, graphs=True).startswith("device: CPU, 2 threads on ")
    finally:
        torch.set_num_threads(1)


def test_heartbeat_lines_between_evaluations(tmp_path, capsys):
    """heartbeat_s tiny: a line after every iteration; each evaluation line resets the interval."""
    _, out = _train_out(capsys, [*TINY, "heartbeat_s=1e-9", f"run_dir={tmp_path / 'r'}"])
    beats = [line for line in out if re.search(r"\] it \d+/30 lr [\d.]+ \| \d+ img/s \| \d+:\d\d:\d\d elapsed, "
                                               r"ETA \d+:\d\d:\d\d$", line)]
    iterations = [int(re.search(r" it (\d+)/", line).group(1)) for line in beats]
    assert iterations == [i for i in range(1, 31) if i % 10]  # evaluations print their own line at 10, 20, 30
    assert sum(" test loss " in line for line in out) == 3


def test_no_heartbeat_with_heartbeat_s_0(tmp_path, capsys):
    _, out = _train_out(capsys, [*TINY, "heartbeat_s=0", f"run_dir={tmp_path / 'r'}"])
    assert [line for line in out if " it " in line] == [line for line in out if " test loss " in line]


def test_time_limit_is_checked_every_iteration(tmp_path, capsys):
    """time_limit_s stopped only at evaluations before (here it trained on to iteration 2000)."""
    folder = tmp_path / "r"
    summary, _ = _train_out(capsys, [*TINY, "iterations=1000000", "eval_every=2000", "time_limit_s=0.5",
                                     f"run_dir={folder}"])
    assert summary["status"] == "paused" and summary["reason"] == "time_limit_s=0.5"
    assert 1 <= summary["iteration"] < 2000
    assert torch.load(folder / "checkpoint.pt", weights_only=True)["iteration"] == summary["iteration"]


def test_a_run_over_a_day_says_so_once_after_a_few_dozen_iterations(tmp_path, capsys):
    """10^9 iterations take days at any speed this net runs at; the run is stopped after its first evaluation."""
    folder, stop = tmp_path / "r", StopRequest()

    def stop_after_first_evaluation():
        while not (folder / "metrics.jsonl").is_file():
            time.sleep(0.01)
        stop.reason = "test"
    threading.Thread(target=stop_after_first_evaluation, daemon=True).start()
    capsys.readouterr()
    summary = train([parse([*TINY, "iterations=1000000000", "eval_every=50", f"run_dir={folder}"])], stop)[0]
    out = capsys.readouterr().out.splitlines()
    assert summary["status"] == "paused" and summary["iteration"] >= 50
    notes = [line for line in out if line.startswith("note: at ")]
    assert len(notes) == 1 and re.fullmatch(r"note: at \d+ img/s the remaining 999999960 iterations take about "
                                            r"[\d.]+ days; a GPU, a smaller depth, fewer iterations or a spec's "
                                            r"budget=quick make it shorter", notes[0])
    assert out.index(notes[0]) < next(i for i, line in enumerate(out) if " test loss " in line)  # before it 50


def test_day_note_only_past_a_day():
    assert day_note(1.0, 64000, 40, 128) is None  # 17.8 hours
    assert day_note(2.0, 64000, 40, 128).startswith("note: at 64 img/s the remaining 63960 iterations take about 1.5 days")


def test_first_ctrl_c_is_answered_at_once_and_a_stopped_run_exits_75(tmp_path):
    folder = tmp_path / "r"
    proc = subprocess.Popen([sys.executable, "-m", "resnet_ablate.run", *merged(TINY, "iterations=1000000"),
                             "heartbeat_s=0", f"run_dir={folder}"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=cli_env())
    deadline = time.time() + 120
    while not (folder / "metrics.jsonl").is_file():
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read()
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err
    assert "Ctrl-C: checkpointing after this iteration, then stopping (Ctrl-C again stops at once" in err
    assert "Traceback" not in err and re.search(r"stopped at iteration \d+ \(SIGINT\); checkpoint saved", out)
    assert (folder / "checkpoint.pt").is_file() and not (folder / "result.json").exists()


def test_train_from_python_gives_the_signal_handlers_back(tmp_path):
    """A notebook calling train(): its Ctrl-C must interrupt again once training returns, and SIGTERM kill."""
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)}
    [summary] = train([parse(merged(TINY, "iterations=2", "milestones=[1]", "fail_threshold=100",
                                    f"run_dir={tmp_path / 'r'}"))])
    assert summary["status"] == "done"
    assert {s: signal.getsignal(s) for s in before} == before


def test_a_second_ctrl_c_is_one_line_and_exit_130(capsys):
    def interrupted(argv):
        raise KeyboardInterrupt
    assert guarded(interrupted, []) == 130
    assert capsys.readouterr().err == ("\ninterrupted; a run folder keeps its last checkpoint and the same command "
                                       "resumes from it\n")


def test_output_into_a_closed_pipe_is_a_quiet_exit_141(tmp_path):
    """`run ... dry_run=true | head`: the reader goes away; no BrokenPipeError traceback."""
    read, write = os.pipe()
    os.close(read)
    proc = subprocess.run([sys.executable, "-m", "resnet_ablate.run", *TINY, "seed=0,1,2", "dry_run=true"],
                          cwd=tmp_path, stdout=write, stderr=subprocess.PIPE, text=True, env=cli_env(), timeout=120)
    os.close(write)
    assert (proc.returncode, proc.stderr) == (141, "")


# --------------------------------------------------------------------------------------------------------- sweeps


def test_a_sweep_ends_with_one_summary_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = [*DONE, "seed=0,1", "launcher=inline"]
    assert run.main([*args, "time_limit_s=0.001"]) == 75
    last = capsys.readouterr().out.splitlines()[-1]
    assert last == (f"sweep sweep: 2 runs: 0 done, 0 fail, 2 paused; run the same command again to resume: "
                    f"{command_line([*args, 'time_limit_s=0.001'])}")
    assert run.main(args) == 0
    folder = sweep_name([parse([*DONE, f"seed={s}"]) for s in (0, 1)])
    assert capsys.readouterr().out.splitlines()[-1] == (f"sweep sweep: 2 runs: 2 done, 0 fail; next: python -m "
                                                        f"resnet_ablate.report runs/{folder} --out reports/{folder}")


def test_a_relaunch_while_slurm_jobs_are_live_says_to_follow_them(tmp_path, monkeypatch, capsys):
    """Runs in a queued or running SLURM job are neither paused nor to be resumed: exit 0, follow with status."""
    monkeypatch.chdir(tmp_path)
    plan = expand(parse_launch([]), [*DONE, "seed=0,1"])
    live = {run_name(c): (State.QUEUED if c.seed else State.RUNNING, "") for c in plan.cfgs}
    assert launcher._summary(plan, {run_name(c): c for c in plan.cfgs}, {}, live, "cmd") == 0
    assert capsys.readouterr().out == ("sweep sweep: 2 runs: 0 done, 0 fail, 1 queued, 1 running; follow them with: "
                                       f"python -m resnet_ablate.status {plan.folder}\n")


def test_ctrl_c_stops_an_inline_sweep_rather_than_only_its_current_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = merged(DONE, "iterations=60", "seed=0,1", "launcher=inline")
    cfgs = [parse([*DONE, "iterations=60", f"seed={s}"]) for s in (0, 1)]
    first = tmp_path / "runs" / sweep_name(cfgs) / run_name(cfgs[0])

    def interrupt():
        while not (first / "metrics.jsonl").is_file():
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT)
    threading.Thread(target=interrupt, daemon=True).start()
    before = signal.getsignal(signal.SIGINT)
    assert run.main(args) == 75
    assert capsys.readouterr().out.splitlines()[-1].startswith("sweep sweep: 2 runs: 0 done, 0 fail, 1 paused, "
                                                               "1 not started; run the same command again")
    assert signal.getsignal(signal.SIGINT) is before


def test_random_trial_i_does_not_depend_on_the_number_of_trials():
    space = {"lr": {"dist": "loguniform", "low": 1e-4, "high": 1.0}, "optim": {"choice": ["sgd", "adamw"]},
             "depth": {"dist": "int", "low": 1, "high": 3}}
    assert draw_trials(space, 4, seed=0) == draw_trials(space, 8, seed=0)[:4] == draw_trials(space, 16, seed=0)[:4]
    assert draw_trials(space, 4, seed=0) != draw_trials(space, 4, seed=1)


def test_dry_run_of_a_single_run_names_its_own_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    folder = Path("runs") / run_name(parse(DONE))
    assert run.main([*DONE, "dry_run=true"]) == 0
    assert capsys.readouterr().out == f"1 run in {folder}: to train from the start; dry_run=true trains nothing\n"
    assert not (tmp_path / "runs").exists()
    assert run.main(DONE) == 0
    capsys.readouterr()
    assert run.main([*DONE, "dry_run=true"]) == 0
    assert capsys.readouterr().out == f"1 run in {folder}: finished (done): nothing to do; dry_run=true trains nothing\n"


def test_a_command_line_sweep_header_has_no_layout_none(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run.main([*TINY, "seed=0,1", "dry_run=true"]) == 0
    folder = sweep_name([parse([*TINY, f"seed={s}"]) for s in (0, 1)])
    assert capsys.readouterr().out.splitlines()[0] == (f"sweep sweep (budget full): 2 runs in runs/{folder}; 0 "
                                                       f"finished, 0 queued or running, 2 to run")


def test_missing_data_is_one_line_before_any_job_is_submitted(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    args = ["depth=8", "iterations=10", "milestones=[5]", "warmup_iters=0", "seed=0,1", "data_dir=data",
            "download=false"]
    assert run.main([*args, "launcher=local"]) == 2
    assert capsys.readouterr().err == ("error: cifar10 not found in data: put cifar-10-python.tar.gz or its "
                                       "extracted cifar-10-batches-py/ folder there, or point data_dir= (or "
                                       "$RESNET_ABLATE_DATA) at where it is (download=false)\n")
    assert not list(tmp_path.glob("runs/*/.submitit"))


def test_slurm_jobs_get_a_gpu_by_default_and_the_local_test_profile_says_it_has_none(tmp_path, monkeypatch, capsys):
    assert load_profile("default", []).gpus_per_task == 1 and load_profile("local", []).gpus_per_task == 0
    monkeypatch.chdir(tmp_path)
    assert run.main([*TINY, "seed=0,1", "launcher=slurm", "profile=local", "dry_run=true"]) == 0
    assert "note: slurm.gpus_per_task=0: the jobs get no GPU and train on their CPUs" in capsys.readouterr().out


# ------------------------------------------------------------------------------------- every bad input one line


def test_a_truncated_archive_is_one_line_and_leaves_no_half_folder(tmp_path):
    write_fake_cifar(tmp_path, per_file=200, tar=True)
    archive = tmp_path / "cifar-10-python.tar.gz"
    whole = archive.read_bytes()
    archive.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(UsageError) as e:
        datasets.read_cifar("cifar10", tmp_path, download=False)
    assert str(e.value).startswith(f"{archive} is truncated or damaged (EOFError: ")
    assert str(e.value).endswith("; delete it and download or copy it again") and "\n" not in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar-10-python.tar.gz"]  # no half-extracted folder
    archive.write_bytes(whole)  # a good archive now extracts
    assert len(datasets.read_cifar("cifar10", tmp_path, download=False)[0]) == 1000


def test_data_dir_one_level_too_deep_says_point_at_the_parent(tmp_path):
    write_fake_cifar(tmp_path)
    with pytest.raises(UsageError) as e:
        datasets.read_cifar("cifar10", tmp_path / "cifar-10-batches-py", download=False)
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


# ------------------------------------------------------------------------------------------------ tools and report


@pytest.mark.parametrize("module,expected", [
    (status, "usage: python -m resnet_ablate.status <sweep folder>\nPrints how many of a sweep's runs"),
    (zoo, "usage: python -m resnet_ablate.zoo\nPrints the parameter counts"),
    (lr_find, "usage: python -m resnet_ablate.lr_find [start_lr=1e-05] [end_lr=10.0] [steps=200] [training key"),
])
def test_the_tools_answer_help(module, expected, capsys):
    assert module.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(expected)
    if module is lr_find:
        assert "  depth=110  (int)" in out and "  seed=0  (int)" in out


def test_report_answers_help(capsys):
    with pytest.raises(SystemExit) as e:
        report.main(["--help"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("usage: python -m resnet_ablate.report")


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
