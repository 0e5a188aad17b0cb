"""Transfer learning: torchvision weights from a file into an ImageNet-style net (a new head when the data
set has another class count), frozen parts, and per-stage learning-rate multipliers.

A net's parts are `stem`, `stage1` ... `stageN` (3 CIFAR stages, 4 ImageNet stages) and `head` (the
classifier); the pre-activation nets' closing BN counts as the last stage.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import UsageError, first_line
from .imagenet import from_torchvision
from .resnet import ResNet


def part_of(name: str, stages: int) -> str:
    """The part a parameter or module name of a ResNet belongs to: stem, stage1..stage{stages} or head."""
    top, _, rest = name.partition(".")
    if top == "stem":
        return "stem"
    if top == "stages":
        return f"stage{int(rest.split('.')[0]) + 1}"
    return "head" if top == "fc" else f"stage{stages}"


def frozen_parts(freeze: list[str], stages: int) -> set[str]:
    """The parts a `freeze` setting names, with `all_but_head` spelled out."""
    if freeze == ["all_but_head"]:
        return {"stem", *(f"stage{i}" for i in range(1, stages + 1))}
    return set(freeze)


def freeze(model: ResNet, parts: set[str]) -> list[nn.BatchNorm2d]:
    """Turn off the gradients of `parts`' parameters; returns their BN layers, to be kept in eval mode."""
    stages = len(model.stages)
    for name, param in model.named_parameters():
        if part_of(name, stages) in parts:
            param.requires_grad_(False)
    return [m for name, m in model.named_modules()
            if isinstance(m, nn.BatchNorm2d) and part_of(name, stages) in parts]


def lr_multiplier(part: str, multipliers: list[float]) -> float:
    """A part's lr multiplier: the stem shares stage1's, stageK has the K-th, the head (and every part
    when there are no multipliers) 1.0."""
    if not multipliers or part == "head":
        return 1.0
    return multipliers[0] if part == "stem" else multipliers[int(part.removeprefix("stage")) - 1]


def trainable_by_multiplier(model: ResNet, multipliers: list[float]) -> dict[float, list[nn.Parameter]]:
    """The trainable parameters grouped by lr multiplier, each group in model order."""
    groups: dict[float, list[nn.Parameter]] = {}
    stages = len(model.stages)
    for name, param in model.named_parameters():
        if param.requires_grad:
            groups.setdefault(lr_multiplier(part_of(name, stages), multipliers), []).append(param)
    return groups


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """A state dict of tensors saved with torch.save, loaded with weights_only; one-line UsageErrors."""
    if not Path(path).is_file():  # a FIFO or a device would block torch.load, or never end
        raise UsageError(f"init={path}: {'not a regular file' if Path(path).exists() else 'no such file'}; give a "
                         f"state_dict file saved with torch.save")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as e:
        raise UsageError(f"init={path}: cannot read it ({first_line(e)})") from e
    except Exception as e:  # noqa: BLE001 - text or random bytes fail in torch's loaders with any of many types
        raise UsageError(f"init={path} is not a state_dict file (torch.load could not read it: {type(e).__name__}); "
                         f"save one with torch.save(model.state_dict(), PATH)") from e
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise UsageError(f"init={path} holds no state dict of tensors (save model.state_dict())")
    return state


def load_init(model: ResNet, path: str) -> bool:
    """Load a torchvision ResNet/ResNeXt state dict file into `model`; its classifier only when the class
    counts match (else the model's own freshly initialised head stays). Returns whether the head was loaded."""
    state = read_state_dict(path)
    head = "fc.weight" in state and state["fc.weight"].shape == model.fc.weight.shape
    model.load_state_dict(from_torchvision(model, state, head=head), strict=head)
    return head
