"""K nets of one architecture as one wide net, whose every kernel does the K nets' work.

The K nets' images lie side by side as channels, (B, K*3, H, W), and every layer keeps net k's channels in
the k-th block of its channels: a conv becomes a grouped conv (K times the groups, so block k sees only net k's
channels), a BN a BN over K*C channels (per-channel statistics: exactly each net's BN; ghost BN too, its groups
are over images), the classifier a batched matmul, the zero-pad shortcut pads each net's block, and the dropout
shortcut draws each net's mask on that net's own RNG stream with the shape it has alone. Everything else
(ReLU, pooling, the shortcuts' merges, the units' wiring) is channel-wise already and is kept as it is.

The wide net's tensors are the K nets' concatenated along their first dimension (0-dim tensors, such as BN's
`num_batches_tracked`, are shared); `widen` returns, for each of its tensors by name, the nets' tensors it was
made of, so that a caller can make each net's tensors views of its slice (`training/wide.py`).
"""
from __future__ import annotations

import copy
from typing import Callable, ContextManager

import torch
import torch.nn.functional as F
from torch import nn

from .norm import GhostBatchNorm2d
from .shortcuts import Dropout, ZeroPad


class WideError(ValueError):
    """A net that cannot be widened (a layer this module does not know, nets that differ)."""


