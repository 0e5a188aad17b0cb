"""The launcher without SLURM: grids, specs, dry runs, skipping finished runs, packing, the job's signal
hand-over, crash retries, status counts, one-line errors for bad input, and the lines that end a sweep (resume,
report next, follow the live jobs; Ctrl-C stops the whole inline sweep)."""
import json
import os
import signal
from pathlib import Path

import pytest
import torch
from helpers import DONE, PAUSE, TINY, make_run_folder, merged, metrics, result, signal_at_evaluation, use_cli_env

from resnet_ablate import run, status
from resnet_ablate.errors import UsageError
from resnet_ablate.folders.states import State
from resnet_ablate.folders.sweepfolder import read_sweep
from resnet_ablate.models.shortcuts import SHORTCUTS
from resnet_ablate.sweeps.expansion import parse_runs, sweep_name
from resnet_ablate.sweeps.jobs import SweepJob
from resnet_ablate.sweeps.launcher import _summary, command_line, load_profile, parse_launch
from resnet_ablate.sweeps.specs import expand, load_spec, sweep_values
from resnet_ablate.training.configfile import run_name
from resnet_ablate.training.parse import parse

SEEDS_FOLDER = sweep_name([parse([*DONE, f"seed={s}"]) for s in (0, 1)])  # the default folder of DONE seed=0,1


