"""The state a training step changes: the net, its optimizer and the device lr tensors it reads, the
sampler, the run's own RNG streams and the loss/error meters. `state_dict()` is the checkpoint's training
part. The step (eager or CUDA graph, `step.py`) and the range test (`lr_find`) use its public methods only.

Everything a step touches lives on the device (uint8 images, the sampler's generator, the lr, the meters),
so steps never wait on the host; the meters are read at evaluations only.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..models import transfer
from ..models.resnet import ResNet, build, count_parameters
from ..models.shortcuts import Dropout, Shortcut
from . import datasets
from .config import Config, shortcut_keys
from .optim import LearningRates, lr_at, make_optimizer, param_groups
from .runtime import data_key, load_data
from .sampling import BufferedSampler, make_sampler


def build_network(cfg: Config, num_classes: int) -> ResNet:
    """The config's net (`arch`, depth, unit, shortcut and its parameters) from the registries."""
    params = {k: getattr(cfg, k) for k in shortcut_keys()}
    model = build(cfg.arch, cfg.depth, cfg.unit, cfg.shortcut, cfg.block, num_classes, cfg.downsample,
                  cfg.bn_momentum, cfg.groups, cfg.width_per_group, cfg.bn_batch, cfg.preact_shortcut_input, **params)
    for m in model.modules():
        if isinstance(m, Shortcut):
            m.residual_fp32 = cfg.residual_fp32
    return model


def precision_policy(precision: str, residual_fp32: bool = True) -> str:
    """What runs in which precision, for result.json."""
    if precision == "bf16" and not residual_fp32:
        return ("bf16 autocast for convolutions and BN (fp32 master weights); bf16 residual stream (residual_fp32="
                "false): merge and unit outputs rounded to bf16, gate conv and sigmoid in fp32; fp32 loss and probes")
    if precision == "bf16":
        return ("bf16 autocast for convolutions and BN (fp32 master weights); fp32 residual stream: merge, "
                "shortcut scaling, gate conv and sigmoid, dropout mask product, unit outputs; fp32 loss and probes")
    return "fp32 throughout"


