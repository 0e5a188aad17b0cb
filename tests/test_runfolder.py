"""Run folders that can't be shared, reused or truncated by mistake (issue 13): one trainer per folder (the
lock), the config and the data checked on every reuse, no line lost without a word, one line for damaged
state, bounded names, umask modes, the thread count, and pickles that cannot run code. The SLURM cases are in
test_slurm.py."""
import fcntl
import json
import os
import pickle
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import DONE, PAUSE, StopAtEvaluation, cli_env, make_run_folder, metrics, result, write_fake_cifar

from resnet_ablate import lr_find, report, run, status
from resnet_ablate.folders import runfolder as rf
from resnet_ablate.folders.lock import FolderLock, holder
from resnet_ablate.folders.sweepfolder import SweepRecord, write_sweep
from resnet_ablate.training.configfile import run_name
from resnet_ablate.training.parse import parse
from resnet_ablate.training.trainer import train


def _with(*changes: str) -> list[str]:
    """DONE with `changes` (key=value) replacing its keys or added: no key given twice."""
    keys = {c.split("=", 1)[0] for c in changes}
    return [*(a for a in DONE if a.split("=", 1)[0] not in keys), *changes]


def _error(capsys) -> str:
    """stderr of an in-process command that must have failed with one line."""
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def _paused(folder, *extra):
    """A run paused at iteration 10 (checkpoint and one metrics line) in `folder`; its settings."""
    args = [*DONE, *extra, f"run_dir={folder}"]
    assert train([parse(args)], StopAtEvaluation(folder))[0] == {"status": "paused", "iteration": 10,
                                                                 "reason": "SIGTERM"}
    return args


