"""Gradient probe: the gradient norm (L2 and per-element RMS) at the input of every residual unit, twice: the
total gradient, and the gradient through the shortcuts only (every residual branch's output detached where
it merges); and the norm of every conv weight's gradient.

The 2016 paper's argument (its Eq. 5 and the discussion of Table 1) is about the shortcut path's term: with
identity shortcuts and nothing after the addition (full pre-activation units) dLoss/dx_l through the
shortcuts equals dLoss/dx_L, while scaling multiplies it by the product of the lambdas and so makes it
vanish. The total gradient adds the residual branches' terms, and under BN those grow towards the input
(results/gradnorm_cpu/), so only the shortcut-path measurement can show the vanishing the paper predicts. A
zero-pad transition changes the RMS by geometry (it reads a quarter of the positions and drops half the
channels), so compare units within a stage (`unit_shape` says where the shape changes).
The probe leaves the model as it found it (BN statistics, RNG streams), so it can run mid-training.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .units import ResidualUnit


def _units(model: nn.Module) -> list[ResidualUnit]:
    return [m for m in model.modules() if isinstance(m, ResidualUnit)]


def _detach_branch(_module: nn.Module, args: tuple) -> tuple:
    """A forward pre-hook on a unit's shortcut: its F(x) argument detached, so no gradient flows back through
    the residual branch (the forward values are unchanged)."""
    return (args[0], args[1].detach())


def _input_gradients(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, extra: list[torch.Tensor],
                     shortcut_only: bool) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The gradients of the loss at every unit's input (zeros where none flows, as into a plain net's units
    through shortcuts it does not have) and at `extra`, for one forward in training mode, in fp32, on a fork
    of the RNG streams (so both passes draw the same dropout masks)."""
    units = _units(model)
    inputs: list[torch.Tensor] = []
    hooks = [u.register_forward_pre_hook(lambda _m, args: inputs.append(args[0])) for u in units]
    if shortcut_only:
        hooks += [u.shortcut.register_forward_pre_hook(_detach_branch) for u in units]
    devices = [images.device] if images.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices), torch.autocast(images.device.type, enabled=False):
            loss = F.cross_entropy(model(images.float()).float(), labels)
            wanted = [t for t in inputs + extra if t.requires_grad]  # a detached branch feeds no gradient on
            found = iter(torch.autograd.grad(loss, wanted, allow_unused=True) if wanted else ())
    finally:
        for h in hooks:
            h.remove()
    grads = [next(found) if t.requires_grad else None for t in inputs + extra]
    grads = [torch.zeros_like(t) if g is None else g for g, t in zip(grads, inputs + extra)]
    return grads[: len(inputs)], grads[len(inputs):]


def gradient_norms(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> dict[str, list]:
    """For one batch in training mode (batch statistics, as during training), in fp32 whatever autocast
    is around, for every unit l (input to output): the L2 norm and the per-element RMS (norm / sqrt(numel)) of
    dLoss/d(input of unit l), in total (`unit_input`, `unit_input_rms`) and through the shortcuts only
    (`shortcut_path`, `shortcut_path_rms`: every residual branch detached where it merges, the same forward
    values and dropout masks); the input's shape (`unit_shape`: channels, height, width); and the L2 norm of
    dLoss/dW for every conv (`conv_weight`).

    The RMS is what compares units of different shapes: the first unit's input (16x32x32 per image) has
    4x the elements of the last one's (64x8x8), which alone biases a first/last ratio of plain norms by 2x.
    All the numbers are stacked on the device and read with one host sync."""
    convs = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d)]
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    was_training = model.training
    try:
        model.train()
        total, weights = _input_gradients(model, images, labels, convs, shortcut_only=False)
        model.load_state_dict(saved)  # the second pass starts from the same BN statistics
        path, _ = _input_gradients(model, images, labels, [], shortcut_only=True)
    finally:
        model.load_state_dict(saved)
        model.train(was_training)
    sizes = torch.tensor([g.numel() for g in total], dtype=torch.float32, device=images.device).sqrt()
    totals, paths = _norms(total), _norms(path)
    values = torch.cat([totals, totals / sizes, paths, paths / sizes, _norms(weights)]).tolist()  # the one host sync
    n = len(total)
    return {"unit_input": values[:n], "unit_input_rms": values[n:2 * n], "shortcut_path": values[2 * n:3 * n],
            "shortcut_path_rms": values[3 * n:4 * n], "unit_shape": [list(g.shape[1:]) for g in total],
            "conv_weight": values[4 * n:]}


def _norms(grads: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack([g.float().norm() for g in grads])
