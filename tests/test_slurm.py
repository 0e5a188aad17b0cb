"""The launcher against a real single-node SLURM (slurm/start-local-slurm.sh): a job array of tiny CPU runs,
status, resubmission, and requeue mid-run (scontrol requeue, and SIGUSR2 as before a time limit) resuming to
the numbers of an undisturbed run. If SLURM cannot be started these tests fail and say why; they never skip."""
import json
import os
import subprocess
import time

import pytest
from helpers import REPO, TINY, merged, metrics, result, run_cli

from resnet_ablate import status
from resnet_ablate.training.config import run_name
from resnet_ablate.training.parse import parse

JOB = ["launcher=slurm", "profile=local", "slurm.cpus_per_task=1", "slurm.mem_gb=1", "slurm.time=10", "fail_threshold=100"]


def _cluster_up() -> bool:
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return False
    return any(s in ("idle", "mixed", "allocated") for s in out)


@pytest.fixture(scope="session")
def slurm():
    """A running local SLURM: the one already up, or one started by slurm/start-local-slurm.sh."""
    if _cluster_up():
        return
    if os.geteuid() != 0:
        pytest.fail("SLURM is not running and slurm/start-local-slurm.sh needs root to install and start it")
    proc = subprocess.run(["bash", str(REPO / "slurm" / "start-local-slurm.sh")], capture_output=True, text=True,
                          timeout=900)
    if proc.returncode != 0 or not _cluster_up():
        pytest.fail(f"could not start SLURM with slurm/start-local-slurm.sh (exit {proc.returncode}):\n"
                    f"{(proc.stdout + proc.stderr)[-3000:]}")


def _wait(predicate, what: str, timeout: float = 240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _jobs(folder):
    return [json.loads(line) for line in (folder / ".submitit" / "jobs.jsonl").read_text().splitlines()]


def test_array_runs_status_counts_and_resubmission_skips(slurm, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    args = [*TINY, "seed=0,1", *JOB]
    proc = run_cli(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "submitted 2 jobs" in proc.stdout
    folder = tmp_path / "runs" / "sweep"
    jobs = _jobs(folder)
    array = jobs[0]["job_id"].split("_")[0]
    assert [j["job_id"] for j in jobs] == [f"{array}_0", f"{array}_1"] and all(j["launcher"] == "slurm" for j in jobs)
    _wait(lambda: all(s == "done" for s, _ in status.run_states(folder).values()), "both runs to finish")
    for seed in (0, 1):
        res = json.loads((folder / run_name(parse([*TINY, f"seed={seed}", "fail_threshold=100"])) / "result.json").read_text())
        assert res["status"] == "done" and res["iterations"] == 30
    shown = run_cli(str(folder), cwd=tmp_path, module="resnet_ablate.status")
    assert shown.stdout == f"{folder}: 2 runs: 0 pending, 0 running, 2 done, 0 failed\n"
    again = run_cli(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "2 runs in runs/sweep; 2 finished, 0 queued or running, 0 to run" in again.stdout
    assert "submitted" not in again.stdout and _jobs(folder) == jobs


def test_requeued_jobs_resume_from_their_checkpoints_to_the_same_numbers(slurm, tmp_path, monkeypatch):
    """Job 0 is requeued by `scontrol requeue` (SIGTERM, then SIGKILL after KillWait), job 1 gets SIGUSR2 as
    before a time limit (submitit requeues it); both must end with an undisturbed run's metrics."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    args = merged(TINY, "shortcut=dropout", "iterations=300", "milestones=[150]", "eval_every=10")
    proc = run_cli(*args, "seed=0,1", *JOB, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    folder = tmp_path / "runs" / "sweep"
    ids = [j["job_id"] for j in _jobs(folder)]
    runs = [folder / run_name(parse([*args, f"seed={s}", "fail_threshold=100"])) for s in (0, 1)]
    for run, job_id, command in zip(runs, ids, (["scontrol", "requeue"], ["scancel", "--signal=USR2"])):
        metrics_file = run / "metrics.jsonl"
        _wait(lambda: metrics_file.is_file() and len(metrics_file.read_text().splitlines()) >= 2, f"{run.name} to start")
        subprocess.run([*command, job_id], check=True, timeout=30)
    ref = run_cli(*args, "seed=0,1", "fail_threshold=100", "launcher=inline", f"sweep_dir={tmp_path / 'ref'}",
                  cwd=tmp_path)  # undisturbed references, trained while the cluster works
    assert ref.returncode == 0, ref.stderr
    _wait(lambda: all((r / "result.json").is_file() for r in runs), "the requeued runs to finish")
    logs = [(folder / ".submitit" / f"{job_id}_0_log.out").read_text() for job_id in ids]
    assert all("resuming from iteration" in log for log in logs)
    assert f"Requeued job {ids[1]}" in logs[1]
    for run in runs:
        assert metrics(run) == metrics(tmp_path / "ref" / run.name)
        assert result(run) == result(tmp_path / "ref" / run.name)
    assert status.run_states(folder) == {r.name: ("done", "") for r in runs}
