"""Training runs on CPU: run folder, reproducibility, kill-and-resume, fail, packing, real-format data."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from helpers import TINY, cli_env, merged, metrics, result, run_cli, wait_for_lines, write_fake_cifar

from resnet_ablate.errors import UsageError
from resnet_ablate.run import main as run_main
from resnet_ablate.training import failrule
from resnet_ablate.training.configfile import from_yaml
from resnet_ablate.training.parse import parse
from resnet_ablate.training.trainer import train


def test_run_folder_contents(tiny, tmp_path):
    out = train([parse(tiny)])[0]
    folder = tmp_path / "run"
    assert sorted(p.name for p in folder.iterdir()) == [".lock", "checkpoint.pt", "config.yaml", "metrics.jsonl",
                                                        "responses.json", "result.json"]
    assert from_yaml(folder / "config.yaml") == parse(tiny)
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [10, 20, 30]
    assert set(rows[0]) == {"iteration", "epoch", "lr", "train_loss", "train_error", "test_loss", "test_error",
                            "img_per_s", "elapsed_s"}
    assert [r["lr"] for r in rows] == pytest.approx([0.1, 0.1, 0.01])
    assert rows[0]["epoch"] == pytest.approx(10 * 8 / 64)
    res = json.loads((folder / "result.json").read_text())
    assert res == out
    assert res["status"] in ("done", "fail") and res["iterations"] == 30 and res["parameters"] == 75290
    assert res["final_test_error"] == rows[-1]["test_error"]
    assert res["best_test_error"] == min(r["test_error"] for r in rows)
    assert res["seed"] == 0 and res["torch"] == torch.__version__ and res["device"]


def test_training_learns_the_synthetic_task(tmp_path):
    res = train([parse([*TINY, "iterations=60", f"run_dir={tmp_path / 'r'}"])])[0]
    assert res["status"] == "done" and res["final_test_error"] < 20


def test_same_seed_same_numbers_other_seed_other_numbers(tmp_path):
    args = [*TINY, "shortcut=dropout"]
    train([parse([*args, f"run_dir={tmp_path / 'a'}"])])
    train([parse([*args, f"run_dir={tmp_path / 'b'}"])])
    train([parse([*args, "seed=1", f"run_dir={tmp_path / 'c'}"])])
    assert metrics(tmp_path / "a") == metrics(tmp_path / "b")
    assert metrics(tmp_path / "a") != metrics(tmp_path / "c")


def test_finished_run_is_not_redone(tiny, tmp_path, capsys):
    train([parse(tiny)])
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "run").iterdir()}
    train([parse(tiny)])
    assert "already finished" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "run").iterdir()} == before


def test_other_settings_in_the_same_folder_are_refused(tiny, tmp_path):
    train([parse([*tiny, "iterations=25"])])
    (tmp_path / "run" / "result.json").unlink()
    with pytest.raises(UsageError, match=r"holds a run with other settings \(iterations: 25 vs 30\)"):
        train([parse(tiny)])


KILLED = merged(TINY, "shortcut=dropout", "iterations=160", "milestones=[80]", "eval_every=20")


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """The undisturbed run of KILLED's settings, trained once for both signals."""
    folder = tmp_path_factory.mktemp("whole") / "run"
    train([parse([*KILLED, f"run_dir={folder}"])])
    return folder


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_run_resumes_to_the_same_numbers(tmp_path, monkeypatch, capsys, whole, sig):
    """SIGKILL: resume from the last checkpoint; SIGTERM: checkpoint at once, then resume. The killed run is a
    process of its own; the same command resumes it here, through run.main."""
    cut = [*KILLED, f"run_dir={tmp_path / 'cut'}"]
    proc = subprocess.Popen([sys.executable, "-m", "resnet_ablate.run", *cut], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=cli_env())
    wait_for_lines(tmp_path / "cut", 2, proc)
    os.kill(proc.pid, sig)
    proc.wait(timeout=60)
    assert not (tmp_path / "cut" / "result.json").exists()
    state = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)
    assert 20 <= state["iteration"] < 160  # SIGKILL may land between a metrics line and its checkpoint
    if sig == signal.SIGTERM:
        assert proc.returncode == 75  # stopped before the end: its own exit code
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    resumed = run_main(cut)
    assert proc.returncode is not None and resumed == 0
    assert f"resuming from iteration {state['iteration']}" in capsys.readouterr().out
    assert metrics(tmp_path / "cut") == metrics(whole)
    assert result(tmp_path / "cut") == result(whole)


