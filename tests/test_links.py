"""Two paths out of a run or sweep folder, closed (issue 32): the package makes no link in one, so it refuses
any (`runfolder.open_file`, O_NOFOLLOW, at each open, and `refuse_links`) in one line with nothing written
through it, while a run_dir or sweep_dir the user names through a link stays allowed; and names that become
folder names (a spec's, a budget's, the runs a sweep.yaml or jobs.jsonl lists) are names, not paths."""
import json
import os

import pytest
from helpers import DONE, StopAtEvaluation

from resnet_ablate import run, status
from resnet_ablate.errors import UsageError
from resnet_ablate.folders import runfolder as rf
from resnet_ablate.folders.lock import FolderLock
from resnet_ablate.folders.sweepfolder import SweepRecord, write_sweep
from resnet_ablate.training import checkpoint
from resnet_ablate.training.configfile import run_name
from resnet_ablate.training.parse import parse
from resnet_ablate.training.trainer import train
from resnet_ablate.training.writer import RunWriter


def _linked(path) -> str:
    return f"error: {path} is a link, and the package makes none in a run or sweep folder: remove it (or put the " \
           f"file or folder itself there) and run again\n"


def _error(capsys) -> str:
    return capsys.readouterr().err


def test_a_paused_run_whose_metrics_file_links_outside_is_refused_and_the_target_kept(tmp_path, capsys):
    """It resumed and appended to the link's target."""
    folder = tmp_path / "r"
    args = [*DONE, f"run_dir={folder}"]
    assert train([parse(args)], StopAtEvaluation(folder))[0]["status"] == "paused"
    outside = tmp_path / "elsewhere.txt"
    outside.write_text("someone else's file\n")
    (folder / "metrics.jsonl").unlink()
    (folder / "metrics.jsonl").symlink_to(outside)
    capsys.readouterr()
    for dry in (["dry_run=true"], []):
        assert run.main([*args, *dry]) == 2
        assert _error(capsys) == _linked(folder / "metrics.jsonl")
    assert outside.read_text() == "someone else's file\n" and not (folder / "result.json").exists()


def test_a_sweep_whose_run_folder_is_a_link_is_refused_and_nothing_trains_in_its_target(tmp_path, monkeypatch,
                                                                                       capsys):
    """It trained that run into the link's target."""
    monkeypatch.chdir(tmp_path)
    args = [*DONE, "seed=0,1", "sweep_dir=s"]
    assert run.main([*args, "dry_run=true"]) == 0
    target = tmp_path / "elsewhere"
    target.mkdir()
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / run_name(parse([*DONE, "seed=1"]))).symlink_to(target)
    capsys.readouterr()
    member = run_name(parse([*DONE, "seed=1"]))
    for dry in (["dry_run=true"], []):
        assert run.main([*args, *dry]) == 2
        assert _error(capsys) == _linked(f"s/{member}")
    assert list(target.iterdir()) == []
    write_sweep(SweepRecord(tmp_path / "s", "sweep", runs=(member,)))
    assert status.run_states(tmp_path / "s")[member][1] == _linked(tmp_path / "s" / member)[len("error: "):-1]
    cfg = parse([*DONE, "seed=1", f"runs_root={tmp_path / 's'}"])  # the trainer itself, as a job would
    with pytest.raises(UsageError, match=r" is a link, and the package makes none"):
        train([cfg])
    assert list(target.iterdir()) == []


