"""What a training process says while it works (`training/progress.py`): the start-up lines, the heartbeat
between evaluations, and the note on a run that would take over a day."""
import re

from helpers import TINY, StopAtEvaluation

from resnet_ablate.training.configfile import run_name
from resnet_ablate.training.parse import parse
from resnet_ablate.training.progress import cores, day_note
from resnet_ablate.training.trainer import train


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
        f"recipe=default iterations=30 milestones=[20] warmup_iters=0 batch_size=8 eval_every=10 device=cpu "
        f"run_dir={folder}"]
    assert (folder / "config.yaml").read_text().count("\n") > 50  # the full config


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


def test_a_run_over_a_day_says_so_once_after_a_few_dozen_iterations(tmp_path, capsys):
    """10^9 iterations take days at any speed this net runs at; the run is stopped after its first evaluation."""
    folder = tmp_path / "r"
    capsys.readouterr()
    summary = train([parse([*TINY, "iterations=1000000000", "eval_every=50", f"run_dir={folder}"])],
                    StopAtEvaluation(folder))[0]
    out = capsys.readouterr().out.splitlines()
    assert (summary["status"], summary["iteration"]) == ("paused", 50)
    notes = [line for line in out if line.startswith("note: at ")]
    assert len(notes) == 1 and re.fullmatch(r"note: at \d+ img/s the remaining 999999960 iterations take about "
                                            r"[\d.]+ days; a GPU, a smaller depth, fewer iterations or a spec's "
                                            r"budget=quick make it shorter", notes[0])
    assert out.index(notes[0]) < next(i for i, line in enumerate(out) if " test loss " in line)  # before it 50


def test_day_note_only_past_a_day():
    assert day_note(1.0, 64000, 40, 128) is None  # 17.8 hours
    assert day_note(2.0, 64000, 40, 128).startswith("note: at 64 img/s the remaining 63960 iterations take about "
                                                    "1.5 days")
