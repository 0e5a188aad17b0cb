"""Optional trackers beside the run folder (which stays the record): TensorBoard event files in
`<run>/tensorboard/`, or a Weights & Biases run (offline with WANDB_MODE=offline). Neither package is
a dependency; asking for one that is not installed is a one-line error before any data is read."""
from __future__ import annotations

import dataclasses
import hashlib
import importlib
from pathlib import Path
from typing import Protocol

from ..errors import UsageError


class Tracker(Protocol):
    def log(self, row: dict, step: int) -> None: ...

    def close(self) -> None: ...


class TensorBoard:
    """Every numeric field of a metrics line as a scalar at its iteration; a resumed run purges the
    events its crashed predecessor wrote past the checkpoint, as the metrics file does."""

    def __init__(self, folder: Path, name: str, config: object, iteration: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(folder / "tensorboard"), purge_step=iteration or None)

    def log(self, row: dict, step: int) -> None:
        for key, value in row.items():
            if key != "iteration" and isinstance(value, (int, float)):
                self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandB:
    """A W&B run named after the run and identified by its folder, so a resumed run continues it."""

    def __init__(self, folder: Path, name: str, config: object, iteration: int) -> None:
        import wandb

        run_id = hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:16]
        self.run = wandb.init(project="resnet-ablate", name=name, id=run_id, resume="allow", dir=str(folder),
                              config=dataclasses.asdict(config), reinit="create_new")  # type: ignore[arg-type]

    def log(self, row: dict, step: int) -> None:
        self.run.log({k: v for k, v in row.items() if k != "iteration" and v is not None}, step=step)

    def close(self) -> None:
        self.run.finish()


TRACKERS = {"tensorboard": TensorBoard, "wandb": WandB}  # logger name = the package it needs


def require(logger: str) -> None:
    """Fail with one line naming the install command when `logger`'s package is missing."""
    if logger not in TRACKERS:
        return
    try:
        importlib.import_module(logger)
    except ImportError:
        hint = " (WANDB_MODE=offline works without a network)" if logger == "wandb" else ""
        raise UsageError(f"logger={logger} needs the {logger} package, which is not installed: "
                         f"pip install {logger}{hint}") from None


def open_tracker(logger: str, folder: Path, name: str, config: object, iteration: int) -> Tracker | None:
    """The tracker `logger` names for a run starting (or resuming) at `iteration`; None for `none`."""
    tracker = TRACKERS.get(logger)
    return tracker(folder, name, config, iteration) if tracker is not None else None
