"""`python -m resnet_ablate.zoo`: the parameter tables of the papers' CIFAR nets, next to the papers' counts, and
of the ImageNet-style nets, next to torchvision's."""
from __future__ import annotations

import sys

import torch
import torchvision

from .cli import guarded
from .errors import UsageError
from .models.cifar import PAPER_DEPTHS, build_model
from .models.imagenet import IMAGENET_DEPTHS, TORCHVISION_ARCHS, build_imagenet_model
from .models.resnet import count_parameters

# Parameter counts as printed in the papers (2015 Table 6; 2016 Table 3), in millions.
PAPER_PARAMS = {20: "0.27", 32: "0.46", 44: "0.66", 56: "0.85", 110: "1.7", 1202: "19.4", 164: "1.7", 1001: "10.2"}


def table() -> list[str]:
    """Markdown rows for every paper depth: block, unit, all parameters, parameters without BN's
    scale/shift, and the paper's figure (2015 nets: original unit; 2016 nets: full pre-activation)."""
    rows = ["| depth | block | unit | parameters | without BN | paper |", "|---:|---|---|---:|---:|---:|"]
    for block, depths in PAPER_DEPTHS.items():
        unit = "original" if block == "basic" else "full_preact"
        for depth in depths:
            model = build_model(depth, unit=unit, block=block)
            n, w = count_parameters(model), count_parameters(model, include_bn=False)
            rows.append(f"| {depth} | {block} | {unit} | {n:,} ({n / 1e6:.2f}M) | {w:,} ({w / 1e6:.2f}M) "
                        f"| {PAPER_PARAMS[depth]}M |")
    return rows


def imagenet_table() -> list[str]:
    """Markdown rows for torchvision's ResNets and ResNeXt-50 as built here (original unit, identity shortcut),
    beside torchvision's own count; built on the meta device, so only shapes are made."""
    rows = ["| net | depth | block | groups x width | parameters | torchvision |", "|---|---:|---|---|---:|---:|"]
    with torch.device("meta"):
        for name, kwargs in TORCHVISION_ARCHS.items():
            n = count_parameters(build_imagenet_model(**kwargs))
            tv = count_parameters(getattr(torchvision.models, name)(weights=None))
            depth, block = kwargs["depth"], IMAGENET_DEPTHS[kwargs["depth"]][0]
            width = f"{kwargs.get('groups', 1)}x{kwargs.get('width_per_group', 64)}d"
            rows.append(f"| {name} | {depth} | {block} | {width} | {n:,} ({n / 1e6:.2f}M) | {tv:,} |")
    return rows


USAGE = ("usage: python -m resnet_ablate.zoo\n"
         "Prints the parameter counts of the papers' CIFAR nets beside the papers' figures, and of the "
         "ImageNet-style nets (arch=imagenet) beside torchvision's; takes no arguments.")


def _main(argv: list[str]) -> int:
    if argv in (["-h"], ["--help"]):
        print(USAGE)
        return 0
    if argv:
        raise UsageError(f"unexpected argument '{argv[0]}'; {USAGE.splitlines()[0]} (no arguments)")
    print("\n".join([*table(), "", *imagenet_table()]))
    return 0


def main(argv: list[str] | None = None) -> int:
    return guarded(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
