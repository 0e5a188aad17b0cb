"""CIFAR ResNets and plain nets of the 2015 and 2016 papers (`arch=cifar`).

3x3 conv stem (16 filters, BN, ReLU), three stages of n units on 32/16/8 maps, global average pool,
linear classifier, He init. Basic units: depth 6n+2, 16/32/64 channels. Bottleneck units: depth 9n+2,
64/128/256 out (16/32/64 inside). Pre-activation units end the net with their own activation (the
paper's extra BN-ReLU before pooling).
"""
from __future__ import annotations

from typing import Any, Callable

from torch import nn

from ..errors import UsageError, unknown
from .resnet import ARCHS, Arch, ResNet, build
from .shortcuts import Shortcut
from .units import BLOCKS, EXPANSION, ResidualUnit

STAGE_WIDTHS = (16, 32, 64)
LAYERS_PER_UNIT = {"basic": 2, "bottleneck": 3}
PAPER_DEPTHS = {"basic": (20, 32, 44, 56, 110, 1202), "bottleneck": (164, 1001)}
DOWNSAMPLES = ("zeropad", "conv1x1")


def fits(depth: int, block: str) -> bool:
    """Whether `depth` is 6n+2 (basic) or 9n+2 (bottleneck) for some n >= 1."""
    per_stage = 3 * LAYERS_PER_UNIT[block]
    return depth > 2 and (depth - 2) % per_stage == 0


def resolve_block(depth: int, block: str = "auto") -> str:
    """The papers' choice for `auto`: bottleneck above 110 where 9n+2 fits (164, 1001) or where only
    9n+2 fits; basic otherwise (20...110, 1202). Raises a one-line UsageError for a misfit depth."""
    if block == "auto":
        bottleneck = fits(depth, "bottleneck") and (depth > 110 or not fits(depth, "basic"))
        block = "bottleneck" if bottleneck else "basic"
        if not fits(depth, block):
            raise UsageError(
                f"depth {depth} is neither 6n+2 (basic units: e.g. {', '.join(map(str, PAPER_DEPTHS['basic']))}) "
                f"nor 9n+2 (bottleneck units: e.g. {', '.join(map(str, PAPER_DEPTHS['bottleneck']))})"
            )
    if block not in BLOCKS:
        raise unknown("block", block, ["auto", *BLOCKS])
    if not fits(depth, block):
        rule = "6n+2" if block == "basic" else "9n+2"
        raise UsageError(f"depth {depth} is not {rule} for block={block} (n >= 1); e.g. {PAPER_DEPTHS[block]}")
    return block


def resolve_downsample(block: str, downsample: str = "auto") -> str:
    """`auto`: option A zero-padding for basic nets (2015), 1x1 projection for bottleneck nets (2016)."""
    if downsample == "auto":
        return "zeropad" if block == "basic" else "conv1x1"
    if downsample not in DOWNSAMPLES:
        raise unknown("downsample", downsample, ["auto", *DOWNSAMPLES])
    return downsample


class CifarResNet(ResNet):
    """3x3 conv stem (16 filters), three stages of n units on 32/16/8 maps."""

    def __init__(self, depth: int, unit: type[ResidualUnit], shortcut: Callable[..., Shortcut], block: str,
                 num_classes: int, downsample: str, groups: int = 1, width_per_group: int = 64) -> None:
        n = (depth - 2) // (3 * LAYERS_PER_UNIT[block])
        stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        plan = [(width * EXPANSION[block], n, 1 if i == 0 else 2) for i, width in enumerate(STAGE_WIDTHS)]
        super().__init__(stem, 16, plan, unit, shortcut, block, num_classes, downsample, groups=groups,
                         width_per_group=width_per_group)


ARCHS.register("cifar")(Arch(CifarResNet, resolve_block, resolve_downsample, stages=3, num_classes=10))


def build_model(depth: int, *args: Any, **kwargs: Any) -> ResNet:
    """A CIFAR ResNet (or plain net, `shortcut='none'`): `build('cifar', depth, ...)`."""
    return build("cifar", depth, *args, **kwargs)
