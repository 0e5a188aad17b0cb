"""Packing as one wide network (`pack_mode=wide`): K runs of one architecture in lockstep as one wide net
(`models/wide.py`) with one fused optimizer over its tensors, one batch of the K runs' images side by side and
a summed loss (each run's loss depends on its own tensors only, so each run's gradients are its own).

Each run keeps its own seed, initialisation, data order, augmentation, dropout masks and run folder: the wide
net is built from the runs' own nets, and then every tensor of a run (weights, BN buffers, optimizer state,
meters, sampling buffer) is a view of its slice of the pack's, so evaluation, probes and checkpoints work on
the run as when it trains alone, and a checkpoint holds the run's own state (it resumes alone or in another
pack). A run that diverges or finishes early stays in the pack, unwatched: every kernel computes each run's
slice from that run's slice only, so its NaNs never reach the others, and the others' shapes and kernels, hence
their numbers, do not change.

Reproducibility: a run in a wide pack equals the run alone to rounding (grouped convolutions and batched
matmuls sum in another order than the single ones); see the equality tests and bench/equality.py.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..models.wide import WideError, slice_of, widen
from ..packing import why_not_wide
from . import datasets, runtime
from .config import ENTRIES
from .optim import LearningRates, lr_at, make_optimizer
from .sampling import FIELDS, BufferedSampler, split
from .state import RunState


def why_not(runs: list[RunState]) -> str | None:
    """Why these runs cannot train as one wide net (`packing.why_not_wide`, and what their states tell), or None."""
    reason = why_not_wide([r.cfg for r in runs], ENTRIES)
    if reason is not None:
        return reason
    iterations = sorted({r.iteration for r in runs})
    if len(iterations) > 1:
        return f"they stand at different iterations ({', '.join(map(str, iterations))})"
    if runs[0].draws_random() and runs[0].cfg.cuda_graph and runtime.graph_device(runs[0].device):
        return ("the dropout shortcut draws each run's masks on the run's own RNG stream, which one CUDA graph "
                "cannot switch")
    return None


class WideSampler:
    """The pack's K buffered samplers as one: their buffers are views of `buffer` (steps, K, B, 4), their
    counters one device counter, so one step reads all K runs' draws with one gather."""

    def __init__(self, samplers: list[BufferedSampler]) -> None:
        self.samplers = samplers
        for s in samplers:  # every buffer refilled from its run's position, so that all stay aligned
            s.load_state_dict(s.state_dict())
        self.buffer = torch.stack([s.buffer for s in samplers], 1)
        self.counter = samplers[0].counter
        for k, s in enumerate(samplers):
            s.buffer, s.counter = self.buffer[:, k], self.counter

    def refill_if_due(self) -> None:
        for s in self.samplers:
            s.refill_if_due()

    def draw(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rows = self.buffer.index_select(0, self.counter.view(1)).view(-1, FIELDS)
        self.counter.add_(1)
        return split(rows)

    def count(self) -> None:
        for s in self.samplers:
            s.count()

    def next(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        self.refill_if_due()
        drawn = self.draw()
        self.count()
        return drawn


class EagerSamplers:
    """The pack's K samplers drawn one after the other (sampling=eager)."""

    def __init__(self, samplers: list) -> None:
        self.samplers = samplers

    def next(self) -> tuple[torch.Tensor, ...]:
        draws = [s.next() for s in self.samplers]
        return tuple(torch.cat(parts) for parts in zip(*draws))


class WidePack:
    """K runs as one wide net, with a run's step interface (`step.Part`, which `RunState` has too), so the eager
    loop and the CUDA graph step drive it as one run."""

    def __init__(self, runs: list[RunState]) -> None:
        first = runs[0]
        self.runs, self.k = runs, len(runs)
        self.cfg, self.device, self.data, self.precision = first.cfg, first.device, first.data, first.precision
        streams = [r.own_rng for r in runs] if first.draws_random() else None
        self.model, sources = widen([r.model for r in runs], streams)
        self.net = self.model
        for name, parts in sources.items():
            self._alias(name, parts)
        self.lrs = LearningRates(lr_at(self.cfg, self.iteration), self.device)
        self.optimizer = make_optimizer(self.cfg, self._groups(first), self.lrs.tensor(1.0))
        self._share_optimizer_state(sources)
        self.loss_sum = torch.stack([r.loss_sum for r in runs])
        self.err_sum = torch.stack([r.err_sum for r in runs])
        for k, r in enumerate(runs):
            r.loss_sum, r.err_sum = self.loss_sum[k], self.err_sum[k]
        samplers = [r.sampler for r in runs]
        self.sampler = WideSampler(samplers) if first.buffered() else EagerSamplers(samplers)

    @property
    def iteration(self) -> int:
        """The pack's iteration: its runs' (those still training are all at the latest)."""
        return max(r.iteration for r in self.runs)

    def _alias(self, name: str, parts: list[torch.Tensor]) -> None:
        """Make each run's tensor `name` a view of its slice of the wide one."""
        wide = self.model.get_parameter(name) if isinstance(parts[0], nn.Parameter) else self.model.get_buffer(name)
        for k, (run, part) in enumerate(zip(self.runs, parts)):
            view = slice_of(wide.detach(), k, self.k)
            if isinstance(part, nn.Parameter):
                part.data = view
            else:
                path, _, leaf = name.rpartition(".")
                setattr(run.model.get_submodule(path) if path else run.model, leaf, view)

    def _groups(self, first: RunState) -> list[dict]:
        """The first run's parameter groups (decay, exemptions, lr multipliers) over the wide tensors."""
        wide = dict(self.model.named_parameters())
        name_of = {id(p): n for n, p in first.model.named_parameters()}
        return [{"params": [wide[name_of[id(p)]] for p in g["params"]], "weight_decay": g["weight_decay"],
                 "lr": self.lrs.tensor(mult)} for g, mult in zip(first.optimizer.param_groups, first.group_multipliers)]

    def _share_optimizer_state(self, sources: dict[str, list[torch.Tensor]]) -> None:
        """Create the wide optimizer's state (zero: what a first step treats as none), fill it from the runs'
        (resumed runs have theirs), and make each run's state views of its slices."""
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        saved = [p.detach().clone() for p in params]
        for p in params:
            p.grad = torch.zeros_like(p)
        self.optimizer.step()
        with torch.no_grad():
            for p, value in zip(params, saved):
                p.copy_(value)
                p.grad = None
            for state in self.optimizer.state.values():
                for value in state.values():
                    if torch.is_tensor(value):
                        value.zero_()
            for name, wide in self.model.named_parameters():
                if wide not in self.optimizer.state:
                    continue
                for k, (run, part) in enumerate(zip(self.runs, sources[name])):
                    own = run.optimizer.state.get(part, {})
                    views = {key: slice_of(v, k, self.k) if torch.is_tensor(v) else v
                             for key, v in self.optimizer.state[wide].items()}
                    for key, view in views.items():
                        if key in own and torch.is_tensor(view):
                            view.copy_(own[key])
                    run.optimizer.state[part] = views

    # --- the step interface (`step.Part`) ---------------------------------------------------------------------
    def buffered(self) -> bool:
        return isinstance(self.sampler, WideSampler)

    def follow_schedule(self) -> None:
        self.lrs.write(lr_at(self.cfg, self.iteration))

    def autocast(self):
        return self.runs[0].autocast()

    @contextlib.contextmanager
    def own_rng(self) -> Iterator[None]:
        """Nothing to switch: the dropout shortcut switches to each run's stream for its mask."""
        yield

    def rng_state(self) -> list[dict]:
        return [r.rng_state() for r in self.runs]

    def set_rng_state(self, states: list[dict]) -> None:
        for r, state in zip(self.runs, states):
            r.set_rng_state(state)

    def batch_shape(self) -> tuple[int, ...]:
        b, c, h, w = self.runs[0].batch_shape()
        return b, self.k * c, h, w

    def label_shape(self) -> tuple[int, ...]:
        return self.cfg.batch_size, self.k

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The K runs' next batches side by side: images (B, K*3, H, W) channels_last, labels (B, K)."""
        return self.augmented(*self.sampler.next())

    def device_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.augmented(*self.sampler.draw())

    def augmented(self, idx: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """All K*B images augmented at once, then laid side by side as channels."""
        x = datasets.augment(self.data.train.images[idx], offsets, flips, self.data)
        k, b, (c, h, w) = self.k, self.cfg.batch_size, x.shape[1:]
        x = x.view(k, b, c, h, w).permute(1, 3, 4, 0, 2).reshape(b, h, w, k * c).permute(0, 3, 1, 2)
        return x, self.data.train.labels[idx].view(k, b).t()

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Forward, the sum of the K runs' mean losses, backward, one update; meters per run on the device."""
        self.zero_grad()
        with self.autocast():
            out = self.net(x)
        out = out.float().view(x.shape[0], self.k, -1)
        losses = F.cross_entropy(out.transpose(1, 2), y, reduction="none").mean(0)
        losses.sum().backward()
        self.optimizer.step()
        self.loss_sum += losses.detach()
        self.err_sum += (out.argmax(2) != y).sum(0)

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def step(self) -> None:
        self.train_step(*self.batch())

    def draws_random(self) -> bool:
        return self.runs[0].draws_random()

    def step_tensors(self) -> list[torch.Tensor]:
        tensors = [*self.model.parameters(), *self.model.buffers(), self.loss_sum, self.err_sum]
        for state in self.optimizer.state.values():
            tensors += [v for v in state.values() if torch.is_tensor(v)]
        return tensors + ([self.sampler.counter] if self.buffered() else [])


def wide_pack(runs: list[RunState]) -> tuple[WidePack | None, str | None]:
    """The runs as one wide pack, or None and why not (the caller says it and steps them as streams)."""
    reason = why_not(runs)
    if reason is None:
        try:
            return WidePack(runs), None
        except WideError as e:
            reason = f"the net holds {e}"
    return None, reason
