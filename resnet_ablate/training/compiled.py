"""`compile=true`: the training forward (and through AOTAutograd its backward) compiled by torch.compile, so
that BN, ReLU, the merges and casts run as fused kernels. Compiled without CUDA graphs of its own (mode
"default"): the step's own CUDA graph (`step.py`) captures the compiled kernels after the warm-up that compiles
them.

What it costs: a compile at start-up, measured on 2 CPU cores at about a minute for a depth-8 net with an
empty cache and 3 s with a warm one (docs/speed.md has the figures). What is cached: torch's own caches do it
all, nothing here is written by the package: the nets of one job's runs share one architecture, so the second run's net
reuses the first one's compiled code (dynamo's cache; its `recompile_limit` is raised to the pack's size so K runs never
exceed it, and hitting it is an error rather than a silent eager net), and inductor's FX-graph cache on disk
($TORCHINDUCTOR_CACHE_DIR, default under /tmp) serves later jobs on the same machine.

Dropout draws its masks with eager's RNG ops (`fallback_random`), so a compiled run draws the masks it draws
eagerly from the same RNG stream.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn


def compile_net(model: nn.Module, runs: int = 1) -> Callable[[torch.Tensor], torch.Tensor]:
    """`model` compiled for training steps (static shapes, no CUDA graphs of its own); compiles at first call."""
    import torch._dynamo
    import torch._inductor.config

    torch._inductor.config.fallback_random = True
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, runs + 4)
    torch._dynamo.config.fail_on_recompile_limit_hit = True  # an error (then the eager net, said), not silent eager
    return torch.compile(model, dynamic=False)
