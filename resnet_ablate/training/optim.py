"""The recipe's optimizer (`optim=`) and learning-rate schedule (`schedule=`), each chosen by name from a
registry as a shortcut is, and the parameter groups and lr tensors the optimizer reads.

An entry's keyword-only parameters (each with a default) are its config keys, declared as a shortcut's are
(`param_help`, `param_range`, `param_choices`); keys of an entry that is not in use are ignored with a note.
A new optimizer is one registered subclass of `Optimizer` (`build` makes the torch optimizer), declaring at
registration what the fast paths rely on (`elementwise`, `zero_state`, `capturable`: an optimizer that declares
none steps its runs alone and eagerly); a new schedule one of `Schedule` (`lr` of an iteration after warm-up). The lr is
a pure function of the iteration (so resuming needs no scheduler state), and the optimizers are fused and read a device
lr tensor (so a captured CUDA graph holds the whole update and still sees schedule changes).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..errors import UsageError
from ..models import transfer
from ..models.shortcuts import Shortcut
from ..registry import Keyed, KeyedRegistry
from ..values import override_text

if TYPE_CHECKING:
    from .config import Config

OPTIMIZERS = KeyedRegistry("optimizer", capabilities={
    "elementwise": "its update of each element reads that element's gradient and state only (no norm, mean or "
                   "sort over a tensor), so one optimizer over K runs' tensors side by side updates each run as its "
                   "own (pack_mode=wide)",
    "zero_state": "its fresh state is zeros, which its first step treats as no state (momentum 0.9*0 + g = g), so "
                  "zeroing undoes a graph capture's warm-up and makes a wide pack's state",
    "capturable": "its step can be captured in a CUDA graph: no host synchronisation, counters on the device "
                  "(capturable=True on CUDA)"})
SCHEDULES = KeyedRegistry("schedule")


class Optimizer(Keyed):
    """An optimizer entry, made from its keys' values: `check` refuses settings it cannot train with, `build`
    makes the torch optimizer."""

    def check(self, cfg: Config) -> None:
        """One-line UsageError for settings this optimizer cannot train with (none by default)."""

    def build(self, groups: list[dict], lr: torch.Tensor) -> torch.optim.Optimizer:
        """The torch optimizer over `groups` (each with its lr tensor and weight decay); `lr` is the run's lr
        tensor, on the run's device."""
        raise NotImplementedError


class Schedule(Keyed):
    """A learning-rate schedule entry, made from its keys' values: `lr` after warm-up, `check` refuses
    settings it cannot follow."""

    def check(self, cfg: Config) -> None:
        """One-line UsageError for settings this schedule cannot follow (none by default)."""

    def lr(self, cfg: Config, iteration: int) -> float:
        """The lr of 0-based `iteration`, at or after the end of warm-up."""
        raise NotImplementedError


@OPTIMIZERS.register("sgd", elementwise=True, zero_state=True, capturable=True)
class SGD(Optimizer):
    """SGD with momentum (the papers), fused."""

    param_help = {"momentum": "SGD momentum",
                  "nesterov": "Nesterov momentum (fb.resnet.torch train.lua:24; the papers: not stated, plain "
                              "momentum)"}
    param_range = {"momentum": "[0, 1)"}

    def __init__(self, *, momentum: float = 0.9, nesterov: bool = False) -> None:
        self.momentum, self.nesterov = momentum, nesterov

    def check(self, cfg: Config) -> None:
        if self.nesterov and self.momentum <= 0:
            raise UsageError("nesterov=true needs momentum > 0")

    def build(self, groups: list[dict], lr: torch.Tensor) -> torch.optim.Optimizer:
        return torch.optim.SGD(groups, lr=lr, momentum=self.momentum, nesterov=self.nesterov, fused=True)


class _AdamFamily(Optimizer):
    """Adam and AdamW share their keys. Fused; their step counts live on the device only with
    `capturable=True`, which a captured CUDA graph needs (torch's capture health check raises otherwise, and the
    pack would fall back to eager): set on CUDA."""

    param_help = {"betas": "moment decay rates", "eps": "denominator epsilon"}
    param_range = {"eps": "(0, inf)"}

    def __init__(self, *, betas: list[float] = [0.9, 0.999], eps: float = 1e-8) -> None:  # noqa: B006 (read only)
        self.betas, self.eps = betas, eps

    def check(self, cfg: Config) -> None:
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise UsageError(f"betas={override_text(self.betas)} must be two numbers in [0, 1)")

    def make(self, cls: type[torch.optim.Optimizer], groups: list[dict], lr: torch.Tensor) -> torch.optim.Optimizer:
        return cls(groups, lr=lr, betas=tuple(self.betas), eps=self.eps, fused=True,
                   capturable=lr.device.type == "cuda")


