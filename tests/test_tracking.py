"""logger=tensorboard|wandb: the trackers receive exactly what metrics.jsonl holds, also across a
resume; a missing package is one line before training."""
import json
import shutil
import sys
import types

import pytest
from helpers import TINY, metrics

from resnet_ablate.run import main as run_main
from resnet_ablate.training.configfile import run_name
from resnet_ablate.training.parse import parse
from resnet_ablate.training.trainer import StopRequest, train

TRACKED = ("lr", "train_loss", "train_error", "test_loss", "test_error")


def _tensorboard_scalars(folder) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder / "tensorboard"))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _expected(folder) -> dict[str, list[tuple[int, float]]]:
    rows = metrics(folder)
    return {k: [(r["iteration"], pytest.approx(r[k], rel=1e-6)) for r in rows] for k in TRACKED}


def test_tensorboard_events_equal_the_metrics_also_after_a_crash_and_resume(tmp_path):
    pytest.importorskip("tensorboard")
    folder = tmp_path / "run"
    args = [*TINY, "logger=tensorboard", f"run_dir={folder}"]
    stop = StopRequest()
    stop.reason = "test"
    assert train([parse(args)], stop)[0] == {"status": "paused", "iteration": 1, "reason": "test"}
    shutil.copy(folder / "checkpoint.pt", tmp_path / "at1.pt")
    train([parse(args)])
    scalars = _tensorboard_scalars(folder)
    assert {k: scalars[k] for k in TRACKED} == _expected(folder)
    assert [s for s, _ in scalars["test_error"]] == [10, 20, 30]
    # a process that died after logging up to 30 but whose last checkpoint is iteration 1: the rerun
    # logs 10, 20, 30 again, and TensorBoard shows them once, not twice
    (folder / "result.json").unlink()
    shutil.copy(tmp_path / "at1.pt", folder / "checkpoint.pt")
    train([parse(args)])
    assert len(list((folder / "tensorboard").iterdir())) == 3
    scalars = _tensorboard_scalars(folder)
    assert {k: scalars[k] for k in TRACKED} == _expected(folder)
    assert [s for s, _ in scalars["test_error"]] == [10, 20, 30]


class _FakeWandb(types.ModuleType):
    """Records what the trainer hands to wandb.init / run.log / run.finish."""

    def __init__(self) -> None:
        super().__init__("wandb")
        self.runs: list[dict] = []

    def init(self, **kwargs):
        record = {"init": kwargs, "logged": [], "finished": 0}
        self.runs.append(record)
        return types.SimpleNamespace(log=lambda data, step: record["logged"].append((step, data)),
                                     finish=lambda: record.__setitem__("finished", record["finished"] + 1))


def test_wandb_gets_every_metrics_line_of_each_packed_run(tmp_path, monkeypatch):
    fake = _FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    cfgs = [parse([*TINY, "logger=wandb", f"seed={s}", f"run_dir={tmp_path / str(s)}"]) for s in (0, 1)]
    train(cfgs)
    assert len(fake.runs) == 2 and len({r["init"]["id"] for r in fake.runs}) == 2
    for cfg, record in zip(cfgs, fake.runs):
        folder = tmp_path / str(cfg.seed)
        assert record["init"]["name"] == run_name(cfg) and record["init"]["resume"] == "allow"
        assert record["init"]["config"]["seed"] == cfg.seed and record["init"]["config"]["depth"] == 8
        assert record["finished"] == 1
        rows = metrics(folder)
        assert [step for step, _ in record["logged"]] == [r["iteration"] for r in rows]
        for (_, data), row in zip(record["logged"], rows):
            assert {k: data[k] for k in TRACKED} == {k: row[k] for k in TRACKED}
    # the same folder gives the same W&B id, so a run resumed from its iteration-20 checkpoint
    # continues its W&B run from there
    first_id = fake.runs[0]["init"]["id"]
    fake.runs.clear()
    (tmp_path / "0" / "result.json").unlink()
    train(cfgs[:1])
    assert fake.runs[0]["init"]["id"] == first_id
    assert [step for step, _ in fake.runs[0]["logged"]] == [30]


def test_wandb_offline_writes_its_run_file_into_the_run_folder(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    folder = tmp_path / "run"
    train([parse([*TINY, "logger=wandb", f"run_dir={folder}"])])
    assert json.loads((folder / "result.json").read_text())["iterations"] == 30
    files = list((folder / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1 and files[0].stat().st_size > 0


@pytest.mark.parametrize("logger", ["tensorboard", "wandb"])
def test_missing_tracker_package_is_one_line_before_training(tmp_path, monkeypatch, capsys, logger):
    """In-process through run.main, the package made unimportable (tests/test_config.py runs the CLI as a real
    process)."""
    monkeypatch.setitem(sys.modules, logger, None)  # `import <logger>` raises ImportError, as when not installed
    assert run_main([*TINY, f"logger={logger}", f"run_dir={tmp_path / 'run'}"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: logger={logger} needs the {logger} package, which is not installed: pip install {logger}"
        + (" (WANDB_MODE=offline works without a network)" if logger == "wandb" else "")]
    assert not (tmp_path / "run").exists()