def test_a_run_dir_and_a_sweep_dir_named_through_a_link_stay_allowed(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for name in ("real_run", "real_sweep"):
        (tmp_path / name).mkdir()
    (tmp_path / "run_link").symlink_to(tmp_path / "real_run")
    (tmp_path / "sweep_link").symlink_to(tmp_path / "real_sweep")
    assert run.main([*DONE, "run_dir=run_link"]) == 0
    assert json.loads((tmp_path / "real_run" / "result.json").read_text())["status"] == "done"
    assert run.main([*DONE, "seed=0,1", "sweep_dir=sweep_link"]) == 0
    assert status.main(["sweep_link"]) == 0
    assert capsys.readouterr().out.endswith("sweep_link: 2 runs: 2 done, 0 fail\n")


def test_each_open_refuses_a_link_so_one_placed_after_the_start_is_caught(tmp_path, monkeypatch):
    """The writer's appends, atomic writes, the checkpoint's read and the lock: each refuses a link when it opens
    the file, not only the checks at the start; nothing is written through it and the link is kept."""
    outside = tmp_path / "outside"
    outside.write_text("kept\n")
    folder = tmp_path / "f"
    folder.mkdir()
    for name in ("metrics.jsonl", "result.json", "checkpoint.pt", ".lock"):
        (folder / name).symlink_to(outside)
    with pytest.raises(rf.Damaged, match=r"metrics.jsonl is a link"):
        rf.append_jsonl(folder / "metrics.jsonl", {"iteration": 1})
    with pytest.raises(rf.Damaged, match=r"result.json is a link"):
        rf.write_json(folder / "result.json", {"status": "done"})
    with pytest.raises(rf.Damaged, match=r"checkpoint.pt is a link"):
        checkpoint.load(folder / "checkpoint.pt")
    with pytest.raises(rf.Damaged, match=r"\.lock is a link"):
        FolderLock.acquire(folder)
    assert outside.read_text() == "kept\n" and all((folder / n).is_symlink() for n in os.listdir(folder))
    assert [p.name for p in folder.iterdir() if p.name.endswith(".tmp")] == []

    run_folder = tmp_path / "r"  # and in a run: metrics.jsonl becomes a link after the run started
    log = RunWriter.log_metrics

    def link_first(self, row, images):
        (self.dir / "metrics.jsonl").unlink(missing_ok=True)
        (self.dir / "metrics.jsonl").symlink_to(outside)
        return log(self, row, images)

    monkeypatch.setattr(RunWriter, "log_metrics", link_first)
    with pytest.raises(rf.Damaged, match=r"metrics.jsonl is a link"):
        train([parse([*DONE, f"run_dir={run_folder}"])])
    assert outside.read_text() == "kept\n"


def test_a_fifo_in_a_run_folder_is_refused_not_waited_for(tmp_path, capsys):
    folder = tmp_path / "r"
    args = [*DONE, f"run_dir={folder}"]
    assert train([parse(args)], StopAtEvaluation(folder))[0]["status"] == "paused"
    (folder / "metrics.jsonl").unlink()
    os.mkfifo(folder / "metrics.jsonl")
    capsys.readouterr()
    assert run.main(args) == 2
    assert _error(capsys) == f"error: {folder / 'metrics.jsonl'} is not a regular file: remove it and run again\n"


@pytest.mark.parametrize("spec_name,spec,message", [
    ("evil.yaml", "seeds: [0]\nbudgets:\n  ../../..: {seeds: [1]}\n",
     "a budget's name becomes the sweep folder's name, but '../../..' holds '/', which makes it a path; rename it"),
    ("...yaml", "seeds: [0]\n", "its file name becomes the sweep folder's name, but '..' names no folder of its own; "
                                "rename it"),
])
def test_a_spec_or_budget_name_that_is_a_path_is_refused(spec_name, spec, message, tmp_path, monkeypatch, capsys):
    """A budget named '../../..' put the whole sweep folder outside the runs root, and trained there."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    (tmp_path / spec_name).write_text(spec)
    budget = ["budget=../../.."] if "budgets" in spec else []
    assert run.main([*DONE, f"ablation={tmp_path / spec_name}", *budget]) == 2
    assert _error(capsys) == f"error: {tmp_path / spec_name}: {message}\n"
    assert sorted(os.listdir(tmp_path)) == sorted(["runs", spec_name]) and os.listdir(tmp_path / "runs") == []


def test_run_names_in_a_sweep_file_or_job_record_are_names(tmp_path, capsys):
    """They name folders that status and the launcher read in the sweep folder."""
    folder = tmp_path / "s"
    write_sweep(SweepRecord(folder, "s", runs=("../../etc",)))
    assert status.main([str(folder)]) == 2
    assert _error(capsys) == f"error: {folder / 'sweep.yaml'}: a run's name '../../etc' holds '/', which makes it a " \
                             f"path; repair the runs list\n"
    write_sweep(SweepRecord(tmp_path / "t", "t", runs=("a",)))
    (tmp_path / "t" / ".submitit").mkdir()
    (tmp_path / "t" / ".submitit" / "jobs.jsonl").write_text('{"job_id": "7", "launcher": "local", "runs": [".."]}\n')
    assert status.main([str(tmp_path / "t")]) == 2
    assert "jobs.jsonl line 1 is damaged (a job record needs job_id, launcher and runs, each a run folder's name)" \
        in _error(capsys)
