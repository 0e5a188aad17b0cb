"""CIFAR ResNets and plain nets of the 2015 and 2016 papers, built from the unit and shortcut registries.

3x3 conv stem (16 filters, BN, ReLU), three stages of n units on 32/16/8 maps, global average pool,
linear classifier, He init. Basic units: depth 6n+2, 16/32/64 channels. Bottleneck units: depth 9n+2,
64/128/256 out (16/32/64 inside). Pre-activation units end the net with their own activation (the
paper's extra BN-ReLU before pooling). The skeleton (`ResNet`) is shared with the ImageNet-style
nets of `imagenet.py`.
"""
from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from .registry import UsageError
from .shortcuts import SHORTCUTS, Shortcut
from .units import BLOCKS, EXPANSION, UNITS, ResidualUnit, activation, check_body

STAGE_WIDTHS = (16, 32, 64)
LAYERS_PER_UNIT = {"basic": 2, "bottleneck": 3}
PAPER_DEPTHS = {"basic": (20, 32, 44, 56, 110, 1202), "bottleneck": (164, 1001)}


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
        raise UsageError(f"unknown block '{block}'; allowed: auto, {', '.join(BLOCKS)}")
    if not fits(depth, block):
        rule = "6n+2" if block == "basic" else "9n+2"
        raise UsageError(f"depth {depth} is not {rule} for block={block} (n >= 1); e.g. {PAPER_DEPTHS[block]}")
    return block


def resolve_downsample(block: str, downsample: str = "auto") -> str:
    """`auto`: option A zero-padding for basic nets (2015), 1x1 projection for bottleneck nets (2016)."""
    if downsample == "auto":
        return "zeropad" if block == "basic" else "conv1x1"
    if downsample not in ("zeropad", "conv1x1"):
        raise UsageError(f"unknown downsample '{downsample}'; allowed: auto, zeropad, conv1x1")
    return downsample


def shortcut_parameters(cls: type[Shortcut]) -> dict[str, Any]:
    """The keyword parameters a shortcut class takes, with their defaults."""
    sig = inspect.signature(cls.__init__)
    return {n: p.default for n, p in sig.parameters.items() if p.kind is p.KEYWORD_ONLY}


class ResNet(nn.Module):
    """Stem, stages of residual units, final activation (pre-act nets), pool, classifier, He init.

    Shared by the CIFAR and the ImageNet nets, which differ only in the stem and the stage plan:
    one (out_ch, units, stride) per stage; the first unit of a stage carries its stride, and the net's
    first unit takes its activation from the stem. `body` is passed to every unit (see `body_convs`).
    """

    def __init__(
        self,
        stem: nn.Sequential,
        stem_ch: int,
        plan: list[tuple[int, int, int]],
        unit: type[ResidualUnit],
        shortcut: type[Shortcut],
        block: str,
        num_classes: int,
        downsample: str,
        shortcut_params: dict[str, Any],
        **body: Any,
    ) -> None:
        super().__init__()
        self.stem = stem
        in_ch, stages = stem_ch, []
        for i, (out_ch, n, stage_stride) in enumerate(plan):
            units = []
            for j in range(n):
                stride = stage_stride if j == 0 else 1
                first = i == 0 and j == 0
                units.append(unit(block, in_ch, out_ch, stride, shortcut, shortcut_params, downsample, first, **body))
                in_ch = out_ch
            stages.append(nn.Sequential(*units))
        self.stages = nn.Sequential(*stages)
        self.final_act = activation(unit.pre, in_ch)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He init (normal, fan_out) for convs, BN to (1, 0), classifier bias 0; gate biases keep their value."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.zeros_(self.fc.bias)

    def units(self) -> list[ResidualUnit]:
        """All residual units, input to output."""
        return [m for m in self.modules() if isinstance(m, ResidualUnit)]

    def forward(self, x):
        x = self.final_act(self.stages(self.stem(x)))
        return self.fc(self.pool(x).flatten(1))


class CifarResNet(ResNet):
    """3x3 conv stem (16 filters), three stages of n units on 32/16/8 maps."""

    def __init__(
        self,
        depth: int,
        unit: type[ResidualUnit],
        shortcut: type[Shortcut],
        block: str,
        num_classes: int,
        downsample: str,
        shortcut_params: dict[str, Any],
        **body: Any,
    ) -> None:
        n = (depth - 2) // (3 * LAYERS_PER_UNIT[block])
        stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        plan = [(width * EXPANSION[block], n, 1 if i == 0 else 2) for i, width in enumerate(STAGE_WIDTHS)]
        super().__init__(stem, 16, plan, unit, shortcut, block, num_classes, downsample, shortcut_params, **body)


def select_shortcut_params(shortcut: type[Shortcut], shortcut_params: dict[str, Any]) -> dict[str, Any]:
    """Those of a flat config's shortcut parameters that `shortcut` takes; a name no shortcut takes is
    a UsageError (so a typo is not silently ignored)."""
    known = {k for name in SHORTCUTS for k in shortcut_parameters(SHORTCUTS.get(name))}
    for key in shortcut_params.keys() - known:
        raise UsageError(f"unknown shortcut parameter '{key}'; allowed: {', '.join(sorted(known))}")
    return {k: v for k, v in shortcut_params.items() if k in shortcut_parameters(shortcut)}


def set_bn_momentum(model: nn.Module, momentum: float) -> None:
    """Give every BN layer the same running-statistics momentum."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = momentum


def build_model(
    depth: int,
    unit: str = "original",
    shortcut: str = "identity",
    block: str = "auto",
    num_classes: int = 10,
    downsample: str = "auto",
    bn_momentum: float = 0.1,
    groups: int = 1,
    width_per_group: int = 64,
    **shortcut_params: Any,
) -> CifarResNet:
    """A CIFAR ResNet (or plain net, `shortcut='none'`) by registry names; `shortcut_params` may hold
    parameters of other shortcuts too (a flat config): only those `shortcut` takes are passed on.
    `groups`/`width_per_group` make bottleneck units ResNeXt units (defaults: the papers' nets)."""
    unit_cls, shortcut_cls = UNITS.get(unit), SHORTCUTS.get(shortcut)
    block = resolve_block(depth, block)
    downsample = resolve_downsample(block, downsample)
    check_body(block, groups, width_per_group)
    params = select_shortcut_params(shortcut_cls, shortcut_params)
    model = CifarResNet(depth, unit_cls, shortcut_cls, block, num_classes, downsample, params,
                        groups=groups, width_per_group=width_per_group)
    set_bn_momentum(model, bn_momentum)
    return model


def count_parameters(model: nn.Module, include_bn: bool = True) -> int:
    """All trainable parameters, or (include_bn=False) all but BN's scale and shift: the 2015 paper
    counts the former (ResNet-1202: 19.4M), the 2016 paper's ResNet-1001 figure (10.2M) the latter."""
    skip = {id(p) for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters()}
    return sum(p.numel() for p in model.parameters() if include_bn or id(p) not in skip)
