"""Gradient probe: the gradient norm at the input of every residual unit and of every conv weight.

This is the data behind the gradient-norm-vs-depth plots: with identity shortcuts the gradient reaches
the first units with a modest change in size; with scaled or missing shortcuts (and BN) it is distorted by
orders of magnitude, measured at init as growth towards the input (results/gradnorm_cpu/).
The probe leaves the model as it found it (BN statistics, RNG streams), so it can run mid-training.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .units import ResidualUnit


def _units(model: nn.Module) -> list[ResidualUnit]:
    return [m for m in model.modules() if isinstance(m, ResidualUnit)]


def gradient_norms(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> dict[str, list[float]]:
    """L2 norms of dLoss/d(input of unit l) for every unit l (input to output) and of dLoss/dW for every
    conv, for one batch in training mode (batch statistics, as during training)."""
    units = _units(model)
    inputs: list[torch.Tensor] = []
    hooks = [u.register_forward_pre_hook(lambda _m, args: inputs.append(args[0])) for u in units]
    convs = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d)]
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    was_training = model.training
    devices = [images.device] if images.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            model.train()
            loss = F.cross_entropy(model(images).float(), labels)
            grads = torch.autograd.grad(loss, inputs + convs)
    finally:
        for h in hooks:
            h.remove()
        model.load_state_dict(saved)
        model.train(was_training)
    norms = [g.float().norm().item() for g in grads]
    return {"unit_input": norms[: len(inputs)], "conv_weight": norms[len(inputs) :]}