class RunState:
    """One run's model, optimizer, lr tensors, sampler, RNG streams, meters and iteration."""

    def __init__(self, cfg: Config, data: datasets.Data, device: torch.device, precision: str) -> None:
        self.cfg, self.data, self.device, self.precision = cfg, data, device, precision
        torch.manual_seed(cfg.seed)
        model = build_network(cfg, data.num_classes)
        if cfg.init:
            transfer.load_init(model, cfg.init)
        self.frozen_bn = transfer.freeze(model, transfer.frozen_parts(cfg.freeze, len(model.stages)))
        self.parameters = count_parameters(model)
        self.model = model.to(device, memory_format=torch.channels_last)
        self.net = self.model  # what the training forward calls (`compile=true`: the compiled net)
        self.train_mode()
        self._rng = self._current_rng()  # the run's own dropout stream, continued from its seed
        self.lrs = LearningRates(lr_at(cfg, 0), device)
        groups, self.group_multipliers = param_groups(self.model, cfg, self.lrs)
        self.optimizer = make_optimizer(cfg, groups, self.lrs.tensor(1.0))
        self.sampler = make_sampler(len(data.train), cfg.batch_size, cfg.seed, device, cfg.augment, cfg.sampling)
        self.iteration, self.images = 0, 0  # images trained on since the meters were last read
        self.loss_sum = torch.zeros((), device=device)
        self.err_sum = torch.zeros((), device=device, dtype=torch.long)

    @property
    def runs(self) -> list[RunState]:
        """The runs a step of this part steps: this one (a wide pack's are K)."""
        return [self]

    def draws_random(self) -> bool:
        """Whether a training step draws random numbers inside the net (the dropout shortcut)."""
        return any(isinstance(m, (Dropout, nn.Dropout)) for m in self.model.modules())

    def train_mode(self) -> None:
        """Training mode, except the frozen parts' BN layers, which keep their running statistics (eval mode)."""
        self.model.train()
        for bn in self.frozen_bn:
            bn.eval()

    def _current_rng(self) -> dict:
        cuda = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        return {"cpu": torch.get_rng_state(), "cuda": cuda}

    def rng_state(self) -> dict:
        return self._rng

    def set_rng_state(self, state: dict) -> None:
        self._rng = state

    @contextlib.contextmanager
    def own_rng(self) -> Iterator[None]:
        """Run the block on this run's RNG streams (dropout), so packed runs draw as they would alone."""
        torch.set_rng_state(self._rng["cpu"])
        if self._rng["cuda"] is not None:
            torch.cuda.set_rng_state(self._rng["cuda"], self.device)
        try:
            yield
        finally:
            self._rng = self._current_rng()

    def autocast(self):
        # no weight-cast cache: a captured graph must recompute the casts from the updated fp32 weights
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16",
                              cache_enabled=False)

    def follow_schedule(self) -> None:
        """Write this iteration's lr (warm-up, schedule) into the tensors the optimizer reads."""
        self.set_lr(lr_at(self.cfg, self.iteration))

    def set_lr(self, value: float) -> None:
        """Train at `value` from the next step on (`stage_lr_mult` groups at its multiples)."""
        self.lrs.write(value)

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next augmented, normalised batch (channels_last) and its labels."""
        return self.augmented(*self.sampler.next())

    def device_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """`batch()` from the buffered draws at the device counter (sampling=buffered), with no host work: what a
        captured graph holds; the caller refills the buffer and counts the row (`BufferedSampler`)."""
        return self.augmented(*self.sampler.draw())

    def augmented(self, idx: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = datasets.augment(self.data.train.images[idx], offsets, flips, self.data)
        return x.contiguous(memory_format=torch.channels_last), self.data.train.labels[idx]

    def buffered(self) -> bool:
        """Whether the draws come from device buffers (sampling=buffered), so a graph can hold sampling."""
        return isinstance(self.sampler, BufferedSampler)

    def batch_shape(self) -> tuple[int, ...]:
        return (self.cfg.batch_size, *self.data.train.images.shape[1:])

    def label_shape(self) -> tuple[int, ...]:
        return (self.cfg.batch_size,)

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Forward, backward and update; loss and error sums stay on the device."""
        self.zero_grad()
        with self.autocast():
            out = self.net(x)
        loss = F.cross_entropy(out.float(), y)
        loss.backward()
        self.optimizer.step()
        self.loss_sum += loss.detach()
        self.err_sum += (out.argmax(1) != y).sum()

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def step(self) -> None:
        """One eager iteration at the lr already written: the next batch, on the run's own RNG streams."""
        with self.own_rng():
            self.train_step(*self.batch())

    def advance(self) -> None:
        """Count an iteration done (the step itself may have run inside a CUDA graph)."""
        self.iteration += 1
        self.images += self.cfg.batch_size

    def step_tensors(self) -> list[torch.Tensor]:
        """Every tensor a training step changes in place: weights, BN buffers, optimizer state, the meters."""
        tensors = [*self.model.parameters(), *self.model.buffers(), self.loss_sum, self.err_sum]
        if self.buffered():
            tensors.append(self.sampler.counter)
        for state in self.optimizer.state.values():
            tensors += [v for v in state.values() if torch.is_tensor(v)]
        return tensors

    def read_meters(self) -> tuple[float, float, int]:
        """(mean training loss per step, training error %, images) since the last read; then zero them."""
        images = max(self.images, 1)
        loss = self.loss_sum.item() / (images / self.cfg.batch_size)
        error = 100.0 * self.err_sum.item() / images
        self.loss_sum.zero_()
        self.err_sum.zero_()
        self.images = 0
        return loss, error, images

    def state_dict(self) -> dict:
        """The checkpoint's training part, each tensor a copy of its own (in a wide pack the run's tensors are
        views of the pack's, which torch.save would write whole)."""
        return {"iteration": self.iteration, "model": _own(self.model.state_dict()),
                "optimizer": _own(self.optimizer.state_dict()), "sampler": self.sampler.state_dict(), "rng": self._rng,
                "loss_sum": _own(self.loss_sum.cpu()), "err_sum": _own(self.err_sum.cpu()),
                "interval_images": self.images}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        for group, mult in zip(self.optimizer.param_groups, self.group_multipliers):  # keep the device lr tensors
            group["lr"] = self.lrs.tensor(mult)
        self.sampler.load_state_dict(state["sampler"])
        self._rng = state["rng"]
        self.iteration, self.images = state["iteration"], state["interval_images"]
        self.loss_sum.copy_(state["loss_sum"])
        self.err_sum.copy_(state["err_sum"])


def build_state(cfg: Config, device: torch.device, precision: str = "fp32",
                data: datasets.Data | None = None) -> RunState:
    """The one place a run's state is made (the trainer, lr_find, layer_responses, the tests): `cfg`'s net,
    optimizer, sampler and meters on `device`, training on `data` (packed runs share one copy) or, by default,
    on its data set loaded here."""
    if data is None:
        data = load_data([cfg], device)[data_key(cfg)]
    return RunState(cfg, data, device, precision)


def _own(tree):
    """`tree` with every tensor that is a view into a larger storage copied out (the rest kept as they are)."""
    if isinstance(tree, dict):
        return {k: _own(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_own(v) for v in tree]
    if torch.is_tensor(tree) and tree.untyped_storage().nbytes() > tree.numel() * tree.element_size():
        return tree.clone()
    return tree
