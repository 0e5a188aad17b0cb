"""ImageNet-style ResNet-18/34/50/101/152 and ResNeXt (He et al. 2015, Table 1; Xie et al. 2017), built
from the same unit and shortcut registries as the CIFAR nets, so every unit x shortcut ablation applies.

7x7/2 conv stem (64 filters, BN, ReLU) and 3x3/2 max-pool, four stages of basic (18, 34) or bottleneck
(50, 101, 152) units with 64/128/256/512 planes (x4 out for bottleneck), global average pool, linear
classifier, He init. As torchvision's models/resnet.py (v1.5): the shape-changing shortcut is a 1x1
projection with BN by default (option B of the 2015 paper; `downsample=zeropad` gives option A), and a
bottleneck strides on its 3x3 conv, not on its first 1x1 conv as the CIFAR nets do (the 2016 paper's
code). ResNeXt: `groups` (cardinality) and `width_per_group` make the bottleneck's 3x3 a grouped conv
of width int(planes * width_per_group / 64) * groups; ResNeXt-50 32x4d is depth 50, groups 32, width 4.

With unit=original, shortcut=identity and downsample=conv1x1 the nets have torchvision's parameters,
and `to_torchvision` / `from_torchvision` convert state dicts between the two by module names.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from ..errors import UsageError
from ..registry import Registry
from .cifar import resolve_downsample as cifar_downsample
from .resnet import ARCHS, Arch, ResNet, build
from .shortcuts import SHORTCUTS, Identity, Shortcut, ZeroPad
from .units import EXPANSION, UNITS, Original, ResidualUnit

PLANES = (64, 128, 256, 512)
# depth -> (body, units per stage), 2015 paper Table 1
IMAGENET_DEPTHS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
# torchvision's model names -> build_imagenet_model arguments
TORCHVISION_ARCHS: dict[str, dict[str, int]] = {
    "resnet18": {"depth": 18},
    "resnet34": {"depth": 34},
    "resnet50": {"depth": 50},
    "resnet101": {"depth": 101},
    "resnet152": {"depth": 152},
    "resnext50_32x4d": {"depth": 50, "groups": 32, "width_per_group": 4},
}


def resolve_imagenet_block(depth: int, block: str = "auto") -> str:
    """The body of an ImageNet depth (basic for 18/34, bottleneck above); a one-line UsageError for
    another depth or a block that does not match it."""
    if depth not in IMAGENET_DEPTHS:
        raise UsageError(f"depth {depth} is not an ImageNet-style ResNet; allowed: "
                         f"{', '.join(map(str, IMAGENET_DEPTHS))}")
    body = IMAGENET_DEPTHS[depth][0]
    if block not in ("auto", body):
        raise UsageError(f"ImageNet-style depth {depth} uses {body} units; block={block} does not fit (use auto)")
    return body


def resolve_imagenet_downsample(block: str, downsample: str = "auto") -> str:
    """`auto` is the 1x1 projection + BN for every body (option B, torchvision's choice)."""
    return "conv1x1" if downsample == "auto" else cifar_downsample(block, downsample)


class ImageNetResNet(ResNet):
    """7x7/2 stem + 3x3/2 max-pool, four stages of units on 1/4 ... 1/32 of the input size."""

    def __init__(self, depth: int, unit: type[ResidualUnit], shortcut: Callable[..., Shortcut], block: str,
                 num_classes: int, downsample: str, groups: int = 1, width_per_group: int = 64) -> None:
        layers = IMAGENET_DEPTHS[depth][1]
        stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                             nn.MaxPool2d(3, 2, 1))
        plan = [(p * EXPANSION[block], n, 1 if i == 0 else 2) for i, (p, n) in enumerate(zip(PLANES, layers))]
        super().__init__(stem, 64, plan, unit, shortcut, block, num_classes, downsample, groups=groups,
                         width_per_group=width_per_group, stride_on_3x3=True)


ARCHS.register("imagenet")(Arch(ImageNetResNet, resolve_imagenet_block, resolve_imagenet_downsample, stages=4,
                                num_classes=1000))


def build_imagenet_model(depth: int, *args: Any, **kwargs: Any) -> ResNet:
    """An ImageNet-style ResNet/ResNeXt of `depth` (18, 34, 50, 101, 152): `build('imagenet', depth, ...)`;
    `downsample=auto` is the 1x1 projection (torchvision's choice)."""
    return build("imagenet", depth, *args, **kwargs)