def test_time_limit_pauses_and_the_same_command_resumes(tmp_path):
    args = [*TINY, "iterations=60", f"run_dir={tmp_path / 'r'}"]
    first = train([parse([*args, "time_limit_s=0.001"])])[0]
    assert first == {"status": "paused", "iteration": 1, "reason": "time_limit_s=0.001"}  # checked every iteration
    assert not (tmp_path / "r" / "result.json").exists()
    train([parse([*args, f"run_dir={tmp_path / 'ref'}"])])
    train([parse(args)])
    assert metrics(tmp_path / "r") == metrics(tmp_path / "ref")


def test_divergence_is_recorded_as_fail_and_keeps_what_was_written(tmp_path):
    folder = tmp_path / "r"
    res = train([parse([*TINY, "lr=1e30", "warmup_iters=10", "warmup_lr=0.01", f"run_dir={folder}"])])[0]
    assert res["status"] == "fail"
    assert res["reason"].startswith("diverged: training loss is nan in iterations 11..20")
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [10, 20] and rows[0]["train_loss"] is not None
    assert rows[1]["train_loss"] is None
    assert torch.load(folder / "checkpoint.pt", weights_only=True)["iteration"] == 10


def test_a_reduced_run_is_not_fail_above_fail_threshold_only_at_chance(tmp_path, monkeypatch):
    """30 of the schedule's 64,000 iterations: the reduced rule, so fail_threshold=0 does not make it fail; a
    chance line below its error (the rule's constant, patched) does."""
    res = train([parse([*TINY, "fail_threshold=0", f"run_dir={tmp_path / 'a'}"])])[0]
    assert (res["status"], res["reason"], res["fail_rule"]) == ("done", "", "reduced")
    monkeypatch.setattr(failrule, "CHANCE_FRACTION", 0.0)
    res = train([parse([*TINY, "fail_threshold=0", f"run_dir={tmp_path / 'b'}"])])[0]
    assert (res["status"], res["fail_rule"]) == ("fail", "reduced") and "at chance" in res["reason"]


def test_a_run_of_its_whole_schedule_is_fail_above_fail_threshold(tiny, monkeypatch):
    monkeypatch.setattr(failrule, "full_iterations", lambda settings, default: settings["iterations"])
    res = train([parse([*tiny, "fail_threshold=0"])])[0]
    assert (res["status"], res["fail_rule"]) == ("fail", "paper") and res["reason"].startswith("final test error")


@pytest.mark.parametrize("args,full", [(["recipe=he2015"], 64000), (["recipe=he2016", "depth=164"], 64000),
                                       (["recipe=fb_torch"], 64063), (["recipe=default"], 64000),
                                       (["recipe=he2015", "batch_size=64"], 64000)])
def test_the_whole_schedule_is_the_recipes_and_fewer_iterations_are_reduced(args, full):
    cfg = vars(parse(args))
    assert failrule.full_iterations(cfg, 64000) == full and failrule.fail_rule(cfg, 64000) == "paper"
    assert failrule.fail_rule({**cfg, "iterations": full - 1}, 64000) == "reduced"


def test_chance_scales_with_the_class_count_and_older_records_are_judged_by_the_same_rule():
    assert (failrule.chance_error(10), failrule.chance_error(100)) == (88.0, 96.8)
    reduced = vars(parse(["recipe=he2015", "iterations=2000", "milestones=[1000,1500]"]))
    old = {"status": "fail", "reason": "final test error 25.57% is above fail_threshold 20.0%",
           "final_test_error": 25.57}
    assert failrule.judged(old, reduced, 64000) == {**old, "status": "done", "reason": "", "fail_rule": "reduced"}
    at_chance = {"status": "done", "reason": "", "final_test_error": 89.1}
    assert failrule.judged(at_chance, reduced, 64000)["status"] == "fail"
    lifted = {**reduced, "fail_threshold": 100.0}  # fail_threshold=100: never fail for an error, under both rules
    assert failrule.judged(at_chance, lifted, 64000)["status"] == "done"
    diverged = {"status": "fail", "reason": "diverged: training loss is nan in iterations 1..10",
                "final_test_error": 9.0}
    assert failrule.judged(diverged, reduced, 64000)["status"] == "fail"
    full = vars(parse(["recipe=he2015"]))
    assert failrule.judged(old, full, 64000)["status"] == "fail"
    recorded = {**old, "fail_rule": "paper"}
    assert failrule.judged(recorded, reduced, 64000) == recorded


