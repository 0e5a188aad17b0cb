"""Residual-unit variants of "Identity Mappings in Deep Residual Networks" (He et al. 2016, Fig. 4, Table 2).

A unit is a body of convolutions (basic: two 3x3; bottleneck: 1x1, 3x3, 1x1 with 4x expansion) with
BN-ReLU between them, and a shortcut that merges the input with the body's output. The variants
differ only in where BN and ReLU sit around that: `pre` (before the first conv), `last` (after the
last conv, before the merge) and `post` (after the merge). A new variant is one registered subclass
that sets these three (and declares `channelwise=True` at registration, as these do: it packs as one wide net).
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from ..errors import UsageError, unknown
from ..registry import Registry
from .shortcuts import Shortcut

UNITS: Registry[type["ResidualUnit"]] = Registry("unit", capabilities={
    "channelwise": "its wiring works channel by channel: it mixes channels only inside its convolutions and BN, "
                   "which a wide net makes grouped (pack_mode=wide)"})
PREACT_INPUTS = ("raw", "shared")
BLOCKS = ("basic", "bottleneck")
EXPANSION = {"basic": 1, "bottleneck": 4}


def activation(ops: tuple[str, ...], channels: int) -> nn.Module:
    """A BN/ReLU sequence from names, e.g. ('bn', 'relu'); empty gives Identity."""
    layers = [nn.BatchNorm2d(channels) if op == "bn" else nn.ReLU(inplace=False) for op in ops]
    return nn.Sequential(*layers) if layers else nn.Identity()


def check_body(block: str, groups: int = 1, width_per_group: int = 64) -> None:
    """One-line UsageError unless the ResNeXt parameters fit the body: basic bodies take only the
    defaults (as torchvision's BasicBlock), bottleneck bodies need positive values."""
    if block == "basic" and (groups, width_per_group) != (1, 64):
        raise UsageError(f"groups={groups} width_per_group={width_per_group} need bottleneck units; "
                         "basic units take only groups=1 width_per_group=64")
    if groups < 1 or width_per_group < 1:
        raise UsageError(f"groups={groups} and width_per_group={width_per_group} must be >= 1")


def body_convs(
    block: str, in_ch: int, out_ch: int, stride: int,
    groups: int = 1, width_per_group: int = 64, stride_on_3x3: bool = False,
) -> list[nn.Conv2d]:
    """The convolutions of a basic or bottleneck body.

    The stride sits on the first conv by default (the papers' Torch code, used by the CIFAR nets);
    `stride_on_3x3` moves it to the bottleneck's 3x3 conv, as torchvision's ResNet v1.5 (the ImageNet
    nets). The bottleneck's 3x3 is grouped (ResNeXt cardinality `groups`) and its width is
    int(planes * width_per_group / 64) * groups with planes = out_ch / 4, as in torchvision: the
    defaults give out_ch / 4, the plain ResNet bottleneck.
    """
    check_body(block, groups, width_per_group)
    if block == "basic":
        return [nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False), nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)]
    planes = out_ch // EXPANSION["bottleneck"]
    mid = planes * width_per_group // 64 * groups
    if mid == 0:
        raise UsageError(f"width_per_group={width_per_group} leaves no channels for {planes} planes; "
                         f"need planes * width_per_group >= 64")
    first, middle = (1, stride) if stride_on_3x3 else (stride, 1)
    return [
        nn.Conv2d(in_ch, mid, 1, first, 0, bias=False),
        nn.Conv2d(mid, mid, 3, middle, 1, groups=groups, bias=False),
        nn.Conv2d(mid, out_ch, 1, 1, 0, bias=False),
    ]