def _hold_lock(folder):
    """Hold `folder`'s lock as a trainer would (flock on .lock with the owner written in it)."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o666)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"pid": 4242, "host": "node7", "slurm_job": "99_1", "started": "today"}).encode())
    return fd


# 1. A finished folder is the answer only for its own config; folders are not set per run of a sweep.

def test_finished_folder_of_other_settings_is_refused(tmp_path, capsys):
    folder = tmp_path / "x"
    train([parse([*DONE, f"run_dir={folder}"])])
    before = (folder / "result.json").read_text()
    capsys.readouterr()
    assert run.main(_with(f"run_dir={folder}", "seed=7", "depth=14", "lr=0.5")) == 2
    err = _error(capsys)
    assert f"{folder} holds a run with other settings (depth: 8 vs 14; lr: 0.1 vs 0.5; seed: 0 vs 7)" in err
    assert (folder / "result.json").read_text() == before


def test_sweep_refuses_a_finished_folder_of_other_settings(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cfg = parse([*DONE, "seed=1"])
    make_run_folder(tmp_path / "s" / run_name(cfg), [*DONE, "seed=1", "lr=0.5"])
    assert run.main([*DONE, "seed=0,1", "sweep_dir=s", "dry_run=true"]) == 2
    assert "holds a run with other settings (lr: 0.5 vs 0.1)" in _error(capsys)


@pytest.mark.parametrize("spec,args,message", [
    ("overrides: {run_dir: one}\nseeds: [0, 1]\n", [], "run_dir may not be set in a spec"),
    ("grid: {sweep_dir: [a, b]}\n", [], "sweep_dir may not be set in a spec"),
    ("seeds: [0]\n", ["search.run_dir=choice:A,B", "sweep.trials=2"], "search.run_dir: folders are not searched"),
    ("search: {run_dir: {choice: [A, B]}}\ntrials: 2\n", [], "search.run_dir: folders are not searched"),
])
def test_specs_and_searches_may_not_set_folders(spec, args, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.yaml").write_text(spec)
    assert run.main([*DONE, "ablation=mine.yaml", *args, "dry_run=true"]) == 2
    assert message in _error(capsys)


@pytest.mark.parametrize("main,key,where", [(run.main, "run_dir", "file"), (run.main, "run_dir", "file/r"),
                                            (run.main, "runs_root", "file/runs"), (lr_find.main, "run_dir", "file")])
def test_a_run_folder_where_a_file_is_is_one_line(main, key, where, tmp_path, capsys):
    (tmp_path / "file").write_text("not a folder")
    assert main([*_with(f"{key}={tmp_path / where}"), *(["steps=5"] if main is lr_find.main else [])]) == 2
    err = _error(capsys)
    assert err.startswith(f"error: {key}: ") and "choose another" in err
    assert (tmp_path / "file").read_text() == "not a folder"


# 2. One trainer per folder: a lock the kernel releases, a refusal naming the owner, the launcher skips it.

def test_second_trainer_is_refused_naming_the_owner_and_a_kill_frees_the_folder(tmp_path, capsys):
    folder = tmp_path / "r"
    args = _with("iterations=100000", "milestones=[50000]", "eval_every=2", f"run_dir={folder}")
    first = subprocess.Popen([sys.executable, "-m", "resnet_ablate.run", *args], cwd=tmp_path, env=cli_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (folder / "metrics.jsonl").is_file():
            assert time.time() < deadline and first.poll() is None, first.stderr.read()
            time.sleep(0.05)
        assert run.main(args) == 2
        err = _error(capsys)
        assert err.startswith(f"error: {folder} is being trained by another process (pid {first.pid} on "
                              f"{socket.gethostname()}, since ")
    finally:
        first.kill()
        first.wait()
    assert holder(folder) is None  # released by the kernel: no stale lock
    FolderLock.acquire(folder).release()


def test_launcher_skips_runs_another_process_trains(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    busy, free = (tmp_path / "s" / run_name(parse([*DONE, f"seed={s}"])) for s in (0, 1))
    fd = _hold_lock(busy)
    try:
        assert run.main([*DONE, "seed=0,1", "sweep_dir=s"]) == 0
    finally:
        os.close(fd)
    assert "2 runs in s; 0 finished, 1 queued or running, 1 to run" in capsys.readouterr().out
    assert (free / "result.json").is_file() and not (busy / "result.json").exists()


# 3. The data and the init weights are part of what a folder is checked against.

def _image_tree(root, seed):
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True)
            for i in range(4):
                Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / split / cls / f"{i}.png")
    return root


def test_resuming_or_reusing_a_folder_with_other_data_is_refused(tmp_path, capsys):
    one, other = _image_tree(tmp_path / "one" / "data", 0), _image_tree(tmp_path / "other" / "data", 1)
    common = ["dataset=folder", "image_size=8", "depth=8", "batch_size=4", "iterations=20", "eval_every=10",
              "warmup_iters=0", "milestones=[15]", "fail_threshold=100"]
    paused = tmp_path / "paused"
    assert train([parse([*common, f"data_dir={one}", f"run_dir={paused}"])],
                 StopAtEvaluation(paused))[0]["status"] == "paused"
    finished = tmp_path / "finished"
    train([parse([*common, f"data_dir={one}", f"run_dir={finished}"])])
    capsys.readouterr()
    for folder, where in ((paused, "checkpoint.pt"), (finished, "result.json")):
        assert run.main([*common, f"data_dir={other}", f"run_dir={folder}"]) == 2
        assert f"{folder} was trained on other data (data_fingerprint " in _error(capsys)
    assert not (paused / "result.json").exists()
    assert run_name(parse([*common, f"data_dir={one}"])).startswith("folder-data_d8_")


def test_other_init_weights_are_refused(tmp_path, capsys):
    import torchvision

    for seed, name in ((0, "a"), (1, "b")):
        torch.manual_seed(seed)
        (tmp_path / name).mkdir()
        torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), tmp_path / name / "r18.pt")
    args = ["dataset=synthetic", "synthetic_size=16", "arch=imagenet", "depth=18", "batch_size=4", "iterations=2",
            "eval_every=2", "warmup_iters=0", "milestones=[1]", "fail_threshold=100", f"run_dir={tmp_path / 'r'}"]
    train([parse([*args, f"init={tmp_path / 'a' / 'r18.pt'}"])])
    capsys.readouterr()
    assert run.main([*args, f"init={tmp_path / 'b' / 'r18.pt'}"]) == 2
    assert "was trained on other init weights (init_sha256 " in _error(capsys)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "r18.pt").write_bytes((tmp_path / "a" / "r18.pt").read_bytes())  # a copy elsewhere matches
    assert run.main([*args, f"init={tmp_path / 'c' / 'r18.pt'}"]) == 0
    assert "already finished" in capsys.readouterr().out


# 4-7. Lines are not lost without a word; temp files of killed writers go.

def test_damaged_middle_line_is_an_error_and_nothing_is_rewritten(tmp_path, capsys):
    args = _paused(tmp_path / "r")
    metrics = tmp_path / "r" / "metrics.jsonl"
    first = metrics.read_text()
    for bad in ('{"iteration": 1', '{"epoch": 3}'):  # not JSON; JSON without an iteration
        metrics.write_text(first + bad + "\n" + first.replace('"iteration": 10', '"iteration": 20'))
        before = metrics.read_bytes()
        capsys.readouterr()
        assert run.main(args) == 2
        assert f"{metrics} line 2 is damaged" in _error(capsys)
        assert metrics.read_bytes() == before


def test_torn_last_line_is_dropped_on_resume(tmp_path):
    args = _paused(tmp_path / "r")
    metrics = tmp_path / "r" / "metrics.jsonl"
    metrics.write_text(metrics.read_text() + '{"iteration": 20, "ep')
    train([parse(args)])
    assert [json.loads(line)["iteration"] for line in metrics.read_text().splitlines()] == [10, 20, 30]


def test_report_lists_a_folder_with_a_damaged_line_and_goes_on(tmp_path, capsys):
    good = train([parse([*DONE, f"run_dir={tmp_path / 'runs' / 'good'}"])])[0]
    bad = tmp_path / "runs" / "bad"
    make_run_folder(bad, [*DONE, "seed=1"], copy_of=tmp_path / "runs" / "good", seed=1)
    lines = (bad / "metrics.jsonl").read_text().splitlines()
    (bad / "metrics.jsonl").write_text("\n".join([lines[0], '{"epoch": 3}', *lines[1:]]) + "\n")
    assert report.main([str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--formats", "png"]) == 0
    out = capsys.readouterr().out
    assert f"- damaged (skipped): {bad}: metrics.jsonl line 2 is damaged (a line without 'iteration')" in out
    assert f"{good['final_test_error']:.2f}" in out


def test_appends_and_renames_are_synced_at_each_checkpoint(tmp_path, monkeypatch):
    synced = []
    real = os.fsync

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    folder = tmp_path / "r"
    train([parse([*DONE, f"run_dir={folder}"])])
    writes = [i for i, p in enumerate(synced) if p.startswith((str(folder / ".checkpoint.pt."),
                                                                  str(folder / ".result.json.")))]
    assert len(writes) == 3  # checkpoints at iterations 10 and 20, result.json at 30
    for i in writes:  # the metrics lines before the file that claims them; the folder after its rename
        assert synced[i - 1] == str(folder / "metrics.jsonl") and synced[i + 1] == str(folder)


def test_lost_checkpoint_restart_is_said_before_lines_are_replaced(tmp_path, capsys):
    args = _paused(tmp_path / "r")
    (tmp_path / "r" / "checkpoint.pt").unlink()
    capsys.readouterr()
    train([parse(args)])
    out = capsys.readouterr().out
    assert f"{tmp_path / 'r'} has 1 metrics lines (up to iteration 10) but no checkpoint.pt: training again from " \
           f"iteration 0, which replaces them" in out
    assert out.index("training again") < out.index("it 10/30")


def test_temp_files_of_a_killed_writer_are_removed_and_nothing_else(tmp_path):
    args = _paused(tmp_path / "r")
    stale = [tmp_path / "r" / ".checkpoint.pt.9f3e2d1c.tmp", tmp_path / "r" / ".result.json.0a1b2c3d.tmp"]
    others = [tmp_path / "r" / n for n in (".config.yaml.swp", ".metrics.jsonl.orig", ".checkpoint.pt.k2j3h4_x",
                                           ".result.json.0a1b2c3d.tmp~")]  # an editor's, the user's: not the writer's
    for path in (*stale, *others):
        path.write_bytes(b"half a file")
    train([parse(args)])
    assert not any(p.exists() for p in stale)
    assert all(p.read_bytes() == b"half a file" for p in others)


# 8. Damaged state is one line naming the file and what to do; status and report go on with the rest.

@pytest.mark.parametrize("name,content,message", [
    ("checkpoint.pt", "truncate", "checkpoint.pt is damaged"),
    ("checkpoint.pt", b"", "checkpoint.pt is damaged"),
    ("config.yaml", b"depth: [1\n", "config.yaml is damaged"),
    ("config.yaml", b"", "config.yaml is damaged (empty file)"),
    ("result.json", b'{"status": "do', "result.json is damaged (not JSON"),
])
def test_damaged_files_are_one_line_naming_the_file(name, content, message, tmp_path, capsys):
    args = _paused(tmp_path / "r")
    path = tmp_path / "r" / name
    path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2] if content == "truncate" else content)
    capsys.readouterr()
    assert run.main(args) == 2
    err = _error(capsys)
    assert f"error: {path}" in err and message in err and (": delete it" in err or ": put back" in err)


def test_full_disk_during_a_checkpoint_is_one_line_and_keeps_the_last_checkpoint(tmp_path, monkeypatch, capsys):
    args = _paused(tmp_path / "r")
    before = (tmp_path / "r" / "checkpoint.pt").read_bytes()
    real = torch.save

    def save_to_full_disk(obj, f, *a, **k):
        with open("/dev/full", "wb") as full:
            real(obj, full, *a, **k)

    monkeypatch.setattr(torch, "save", save_to_full_disk)
    capsys.readouterr()
    assert run.main(args) == 2
    err = _error(capsys)
    assert f"error: cannot write {tmp_path / 'r' / 'checkpoint.pt'} (" in err
    assert "the previous checkpoint.pt is kept; free space" in err
    assert (tmp_path / "r" / "checkpoint.pt").read_bytes() == before
    assert [p.name for p in (tmp_path / "r").iterdir() if p.name.endswith(".tmp")] == []


def test_status_and_relaunch_list_a_corrupt_result_and_go_on(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run.main([*DONE, "seed=0,1", "sweep_dir=s"]) == 0
    broken = Path("s") / run_name(parse([*DONE, "seed=0"]))
    (broken / "result.json").write_text('{"status": "do')
    capsys.readouterr()
    assert status.main(["s"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("s: 2 runs: 1 done, 0 fail, 1 damaged\n")
    assert f"  damaged {broken.name}: {broken / 'result.json'} is damaged (not JSON" in out
    assert run.main([*DONE, "seed=0,1,2", "sweep_dir=s"]) == 2
    captured = capsys.readouterr()
    assert f"damaged, skipped: {broken / 'result.json'} is damaged" in captured.err
    assert "3 runs in s; 1 finished, 0 queued or running, 1 to run, 1 damaged" in captured.out
    assert (tmp_path / "s" / run_name(parse([*DONE, "seed=2"])) / "result.json").is_file()


# 9. Names stay readable and within the file system's limit.

def test_long_settings_give_a_bounded_unique_name_that_trains(tmp_path):
    many = ["momentum=0.912345", "weight_decay=0.000123456", "warmup_lr=0.00123456", "warmup_iters=5",
            "bn_momentum=0.0123456", "nesterov=true", "decay_bn=false", "normalize=pixel_mean", "val_split=16",
            "schedule=cosine", "augment=false", "shortcut=gating", "gate_bias=-6.54321", "unit=full_preact",
            "downsample=conv1x1", "batch_size=4"]
    cfg = parse(_with("lr=0.0123456", *many, f"runs_root={tmp_path}"))
    other = parse(_with("lr=0.0223456", *many, f"runs_root={tmp_path}"))  # differs where the name is cut
    name = run_name(cfg)
    assert len(name.encode()) <= 200 and name.endswith("_s0") and "~" in name and "gate_bias=-6.54321" in name
    assert run_name(other) != name
    assert train([cfg])[0]["status"] == "done" and (tmp_path / name / "result.json").is_file()
    short = parse([*DONE, "lr=0.05"])
    assert run_name(short) == "synthetic_d8_original_identity_synthetic_size=64_iterations=30_milestones=20_lr=0.05_" \
                              "warmup_iters=0_batch_size=8_fail_threshold=100.0_s0"


# 10. status and report tell a running run (lock held) from a paused one.

def test_status_and_report_tell_running_from_paused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run.main([*DONE, "seed=0,1", "sweep_dir=s", PAUSE]) == 75  # both stopped, resumable
    names = [run_name(parse([*DONE, f"seed={s}"])) for s in (0, 1)]
    fd = _hold_lock(tmp_path / "s" / names[0])
    try:
        capsys.readouterr()
        assert status.main(["s"]) == 0
        out = capsys.readouterr().out
        assert out.startswith("s: 2 runs: 0 done, 0 fail, 1 paused, 1 running\n")
        assert f"  paused {names[1]}: launch the sweep again to resume" in out
        assert report.main(["s", "--out", "out"]) == 0
        printed = capsys.readouterr().out
    finally:
        os.close(fd)
    assert f"- running (no result.json; no evaluation yet; trained by pid 4242 on node7, SLURM job 99_1, since " \
           f"today): s/{names[0]}" in printed
    assert f"- paused (no result.json; no evaluation yet; nobody trains it; the same command resumes it): " \
           f"s/{names[1]}" in printed


# 11. Files follow the umask. 13. The thread count is recorded.

@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o027, 0o640)])
def test_files_follow_the_umask_and_the_thread_count_is_recorded(umask, mode, tmp_path):
    old = os.umask(umask)
    try:
        result = train([parse([*DONE, f"run_dir={tmp_path / 'r'}"])])[0]
    finally:
        os.umask(old)
    for name in ("config.yaml", "metrics.jsonl", "checkpoint.pt", "result.json", ".lock"):
        assert (tmp_path / "r" / name).stat().st_mode & 0o777 == mode, name
    assert result["threads"] == torch.get_num_threads() == 1
    assert json.loads((tmp_path / "r" / "result.json").read_text())["threads"] == 1


# 14. Pickles from data_dir and sweep folders cannot run code.

class _Runs:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_cifar_batches_are_unpickled_without_running_code(tmp_path, capsys):
    write_fake_cifar(tmp_path / "data")
    batch = tmp_path / "data" / "cifar-10-batches-py" / "data_batch_1"
    evil = _Runs()
    evil.marker = tmp_path / "ran"
    batch.write_bytes(pickle.dumps({b"data": evil, b"labels": [1]}))
    args = ["depth=8", "iterations=1", "warmup_iters=0", "milestones=[]", f"data_dir={tmp_path / 'data'}",
            f"run_dir={tmp_path / 'r'}"]
    assert run.main(args) == 2
    assert f"{batch} is not a readable CIFAR batch file (Refused: it names posix.system" in _error(capsys)
    assert not evil.marker.exists()
    batch.write_bytes(pickle.dumps([1, 2, 3]))
    assert run.main(args) == 2
    assert f"{batch} is not a readable CIFAR batch file (TypeError: it holds a list, not a dict)" in _error(capsys)


def test_status_reads_submitit_results_without_running_code(tmp_path, capsys):
    folder = tmp_path / "s"
    write_sweep(SweepRecord(folder, "s", runs=("a",)))
    (folder / ".submitit").mkdir()
    (folder / ".submitit" / "jobs.jsonl").write_text('{"job_id": "7", "launcher": "local", "runs": ["a"]}\n')
    evil = _Runs()
    evil.marker = tmp_path / "ran"
    (folder / ".submitit" / "7_0_result.pkl").write_bytes(pickle.dumps(("error", evil)))
    assert status.main([str(folder)]) == 0
    assert not evil.marker.exists()
    assert capsys.readouterr().out == f"{folder}: 1 run: 0 done, 0 fail, 1 not started\n"



# 15. status answers from the folders alone, in the states' one vocabulary, without loading torch.

STATUS_WITHOUT_TORCH = ("import sys, resnet_ablate.status as s; code = s.main(sys.argv[1:]); "
                        "assert 'torch' not in sys.modules, 'status imported torch'; sys.exit(code)")


def test_status_names_every_state_of_a_hand_made_sweep_without_importing_torch(tmp_path):
    folder = tmp_path / "s"
    names = ("done", "fail", "crashed", "paused", "fresh", "missing", "running", "bad_result", "bad_config")
    write_sweep(SweepRecord(folder, "s", runs=names))
    for name in (n for n in names if n != "missing"):  # "missing": named in sweep.yaml, no folder yet
        (folder / name).mkdir()
        (folder / name / "config.yaml").write_text("depth: 20\nseed: 0\n")
    (folder / "done" / "result.json").write_text('{"status": "done", "final_test_error": 7.0}')
    (folder / "fail" / "result.json").write_text('{"status": "fail", "reason": "diverged: training loss is nan"}')
    for name in ("crashed", "paused"):
        (folder / name / "checkpoint.pt").write_bytes(b"a checkpoint")
    (folder / "bad_result" / "result.json").write_text('{"status": "do')
    (folder / "bad_config" / "config.yaml").write_text("depth: [1\n")
    (folder / ".submitit").mkdir()
    (folder / ".submitit" / "jobs.jsonl").write_text('{"job_id": "7", "launcher": "local", "runs": ["crashed"]}\n')
    (folder / ".submitit" / "7_0_result.pkl").write_bytes(pickle.dumps(("error", "Traceback\nRuntimeError: boom\n")))
    fd = _hold_lock(folder / "running")
    try:
        proc = subprocess.run([sys.executable, "-c", STATUS_WITHOUT_TORCH, str(folder)], capture_output=True,
                              text=True, env=cli_env(), timeout=60)
    finally:
        os.close(fd)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"{folder}: 9 runs: 1 done, 1 fail, 1 crashed, 1 paused, 2 not started, 1 running, 2 damaged"
    assert lines[1:4] == ["  fail fail: diverged: training loss is nan",
                          "  crashed crashed: job 7: RuntimeError: boom; resumable from its checkpoint: launch the "
                          "sweep again",
                          "  paused paused: launch the sweep again to resume"]
    assert lines[4].startswith(f"  damaged bad_result: {folder / 'bad_result' / 'result.json'} is damaged (not JSON")
    assert lines[5].startswith(f"  damaged bad_config: {folder / 'bad_config' / 'config.yaml'} is damaged (not valid "
                               f"YAML") and len(lines) == 6
    helped = subprocess.run([sys.executable, "-c", STATUS_WITHOUT_TORCH, "--help"], capture_output=True, text=True,
                            env=cli_env(), timeout=60)
    assert helped.returncode == 0 and helped.stdout.startswith("usage: python -m resnet_ablate.status"), helped.stderr


# 16. A checkpoint carries its run's settings; a folder without config.yaml is not a run folder.

def test_a_checkpoint_of_another_run_is_refused(tmp_path, capsys):
    _paused(tmp_path / "seed1", "seed=1")
    args = _paused(tmp_path / "seed0")
    (tmp_path / "seed0" / "checkpoint.pt").write_bytes((tmp_path / "seed1" / "checkpoint.pt").read_bytes())
    before = (tmp_path / "seed0" / "metrics.jsonl").read_bytes()
    capsys.readouterr()
    for dry in ([], ["dry_run=true"]):  # the dry run called it resumable
        assert run.main([*args, *dry]) == 2
        assert f"{tmp_path / 'seed0' / 'checkpoint.pt'} is the checkpoint of another run (seed: 1 vs 0): put back " \
               f"this run's checkpoint, or delete it" in _error(capsys)
    assert ((tmp_path / "seed0" / "metrics.jsonl").read_bytes() == before and
            not (tmp_path / "seed0" / "result.json").exists())


def test_a_folder_whose_config_yaml_was_deleted_is_damaged_not_a_fresh_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run.main([*DONE, "seed=0,1", "sweep_dir=s", PAUSE]) == 75
    folder = tmp_path / "s" / run_name(parse([*DONE, "seed=0"]))
    (folder / "config.yaml").unlink()
    capsys.readouterr()
    assert run.main(_with("lr=0.05", f"run_dir={folder}")) == 2
    assert f"error: {folder} holds checkpoint.pt but no config.yaml: put back the run's config.yaml" in _error(capsys)
    assert status.main(["s"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == ["s: 2 runs: 0 done, 0 fail, 1 paused, 1 damaged",
                   f"  damaged {folder.name}: s/{folder.name} holds checkpoint.pt but no config.yaml: put back the "
                   f"run's config.yaml, or remove the folder to train the run again",
                   f"  paused {run_name(parse([*DONE, 'seed=1']))}: launch the sweep again to resume"]
    assert not (folder / "config.yaml").exists()


def test_a_checkpoint_from_before_settings_were_recorded_resumes_with_a_note_to_the_same_numbers(tmp_path, capsys):
    train([parse([*DONE, f"run_dir={tmp_path / 'ref'}"])])
    args = _paused(tmp_path / "r")
    old = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)
    for key in ("settings", "lines"):  # what an older package wrote
        del old[key]
    torch.save(old, tmp_path / "r" / "checkpoint.pt")
    capsys.readouterr()
    assert run.main(args) == 0
    out = capsys.readouterr().out
    assert "note: checkpoint.pt was written before checkpoints recorded their run's settings; resuming it as the run " \
           "of config.yaml" in out and "resuming from iteration 10" in out
    assert metrics(tmp_path / "r") == metrics(tmp_path / "ref") and result(tmp_path / "r") == result(tmp_path / "ref")


@pytest.mark.parametrize("files", [{"metrics.jsonl": '{"iteration": 5, "loss": 1}\n'}, {"notes.txt": "mine"}])
def test_a_folder_of_other_files_without_config_yaml_is_refused_and_left_alone(files, tmp_path, capsys):
    folder = tmp_path / "theirs"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    assert run.main(_with(f"run_dir={folder}")) == 2
    err = _error(capsys)
    assert (f"{folder} holds metrics.jsonl but no config.yaml" if "metrics.jsonl" in files else
            f"run_dir={folder} is not a run folder: it holds notes.txt and no config.yaml; choose a new or empty "
            f"run_dir") in err
    assert {p.name: p.read_text() for p in folder.iterdir()} == files


def test_a_trainer_killed_before_config_yaml_leaves_a_folder_the_next_one_trains(tmp_path):
    folder = tmp_path / "r"
    folder.mkdir()
    (folder / ".lock").write_text("{}")
    (folder / ".config.yaml.0a1b2c3d.tmp").write_text("half")
    assert train([parse([*DONE, f"run_dir={folder}"])])[0]["status"] == "done"


def test_run_dir_dot_in_a_folder_with_the_users_own_config_yaml_is_refused_without_advice_to_remove_it(
        tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.yaml").write_text("model: resnet\nlearning_rate: 0.1\n")
    (tmp_path / "train.py").write_text("print('mine')\n")
    for args in (_with("run_dir=."), _with("run_dir=.", "dry_run=true")):
        assert run.main(args) == 2
        err = _error(capsys)
        assert "run_dir=. is not a run folder: its config.yaml was not written by this package and it holds other " \
               "files (train.py)" in err and "remove" not in err
    assert (tmp_path / "config.yaml").read_text() == "model: resnet\nlearning_rate: 0.1\n"


# 17. Every line a checkpoint covers is there after a resume; a restart from 0 keeps none of the old lines.

def test_a_torn_covered_last_line_is_put_back_from_the_checkpoint(tmp_path, capsys):
    train([parse([*DONE, f"run_dir={tmp_path / 'ref'}"])])
    args = _paused(tmp_path / "r")
    path = tmp_path / "r" / "metrics.jsonl"
    path.write_text(path.read_text()[:-25])  # the checkpoint at 10 covers this line: torn by a node crash, say
    capsys.readouterr()
    assert run.main(args) == 0
    assert "metrics.jsonl: its line of iteration 10 was torn or lost; put back from checkpoint.pt" in \
           capsys.readouterr().out
    assert metrics(tmp_path / "r") == metrics(tmp_path / "ref")


def test_covered_lines_lost_otherwise_are_said(tmp_path, capsys):
    folder = tmp_path / "r"
    args = [*DONE, f"run_dir={folder}"]
    assert train([parse(args)], StopAtEvaluation(folder, 2))[0]["iteration"] == 20
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    (folder / "metrics.jsonl").write_text(lines[1] + "\n")  # the line of iteration 10 edited away
    capsys.readouterr()
    assert run.main(args) == 0
    assert "metrics.jsonl holds 1 of the 2 lines checkpoint.pt covers (up to iteration 20); the others were cut or " \
           "edited away and are lost: the run goes on without them" in capsys.readouterr().out
    assert [r["iteration"] for r in metrics(folder)] == [20, 30]


def test_a_restart_from_iteration_0_keeps_no_probe_line_of_the_lost_run(tmp_path):
    args = _paused(tmp_path / "r", "grad_probe_at=[0,30]")
    assert [r["iteration"] for r in rf.read_jsonl(tmp_path / "r" / "probes.jsonl")] == [0]
    (tmp_path / "r" / "checkpoint.pt").unlink()  # lost: the run trains again from iteration 0
    train([parse(args)])
    assert [r["iteration"] for r in rf.read_jsonl(tmp_path / "r" / "probes.jsonl")] == [0, 30]


# 18. status, the launcher and the report tell the same state.

def test_a_cut_config_yaml_or_a_damaged_line_is_damaged_in_status_and_for_the_relaunch(tmp_path, monkeypatch,
                                                                                       capsys):
    monkeypatch.chdir(tmp_path)
    assert run.main([*DONE, "seed=0,1,2", "sweep_dir=s", PAUSE]) == 75
    assert run.main([*DONE, "seed=2", "sweep_dir=s"]) == 0  # seed 2 finished
    names = [run_name(parse([*DONE, f"seed={s}"])) for s in range(3)]
    config = Path("s") / names[0] / "config.yaml"
    config.write_text("\n".join(config.read_text().splitlines()[:20]) + "\n")  # cut at a line: still YAML
    for name in names[1:]:  # a paused run and a finished one with a damaged line
        (tmp_path / "s" / name / "metrics.jsonl").write_text('{"epoch": 1}\n{"iteration": 30}\n')
    capsys.readouterr()
    assert status.main(["s"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "s: 3 runs: 0 done, 0 fail, 3 damaged"
    assert out[1] == f"  damaged {names[0]}: {config} is damaged (cut or edited since the run wrote it: the checksum " \
                     f"on its first line does not match): put back the run's config.yaml, or remove the folder to " \
                     f"train the run again"
    assert all(f"s/{n}/metrics.jsonl line 1 is damaged" in line for n, line in zip(names[1:], out[2:]))
    assert run.main([*DONE, "seed=0,1,2", "sweep_dir=s"]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("damaged, skipped: ") == 3 and "3 runs in s; 0 finished, 0 queued or running, 0 to " \
                                                             "run, 3 damaged" in captured.out


# 19. One line for what the file system refuses, hostile pickles and bad tool input.

def test_a_full_disk_when_the_lock_is_written_is_one_line(tmp_path, monkeypatch, capsys):
    def full(fd, data, offset):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "pwrite", full)
    assert run.main(_with(f"run_dir={tmp_path / 'r'}")) == 2
    assert _error(capsys) == f"error: cannot write {tmp_path / 'r' / '.lock'} (No space left on device): free space " \
                             f"(or fix the file system) and run the same command again\n"


@pytest.mark.parametrize("key", ["run_dir", "sweep_dir"])
def test_a_folder_past_the_name_limit_or_a_file_is_one_line(key, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file").write_text("mine")
    grid = ["seed=0,1"] if key == "sweep_dir" else []
    for where in ("x" * 300, "file"):
        assert run.main([*DONE, *grid, f"{key}={where}"]) == 2
        err = _error(capsys)
        assert ("File name too long" in err) if where != "file" else (f"{key}: file is a file, not a folder" in err)
    assert (tmp_path / "file").read_text() == "mine"


def test_a_read_only_file_system_is_one_line_for_every_tool(tmp_path, monkeypatch, capsys):
    real_open = os.open

    def read_only(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(30, "Read-only file system", str(path))
        return real_open(path, flags, *args, **kwargs)

    def no_mkdir(path, *args, **kwargs):
        raise OSError(30, "Read-only file system", str(path))

    monkeypatch.chdir(tmp_path)
    train([parse([*DONE, f"run_dir={tmp_path / 'r'}", PAUSE])])
    monkeypatch.setattr(os, "open", read_only)
    monkeypatch.setattr(os, "mkdir", no_mkdir)
    capsys.readouterr()
    for main, args in ((run.main, _with(f"run_dir={tmp_path / 'r'}")), (run.main, [*DONE, "seed=0,1", "sweep_dir=s"]),
                       (run.main, [*DONE, "seed=0,1", "sweep_dir=s", "launcher=local"]),
                       (lr_find.main, [*DONE, "steps=3", "run_dir=f"]), (report.main, ["r", "--out", "out"])):
        assert main(args) == 2, args
        assert "Read-only file system" in _error(capsys)


def test_status_on_a_job_record_without_its_launcher_is_one_line(tmp_path, capsys):
    folder = tmp_path / "s"
    write_sweep(SweepRecord(folder, "s", runs=("a",)))
    (folder / ".submitit").mkdir()
    (folder / ".submitit" / "jobs.jsonl").write_text('{"job_id": "7", "runs": ["a"]}\n{"job_id": "8", "runs": []}\n')
    assert status.main([str(folder)]) == 2
    assert _error(capsys) == f"error: {folder / '.submitit' / 'jobs.jsonl'} line 1 is damaged (a job record needs " \
                             f"job_id, launcher and runs, each a run folder's name); repair or delete that line and " \
                             f"run again\n"


def test_a_checkpoint_holding_code_is_named_without_torchs_advice_to_run_it(tmp_path, capsys):
    args = _paused(tmp_path / "r")
    evil = _Runs()
    evil.marker = tmp_path / "ran"
    torch.save({"model": evil}, tmp_path / "r" / "checkpoint.pt")
    capsys.readouterr()
    assert run.main(args) == 2
    err = _error(capsys)
    assert "checkpoint.pt is damaged (it holds objects besides tensors and plain data, which are not loaded: that " \
           "would run its code)" in err and "weights_only" not in err and not evil.marker.exists()


def test_a_zeroed_checkpoint_is_damaged_without_torchs_advice_and_so_says_the_dry_run(tmp_path, capsys):
    """torch's error for it advised weights_only=False, which the docs say the package never passes on."""
    args = _paused(tmp_path / "r")
    path = tmp_path / "r" / "checkpoint.pt"
    path.write_bytes(bytes(path.stat().st_size))
    capsys.readouterr()
    for dry in ([], ["dry_run=true"]):
        assert run.main([*args, *dry]) == 2
        assert _error(capsys) == f"error: {path} is damaged (RuntimeError: not a file torch.save writes): delete it " \
                                 f"to train the run again from iteration 0, or put back a good copy\n"


