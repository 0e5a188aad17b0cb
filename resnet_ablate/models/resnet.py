"""The ResNet skeleton shared by every net layout, and the layouts' registry (`ARCHS`) with the one build path.

A net is a stem, stages of residual units (first unit of a stage carries its stride; the net's first unit
takes its activation from the stem), the pre-activation nets' closing BN-ReLU, global average pooling and a
linear classifier, He-initialised. A layout (`cifar`, `imagenet`) contributes the stem, the stage plan and
how a depth resolves to a unit body; `build` looks up unit, shortcut and layout by name for all of them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

from ..registry import Registry
from .norm import use_ghost_bn
from .shortcuts import Shortcut, bind_shortcut
from .units import UNITS, ResidualUnit, activation, check_body


class ResNet(nn.Module):
    """Stem, stages of residual units, final activation (pre-act nets), pool, classifier, He init.

    `plan` holds one (out_ch, units, stride) per stage; `shortcut` is a shortcut class with its parameters
    bound; `body` is passed to every unit (see `body_convs`).
    """

    def __init__(self, stem: nn.Sequential, stem_ch: int, plan: list[tuple[int, int, int]],
                 unit: type[ResidualUnit], shortcut: Callable[..., Shortcut], block: str, num_classes: int,
                 downsample: str, **body: Any) -> None:
        super().__init__()
        self.stem = stem
        in_ch, stages = stem_ch, []
        for i, (out_ch, n, stage_stride) in enumerate(plan):
            units = []
            for j in range(n):
                stride = stage_stride if j == 0 else 1
                first = i == 0 and j == 0
                units.append(unit(block, in_ch, out_ch, stride, shortcut, downsample, first, **body))
                in_ch = out_ch
            stages.append(nn.Sequential(*units))
        self.stages = nn.Sequential(*stages)
        self.final_act = activation(unit.pre, in_ch)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He init (normal, fan_out) for convs, BN to (1, 0), classifier bias 0; gate biases keep their value;
        then each shortcut's own init (`gate_init=zero`)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.zeros_(self.fc.bias)
        for m in self.modules():
            if isinstance(m, Shortcut):
                m.init_parameters()

    def units(self) -> list[ResidualUnit]:
        """All residual units, input to output."""
        return [m for m in self.modules() if isinstance(m, ResidualUnit)]

    def forward(self, x):
        x = self.final_act(self.stages(self.stem(x)))
        return self.fc(self.pool(x).flatten(1))


# A layout's net class: (depth, unit class, bound shortcut, block, num_classes, downsample, groups,
# width_per_group) -> the net.
NetClass = Callable[[int, type[ResidualUnit], Callable[..., Shortcut], str, int, str, int, int], ResNet]


@dataclass(frozen=True)
class Arch:
    """A registered net layout: its net class, how a depth and `block`/`downsample` settings resolve
    (one-line errors for misfits), how many stages it has, and its default class count."""

    net: NetClass
    resolve_block: Callable[[int, str], str]
    resolve_downsample: Callable[[str, str], str]
    stages: int
    num_classes: int


ARCHS: Registry[Arch] = Registry("arch")


def set_bn_momentum(model: nn.Module, momentum: float) -> None:
    """Give every BN layer the same running-statistics momentum."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = momentum


def build(arch: str, depth: int, unit: str = "original", shortcut: str = "identity", block: str = "auto",
          num_classes: int | None = None, downsample: str = "auto", bn_momentum: float = 0.1, groups: int = 1,
          width_per_group: int = 64, bn_batch: int = 0, preact_shortcut_input: str = "raw",
          **shortcut_params: Any) -> ResNet:
    """A net of layout `arch` by registry names. `shortcut_params` may hold parameters of other shortcuts
    too (a flat config): only those `shortcut` takes are bound; a name no shortcut takes is a UsageError.
    `groups`/`width_per_group` make bottleneck units ResNeXt units (defaults: the papers' nets); `bn_batch`
    makes every BN a ghost BN over groups of that many images (`norm.py`); `preact_shortcut_input` is what a
    zero-pad shortcut reads where a pre-activation unit changes the shape (`ResidualUnit.feed_shortcut`)."""
    layout, unit_cls = ARCHS.get(arch), UNITS.get(unit)
    bound = bind_shortcut(shortcut, shortcut_params)
    block = layout.resolve_block(depth, block)
    downsample = layout.resolve_downsample(block, downsample)
    check_body(block, groups, width_per_group)
    model = layout.net(depth, unit_cls, bound, block, num_classes or layout.num_classes, downsample, groups,
                       width_per_group)
    set_bn_momentum(model, bn_momentum)
    for u in model.units():
        u.feed_shortcut(preact_shortcut_input)
    return use_ghost_bn(model, bn_batch) if bn_batch else model


def count_parameters(model: nn.Module, include_bn: bool = True) -> int:
    """All trainable parameters, or (include_bn=False) all but BN's scale and shift: the 2015 paper
    counts the former (ResNet-1202: 19.4M), the 2016 paper's ResNet-1001 figure (10.2M) the latter."""
    skip = {id(p) for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters()}
    return sum(p.numel() for p in model.parameters() if include_bn or id(p) not in skip)