def fake_sbatch(tmp_path: Path, monkeypatch) -> None:
    """An `sbatch` first on PATH that fails if called: what `launcher=slurm` finds does not depend on whether
    this machine has SLURM installed (a cluster started on it appears there in the middle of a run)."""
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "sbatch").write_text("#!/bin/sh\necho 'the test called sbatch' >&2\nexit 1\n")
    (tmp_path / "bin" / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")


def names(folder):
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def test_comma_lists_expand_but_bracket_lists_do_not():
    assert sweep_values("identity,gating") == ["identity", "gating"]
    assert sweep_values("[16000,24000]") == ["[16000,24000]"]
    assert sweep_values("[1,2],[3,4]") == ["[1,2]", "[3,4]"]
    sweep = expand(parse_launch([]), ["shortcut=identity,gating", "seed=0,1,2", "milestones=[16000,24000]"])
    assert [(c.shortcut, c.seed) for c in sweep.cfgs] == [(s, i) for s in ("identity", "gating") for i in range(3)]
    assert all(c.milestones == [16000, 24000] for c in sweep.cfgs)
    folder = "runs/sweep_shortcut+seed_normalize=pixel_mean_milestones=16000-24000_bn_batch=64_precision=fp32"  # named
    # from its grid: the keys varied, then the settings all runs share that differ from the keys' defaults
    assert (sweep.name, sweep.budget, sweep.layout, str(sweep.folder)) == ("sweep", "full", None, folder)
    assert {c.runs_root for c in sweep.cfgs} == {folder}


@pytest.mark.parametrize("name,layout", [("table1_shortcuts", "table1"), ("table2_units", "table2"),
                                         ("table3_preact", "table3"), ("resnet2015_depths", "depth"),
                                         ("degradation", "degradation"), ("gradnorm", "gradnorm")])
def test_every_spec_expands_with_five_seeds_and_a_quick_budget(name, layout):
    count = len(load_spec(name).runs("full"))  # every row x grid point x seed: none merged or dropped
    full = expand(parse_launch([f"ablation={name}"]), [])
    assert (full.layout, len(full.cfgs), str(full.folder)) == (layout, count, f"runs/{name}")
    assert sorted({c.seed for c in full.cfgs}) == [0, 1, 2, 3, 4]
    quick = expand(parse_launch([f"ablation={name}", "budget=quick"]), [])
    assert len(quick.cfgs) == count * 2 // 5 and str(quick.folder) == f"runs/{name}_quick"
    assert all(c.iterations < 64000 and c.milestones == [c.iterations // 2, c.iterations * 3 // 4] for c in quick.cfgs)


def test_table1_rows_and_the_2015_warmup_rule():
    rows = {(c.shortcut, c.gate_bias if "gating" in c.shortcut else None,
             (c.scale, c.residual_scale) if c.shortcut == "scaling" else None, c.p if c.shortcut == "dropout" else None)
            for c in expand(parse_launch(["ablation=table1_shortcuts"]), []).cfgs}
    assert rows >= {("identity", None, None, None), ("none", None, None, None), ("scaling", None, (0.5, 1.0), None),
                    ("scaling", None, (0.5, 0.5), None), ("gating", 0.0, None, None), ("gating", -6.0, None, None),
                    ("gating", -7.0, None, None), ("shortcut_gating", 0.0, None, None),
                    ("shortcut_gating", -6.0, None, None), ("conv1x1", None, None, None), ("dropout", None, None, 0.5)}
    # the paper's rows (the spec may hold more: its open choices, a new shortcut's row)
    depths = expand(parse_launch(["ablation=resnet2015_depths"]), []).cfgs
    assert {(c.depth, c.warmup_iters) for c in depths} == {(20, 0), (32, 0), (44, 0), (56, 0), (110, 400), (1202, 400)}
    assert {c.normalize for c in depths} == {"pixel_mean"}


def test_command_line_overrides_apply_on_top_of_a_spec():
    sweep = expand(parse_launch(["ablation=table2_units", "budget=quick"]), ["dataset=synthetic", "iterations=20000"])
    assert {(c.dataset, c.iterations, tuple(c.milestones)) for c in sweep.cfgs} == {("synthetic", 20000, (8000, 12000))}


def test_inline_sweep_writes_the_sweep_folder_and_a_rerun_skips_finished_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run.main([*DONE, "seed=0,1", "launcher=inline"]) == 0
    folder = tmp_path / "runs" / SEEDS_FOLDER
    sweep = read_sweep(folder)
    cfgs = [parse([*DONE, f"seed={s}"]) for s in (0, 1)]
    assert (list(sweep.runs) == [run_name(c) for c in cfgs] and
            names(folder) == sorted([*list(sweep.runs), "sweep.yaml"]))
    assert (sweep.name, sweep.layout, sweep.budget) == ("sweep", None, "full")
    assert sweep.command.startswith("python -m resnet_ablate.run dataset=synthetic") and "seed=0,1" in sweep.command
    assert sweep.git_commit
    assert all(json.loads((folder / n / "result.json").read_text())["status"] == "done" for n in list(sweep.runs))
    before = {n: (folder / n / "result.json").stat().st_mtime_ns for n in list(sweep.runs)}
    capsys.readouterr()
    assert run.main([*DONE, "seed=0,1", "launcher=inline"]) == 0
    assert f"2 runs in runs/{SEEDS_FOLDER}; 2 finished, 0 queued or running, 0 to run" in capsys.readouterr().out
    assert {n: (folder / n / "result.json").stat().st_mtime_ns for n in list(sweep.runs)} == before


def test_dry_run_lists_runs_and_finished_ones_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run.main([*DONE, "seed=1", "launcher=inline", "sweep_dir=s"]) == 0
    before = names(tmp_path / "s")
    capsys.readouterr()
    assert run.main([*DONE, "seed=0,1,2", "dry_run=true", "launcher=slurm", "sweep_dir=s"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("3 runs in s; 1 finished, 0 queued or running, 2 to run")
    assert out[1].startswith("cost: 2 runs to train in 2 jobs of up to 1 run: ")  # the cost line (test_cost.py)
    assert [line.split()[0] for line in out[2:]] == ["-", "done", "-"]
    assert [line.split()[1] for line in out[2:]] == [run_name(parse([*DONE, f"seed={s}"])) for s in range(3)]
    assert names(tmp_path / "s") == before and not (tmp_path / "s" / ".submitit").exists()


def test_packed_job_through_submitit_debug_gives_the_numbers_of_separate_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run.main([*DONE, "shortcut=dropout", "seed=0,1", "launcher=debug", "runs_per_job=2"]) == 0
    folder = next((tmp_path / "runs").glob("sweep_seed_*"))
    jobs = [json.loads(line) for line in (folder / ".submitit" / "jobs.jsonl").read_text().splitlines()]
    assert len(jobs) == 1 and jobs[0]["launcher"] == "debug" and jobs[0]["runs"] == list(read_sweep(folder).runs)
    for seed in (0, 1):
        cfg = parse([*DONE, "shortcut=dropout", f"seed={seed}", f"run_dir={tmp_path / f'alone{seed}'}"])
        SweepJob(max_retries=0)([cfg])
        assert metrics(folder / run_name(cfg)) == metrics(tmp_path / f"alone{seed}")


SIGNALLED = [*DONE, "iterations=120", "milestones=[60]", "eval_every=10"]


@pytest.fixture(scope="module")
def undisturbed(tmp_path_factory):
    """SIGNALLED's run trained by a job without a signal, once for both signal tests: its folder."""
    folder = tmp_path_factory.mktemp("undisturbed") / "whole"
    SweepJob(max_retries=0)([parse([*SIGNALLED, f"run_dir={folder}"])])
    return folder


def test_job_hands_sigusr2_to_submitit_after_checkpointing(tmp_path, undisturbed):
    """submitit's USR2 handler (here a stand-in that records and exits as submitit does) runs only after the
    trainer wrote its checkpoint; the requeued job resumes to the numbers of an undisturbed run."""
    args = SIGNALLED
    calls = []

    def submitit_usr2(num, frame):
        calls.append(torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)["iteration"])
        raise SystemExit(-1)

    previous = signal.signal(signal.SIGUSR2, submitit_usr2)
    try:
        cfg = parse([*args, f"run_dir={tmp_path / 'cut'}"])
        signal_at_evaluation(tmp_path / "cut", signal.SIGUSR2)
        with pytest.raises(SystemExit):
            SweepJob(max_retries=0)([cfg])
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert len(calls) == 1 and 10 <= calls[0] < 120 and not (tmp_path / "cut" / "result.json").exists()
    assert SweepJob(max_retries=0)([cfg])[0]["status"] == "done"
    assert metrics(tmp_path / "cut") == metrics(undisturbed)


def test_job_checkpoints_on_sigterm_and_trains_on_under_submitit(tmp_path, undisturbed):
    """SIGTERM, with submitit's no-op handler in place: checkpoint at once, then train on to the end."""
    args = SIGNALLED
    bypassed = []
    previous = signal.signal(signal.SIGTERM, lambda num, frame: bypassed.append(num))
    try:
        signal_at_evaluation(tmp_path / "cut", signal.SIGTERM)
        out = SweepJob(max_retries=0)([parse([*args, f"run_dir={tmp_path / 'cut'}"])])
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert bypassed == [signal.SIGTERM] and out[0]["status"] == "done"
    assert metrics(tmp_path / "cut") == metrics(undisturbed)
    assert result(tmp_path / "cut") == result(undisturbed)


CRASHING_PLUGIN = """
import sys

# not in the processes that train nothing (submitit's job controller, multiprocessing's resource tracker): no torch
if not any(helper in arg for arg in sys.orig_argv for helper in ("submitit.local._local", "resource_tracker")):
    from resnet_ablate.models.shortcuts import SHORTCUTS, Shortcut

    @SHORTCUTS.register("crashes")
    class Crashes(Shortcut):
        def merge(self, s, f):
            raise RuntimeError("boom")
"""


def test_local_executor_retries_a_crash_then_reports_it_and_status_counts(tmp_path, monkeypatch, capsys):
    """A crash is retried max_retries times (each attempt a fresh training process), then reported; a damaged
    checkpoint is a one-line error at once, not retried. The launch runs here, through run.main; its jobs and
    their training processes are processes of their own."""
    (tmp_path / "plugin").mkdir()
    (tmp_path / "plugin" / "sitecustomize.py").write_text(CRASHING_PLUGIN)  # registered in the jobs' processes
    use_cli_env(monkeypatch, tmp_path / "plugin")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "spec.yaml").write_text("variants: [{shortcut: identity}, {shortcut: crashes}, {lr: 0.05}]\n")
    ok, damaged = (parse([*DONE, *extra, f"runs_root={tmp_path / 'runs'}"]) for extra in ([], ["lr=0.05"]))
    folder = tmp_path / "runs" / "spec"
    make_run_folder(folder / run_name(damaged), [*DONE, "lr=0.05"], status=None)
    (folder / run_name(damaged) / "checkpoint.pt").write_bytes(b"not a checkpoint")
    exec(CRASHING_PLUGIN, {})  # and here, where the launch expands the spec
    try:
        code = run.main([*DONE, "ablation=spec.yaml", f"runs_root={tmp_path / 'runs'}", "launcher=local",
                         "max_retries=1"])
    finally:
        SHORTCUTS.unregister("crashes")
    err = capsys.readouterr().err
    assert code == 1, err
    bad = next(name for name in status.run_states(folder) if "_crashes_" in name)
    assert f"crashed: {bad}: resnet_ablate.sweeps.jobs.RunCrashed: crashed 2 times, last: ChildCrashed: " \
           f"RuntimeError: boom" in err
    assert f"crashed: {run_name(damaged)}: resnet_ablate.errors.UsageError: " \
           f"{folder / run_name(damaged) / 'checkpoint.pt'} is damaged" in err
    assert json.loads((folder / run_name(ok) / "result.json").read_text())["status"] == "done"
    states = status.run_states(folder)
    assert states[run_name(ok)] == ("done", "")
    state, reason = states[bad]
    assert state == "crashed" and "RunCrashed: crashed 2 times, last: ChildCrashed: RuntimeError: boom" in reason
    state, reason = states[run_name(damaged)]
    assert state == "crashed" and "checkpoint.pt is damaged" in reason


def test_status_counts_not_started_paused_and_done(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run.main([*DONE, "seed=0,1,2", "time_limit_s=0.001", "sweep_dir=s"]) == 75  # paused runs: exit 75
    folder = tmp_path / "s"
    runs = list(read_sweep(folder).runs)
    for p in (folder / runs[0]).iterdir():
        p.unlink()
    SweepJob(max_retries=0)([parse([*DONE, "seed=2", f"runs_root={folder}"])])
    capsys.readouterr()
    assert status.main([str(folder)]) == 0
    assert capsys.readouterr().out == f"{folder}: 3 runs: 1 done, 0 fail, 1 paused, 1 not started\n  paused " \
                                      f"{runs[1]}: launch the sweep again to resume\n"


@pytest.mark.parametrize("args,message", [
    (["ablation=table2"], "error: unknown ablation 'table2' (did you mean 'table2_units'?); allowed: degradation, "
                          "gradnorm, open_questions, random_lr_optim, recipe_gap, resnet2015_depths, table1_shortcuts, "
                          "table2_units, table3_preact"),
    (["ablation=table2_units", "budget=tiny"], "error: unknown budget 'tiny' for table2_units; allowed: full, quick"),
    (["dry_rn=true"], "error: unknown key 'dry_rn' (did you mean 'dry_run'?); see --help for the keys"),
    (["slurm.partiton=gpu"], "error: unknown key 'slurm.partiton' (did you mean 'slurm.partition'?)"),
    (["launcher=slurm", "profile=nope"], "error: SLURM profile 'nope' not found"),
    (["launcher=slurm", "slurm.time=soon"], "error: bad value for slurm.time: 'soon'"),
    (["launcher=cloud"], "error: unknown launcher 'cloud'; allowed: inline, local, slurm, debug"),
    (["seed=0,1", "run_dir=x"], "error: run_dir names one run's folder; a sweep puts its runs under sweep_dir="),
    (["seed=0,x"], "error: bad value for seed: 'x' is not a valid int"),
    (["seed=0,1", "max_num_timeout=-1"], "error: max_num_timeout=-1 is out of range; allowed: >= 0"),
    (["seed=0,1", "runs_per_job=0"], "error: runs_per_job=0 is out of range; allowed: >= 1"),
    (["launcher=slurm", "slurm.gpus_per_task=-1"], "error: slurm.gpus_per_task=-1 is out of range; allowed: >= 0"),
    (["launcher=slurm", "slurm.time=0"], "error: slurm.time=0 is out of range; allowed: >= 1"),
    (["launcher=slurm", "slurm.mem_gb=0"], "error: slurm.mem_gb=0.0 is out of range; allowed: > 0"),
])
def test_bad_launcher_input_is_one_line_exit_2_and_nothing_written(args, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("spec,message", [
    ("seed: [0]\n", "unknown key 'seed' (did you mean 'seeds'?); allowed: description, layout"),
    ("overrides: {deph: 20}\n", "unknown key 'deph' (did you mean 'depth'?)"),
    ("variants: []\n", "empty grid"),
    ("grid: {depth: []}\n", "empty grid"),
    ("layout: table9\n", "unknown layout 'table9'"),
    ("grid: {depth: 20}\n", "grid.depth must be a list, got 20"),
])
def test_bad_spec_is_one_line_exit_2(spec, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ablations").mkdir()
    (tmp_path / "ablations" / "mine.yaml").write_text(spec)
    assert run.main(["ablation=mine", "dry_run=true"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_a_slurm_profile_value_out_of_range_names_the_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "slurm").mkdir()
    (tmp_path / "slurm" / "mine.yaml").write_text("time: 0\n")
    assert run.main([*TINY, "seed=0,1", "launcher=slurm", "profile=mine", "dry_run=true"]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'slurm' / 'mine.yaml'}: slurm.time=0 is out of range; " \
                                      f"allowed: >= 1\n"


def test_runs_per_job_on_a_single_run_is_ignored_with_a_note_and_the_run_keeps_its_folder(tmp_path, monkeypatch,
                                                                                          capsys):
    """It moved the run into a '1 runs' sweep folder of its own; like a key of an entry not in use, it is ignored
    with a note. With a second run it applies."""
    monkeypatch.chdir(tmp_path)
    assert run.main([*DONE, "runs_per_job=2", "max_runs=3"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("note: max_runs, runs_per_job do not apply to a single run (max_runs: sweeps; "
                          "runs_per_job: sweeps); ignored, and the run keeps its own folder\n")
    assert names(tmp_path / "runs") == [run_name(parse(DONE))]
    assert run.main([*DONE, "seed=0,1", "runs_per_job=2", "dry_run=true"]) == 0
    assert "note:" not in capsys.readouterr().out


@pytest.mark.parametrize("profile,message", [
    ("partion: gpu\n", "unknown key 'partion' (did you mean 'partition'?)"),
    ("time: soon\n", "bad value for time: 'soon'"),
])
def test_invalid_slurm_profile_is_one_line_exit_2(profile, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "slurm").mkdir()
    (tmp_path / "slurm" / "mine.yaml").write_text(profile)
    assert run.main([*TINY, "launcher=slurm", "profile=mine"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'slurm' / 'mine.yaml'}: {message}") and err.count("\n") == 1


def test_missing_sbatch_is_one_line_exit_2_without_traceback(tmp_path, monkeypatch, capsys):
    """In-process through run.main, sbatch hidden from PATH (tests/test_config.py runs the CLI as a real process)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", "/nonexistent")
    assert run.main([*TINY, "launcher=slurm"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err == "error: launcher=slurm but 'sbatch' is not on PATH: run this on a SLURM login node " \
                  "(or start a local cluster with slurm/start-local-slurm.sh)\n"
    assert list(tmp_path.iterdir()) == []


def test_help_lists_launcher_and_slurm_keys(capsys):
    assert run.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "  depth=110" in out and "  launcher=inline" in out and "  ablation=" in out and "  slurm.partition" in out


def test_status_of_a_folder_that_is_not_a_sweep(tmp_path, capsys):
    assert status.main([str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path} is not a sweep folder (no sweep.yaml)\n"


def test_spec_loads_by_path(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("layout: table2\ngrid: {unit: [original, full_preact]}\nseeds: [3]\n")
    spec = load_spec(str(path))
    assert (spec.name, spec.layout, spec.runs("full")) == ("x", "table2", [["unit=original", "seed=3"],
                                                                          ["unit=full_preact", "seed=3"]])


# Runs that would share a folder, sweeps that would share one, and sweeps too large to expand.

@pytest.mark.parametrize("grid,shown,why", [
    (["arch=imagenet", "depth=18", "init=/x/a/w.pt,/x/b/w.pt"], "init=/x/a/w.pt vs /x/b/w.pt",
     "init shows in a run's name by the file name only: give the files distinct names"),
    (["dataset=folder", "data_dir=/x/a/data,/x/b/data"], "data_dir=/x/a/data vs /x/b/data",
     "data_dir does not change what is trained, so a run's name leaves it out"),
    (["eval_every=10,20"], "eval_every=10 vs 20", "eval_every does not change what is trained"),
    (["runs_root=a,b"], "runs_root=a vs b", "runs_root does not change what is trained"),
])
def test_runs_that_would_share_a_folder_are_refused_at_expansion(grid, shown, why, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run.main([*merged(DONE, *grid), "dry_run=true"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: two runs of this sweep would share the folder ") and err.count("\n") == 1
    assert f"(they differ in {shown}): {why}" in err
    assert list(tmp_path.iterdir()) == []


def test_runs_of_the_same_settings_are_one_run():
    assert len(expand(parse_launch([]), [*DONE, "lr=0.1,0.10,1e-1"]).cfgs) == 1


@pytest.mark.parametrize("launcher", ["inline", "local", "slurm", "debug"])
def test_a_sweep_launched_while_another_launch_holds_its_folder_is_refused(launcher, tmp_path, monkeypatch, capsys):
    import fcntl

    monkeypatch.chdir(tmp_path)
    fake_sbatch(tmp_path, monkeypatch)  # launcher=slurm checks for sbatch first; the answer must not hang on PATH
    (tmp_path / "s").mkdir()
    fd = os.open(tmp_path / "s" / ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, b'{"pid": 4242, "host": "login1", "started": "now"}')
    try:
        assert run.main([*DONE, "seed=0,1", "sweep_dir=s", f"launcher={launcher}", "profile=local"]) == 2
        assert capsys.readouterr().err == "error: s is being launched by another process (pid 4242 on login1, since " \
                                          "now): wait for it to end (an inline or local launch trains its runs " \
                                          "first), then launch again\n"
        assert run.main([*DONE, "seed=0,1", "sweep_dir=s", f"launcher={launcher}", "profile=local",
                         "dry_run=true"]) == 0
    finally:
        os.close(fd)
    assert names(tmp_path / "s") == []


def test_two_command_line_sweeps_get_their_own_folders_and_a_relaunch_keeps_every_run(tmp_path, monkeypatch,
                                                                                      capsys):
    monkeypatch.chdir(tmp_path)
    assert run.main([*DONE, "seed=0,1"]) == 0
    assert run.main([*merged(DONE, "lr=0.05"), "seed=0,1"]) == 0
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == sorted(
        [SEEDS_FOLDER, SEEDS_FOLDER.replace("_warmup_iters", "_lr=0.05_warmup_iters")])
    assert run.main([*DONE, "seed=0,1", "sweep_dir=s"]) == 0
    assert run.main([*DONE, "seed=2,3", "sweep_dir=s"]) == 0  # another grid into the same folder: added, not replacing
    capsys.readouterr()
    assert status.main(["s"]) == 0
    assert capsys.readouterr().out == "s: 4 runs: 4 done, 0 fail\n"
    (tmp_path / "mine.yaml").write_text("seeds: [0, 1]\n")
    assert run.main([*DONE, "ablation=mine.yaml", "sweep_dir=s", "dry_run=true"]) == 2
    assert capsys.readouterr().err == "error: sweep_dir=s holds another sweep (command-line sweep s, method grid); " \
                                      "this one is sweep mine, method grid: choose another sweep_dir\n"


@pytest.mark.parametrize("spec,args,message", [
    ("overrides: {runs_root: elsewhere}\n", [], "runs_root may not be set in a spec"),
    ("grid: {runs_root: [a, b]}\n", [], "runs_root may not be set in a spec"),
    ("seeds: [0]\n", ["search.runs_root=choice:a,b", "sweep.trials=2"], "search.runs_root: folders are not searched"),
])
def test_a_spec_or_search_may_not_set_runs_root(spec, args, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.yaml").write_text(spec)
    assert run.main([*DONE, "ablation=mine.yaml", *args, "dry_run=true"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_a_comma_list_for_a_list_key_is_one_line_not_a_sweep(capsys):
    assert run.main([*DONE, "freeze=stem,stage1", "dry_run=true"]) == 2
    assert capsys.readouterr().err == "error: freeze=stem,stage1: freeze is a list; write one list in brackets, " \
                                      "freeze=[stem,stage1], or a sweep over lists as freeze=[stem],[stage1]\n"
    assert len(expand(parse_launch([]), [*DONE, "freeze=[stem],[stage1]"]).cfgs) == 2


@pytest.mark.parametrize("spec,args,count", [
    ("grid: {lr: [%s], weight_decay: [%s]}\n" % (",".join(["0.1"] * 1000), ",".join(["0.0001"] * 1000)), [],
     "1,000,000 runs (1,000,000 spec runs)"),
    ("seeds: [0]\n", ["search.lr=loguniform:0.001:1", "sweep.trials=200000"], "200,000 runs (1 spec runs x 200,000 "
                                                                              "random trials)"),
    ("seeds: [0, 1]\n", ["seed=" + ",".join(map(str, range(6000)))],
     "12,000 runs (2 spec runs x 6,000 values of seed)"),
], ids=["spec_grid", "trials", "command_line"])
def test_a_sweep_over_max_runs_is_refused_at_once_before_it_is_built(spec, args, count, tmp_path, monkeypatch,
                                                                     capsys):
    """Counted from the lists' lengths: no run's overrides listed, no trial drawn, nothing parsed."""
    from resnet_ablate.sweeps import specs

    def built(*args, **kwargs):
        raise AssertionError("the sweep was built before it was counted")

    monkeypatch.chdir(tmp_path)
    for name in ("parse_runs", "draw_trials"):
        monkeypatch.setattr(specs, name, built)
    monkeypatch.setattr(specs.Spec, "runs", built)
    (tmp_path / "big.yaml").write_text(spec)
    assert run.main([*DONE, "ablation=big.yaml", *args, "dry_run=true"]) == 2
    assert capsys.readouterr().err == f"error: this sweep has {count}, more than max_runs=10,000: check the lists, " \
                                      f"or set max_runs={count.split()[0].replace(',', '')} to launch it\n"


def test_max_runs_raises_the_bound():
    assert len(expand(parse_launch(["max_runs=12"]), [*DONE, "seed=" + ",".join(map(str, range(12)))]).cfgs) == 12
    with pytest.raises(UsageError, match="this sweep has 12 runs"):
        expand(parse_launch(["max_runs=11"]), [*DONE, "seed=" + ",".join(map(str, range(12)))])


def test_grouped_parsing_gives_the_configs_and_the_errors_of_parsing_each_run():
    runs = [[*DONE, f"lr={lr}", f"shortcut={sc}", f"gate_bias={b}", f"milestones={m}", f"freeze={f}", f"seed={s}"]
            for lr in ("0.1", "0.05") for sc in ("identity", "gating") for b in ("0", "-6") for m in ("[20]", "[10,20]")
            for f in ("[]", "stem") for s in ("0", "1")]
    runs += [[*DONE, "recipe=he2016", "bn_batch=0", f"depth={d}", f"batch_size={b}"] for d in (8, 14) for b in (8, 16)]
    notes_one, notes_all = [], []
    assert parse_runs(runs, notes_one) == [parse(r, notes_all) for r in runs]
    assert set(notes_one) == set(notes_all)
    for bad in ([*DONE, "lr=0.1", "milestones=[40]"], [*DONE, "lr=0.1", "momentum=2"], [*DONE, "lr=0.1", "seed=x"]):
        with pytest.raises(UsageError) as alone:
            parse(bad)
        with pytest.raises(UsageError) as grouped:
            parse_runs([[*DONE, "lr=0.1", "milestones=[20]", "momentum=0.9", "seed=0"], bad])
        assert str(grouped.value) == str(alone.value)


def test_a_sweep_ends_with_one_summary_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = [*DONE, "seed=0,1", "launcher=inline"]
    assert run.main([*args, PAUSE]) == 75
    last = capsys.readouterr().out.splitlines()[-1]
    assert last == (f"sweep sweep: 2 runs: 0 done, 0 fail, 2 paused; run the same command again to resume: "
                    f"{command_line([*args, PAUSE])}")
    assert run.main(args) == 0
    folder = sweep_name([parse([*DONE, f"seed={s}"]) for s in (0, 1)])
    assert capsys.readouterr().out.splitlines()[-1] == (f"sweep sweep: 2 runs: 2 done, 0 fail; next: python -m "
                                                        f"resnet_ablate.report runs/{folder} --out reports/{folder}")


def test_a_relaunch_while_slurm_jobs_are_live_says_to_follow_them(tmp_path, monkeypatch, capsys):
    """Runs in a queued or running SLURM job are neither paused nor to be resumed: exit 0, follow with status."""
    monkeypatch.chdir(tmp_path)
    plan = expand(parse_launch([]), [*DONE, "seed=0,1"])
    live = {run_name(c): (State.QUEUED if c.seed else State.RUNNING, "") for c in plan.cfgs}
    assert _summary(plan, {run_name(c): c for c in plan.cfgs}, {}, live, "cmd") == 0
    assert capsys.readouterr().out == ("sweep sweep: 2 runs: 0 done, 0 fail, 1 queued, 1 running; follow them with: "
                                       f"python -m resnet_ablate.status {plan.folder}\n")


def test_a_finished_run_whose_slurm_job_still_shows_running_counts_once(tmp_path, monkeypatch, capsys):
    """A job is RUNNING in sacct for a moment after its run wrote result.json: the relaunch counts that run as
    finished only (it said '2 finished, 2 queued or running' of a 2-run sweep)."""
    from resnet_ablate.folders.sweepfolder import append_job
    from resnet_ablate.sweeps import launcher
    monkeypatch.chdir(tmp_path)
    args = [*DONE, "seed=0,1"]
    assert run.main([*args, "launcher=inline"]) == 0
    folder = tmp_path / "runs" / SEEDS_FOLDER
    append_job(folder, "77_0", "slurm", [run_name(parse([*DONE, "seed=0"]))])
    monkeypatch.setattr(launcher, "slurm_states", lambda records, folder: {"77_0": "RUNNING"})
    capsys.readouterr()
    assert run.main([*args, "dry_run=true"]) == 0
    out = capsys.readouterr().out
    assert "2 finished, 0 queued or running, 0 to run" in out, out


def test_ctrl_c_stops_an_inline_sweep_rather_than_only_its_current_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = merged(DONE, "iterations=60", "seed=0,1", "launcher=inline")
    cfgs = [parse([*DONE, "iterations=60", f"seed={s}"]) for s in (0, 1)]
    signal_at_evaluation(tmp_path / "runs" / sweep_name(cfgs) / run_name(cfgs[0]), signal.SIGINT)
    before = signal.getsignal(signal.SIGINT)
    assert run.main(args) == 75
    assert capsys.readouterr().out.splitlines()[-1].startswith("sweep sweep: 2 runs: 0 done, 0 fail, 1 paused, "
                                                               "1 not started; run the same command again")
    assert signal.getsignal(signal.SIGINT) is before


def test_dry_run_of_a_single_run_names_its_own_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    folder = Path("runs") / run_name(parse(DONE))
    assert run.main([*DONE, "dry_run=true"]) == 0
    assert capsys.readouterr().out == f"1 run in {folder}: to train from the start; dry_run=true trains nothing\n"
    assert not (tmp_path / "runs").exists()
    assert run.main(DONE) == 0
    capsys.readouterr()
    assert run.main([*DONE, "dry_run=true"]) == 0
    assert capsys.readouterr().out == f"1 run in {folder}: finished (done): nothing to do; dry_run=true trains " \
                                      f"nothing\n"


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


@pytest.mark.parametrize("srun", [True, False])
def test_the_jobs_python_is_settable_and_srun_optional(srun, tmp_path, monkeypatch):
    """Issue 38: SLURM users of containers set the job's Python and leave srun out; without srun the Python runs
    as the batch shell (exec) and gets SLURM's warning signal there (B:), or it would be killed at the limit."""
    from resnet_ablate.sweeps import jobs
    from resnet_ablate.sweeps.launchkeys import help_text
    fake_sbatch(tmp_path, monkeypatch)
    launch = parse_launch(["launcher=slurm", "slurm.python=apptainer exec img.sif python", f"slurm.srun={srun}".lower(),
                           "slurm.signal_delay_s=45"])
    ex = jobs.executor(launch, tmp_path / "sweep")
    script = ex._executor._make_submission_file_text(ex._executor._submitit_command_str, "id").splitlines()
    command = next(line for line in script if "submitit.core._submit" in line)
    if srun:
        assert command.startswith("srun ") and " apptainer exec img.sif python -u -m" in command
        assert "#SBATCH --signal=USR2@45" in script
    else:
        assert command.startswith("exec apptainer exec img.sif python -u -m")
        assert "#SBATCH --signal=B:USR2@45" in script
    assert "  slurm.python  the command that runs the job's Python" in help_text()
    assert "  slurm.srun  start the job's command with srun" in help_text()
