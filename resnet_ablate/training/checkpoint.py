"""checkpoint.pt, the one run-folder file that needs torch: what a checkpoint holds (`contents`, one literal),
writing it atomically beside the other run files, reading it back without running code (weights_only), and
putting it into a run's state. A checkpoint claims the metrics and probe lines before it: the writer fsyncs
them first (`writer.RunWriter.checkpoint`)."""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..errors import first_line
from ..folders.runfolder import Damaged, open_file, present, write_atomic
from .state import RunState

if TYPE_CHECKING:
    from .writer import RunWriter

REQUIRED = ("iteration", "model", "optimizer", "elapsed", "best", "interval_seconds")  # a checkpoint has these


def contents(state: RunState, writer: RunWriter) -> dict[str, Any]:
    """Everything a checkpoint holds: the training state, the run's clock and best error, and its inputs."""
    return {
        **state.state_dict(),  # iteration, model, optimizer, sampler, rng, loss_sum, err_sum, interval_images
        "elapsed": writer.elapsed,  # training seconds so far (the run's clock, kept across resumes)
        "interval_seconds": writer.interval_seconds,  # of them, since the last metrics line (its img/s)
        "best": writer.best,  # the best test error so far (result.json's best_test_error)
        "settings": writer.settings,  # the run's identity settings as config.yaml holds them (init by its hash,
        # below): whose checkpoint this is, checked on resume
        **writer.inputs,  # data_fingerprint, init_sha256: what the run read besides its settings, checked on resume
        "lines": writer.lines_record(),  # per .jsonl file: how many lines this checkpoint covers, and the last one
    }


def save(path: Path, checkpoint: dict[str, Any]) -> None:
    write_atomic(path, lambda f: torch.save(checkpoint, f))


def load(path: Path) -> dict[str, Any] | None:
    """The checkpoint, None when there is none; Damaged for a truncated, empty or foreign file."""
    if not present(path):
        return None
    try:
        with os.fdopen(open_file(path), "rb") as f:  # a link is refused (runfolder.py)
            checkpoint = torch.load(f, map_location="cpu", weights_only=True)
    except Damaged:
        raise
    except Exception as e:  # noqa: BLE001 - torch reports damage as RuntimeError, EOFError, UnpicklingError, ...
        raise Damaged(f"{path} is damaged ({_problem(e)}): delete it to train the run again from iteration 0, or "
                      f"put back a good copy") from e
    missing = [k for k in REQUIRED if k not in checkpoint] if isinstance(checkpoint, dict) else ["everything"]
    if missing:
        raise Damaged(f"{path} is not a checkpoint of this package (no {', '.join(missing)}): delete it to train the "
                      f"run again from iteration 0")
    return checkpoint


def _problem(error: Exception) -> str:
    """What torch found wrong with a checkpoint, in words of its own: a file holding objects besides tensors
    and plain data is named as such, and no line of torch's that advises weights_only=False (which would run
    the file's code; a zeroed file got one) is passed on."""
    if isinstance(error, pickle.UnpicklingError) and "weights_only" in str(error):
        return "it holds objects besides tensors and plain data, which are not loaded: that would run its code"
    if "weights_only" in str(error):
        return f"{type(error).__name__}: not a file torch.save writes"
    return f"{type(error).__name__}: {first_line(error)}"


def restore(state: RunState, checkpoint: dict[str, Any], path: Path) -> None:
    """Put a checkpoint's training state into `state`; Damaged when it is of another net or optimizer."""
    try:
        state.load_state_dict(checkpoint)
    except (KeyError, RuntimeError, ValueError, TypeError) as e:
        raise Damaged(f"{path} does not fit this run ({type(e).__name__}: {first_line(e)}): delete it to train the "
                      f"run again from iteration 0") from e