class ResidualUnit(nn.Module):
    """x_{l+1} = post( h(x_l) (+) last(F(pre(x_l))) ), F = conv (BN ReLU conv)*.

    At units that change the shape, pre-activation variants feed the shared pre-activation to a
    convolutional shortcut (the 2016 code: BN-ReLU before splitting); `first=True` drops `pre`
    because the stem already ends in BN-ReLU (the paper's rule for the first unit). `shortcut` is a
    shortcut class with its parameters bound (`bind_shortcut`); `body` holds `body_convs`' options
    (groups, width_per_group, stride_on_3x3).
    """

    pre: tuple[str, ...] = ()
    last: tuple[str, ...] = ()
    post: tuple[str, ...] = ()

    def __init__(
        self,
        block: str,
        in_ch: int,
        out_ch: int,
        stride: int,
        shortcut: Callable[..., Shortcut],
        downsample: str,
        first: bool = False,
        **body: Any,
    ) -> None:
        super().__init__()
        convs = body_convs(block, in_ch, out_ch, stride, **body)
        self.pre_act = nn.Identity() if first else activation(self.pre, in_ch)
        layers: list[nn.Module] = []
        for conv in convs[:-1]:
            layers += [conv, nn.BatchNorm2d(conv.out_channels), nn.ReLU(inplace=False)]
        layers += [convs[-1], activation(self.last, out_ch)]
        self.body = nn.Sequential(*layers)
        self.shortcut = shortcut(in_ch, out_ch, stride, downsample, not self.is_preact())
        self.reshapes = in_ch != out_ch or stride != 1
        self.feed_shortcut("raw")
        self.post_act = activation(self.post, out_ch)

    def feed_shortcut(self, preact_input: str) -> None:
        """What the shortcut reads where the shape changes in a pre-activation unit. A convolutional shortcut
        always reads the shared BN-ReLU (the 2016 code). A zero-pad (option A) shortcut reads x itself with
        `raw` (the package's default) or the shared BN-ReLU with `shared`, as fb.resnet.torch's preresnet.lua
        (lines 65-67 and 118-120: a stage's first unit is 'both_preact', BN-ReLU before the split)."""
        if preact_input not in PREACT_INPUTS:
            raise unknown("preact_shortcut_input", preact_input, PREACT_INPUTS)
        self.shared_preact = self.reshapes and self.is_preact() and (
            self.shortcut.convolves() or preact_input == "shared")

    @classmethod
    def is_preact(cls) -> bool:
        return bool(cls.pre)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.pre_act(x)
        s = a if self.shared_preact else x
        return self.post_act(self.shortcut(s, self.body(a)))


@UNITS.register("original", channelwise=True)
class Original(ResidualUnit):
    """Fig. 4(a), the 2015 unit: conv-BN-ReLU-conv-BN, add, ReLU."""

    last = ("bn",)
    post = ("relu",)


@UNITS.register("bn_after_add", channelwise=True)
class BNAfterAddition(ResidualUnit):
    """Fig. 4(b): conv-BN-ReLU-conv, add, BN-ReLU (BN alters the shortcut signal)."""

    post = ("bn", "relu")


@UNITS.register("relu_before_add", channelwise=True)
class ReLUBeforeAddition(ResidualUnit):
    """Fig. 4(c): conv-BN-ReLU-conv-BN-ReLU, add (the residual can only be non-negative)."""

    last = ("bn", "relu")


@UNITS.register("relu_preact", channelwise=True)
class ReLUPreactivation(ResidualUnit):
    """Fig. 4(d): ReLU-conv-BN-ReLU-conv-BN, add (ReLU-only pre-activation)."""

    pre = ("relu",)
    last = ("bn",)


@UNITS.register("full_preact", channelwise=True)
class FullPreactivation(ResidualUnit):
    """Fig. 4(e): BN-ReLU-conv-BN-ReLU-conv, add (full pre-activation, a clean identity path)."""

    pre = ("bn", "relu")


@UNITS.register("no_relu_after_add", channelwise=True)
class NoReLUAfterAddition(ResidualUnit):
    """The original unit without its ReLU after the addition: conv-BN-ReLU-conv-BN, add. A Highway network's
    merge (nothing after the gated sum); the 2025 re-run of Table 1's gating in ablations/open_questions.yaml."""

    last = ("bn",)
