"""Sampling inside the step (`sampling=buffered`): the run's `Sampler` is run ahead, one epoch's batches at a
time, into a device buffer of (index, crop row, crop column, flip) per image, and a step reads the row of a
device step counter and moves the counter on. A captured CUDA graph then holds sampling and augmentation too:
a replay needs no eager kernel and no host work, except a refill once an epoch (between replays).

The draws are today's exactly: the buffer is filled by calling the same `Sampler.next()` in the same order
(its generator interleaves each batch's crop and flip draws with a new permutation at an epoch's end, which a
precomputation must keep). The checkpoint holds the `Sampler` state as of the batches consumed, as if it had
drawn them one by one, so a run resumes with either sampling, in any pack.
"""
from __future__ import annotations

import math

import torch

from .datasets import Sampler

FIELDS = 4  # index, crop row offset, crop column offset, flip


class BufferedSampler:
    """A `Sampler` drawn ahead into `buffer` (steps, batch, 4); `counter` (a device scalar) is the next row.
    `next()` is the eager interface of `Sampler`; a graph captures `draw()` and calls `refill_if_due()` before
    and `count()` after each replay."""

    def __init__(self, sampler: Sampler, steps: int | None = None) -> None:
        self.sampler = sampler
        self.steps = steps or max(1, math.ceil(sampler.n / sampler.batch_size))  # about an epoch
        self.buffer = torch.zeros(self.steps, sampler.batch_size, FIELDS, dtype=torch.long, device=sampler.device)
        self.counter = torch.zeros((), dtype=torch.long, device=sampler.device)
        self.start: dict = {}  # the Sampler's state at the buffer's first row (set by a refill)
        self.used = self.steps  # rows consumed: the buffer is filled before the first step

    @property
    def batch_size(self) -> int:
        return self.sampler.batch_size

    def due(self) -> bool:
        return self.used == self.steps

    def refill_if_due(self) -> None:
        """Fill the buffer with the next `steps` batches and reset the counter, when every row is consumed."""
        if self.due():
            self.start = self._mark()
            rows = [torch.cat([idx[:, None], offsets, flips[:, None].long()], 1) for idx, offsets, flips in
                    (self.sampler.next() for _ in range(self.steps))]
            self.buffer.copy_(torch.stack(rows))
            self.counter.zero_()
            self.used = 0

    def draw(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Indices (B,), crop offsets (B, 2) and flips (B,) at the counter, and the counter moved on: device
        work only, as a captured graph holds it."""
        rows = self.buffer.index_select(0, self.counter.view(1)).view(-1, FIELDS)
        self.counter.add_(1)
        return split(rows)

    def count(self) -> None:
        """The host's record of one row consumed (after a replay that drew it)."""
        self.used += 1

    def next(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The next batch's draws, as `Sampler.next()` gives them."""
        self.refill_if_due()
        drawn = self.draw()
        self.count()
        return drawn

    def state_dict(self) -> dict:
        """The `Sampler` state after the rows consumed: the sampler's own when every row is (it drew them all),
        else replayed from the buffer's start on a scratch sampler."""
        if self.due():
            return self.sampler.state_dict()
        scratch = Sampler(self.sampler.n, self.sampler.batch_size, 0, self.sampler.device, self.sampler.augment)
        scratch.load_state_dict(self.start)
        for _ in range(self.used):
            scratch.next()
        return scratch.state_dict()

    def load_state_dict(self, state: dict) -> None:
        """Continue from a `Sampler` state: the buffer is refilled from it before the next step."""
        self.sampler.load_state_dict(state)
        self.used = self.steps

    def _mark(self) -> dict:
        """The Sampler's state without a device-to-host copy (its permutation is replaced, never changed)."""
        return {"generator": self.sampler.generator.get_state(), "order": self.sampler.order, "pos": self.sampler.pos}


def split(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Buffer rows (N, 4) as indices (N,), crop offsets (N, 2) and flips (N,)."""
    return rows[:, 0], rows[:, 1:3], rows[:, 3].bool()


def make_sampler(n: int, batch_size: int, seed: int, device: torch.device, augment: bool,
                 sampling: str) -> Sampler | BufferedSampler:
    """The run's training stream: `Sampler` (sampling=eager) or the same draws buffered (sampling=buffered)."""
    sampler = Sampler(n, batch_size, seed, device, augment)
    return BufferedSampler(sampler) if sampling == "buffered" else sampler
