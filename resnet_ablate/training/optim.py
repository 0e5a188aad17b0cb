"""The recipe's optimizer and learning-rate schedule: the lr is a pure function of the iteration (so
resuming needs no scheduler state), and the optimizers are fused and read a device lr tensor (so a
captured CUDA graph holds the whole update and still sees schedule changes)."""
from __future__ import annotations

import math

import torch
from torch import nn

from ..models import transfer
from ..models.shortcuts import Shortcut
from .config import Config


def lr_at(cfg: Config, iteration: int) -> float:
    """The lr of 0-based `iteration`: warm-up, then the schedule. Cosine and onecycle follow PyTorch's
    CosineAnnealingLR (to 0) and OneCycleLR (defaults: from lr/25 up to lr, down to lr/25e4) over the
    iterations after warm-up."""
    if iteration < cfg.warmup_iters:
        return cfg.warmup_lr
    if cfg.schedule == "step":
        return cfg.lr * 0.1 ** sum(iteration >= m for m in cfg.milestones)
    steps, t = cfg.iterations - cfg.warmup_iters, iteration - cfg.warmup_iters
    if cfg.schedule == "cosine":
        return _anneal(cfg.lr, 0.0, t / steps)
    peak, low = cfg.onecycle_pct * steps - 1, cfg.lr / 25
    if t <= peak:
        return _anneal(low, cfg.lr, t / peak)
    return _anneal(cfg.lr, low / 1e4, (t - peak) / (steps - 1 - peak))


def _anneal(start: float, end: float, fraction: float) -> float:
    return end + (start - end) / 2 * (math.cos(math.pi * fraction) + 1)


def make_optimizer(cfg: Config, param_groups: list[dict], lr: torch.Tensor) -> torch.optim.Optimizer:
    """The configured optimizer, fused (one kernel for all weights), its groups reading their lr tensors.
    Adam's step counts live on the device only with `capturable=True`, which a captured CUDA graph needs
    (torch's capture health check raises otherwise, and the pack would fall back to eager): set on CUDA."""
    if cfg.optim == "sgd":
        return torch.optim.SGD(param_groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov, fused=True)
    cls = torch.optim.Adam if cfg.optim == "adam" else torch.optim.AdamW
    return cls(param_groups, lr=lr, betas=tuple(cfg.betas), eps=cfg.eps, fused=True,
               capturable=lr.device.type == "cuda")


class LearningRates:
    """The device lr tensors the optimizer's parameter groups read: the run's own (multiplier 1.0) and one per
    other stage multiplier, each written in place, and only when the value changes, so steps queue no extra
    kernel."""

    def __init__(self, value: float, device: torch.device) -> None:
        self.value = value
        self.tensors = {1.0: torch.tensor(value, device=device)}

    def tensor(self, multiplier: float) -> torch.Tensor:
        """The tensor a group with this lr multiplier reads (made on first use)."""
        if multiplier not in self.tensors:
            self.tensors[multiplier] = self.tensors[1.0] * multiplier
        return self.tensors[multiplier]

    def write(self, value: float) -> None:
        """Set the lr to `value` (its multiples in the scaled groups' tensors)."""
        if value != self.value:
            for multiplier, lr in self.tensors.items():
                lr.fill_(value * multiplier)
            self.value = value


def decay_exempt(model: nn.Module, decay_bn: bool) -> set[int]:
    """ids of the parameters kept out of weight decay: BN's scale/shift with `decay_bn=false`, and what
    shortcuts exempt themselves (the gates' with `gate_weight_decay=false`)."""
    bn = {id(p) for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters()}
    own = {id(p) for m in model.modules() if isinstance(m, Shortcut) for p in m.decay_exempt()}
    return own | (set() if decay_bn else bn)


def param_groups(model: nn.Module, cfg: Config, lrs: LearningRates) -> tuple[list[dict], list[float]]:
    """The trainable parameters per lr multiplier (`stage_lr_mult`), each split into decayed and exempt
    (`decay_exempt`) groups, each group reading its multiplier's lr tensor; and each group's multiplier."""
    exempt = decay_exempt(model, cfg.decay_bn)
    groups, multipliers = [], []
    for mult, params in transfer.trainable_by_multiplier(model, cfg.stage_lr_mult).items():
        decay = [p for p in params if id(p) not in exempt]
        rest = [p for p in params if id(p) in exempt]
        for part, weight_decay in ((decay, cfg.weight_decay), (rest, 0.0)):
            if part:
                groups.append({"params": part, "weight_decay": weight_decay, "lr": lrs.tensor(mult)})
                multipliers.append(mult)
    return groups, multipliers