def test_trains_on_fake_cifar_in_the_real_format(tmp_path):
    write_fake_cifar(tmp_path / "data", per_file=40)
    res = train([parse(["depth=8", "batch_size=16", "iterations=10", "milestones=[5]", "warmup_iters=0",
                        "eval_every=5", "val_split=20",
                        f"data_dir={tmp_path / 'data'}", f"run_dir={tmp_path / 'r'}"])])[0]
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert res["iterations"] == 10 and res["final_val_error"] == rows[-1]["val_error"]
    assert rows[0]["epoch"] == pytest.approx(5 * 16 / 180)  # 200 training images, 20 held out


def test_cli_runs_the_main_job_on_synthetic_data(tmp_path):
    proc = run_cli(*TINY, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    folder = tmp_path / "runs" / "synthetic_d8_original_identity_synthetic_size=64_iterations=30_milestones=20_" \
                                 "warmup_iters=0_batch_size=8_s0"
    assert f"] 75,290 parameters; run folder {folder}\n" in proc.stdout  # the start-up lines: tests/test_first_hour.py
    assert "settings besides the defaults (all in config.yaml): depth=8 dataset=synthetic" in proc.stdout
    assert "it 30/30" in proc.stdout and "\r" not in proc.stdout
    assert (folder / "result.json").is_file()


def _starting(proc) -> None:
    """Wait until `proc` (a run CLI) catches SIGTERM or has loaded torch, whichever comes first: a signal sent
    then arrives while it starts (torch takes it seconds more to import), before any training."""
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        caught = int(next(line.split()[1] for line in open(f"/proc/{proc.pid}/status") if line.startswith("SigCgt")),
                     16)
        if caught & (1 << (signal.SIGTERM - 1)) or "libtorch" in open(f"/proc/{proc.pid}/maps").read():
            return
        time.sleep(0.002)
    raise AssertionError("the run did not start")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR2, signal.SIGINT])
def test_a_stop_signal_while_the_run_starts_pauses_it_with_exit_75(tmp_path, sig):
    """A Ctrl-C too (in a run's first second it was a KeyboardInterrupt traceback of 20-40 lines)."""
    proc = subprocess.Popen([sys.executable, "-m", "resnet_ablate.run", *TINY, f"run_dir={tmp_path / 'r'}"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env())
    _starting(proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err
    assert f"stopped at iteration 1 ({sig.name}); checkpoint saved" in out and "Traceback" not in err


def test_a_second_ctrl_c_while_the_run_starts_ends_it_at_once_with_one_line(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "resnet_ablate.run", *TINY, f"run_dir={tmp_path / 'r'}"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env())
    _starting(proc)
    proc.send_signal(signal.SIGINT)
    assert proc.stderr.readline() == "SIGINT: stopping (after a checkpoint, where training has begun); the same " \
                                     "command resumes\n"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.endswith("\ninterrupted; a run folder keeps its last checkpoint and the same command resumes from it\n")
    assert "Traceback" not in err and not (tmp_path / "r" / "result.json").exists()


def test_a_second_sigterm_while_a_stopped_run_exits_keeps_exit_75(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "resnet_ablate.run", *merged(TINY, "iterations=100000"),
                             "heartbeat_s=0", f"run_dir={tmp_path / 'r'}"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=cli_env())
    wait_for_lines(tmp_path / "r", 1, proc)
    proc.send_signal(signal.SIGTERM)
    for line in proc.stdout:
        if "stopped at iteration" in line:
            break
    while proc.poll() is None:  # more SIGTERMs while it writes its last lines and exits, as a scheduler may send
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.002)
    assert proc.returncode == 75, proc.stderr.read()


def test_time_limit_is_checked_every_iteration(tmp_path):
    """time_limit_s stopped only at evaluations before (here it trained on to iteration 2000)."""
    folder = tmp_path / "r"
    (summary,) = train([parse([*TINY, "iterations=1000000", "eval_every=2000", "time_limit_s=0.5",
                               f"run_dir={folder}"])])
    assert summary["status"] == "paused" and summary["reason"] == "time_limit_s=0.5"
    assert 1 <= summary["iteration"] < 2000
    assert torch.load(folder / "checkpoint.pt", weights_only=True)["iteration"] == summary["iteration"]
