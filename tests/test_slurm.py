"""The launcher against a real single-node SLURM (slurm/start-local-slurm.sh): a job array of tiny CPU runs,
status, resubmission, requeue mid-run (scontrol requeue, and SIGUSR2 as before a time limit) resuming to the
numbers of an undisturbed run, a killed training process retried and a killed job reported with its cause;
and the scripts: they touch only a cluster they started and cancel only this checkout's test jobs.

The cluster tests run against a cluster that answers `sinfo` (`.ci/run` starts one before the suite and stops
it after) and are skipped, with that reason, where none does: the suite never installs or starts a cluster, so
`sbatch` and `sinfo` do not appear on PATH halfway through a run. The fixture cancels this checkout's leftover
test jobs at the end. The status tests at the end fake sacct and need no cluster."""
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import DONE, REPO, TINY, cli_env, merged, metrics, result, run_cli, use_cli_env
from test_plugins import PLUGIN, installed, make_plugin

from resnet_ablate import status
from resnet_ablate.folders import runfolder as rf
from resnet_ablate.folders.jobstate import ended_cause, live_state, slurm_states
from resnet_ablate.folders.lock import holder
from resnet_ablate.folders.sweepfolder import SweepRecord, write_sweep
from resnet_ablate.run import main as run_main
from resnet_ablate.sweeps.expansion import sweep_name
from resnet_ablate.training.configfile import run_name
from resnet_ablate.training.parse import parse

COMMENT = f"resnet-ablate-tests:{REPO}"  # marks this checkout's test jobs: slurm/cancel-test-jobs.sh cancels those
JOB = ["launcher=slurm", "profile=local", "slurm.cpus_per_task=1", "slurm.mem_gb=1", "slurm.time=10",
       "fail_threshold=100", f"slurm.extra.comment={COMMENT}"]
SCRIPTS = REPO / "slurm"


def _cluster_up() -> bool:
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return False
    return any(s in ("idle", "mixed", "allocated") for s in out)


def _run_script(name: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPTS / name), *args], capture_output=True, text=True, timeout=900,
                          env={**os.environ, **(env or {})})


def _slurm_session():
    """The fixture's body (a generator, so its decisions can be tested): the cluster that answers, its leftover
    test jobs of this checkout cancelled at the end; a skip with the reason where none answers."""
    if not _cluster_up():
        pytest.skip("no SLURM cluster answers `sinfo`: start one (sudo bash slurm/start-local-slurm.sh; .ci/run "
                    "does) to run these tests")
    yield
    _run_script("cancel-test-jobs.sh")


@pytest.fixture(scope="session")
def slurm():
    """A running SLURM cluster (one this suite neither starts nor stops)."""
    yield from _slurm_session()