@OPTIMIZERS.register("adam", elementwise=True, zero_state=True, capturable=True)
class Adam(_AdamFamily):
    """Adam, fused."""

    def build(self, groups: list[dict], lr: torch.Tensor) -> torch.optim.Optimizer:
        return self.make(torch.optim.Adam, groups, lr)


@OPTIMIZERS.register("adamw", elementwise=True, zero_state=True, capturable=True)
class AdamW(_AdamFamily):
    """AdamW: Adam with decoupled weight decay, fused."""

    def build(self, groups: list[dict], lr: torch.Tensor) -> torch.optim.Optimizer:
        return self.make(torch.optim.AdamW, groups, lr)


@SCHEDULES.register("step")
class Step(Schedule):
    """/10 at each of the milestones (the papers)."""

    def check(self, cfg: Config) -> None:
        """Every milestone inside the run (one beyond it would never drop the lr)."""
        late = [m for m in cfg.milestones if m >= cfg.iterations]
        if late:
            half, three_quarters = cfg.iterations // 2, cfg.iterations * 3 // 4
            scaled = f"milestones=[{half},{three_quarters}] (the papers' 1/2 and 3/4 of the run) or " \
                if 0 < half < three_quarters else ""
            raise UsageError(f"milestones={override_text(cfg.milestones)} reach past iterations={cfg.iterations}, so "
                             f"the lr would never drop at {', '.join(map(str, late))}; set {scaled}milestones=[] for a "
                             f"constant lr")

    def lr(self, cfg: Config, iteration: int) -> float:
        return cfg.lr * 0.1 ** sum(iteration >= m for m in cfg.milestones)


@SCHEDULES.register("cosine")
class Cosine(Schedule):
    """to 0 at the end, as PyTorch's CosineAnnealingLR over the iterations after warm-up."""

    def lr(self, cfg: Config, iteration: int) -> float:
        t, steps = _after_warmup(cfg, iteration)
        return _anneal(cfg.lr, 0.0, t / steps)


@SCHEDULES.register("onecycle")
class OneCycle(Schedule):
    """PyTorch's OneCycleLR with its defaults over the iterations after warm-up: from lr/25 up to lr, down to
    lr/25e4."""

    param_help = {"onecycle_pct": "fraction of the schedule spent rising to lr"}
    param_range = {"onecycle_pct": "(0, 1)"}

    def __init__(self, *, onecycle_pct: float = 0.3) -> None:
        self.pct = onecycle_pct

    def lr(self, cfg: Config, iteration: int) -> float:
        t, steps = _after_warmup(cfg, iteration)
        peak, low = self.pct * steps - 1, cfg.lr / 25
        if t <= peak:
            return _anneal(low, cfg.lr, t / peak)
        return _anneal(cfg.lr, low / 1e4, (t - peak) / (steps - 1 - peak))


def _after_warmup(cfg: Config, iteration: int) -> tuple[int, int]:
    """(iterations since warm-up, iterations after warm-up)."""
    return iteration - cfg.warmup_iters, cfg.iterations - cfg.warmup_iters


def _anneal(start: float, end: float, fraction: float) -> float:
    return end + (start - end) / 2 * (math.cos(math.pi * fraction) + 1)


def optimizer_of(cfg: Config) -> Optimizer:
    """The config's optimizer entry, made from its keys' values."""
    return OPTIMIZERS.bind(cfg.optim, vars(cfg))()


def schedule_of(cfg: Config) -> Schedule:
    """The config's schedule entry, made from its keys' values."""
    return SCHEDULES.bind(cfg.schedule, vars(cfg))()


def lr_at(cfg: Config, iteration: int) -> float:
    """The lr of 0-based `iteration`: warm-up, then the schedule."""
    if iteration < cfg.warmup_iters:
        return cfg.warmup_lr
    return schedule_of(cfg).lr(cfg, iteration)


def make_optimizer(cfg: Config, param_groups: list[dict], lr: torch.Tensor) -> torch.optim.Optimizer:
    """The configured optimizer, its groups reading their lr tensors."""
    return optimizer_of(cfg).build(param_groups, lr)


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
