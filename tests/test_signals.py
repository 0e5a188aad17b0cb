"""Stopping a training process cleanly (`training/signals.py`): a first Ctrl-C is answered at once and the
stopped run exits 75, resumable; train() called from Python gives the signal handlers back."""
import re
import signal
import subprocess
import sys

from helpers import DONE, TINY, cli_env, merged, wait_for_lines

from resnet_ablate.training.parse import parse
from resnet_ablate.training.trainer import train


def test_first_ctrl_c_is_answered_at_once_and_a_stopped_run_exits_75(tmp_path):
    folder = tmp_path / "r"
    proc = subprocess.Popen([sys.executable, "-m", "resnet_ablate.run", *merged(TINY, "iterations=1000000"),
                             "heartbeat_s=0", f"run_dir={folder}"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=cli_env())
    wait_for_lines(folder, 1, proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err
    assert "Ctrl-C: checkpointing after this iteration, then stopping (Ctrl-C again stops at once" in err
    assert "Traceback" not in err and re.search(r"stopped at iteration \d+ \(SIGINT\); checkpoint saved", out)
    assert (folder / "checkpoint.pt").is_file() and not (folder / "result.json").exists()


def test_train_from_python_gives_the_signal_handlers_back(tmp_path):
    """A notebook calling train(): its Ctrl-C must interrupt again once training returns, and SIGTERM kill."""
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)}
    [summary] = train([parse(merged(DONE, "iterations=2", "milestones=[1]", f"run_dir={tmp_path / 'r'}"))])
    assert summary["status"] == "done"
    assert {s: signal.getsignal(s) for s in before} == before
