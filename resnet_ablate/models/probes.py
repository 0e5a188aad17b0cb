"""Gradient probe: the gradient norm (L2 and per-element RMS) at the input of every residual unit, and the
norm of every conv weight's gradient.

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
    """For one batch in training mode (batch statistics, as during training), in fp32 whatever autocast
    is around: the L2 norm and the per-element RMS (norm / sqrt(numel)) of dLoss/d(input of unit l) for
    every unit l (input to output), and the L2 norm of dLoss/dW for every conv.

    The RMS is what compares units of different shapes: the first unit's input (16x32x32 per image) has
    4x the elements of the last one's (64x8x8), which alone biases a first/last ratio of plain norms by 2x.
    All the numbers are stacked on the device and read with one host sync."""
    units = _units(model)
    inputs: list[torch.Tensor] = []
    hooks = [u.register_forward_pre_hook(lambda _m, args: inputs.append(args[0])) for u in units]
    convs = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d)]
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    was_training = model.training
    devices = [images.device] if images.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices), torch.autocast(images.device.type, enabled=False):
            model.train()
            loss = F.cross_entropy(model(images.float()).float(), labels)
            grads = torch.autograd.grad(loss, inputs + convs)
    finally:
        for h in hooks:
            h.remove()
        model.load_state_dict(saved)
        model.train(was_training)
    norms = torch.stack([g.float().norm() for g in grads])
    sizes = torch.tensor([g.numel() for g in grads[: len(inputs)]], dtype=torch.float32, device=norms.device)
    values = torch.cat([norms, norms[: len(inputs)] / sizes.sqrt()]).tolist()  # the one host sync
    n, m = len(inputs), len(grads)
    return {"unit_input": values[:n], "unit_input_rms": values[m:], "conv_weight": values[n:m]}
