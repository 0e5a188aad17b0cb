"""The fidelity options made cheap: `residual_fp32=false` keeps the residual stream in bf16 under autocast
(every shortcut still runs, the gate's conv and sigmoid in fp32), and ghost BN is one batch-norm call per group."""
import pytest
import torch
from helpers import TINY
from torch.profiler import ProfilerActivity, profile

from resnet_ablate.models.norm import GhostBatchNorm2d
from resnet_ablate.models.shortcuts import SHORTCUTS
from resnet_ablate.models.units import ResidualUnit
from resnet_ablate.training.configfile import run_name
from resnet_ablate.training.parse import parse
from resnet_ablate.training.state import build_network, precision_policy


def _unit_outputs(args: list[str], bf16: bool) -> list[torch.Tensor]:
    torch.manual_seed(0)
    model = build_network(parse([*TINY, *args]), 10).to(memory_format=torch.channels_last)
    outputs = []
    for unit in model.modules():
        if isinstance(unit, ResidualUnit):
            unit.register_forward_hook(lambda _m, _i, out: outputs.append(out))
    x = torch.randn(4, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        model(x).float().sum().backward()
    return outputs


@pytest.mark.parametrize("shortcut", SHORTCUTS.names())
def test_residual_stream_is_bf16_when_switched_off_and_fp32_by_default(shortcut):
    assert {o.dtype for o in _unit_outputs([f"shortcut={shortcut}"], bf16=True)} == {torch.float32}
    assert {o.dtype for o in _unit_outputs([f"shortcut={shortcut}", "residual_fp32=false"], bf16=True)} == \
        {torch.bfloat16}


def test_residual_switch_changes_nothing_in_fp32_and_is_named():
    plain, off = (_unit_outputs(["shortcut=gating"], False),
                  _unit_outputs(["shortcut=gating", "residual_fp32=false"], False))
    assert all(torch.equal(a, b) for a, b in zip(plain, off))
    assert "residual_fp32=False" in run_name(parse([*TINY, "residual_fp32=false"]))
    assert "bf16 residual stream" in precision_policy("bf16", residual_fp32=False)
    assert precision_policy("fp32", residual_fp32=False) == "fp32 throughout"


def test_ghost_bn_is_one_batch_norm_call_per_group():
    bn = GhostBatchNorm2d(8, 4)
    x = torch.randn(16, 8, 6, 6, requires_grad=True)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        bn(x).square().sum().backward()
    names = [e.name for e in prof.events()]
    assert names.count("aten::batch_norm") == 4 and names.count("aten::native_batch_norm_backward") == 4
    assert names.count("aten::var_mean") == 0  # the running statistics come from those calls: no second pass
