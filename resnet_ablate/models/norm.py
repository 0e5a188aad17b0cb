"""Ghost batch norm (`bn_batch=N`): training-mode BN statistics over consecutive groups of N images.

Both papers trained with 128 images on 2 GPUs, so each BN saw 64 images (2015: "a mini-batch size of 128
on two GPUs"; 2016: the same); resnet-1k-layers used batch 64 on 2 GPUs (README.md:62), 32 per BN. One BN
over the whole batch regularises less. A `GhostBatchNorm2d` normalises each group of `ghost` images with
that group's mean and biased variance, as a BN on one of k = batch / N devices would: one batch-norm call per
group (cuDNN's on a GPU), which also updates the running statistics.

Running statistics, one rule: the update each of the k per-device BNs would make, averaged, i.e. what k
BNs whose buffers are averaged after every step hold (the update is linear, so averaging after each step
equals this). With momentum m, per channel:

    running_mean <- (1 - m) running_mean + m * mean over groups of the group means   (= the batch mean)
    running_var  <- (1 - m) running_var  + m * mean over groups of the groups' unbiased variances

The batch-norm kernels apply it themselves, from the statistics of the pass that normalises (no second pass
over the input): group i of k updates the buffers with momentum a_i = m / (k - (k - 1 - i) m), which weighs
every group's statistics m / k and the old value 1 - m once all k have run (`group_momenta`). Everything has
static shapes and stays on the device (no host sync), so it runs inside a CUDA graph; the output has the
input's dtype, as BN.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GhostBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training-mode statistics are over groups of `ghost` consecutive images (0, or a
    batch of at most `ghost` images: one group, plain BN). Same parameters and buffers as BatchNorm2d."""

    def __init__(self, num_features: int, ghost: int, **kwargs) -> None:
        super().__init__(num_features, **kwargs)
        self.ghost = ghost

    @classmethod
    def from_bn(cls, bn: nn.BatchNorm2d, ghost: int) -> "GhostBatchNorm2d":
        """A ghost BN with `bn`'s settings and a copy of its parameters and buffers (build time, before an
        optimizer)."""
        new = cls(bn.num_features, ghost, eps=bn.eps, momentum=bn.momentum, affine=bn.affine,
                  track_running_stats=bn.track_running_stats)
        new.load_state_dict(bn.state_dict())
        new.train(bn.training)
        return new.to(bn.weight.device if bn.affine else bn.running_mean.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        if not self.training or not 0 < self.ghost < b:
            return super().forward(x)
        if b % self.ghost:
            raise ValueError(f"ghost batch norm: a batch of {b} images does not split into groups of {self.ghost}")
        track = self.track_running_stats
        if track:
            self.num_batches_tracked.add_(1)
        momenta = group_momenta(self.momentum, b // self.ghost)
        return torch.cat([F.batch_norm(part, self.running_mean if track else None, self.running_var if track else None,
                                       self.weight, self.bias, True, momentum, self.eps)
                          for part, momentum in zip(x.split(self.ghost), momenta)])


def group_momenta(momentum: float, k: int) -> list[float]:
    """The momentum of each of k groups' sequential in-kernel updates that makes them the one averaged update of
    the module docstring: a_i = m / (k - (k - 1 - i) m), so that prod(1 - a_i) = 1 - m and each group weighs m / k
    (`momentum` must be a number, as the package sets: None, BN's cumulative average, has no such schedule)."""
    return [momentum / (k - (k - 1 - i) * momentum) for i in range(k)]


def use_ghost_bn(model: nn.Module, ghost: int) -> nn.Module:
    """Replace every BatchNorm2d of `model` by a GhostBatchNorm2d of group size `ghost` (parameters and
    buffers kept, so state_dicts stay interchangeable); returns the model."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is nn.BatchNorm2d:
                setattr(module, name, GhostBatchNorm2d.from_bn(child, ghost))
    return model