def test_layer_responses_on_an_unknown_device_is_one_line(tmp_path, capsys):
    from resnet_ablate import layer_responses

    _paused(tmp_path / "r")
    capsys.readouterr()
    assert layer_responses.main([str(tmp_path / "r"), "device=tpu"]) == 2
    assert _error(capsys).startswith("error: unknown device 'tpu'")


def test_a_batch_larger_than_a_folder_data_set_is_one_line(tmp_path, capsys):
    data = _image_tree(tmp_path / "data", 0)  # 8 training images
    args = ["dataset=folder", f"data_dir={data}", "image_size=8", "depth=8", "batch_size=16", "iterations=2",
            "eval_every=2", "warmup_iters=0", "milestones=[]", f"run_dir={tmp_path / 'r'}"]
    assert run.main(args) == 2
    assert _error(capsys) == f"error: batch_size=16 is larger than the 8 training images of dataset=folder " \
                             f"({data.resolve()}); use batch_size=8 or less\n"


def test_a_dry_run_on_a_folder_another_process_trains_says_so(tmp_path, capsys):
    args = _paused(tmp_path / "r")
    fd = _hold_lock(tmp_path / "r")
    try:
        capsys.readouterr()
        assert run.main([*args, "dry_run=true"]) == 0
    finally:
        os.close(fd)
    assert capsys.readouterr().out == f"1 run in {tmp_path / 'r'}: being trained by another process (pid 4242 on " \
                                      f"node7, SLURM job 99_1, since today): the same command is refused until it " \
                                      f"ends; dry_run=true trains nothing\n"


BROKEN_CUDA = """
import warnings
import torch

def is_available():  # as torch on a machine whose CUDA driver fails: a warning, then False
    warnings.warn("CUDA initialization: Unexpected error from cudaGetDeviceCount()", UserWarning)
    return False

torch.cuda.is_available = is_available
"""


def test_a_gpu_torch_cannot_start_is_one_line_with_torchs_reason_and_no_warning_above_it(tmp_path, monkeypatch):
    from helpers import run_cli

    (tmp_path / "plugin").mkdir()
    (tmp_path / "plugin" / "sitecustomize.py").write_text(BROKEN_CUDA)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "plugin"))
    proc = run_cli(*_with("device=cuda", f"run_dir={tmp_path / 'r'}"), cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr == "error: device=cuda but no CUDA GPU is available (torch: CUDA initialization: Unexpected " \
                          "error from cudaGetDeviceCount()); use device=cpu or device=auto\n"