class WideLinear(nn.Module):
    """K classifiers (in -> out each) as one batched matmul over inputs (B, K*in); weight (K*out, in)."""

    def __init__(self, k: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.k, self.in_features, self.out_features = k, in_features, out_features
        self.weight = nn.Parameter(torch.empty(k * out_features, in_features))
        self.bias = nn.Parameter(torch.empty(k * out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, n, c = self.k, self.out_features, self.in_features
        b = x.shape[0]  # autocast casts baddbmm's inputs as it casts linear's
        out = torch.baddbmm(self.bias.view(k, 1, n), x.view(b, k, c).transpose(0, 1), self.weight.view(k, n, c).mT)
        return out.transpose(0, 1).reshape(b, k * n)


class WideZeroPad(nn.Module):
    """`ZeroPad` (option A) for K nets side by side: subsample, then zero channels at the end of each net's block."""

    def __init__(self, k: int, pad: ZeroPad) -> None:
        super().__init__()
        self.k, self.stride, self.extra = k, pad.stride, pad.extra

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        b, kc, h, w = x.shape
        per_pixel = x.permute(0, 2, 3, 1).reshape(b, h, w, self.k, kc // self.k)
        padded = F.pad(per_pixel, (0, self.extra))
        return padded.reshape(b, h, w, -1).permute(0, 3, 1, 2)


class WideDropout(Dropout):
    """The dropout shortcut for K nets side by side: net k's mask drawn on `streams[k]` (its own RNG stream)
    with the shape and in the order it has alone, so the masks are the ones each net draws alone."""

    k: int  # set with `streams` when a Dropout becomes a WideDropout (`_widen_module`)
    streams: list[Callable[[], ContextManager]]

    def merge(self, s: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        blocks = []
        for block, stream in zip(s.chunk(self.k, 1), self.streams):
            with stream():
                blocks.append(F.dropout(block, self.p, self.training))
        s = torch.cat(blocks, 1)
        return (s if self.inverted else s * (1.0 - self.p)) + f


def _wide_conv(k: int, conv: nn.Conv2d) -> nn.Conv2d:
    if conv.padding_mode != "zeros":
        raise WideError(f"a conv with padding_mode={conv.padding_mode}")
    return nn.Conv2d(k * conv.in_channels, k * conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                     conv.dilation, k * conv.groups, conv.bias is not None)


def _wide_bn(k: int, bn: nn.BatchNorm2d) -> nn.BatchNorm2d:
    settings = dict(eps=bn.eps, momentum=bn.momentum, affine=bn.affine, track_running_stats=bn.track_running_stats)
    if isinstance(bn, GhostBatchNorm2d):
        return GhostBatchNorm2d(k * bn.num_features, bn.ghost, **settings)
    if type(bn) is not nn.BatchNorm2d:
        raise WideError(f"a {type(bn).__name__}")
    return nn.BatchNorm2d(k * bn.num_features, **settings)


def _widen_module(k: int, module: nn.Module, streams: list[Callable[[], ContextManager]] | None) -> nn.Module:
    """The wide counterpart of one module (its tensors still to fill), or the module itself where it has no
    tensors of its own (ReLU, pooling, shortcuts' merges, units: channel-wise, their children widened)."""
    if isinstance(module, nn.Conv2d):
        return _wide_conv(k, module)
    if isinstance(module, nn.BatchNorm2d):
        return _wide_bn(k, module)
    if isinstance(module, nn.Linear):
        return WideLinear(k, module.in_features, module.out_features)
    if isinstance(module, ZeroPad):
        return WideZeroPad(k, module)
    if isinstance(module, nn.Dropout):
        raise WideError("nn.Dropout")
    if isinstance(module, Dropout):
        if streams is None:
            raise WideError("a dropout shortcut without the nets' RNG streams")
        module.__class__ = WideDropout
        module.k, module.streams = k, streams
        return module
    if any(True for _ in module.parameters(recurse=False)) or any(True for _ in module.buffers(recurse=False)):
        raise WideError(f"a {type(module).__name__} with tensors of its own")
    return module


def _replace_children(k: int, module: nn.Module, streams) -> None:
    for name, child in list(module.named_children()):
        wide = _widen_module(k, child, streams)
        if wide is child:
            _replace_children(k, child, streams)
        else:
            setattr(module, name, wide)


def _stacked(tensors: list[torch.Tensor]) -> torch.Tensor:
    """The nets' tensors along their first dimension, in the first one's memory format (channels_last stays)."""
    if tensors[0].dim() == 0:
        return tensors[0].detach().clone()
    wide = torch.cat([t.detach() for t in tensors])
    if wide.dim() == 4 and tensors[0].is_contiguous(memory_format=torch.channels_last):
        wide = wide.contiguous(memory_format=torch.channels_last)
    return wide


def widen(nets: list[nn.Module], streams: list[Callable[[], ContextManager]] | None = None
          ) -> tuple[nn.Module, dict[str, list[torch.Tensor]]]:
    """The wide net of `nets` (same architecture, same settings; they may differ in their tensors only) on their
    device, and for each of its parameters and buffers by name the nets' tensors it holds. `streams[k]` runs
    a block on net k's RNG stream (needed for the dropout shortcut). Raises WideError for what it cannot widen."""
    k, first = len(nets), nets[0]
    shapes = [[(n, tuple(t.shape)) for n, t in net.state_dict().items()] for net in nets]
    if any(s != shapes[0] for s in shapes):
        raise WideError("nets of different shapes")
    wide = copy.deepcopy(first)
    _replace_children(k, wide, streams)
    sources = {}
    with torch.no_grad():
        for name, tensor in [*wide.named_parameters(), *wide.named_buffers()]:
            parts = [net.get_parameter(name) if isinstance(tensor, nn.Parameter) else net.get_buffer(name)
                     for net in nets]
            stacked = _stacked(parts)
            if tuple(tensor.shape) != tuple(stacked.shape):
                raise WideError(f"{name}: {tuple(tensor.shape)} in the wide net, {tuple(stacked.shape)} stacked")
            owner, leaf = _owner(wide, name)
            if isinstance(tensor, nn.Parameter):
                setattr(owner, leaf, nn.Parameter(stacked, requires_grad=parts[0].requires_grad))
            else:
                setattr(owner, leaf, stacked)
            sources[name] = parts
    wide.train(first.training)
    return wide, sources


def _owner(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    path, _, leaf = name.rpartition(".")
    return (model.get_submodule(path) if path else model), leaf


def slice_of(wide: torch.Tensor, k: int, parts: int) -> torch.Tensor:
    """Net k's view of a wide tensor of `parts` nets (the tensor itself where it is shared, 0-dim)."""
    if wide.dim() == 0:
        return wide
    size = wide.shape[0] // parts
    return wide[k * size:(k + 1) * size]
