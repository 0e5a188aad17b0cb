"""Ghost batch norm (`bn_batch=N`): training-mode BN statistics over consecutive groups of N images.

Both papers trained with 128 images on 2 GPUs, so each BN saw 64 images (2015: "a mini-batch size of 128
on two GPUs"; 2016: the same); resnet-1k-layers used batch 64 on 2 GPUs (README.md:62), 32 per BN. One BN
over the whole batch regularises less. A `GhostBatchNorm2d` normalises each group of `ghost` images with
that group's mean and biased variance, as a BN on one of k = batch / N devices would: one batch-norm call per
group (cuDNN's on a GPU), with no running statistics of its own.

Running statistics, one rule: the update each of the k per-device BNs would make, averaged, i.e. what k
BNs whose buffers are averaged after every step hold (the update is linear, so averaging after each step
equals this). With momentum m, per channel:

    running_mean <- (1 - m) running_mean + m * mean over groups of the group means   (= the batch mean)
    running_var  <- (1 - m) running_var  + m * mean over groups of the groups' unbiased variances

computed from one fp32 reduction over the groups, outside autograd. Everything has static shapes and stays on
the device (no host sync), so it runs inside a CUDA graph; the output has the input's dtype, as BN.
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
        """A ghost BN with `bn`'s settings and a copy of its parameters and buffers (build time, before an optimizer)."""
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
        if self.track_running_stats:
            self._track(x)
        return torch.cat([F.batch_norm(part, None, None, self.weight, self.bias, True, 0.0, self.eps)
                          for part in x.split(self.ghost)])

    @torch.no_grad()
    def _track(self, x: torch.Tensor) -> None:
        """The running-statistics rule of the module docstring (`momentum` must be a number, as the package sets)."""
        b, c = x.shape[:2]
        groups = x.to(self.running_mean.dtype).reshape(b // self.ghost, self.ghost, c, *x.shape[2:])
        var, mean = torch.var_mean(groups, dim=(1, 3, 4), correction=0)
        per_group = self.ghost * x.shape[2] * x.shape[3]
        self.num_batches_tracked.add_(1)
        self.running_mean.lerp_(mean.mean(0), self.momentum)
        self.running_var.lerp_((var * (per_group / max(per_group - 1, 1))).mean(0), self.momentum)


def use_ghost_bn(model: nn.Module, ghost: int) -> nn.Module:
    """Replace every BatchNorm2d of `model` by a GhostBatchNorm2d of group size `ghost` (parameters and
    buffers kept, so state_dicts stay interchangeable); returns the model."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is nn.BatchNorm2d:
                setattr(module, name, GhostBatchNorm2d.from_bn(child, ghost))
    return model
