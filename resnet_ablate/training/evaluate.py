"""What a run measures besides training: loss and error over a whole split (eval mode, large batches), the
per-unit gradient probe on a fixed batch, and the layer responses of the 2015 paper's Fig. 7."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..models.probes import gradient_norms
from ..models.responses import layer_responses
from . import datasets
from .state import RunState

EVAL_BATCH = 1000
PROBE_BATCH = 128
RESPONSE_IMAGES = 1000  # the first test images, unaugmented


@torch.no_grad()
def evaluate(state: RunState, split: datasets.Split) -> tuple[float, float]:
    """Loss and error (%) of the run's net over a whole split, in eval mode; training mode after."""
    state.model.eval()
    loss = torch.zeros((), device=state.device)
    wrong = torch.zeros((), device=state.device, dtype=torch.long)
    for i in range(0, len(split), EVAL_BATCH):
        x = datasets.normalize_images(split.images[i : i + EVAL_BATCH], state.data)
        y = split.labels[i : i + EVAL_BATCH]
        with state.autocast():
            out = state.model(x.contiguous(memory_format=torch.channels_last))
        loss += F.cross_entropy(out.float(), y, reduction="sum")
        wrong += (out.argmax(1) != y).sum()
    state.train_mode()
    return loss.item() / len(split), 100.0 * wrong.item() / len(split)


def probe_batch(bn_batch: int) -> int:
    """PROBE_BATCH rounded down to a multiple of a smaller `bn_batch` (ghost BN needs whole groups)."""
    return PROBE_BATCH - PROBE_BATCH % bn_batch if 0 < bn_batch < PROBE_BATCH else PROBE_BATCH


def probe(state: RunState) -> dict[str, list[float]]:
    """Per-unit input-gradient (L2 and RMS) and per-conv weight-gradient norms on a fixed batch (the first
    training images, unaugmented), always in fp32; the model and RNG streams are left as they were."""
    n = probe_batch(state.cfg.bn_batch)
    x = datasets.normalize_images(state.data.train.images[:n], state.data)
    return gradient_norms(state.model, x.contiguous(memory_format=torch.channels_last), state.data.train.labels[:n])


def responses(state: RunState, source: str) -> dict:
    """The layer responses of the run's net (2015 Fig. 7) on the first RESPONSE_IMAGES test images, as
    responses.json holds them; `source` says whether the net is the final one (end) or a checkpoint's."""
    split = state.data.test
    x = datasets.normalize_images(split.images[:RESPONSE_IMAGES], state.data)
    stds = layer_responses(state.model, x.contiguous(memory_format=torch.channels_last))
    return {"iteration": state.iteration, "source": source, "split": "test", "images": min(len(split), RESPONSE_IMAGES),
            "std": stds}