def _wait(predicate, what: str, timeout: float = 240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _sweep_folder(tmp_path, args):
    """Where a command-line sweep of `args` with seed=0,1 (JOB's settings) goes by default."""
    return tmp_path / "runs" / sweep_name([parse([*args, f"seed={s}", "fail_threshold=100"]) for s in (0, 1)])


def _jobs(folder):
    return [json.loads(line) for line in (folder / ".submitit" / "jobs.jsonl").read_text().splitlines()]


def _ended(folder) -> bool:
    """Whether SLURM has every job of `folder` ended (a job ends a moment after its runs wrote result.json)."""
    return not any(live_state(state) for state in slurm_states(_jobs(folder), folder).values())


def _launch(args, capsys) -> tuple[int, str, str]:
    """A launch in this process, through run.main (its jobs are SLURM's; the launch from a process of its own:
    test_the_same_sweep_launched_twice_at_once_is_submitted_once): exit code, stdout, stderr."""
    capsys.readouterr()
    code = run_main(args)
    return code, *capsys.readouterr()


@pytest.fixture
def launch_env(tmp_path, monkeypatch):
    """Launches from tmp_path in this process, with the environment its jobs inherit through sbatch as a CLI
    subprocess's (this checkout first on PYTHONPATH, one thread)."""
    use_cli_env(monkeypatch)
    monkeypatch.chdir(tmp_path)


SLOW_SUBMIT = """
import time
import submitit

submit = submitit.AutoExecutor.map_array

def slow(self, *args, **kwargs):  # sbatch on a busy login node: seconds between the check and the record
    time.sleep(5)
    return submit(self, *args, **kwargs)

submitit.AutoExecutor.map_array = slow
"""


TWICE = [*TINY, "seed=0,1", *JOB]


@pytest.fixture(scope="module")
def launched_twice(slurm, tmp_path_factory):
    """TWICE's sweep launched by two processes at the same moment, each taking 5 s to submit (SLOW_SUBMIT, in
    those processes and the jobs they submit): (the folder they ran in, [(exit code, stdout, stderr)] of each).
    One sweep for the two tests that look at what became of it."""
    root = tmp_path_factory.mktemp("twice")
    (root / "plugin").mkdir()
    (root / "plugin" / "sitecustomize.py").write_text(SLOW_SUBMIT)
    env = {**cli_env(), "PYTHONPATH": os.pathsep.join([str(REPO), str(root / "plugin")])}
    procs = [subprocess.Popen([sys.executable, "-m", "resnet_ablate.run", *TWICE], cwd=root, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    return root, [(p.wait(timeout=300), *p.communicate()) for p in procs]


def test_array_runs_status_counts_and_resubmission_skips(launched_twice, monkeypatch, capsys):
    """The sweep's two runs are one job array; status counts them; launching it again submits nothing."""
    root, outs = launched_twice
    use_cli_env(monkeypatch)
    monkeypatch.chdir(root)
    assert sum("submitted 2 jobs" in out for code, out, _ in outs if code == 0) == 1, outs
    folder = _sweep_folder(root, TINY)
    jobs = _jobs(folder)
    array = jobs[0]["job_id"].split("_")[0]
    assert [j["job_id"] for j in jobs] == [f"{array}_0", f"{array}_1"] and all(j["launcher"] == "slurm" for j in jobs)
    _wait(lambda: all(s == "done" for s, _ in status.run_states(folder).values()), "both runs to finish")
    for seed in (0, 1):
        res = json.loads((folder / run_name(parse([*TINY, f"seed={seed}", "fail_threshold=100"])) / "result.json")
                         .read_text())
        assert res["status"] == "done" and res["iterations"] == 30
    shown = run_cli(str(folder), cwd=root, module="resnet_ablate.status")
    assert shown.stdout == f"{folder}: 2 runs: 2 done, 0 fail\n"
    _wait(lambda: _ended(folder), "the jobs to end")
    code, out, err = _launch(TWICE, capsys)
    assert code == 0, err
    assert f"2 runs in runs/{folder.name}; 2 finished, 0 queued or running, 0 to run" in out
    assert "submitted" not in out and _jobs(folder) == jobs


def test_requeued_jobs_resume_from_their_checkpoints_to_the_same_numbers(slurm, launch_env, tmp_path, capsys):
    """Job 0 is requeued by `scontrol requeue` (SIGTERM, then SIGKILL after KillWait), job 1 gets SIGUSR2 as
    before a time limit (submitit requeues it); both must end with an undisturbed run's metrics."""
    args = merged(TINY, "shortcut=dropout", "iterations=300", "milestones=[150]", "eval_every=10")
    code, _, err = _launch([*args, "seed=0,1", *JOB], capsys)
    assert code == 0, err
    folder = _sweep_folder(tmp_path, args)
    ids = [j["job_id"] for j in _jobs(folder)]
    runs = [folder / run_name(parse([*args, f"seed={s}", "fail_threshold=100"])) for s in (0, 1)]
    for run, job_id, command in zip(runs, ids, (["scontrol", "requeue"], ["scancel", "--signal=USR2"])):
        metrics_file = run / "metrics.jsonl"
        _wait(lambda: metrics_file.is_file() and len(metrics_file.read_text().splitlines()) >= 2,
              f"{run.name} to start")
        subprocess.run([*command, job_id], check=True, timeout=30)
    code, _, err = _launch([*args, "seed=0,1", "fail_threshold=100", "launcher=inline",
                            f"sweep_dir={tmp_path / 'ref'}"],
                           capsys)  # undisturbed references, trained here while the cluster works
    assert code == 0, err
    _wait(lambda: all((r / "result.json").is_file() for r in runs), "the requeued runs to finish")
    logs = [(folder / ".submitit" / f"{job_id}_0_log.out").read_text() for job_id in ids]
    assert all("resuming from iteration" in log for log in logs)
    assert f"Requeued job {ids[1]}" in logs[1]
    for run in runs:
        assert metrics(run) == metrics(tmp_path / "ref" / run.name)
        assert result(run) == result(tmp_path / "ref" / run.name)
    assert status.run_states(folder) == {r.name: ("done", "") for r in runs}


def test_without_srun_the_job_python_gets_the_warning_signal_and_requeues(slurm, launch_env, tmp_path, capsys):
    """slurm.srun=false (containers): the job has no step, and SLURM's warning signal reaches only steps, so the
    Python runs as the batch shell (exec) and the signal goes to it (B:): `scancel --batch --signal=USR2` is what
    SLURM sends then; submitit requeues the job and the run resumes to its end."""
    args = merged(TINY, "iterations=300", "milestones=[150]", "eval_every=10")
    code, _, err = _launch([*args, "seed=0,1", *JOB, "slurm.srun=false"], capsys)
    assert code == 0, err
    folder = _sweep_folder(tmp_path, args)
    job_id = _jobs(folder)[0]["job_id"]
    run = folder / run_name(parse([*args, "seed=0", "fail_threshold=100"]))
    _wait(lambda: len(rf.read_jsonl(run / "metrics.jsonl")) >= 2, f"{run.name} to start")
    subprocess.run(["scancel", "--batch", "--signal=USR2", job_id], check=True, timeout=30)
    _wait(lambda: (run / "result.json").is_file(), "the requeued run to finish")
    log = (folder / ".submitit" / f"{job_id}_0_log.out").read_text()
    assert f"Requeued job {job_id}" in log and "resuming from iteration" in log
    assert result(run)["status"] == "done" and result(run)["iterations"] == 300
    _wait(lambda: _ended(folder), "the jobs to end")


def test_a_plugin_trains_in_slurm_jobs(slurm, tmp_path, monkeypatch):
    """A plugin package's shortcut (a dist-info on PYTHONPATH declares its entry point) known to SLURM's jobs with
    no script and no sitecustomize. Here, not in test_plugins.py: this file's tests run in one process one after
    the other, and the stop-script test cancels this checkout's test jobs, a plugin job's among them."""
    site = make_plugin(tmp_path / "site", "ablate_extra", PLUGIN)
    sweep = tmp_path / "sweep"
    use_cli_env(monkeypatch, site)
    monkeypatch.chdir(tmp_path)
    with installed(site, "ablate_extra"):
        assert run_main([*TINY, "shortcut=channel_centred", "seed=0,1", *JOB, f"sweep_dir={sweep}"]) == 0
        names = [run_name(parse([*DONE, "shortcut=channel_centred", f"seed={s}"])) for s in (0, 1)]
    _wait(lambda: all(s == "done" for s, _ in status.run_states(sweep).values()), "the plugin's runs to finish")
    for folder in (sweep / name for name in names):
        assert json.loads((folder / "result.json").read_text())["iterations"] == 30
        assert "plugins:\n  shortcut: ablate-extra 0.1\n" in (folder / "config.yaml").read_text()


def _trainer(run: Path) -> int:
    """The pid of the process training `run` (from its lock), once one does."""
    _wait(lambda: holder(run) and len(rf.read_jsonl(run / "metrics.jsonl")) >= 2, f"{run.name} to train")
    return holder(run)["pid"]


def test_a_killed_training_process_is_retried_and_a_killed_job_says_why(slurm, launch_env, tmp_path, capsys):
    """Job 0's training process is killed with SIGKILL (as the out-of-memory killer does): max_retries covers it,
    the run resumes and finishes. Job 1 is killed whole: status says killed by SIGKILL, and resumable."""
    args = merged(TINY, "iterations=300", "milestones=[150]", "eval_every=10")
    assert _launch([*args, "seed=0,1", *JOB, "max_retries=1"], capsys)[0] == 0
    folder = _sweep_folder(tmp_path, args)
    ids = [j["job_id"] for j in _jobs(folder)]
    runs = [folder / run_name(parse([*args, f"seed={s}", "fail_threshold=100"])) for s in (0, 1)]
    os.kill(_trainer(runs[0]), signal.SIGKILL)
    child = _trainer(runs[1])
    parent = int(next(line.split()[1] for line in Path(f"/proc/{child}/status").read_text().splitlines()
                      if line.startswith("PPid:")))
    os.kill(parent, signal.SIGKILL)
    os.kill(child, signal.SIGKILL)
    _wait(lambda: status.run_states(folder)[runs[1].name][0] == "crashed", "the killed job to be reported")
    _wait(lambda: (runs[0] / "result.json").is_file(), "the retried run to finish")
    log = (folder / ".submitit" / f"{ids[0]}_0_log.err").read_text()
    assert "ChildCrashed: the training process was killed by SIGKILL (the out-of-memory killer, or a kill -9); " \
           "retry 1 of 1, from the checkpoints" in log
    assert json.loads((runs[0] / "result.json").read_text())["status"] == "done"
    state, reason = status.run_states(folder)[runs[1].name]
    assert reason.startswith(f"job {ids[1]} ended FAILED: killed by SIGKILL (the out-of-memory killer, or a kill -9)")
    assert "its log says: srun: error: " in reason and reason.endswith("resumable from its checkpoint: launch the "
                                                                      "sweep again")
    _wait(lambda: _ended(folder), "the jobs to end")
    _, out, _ = _launch([*args, "seed=0,1", *JOB, "dry_run=true"], capsys)
    assert f"2 runs in runs/{folder.name}; 1 finished, 0 queued or running, 1 to run" in out


def test_the_same_sweep_launched_twice_at_once_is_submitted_once(launched_twice):
    """Two launches of one sweep at the same moment, each taking 5 s to submit: the sweep folder's lock lets one
    check and submit; the other is refused in one line, or (when it comes after) finds the jobs queued. One
    array, two jobs."""
    root, outs = launched_twice
    folder = _sweep_folder(root, TINY)
    jobs = _jobs(folder)
    assert len(jobs) == 2 and len({j["job_id"].split("_")[0] for j in jobs}) == 1, outs
    assert sum("submitted 2 jobs" in out for _, out, _ in outs) == 1, outs
    for code, out, err in outs:
        assert (code == 0 and ("submitted 2 jobs" in out or "0 finished, 2 queued or running, 0 to run" in out)) or \
            (code == 2 and err.startswith(f"error: runs/{folder.name} is being launched by another process (pid ")), \
            (code, out, err)
    done = {run_name(parse([*TINY, f"seed={s}", "fail_threshold=100"])): ("done", "") for s in (0, 1)}
    _wait(lambda: status.run_states(folder) == done, "both runs to finish")  # all() of no runs was True


def test_a_cancelled_job_is_called_cancelled(slurm, launch_env, tmp_path, capsys):
    """Job 0 is cancelled while it trains; job 1 (only the other half of the array) is cancelled at once, so that
    job 0 trains alone."""
    args = merged(TINY, "iterations=100000", "milestones=[50000]", "eval_every=10")
    assert _launch([*args, "seed=0,1", *JOB, "sweep_dir=s"], capsys)[0] == 0
    folder = tmp_path / "s"
    subprocess.run(["scancel", _jobs(folder)[1]["job_id"]], timeout=30)
    job = _jobs(folder)[0]["job_id"]
    run = folder / _jobs(folder)[0]["runs"][0]
    _trainer(run)
    subprocess.run(["scancel", job], check=True, timeout=30)
    _wait(lambda: status.run_states(folder)[run.name][0] == "crashed", "the cancelled job to be reported")
    assert status.run_states(folder)[run.name][1].startswith(f"job {job} ended CANCELLED: cancelled (scancel)")
    _wait(lambda: not any(s in ("queued", "running") for s, _ in status.run_states(folder).values()), "the jobs to end")
    _wait(_cluster_up, "the node to take jobs again")  # it completes the cancelled ones first


def test_start_script_refuses_a_cluster_it_did_not_start(slurm, tmp_path):
    """Run for another SLURM_CI_BASE, the cluster that is up is not the script's: it stops before changing any
    file or daemon."""
    conf = Path("/etc/slurm/slurm.conf")
    before = (conf.read_bytes(), conf.stat().st_mtime_ns)
    proc = _run_script("start-local-slurm.sh", env={"SLURM_CI_BASE": str(tmp_path / "other")})
    assert proc.returncode == 1
    assert "refusing to" in proc.stderr and "touch that cluster" in proc.stderr
    assert (conf.read_bytes(), conf.stat().st_mtime_ns) == before and not (tmp_path / "other").exists()
    assert _cluster_up()


def test_start_script_on_its_own_cluster_changes_nothing_and_closes_the_database(slurm):
    """Run again on the cluster it started, the script keeps its config (no reconfigure) and leaves MariaDB's
    socket in a folder only its user may enter."""
    if not all(Path(f"/tmp/slurm-ci/pids/{d}.pid").is_file() for d in ("slurmctld", "mariadbd")):
        pytest.skip("the running cluster was not started by slurm/start-local-slurm.sh with accounting")
    conf = Path("/etc/slurm/slurm.conf")
    before = (conf.read_bytes(), conf.stat().st_mtime_ns)
    proc = _run_script("start-local-slurm.sh")
    assert proc.returncode == 0, proc.stderr
    assert "config unchanged" in proc.stdout and "reconfiguring" not in proc.stdout
    assert (conf.read_bytes(), conf.stat().st_mtime_ns) == before
    assert Path("/run/mysqld").stat().st_mode & 0o077 == 0
    assert Path("/etc/slurm/slurmdbd.conf").stat().st_mode & 0o077 == 0


def test_stop_script_cancels_only_this_checkouts_test_jobs(slurm, tmp_path):
    """Stopping for a SLURM_CI_BASE that started nothing stops no daemon and cancels this checkout's test jobs
    only; another checkout's (or user's) job stays."""
    def submit(comment: str) -> str:
        return subprocess.run(["sbatch", "--parsable", f"--comment={comment}", "-o", "/dev/null", "-t", "2",
                               "--mem=50M", "--wrap", "sleep 120"], capture_output=True, text=True, check=True,
                              timeout=30).stdout.strip()

    ours, theirs = submit(COMMENT), submit("resnet-ablate-tests:/another/checkout")
    try:
        proc = _run_script("stop-local-slurm.sh", env={"SLURM_CI_BASE": str(tmp_path / "not-ours")})
        assert proc.returncode == 0, proc.stderr
        queued = subprocess.run(["squeue", "-h", "-o", "%A"], capture_output=True, text=True, timeout=30).stdout.split()
        assert ours not in queued and theirs in queued and _cluster_up()
    finally:
        subprocess.run(["scancel", ours, theirs], timeout=30)


def test_the_fixture_skips_without_a_cluster_and_never_starts_or_stops_one(monkeypatch):
    """No cluster answering: a skip that says how to start one, and no script run (the suite starting a cluster
    put sbatch on PATH halfway through a run, under tests on the other worker). A cluster up: its leftover test
    jobs of this checkout cancelled at the end, and nothing stopped."""
    calls = []
    here = sys.modules[__name__]
    monkeypatch.setattr(here, "_run_script",
                        lambda *a, **k: calls.append(a) or subprocess.CompletedProcess(a, 0, "", ""))
    monkeypatch.setattr(here, "_cluster_up", lambda: False)
    with pytest.raises(pytest.skip.Exception, match=r"^no SLURM cluster answers `sinfo`: start one \(sudo bash "
                                                    r"slurm/start-local-slurm.sh; .ci/run does\)"):
        next(_slurm_session())
    assert calls == []
    monkeypatch.setattr(here, "_cluster_up", lambda: True)
    session = _slurm_session()
    next(session)
    assert calls == []
    with pytest.raises(StopIteration):
        next(session)
    assert calls == [("cancel-test-jobs.sh",)]


FAKE_SACCT = r"""#!/bin/sh
# sacct as SLURM answers for job {job}: submitit's query (a header, JobID|State|NodeList), or ours (-n)
case "$*" in
  *-n*) printf '%s\n' {ours} ;;
  *) printf 'JobID|State|NodeList\n{job}|{state}|vm\n' ;;
esac
"""


@pytest.mark.parametrize("job,state,rows,pickled,expected", [
    ("9001", "FAILED", "'9001|FAILED|9:0' '9001.batch|FAILED|9:0' '9001.0|CANCELLED|0:9'", None,
     ("crashed", "job 9001 ended FAILED: killed by SIGKILL (the out-of-memory killer, or a kill -9); its log says: "
                "srun: error: vm: task 0: Killed; resumable from its checkpoint: launch the sweep again")),
    ("9002", "OUT_OF_MEMORY", "'9002|OUT_OF_MEMORY|0:125' '9002.0|OUT_OF_MEMORY|0:125'", None,
     ("crashed", "job 9002 ended OUT_OF_MEMORY: out of memory; its log says: srun: error: vm: task 0: Killed; "
                "resumable from its checkpoint: launch the sweep again")),
    ("9003", "TIMEOUT", "'9003|TIMEOUT|0:0' '9003.batch|CANCELLED|0:15'", None,
     ("paused", "job 9003 ended at its time limit; launch the sweep again to resume (or raise slurm.time)")),
    ("9004", "FAILED", "'9004|FAILED|1:0'", "submitit.core.utils.UncompletedJobError: Job not requeued because: "
                                            "timed-out too many times.",
     ("paused", "job 9004 reached its time limit max_num_timeout times; launch the sweep again to resume (or raise "
                "slurm.time)")),
    ("9005", "CANCELLED", "'9005|CANCELLED by 0|0:0' '9005.batch|CANCELLED|0:15' '9005.0|CANCELLED|0:9'", None,
     ("crashed", "job 9005 ended CANCELLED: cancelled (scancel); its log says: srun: error: vm: task 0: Killed; "
                "resumable from its checkpoint: launch the sweep again")),
])
def test_status_names_the_real_cause_of_a_job_end(job, state, rows, pickled, expected, tmp_path, monkeypatch):
    """The SLURM states of a killed, out-of-memory or timed-out job (sacct faked as SLURM 22.05 answers; each
    case its own job id, as submitit's watcher caches states by id) and a job that used up max_num_timeout:
    the cause in words, and paused (resumable) for time limits."""
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "sacct").write_text(FAKE_SACCT.format(ours=rows, state=state, job=job))
    (tmp_path / "bin" / "sacct").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    folder = tmp_path / "s"
    write_sweep(SweepRecord(folder, "s", runs=("a",)))
    (folder / "a").mkdir()
    (folder / "a" / "config.yaml").write_text("depth: 20\n")
    (folder / "a" / "checkpoint.pt").write_bytes(b"a checkpoint")
    (folder / ".submitit").mkdir()
    (folder / ".submitit" / "jobs.jsonl").write_text(json.dumps({"job_id": job, "launcher": "slurm", "runs": ["a"]}))
    (folder / ".submitit" / f"{job}_0_log.err").write_text(f"srun: error: vm: task 0: Killed\nsrun: Force Terminated "
                                                            f"StepId={job}.0\n")
    if pickled:
        (folder / ".submitit" / f"{job}_0_result.pkl").write_bytes(pickle.dumps(("error", f"Traceback\n{pickled}\n")))
    assert status.run_states(folder) == {"a": expected}
    causes = {"9001": "killed by SIGKILL (the out-of-memory killer, or a kill -9)", "9002": "out of memory",
              "9003": "time limit", "9004": "exit code 1", "9005": "cancelled (scancel)"}
    assert ended_cause(job) == causes[job]
