"""Layer responses (the 2015 paper's Fig. 7): the standard deviation of each 3x3 layer's response, the data
behind "residual functions might be generally closer to zero than the non-residual functions".

The paper: "The responses are the outputs of each 3x3 layer, after BN and before other nonlinearity
(ReLU/addition)". Here a 3x3 layer's response is the output of the BN that directly follows its conv, or the
conv's own output where no BN follows (the last conv of a pre-activation unit, whose BN belongs to the next
unit). The net runs in eval mode (running statistics, as at test time) and in fp32 on a fixed batch; a
layer's number is the standard deviation of each channel over images and positions, averaged over channels.
Layers are in forward order: the stem's conv, then each unit's 3x3 convs.
"""
from __future__ import annotations

import torch
from torch import nn


def _after(module: nn.Module) -> nn.Module | None:
    """The BN a module's output goes into first: itself, or the first child of a Sequential."""
    if isinstance(module, nn.BatchNorm2d):
        return module
    if isinstance(module, nn.Sequential) and len(module) and isinstance(module[0], nn.BatchNorm2d):
        return module[0]
    return None


def response_modules(model: nn.Module) -> list[nn.Module]:
    """For each 3x3 conv of `model` in forward order, the module whose output is its response."""
    found = []
    for seq in (m for m in model.modules() if isinstance(m, nn.Sequential)):
        children = list(seq)
        for i, m in enumerate(children):
            if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3):
                bn = _after(children[i + 1]) if i + 1 < len(children) else None
                found.append(bn if bn is not None else m)
    order = {id(m): i for i, m in enumerate(model.modules())}
    return sorted(found, key=lambda m: order[id(m)])


@torch.no_grad()
def layer_responses(model: nn.Module, images: torch.Tensor) -> list[float]:
    """The std of every 3x3 layer's response on `images` (eval mode, fp32), in forward order; the model's
    mode is restored after."""
    stds: list[torch.Tensor] = []

    def record(_m: nn.Module, _args, out: torch.Tensor) -> None:
        stds.append(out.float().std(dim=(0, 2, 3), correction=0).mean())

    hooks = [m.register_forward_hook(record) for m in response_modules(model)]
    was_training = model.training
    try:
        model.eval()
        with torch.autocast(images.device.type, enabled=False):
            model(images.float())
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return torch.stack(stds).tolist() if stds else []