def _name_of(registry: Registry, obj: object) -> str:
    """The registered name of an object's class (for messages)."""
    return next(n for n in registry if registry.get(n) is type(obj))


def _check_mappable(model: nn.Module) -> None:
    """A one-line UsageError naming what has no torchvision counterpart: another net, unit, shortcut or
    a parameter-free (zeropad) projection."""
    if not isinstance(model, ImageNetResNet):
        raise UsageError(f"torchvision has no counterpart for {type(model).__name__}; only ImageNet-style nets "
                         "(build_imagenet_model) map to torchvision")
    units = model.units()
    unsupported = sorted({f"unit={_name_of(UNITS, u)}" for u in units if type(u) is not Original}
                         | {f"shortcut={_name_of(SHORTCUTS, u.shortcut)}" for u in units
                            if type(u.shortcut) is not Identity}
                         | {"downsample=zeropad" for u in units if isinstance(u.shortcut.project, ZeroPad)})
    if unsupported:
        raise UsageError(f"torchvision has no counterpart for {', '.join(unsupported)}; weight mapping supports "
                         "unit=original shortcut=identity downsample=conv1x1 only")


def torchvision_names(model: nn.Module) -> dict[str, str]:
    """Our module name -> torchvision's, for every module with weights (stem, body convs/BNs in order,
    projection, classifier); a UsageError for nets torchvision cannot express."""
    _check_mappable(model)
    names = {"stem.0": "conv1", "stem.1": "bn1", "fc": "fc"}
    for i, stage in enumerate(model.stages):
        for j, unit in enumerate(stage):
            ours, theirs = f"stages.{i}.{j}", f"layer{i + 1}.{j}"
            convs = [n for n, m in unit.body.named_modules() if isinstance(m, nn.Conv2d)]
            bns = [n for n, m in unit.body.named_modules() if isinstance(m, nn.BatchNorm2d)]
            for k, (conv, bn) in enumerate(zip(convs, bns), 1):
                names[f"{ours}.body.{conv}"] = f"{theirs}.conv{k}"
                names[f"{ours}.body.{bn}"] = f"{theirs}.bn{k}"
            if isinstance(unit.shortcut.project, nn.Sequential):  # conv1x1 + BN
                names[f"{ours}.shortcut.project.0"] = f"{theirs}.downsample.0"
                names[f"{ours}.shortcut.project.1"] = f"{theirs}.downsample.1"
    return names


def _rename(state: dict[str, torch.Tensor], modules: dict[str, str]) -> dict[str, torch.Tensor]:
    """A state dict with each key's module part renamed by `modules` (the tensor name stays)."""
    out = {}
    for key, value in state.items():
        module, tensor = key.rsplit(".", 1)
        out[f"{modules[module]}.{tensor}"] = value
    return out


def to_torchvision(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict under torchvision's names: loads into torchvision.models.resnet*/resnext*."""
    return _rename(model.state_dict(), torchvision_names(model))


def from_torchvision(model: nn.Module, state: dict[str, torch.Tensor], head: bool = True) -> dict[str, torch.Tensor]:
    """A torchvision ResNet/ResNeXt state dict under our names for `model` (then `model.load_state_dict`);
    a one-line UsageError when its keys or shapes differ from the model's (another depth or width).
    `head=False` leaves the classifier out on both sides (a new head: `load_state_dict(..., strict=False)`)."""
    names = torchvision_names(model)
    if not head:
        del names["fc"]
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    expected = _rename({k: v for k, v in model.state_dict().items() if head or not k.startswith("fc.")}, names)
    differ = sorted(expected.keys() ^ state.keys())
    if differ:
        raise UsageError(f"the torchvision state dict does not fit this net: {len(differ)} keys differ, "
                         f"e.g. '{differ[0]}'")
    for key, value in expected.items():
        if state[key].shape != value.shape:
            raise UsageError(f"the torchvision state dict does not fit this net: '{key}' has shape "
                             f"{tuple(state[key].shape)}, this net {tuple(value.shape)}")
    return _rename(state, {theirs: ours for ours, theirs in names.items()})
