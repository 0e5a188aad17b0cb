"""Ghost batch norm (`models/norm.py`, `bn_batch=N`): equal to separate BN passes over the groups (outputs,
gradients, running statistics), the same state_dict keys in a net, and packed and resumed runs to identical
numbers."""
import torch
from helpers import TINY, metrics, result, stop_now
from torch import nn

from resnet_ablate.models.cifar import build_model
from resnet_ablate.models.norm import GhostBatchNorm2d
from resnet_ablate.training.parse import parse
from resnet_ablate.training.trainer import train


def test_ghost_bn_equals_separate_bn_passes_over_the_halves_outputs_gradients_and_running_stats():
    torch.manual_seed(0)
    x = torch.randn(128, 5, 4, 4) * 3 + 1
    ghost = GhostBatchNorm2d(5, 64, momentum=0.1)
    with torch.no_grad():
        ghost.weight.uniform_(0.5, 2)
        ghost.bias.uniform_(-1, 1)
    halves = [nn.BatchNorm2d(5, momentum=0.1) for _ in range(2)]
    for bn in halves:
        bn.load_state_dict(ghost.state_dict())
    xg, xs = x.clone().requires_grad_(), x.clone().requires_grad_()
    out = ghost(xg)
    ref = torch.cat([bn(part) for bn, part in zip(halves, xs.split(64))])
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    weights = torch.randn_like(out)
    (out * weights).sum().backward()
    (ref * weights).sum().backward()
    torch.testing.assert_close(xg.grad, xs.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ghost.weight.grad, halves[0].weight.grad + halves[1].weight.grad, rtol=1e-4, atol=1e-4)
    # the rule: two per-device BNs whose buffers are averaged after the step
    torch.testing.assert_close(ghost.running_mean, (halves[0].running_mean + halves[1].running_mean) / 2)
    torch.testing.assert_close(ghost.running_var, (halves[0].running_var + halves[1].running_var) / 2)
    assert ghost.num_batches_tracked.item() == 1
    # off: no groups (0), or a batch no larger than a group: plain BN
    plain = nn.BatchNorm2d(5)
    for size in (0, 128):
        off = GhostBatchNorm2d(5, size)
        torch.testing.assert_close(off(x), plain(x))


def test_ghost_bn_in_a_net_keeps_state_dict_keys_and_uses_the_groups(tmp_path):
    torch.manual_seed(0)
    plain = build_model(8)
    torch.manual_seed(0)
    ghost = build_model(8, bn_batch=4)
    assert list(plain.state_dict()) == list(ghost.state_dict())
    assert sum(isinstance(m, GhostBatchNorm2d) for m in ghost.modules()) == \
        sum(type(m) is nn.BatchNorm2d for m in plain.modules()) > 0
    x = torch.randn(8, 3, 32, 32)
    torch.testing.assert_close(plain.eval()(x), ghost.eval()(x))  # eval: the same running statistics (both fresh)
    assert not torch.allclose(plain.train()(x), ghost.train()(x))  # train mode: statistics over groups of 4


def test_bn_batch_trains_packed_and_resumes_to_identical_numbers(tmp_path):
    args = [*TINY, "bn_batch=4", "shortcut=dropout"]
    train([parse([*args, "seed=0", f"run_dir={tmp_path / 'p0'}"]), parse([*args, "seed=1", f"run_dir={tmp_path / 'p1'}"])])
    train([parse([*args, "seed=0", f"run_dir={tmp_path / 'alone'}"])])
    assert metrics(tmp_path / "p0") == metrics(tmp_path / "alone")
    cfg = parse([*args, "seed=0", f"run_dir={tmp_path / 'resumed'}"])
    (summary,) = train([cfg], stop_now())  # checkpoint and pause after the first iteration
    assert summary["status"] == "paused"
    train([cfg])
    assert metrics(tmp_path / "resumed") == metrics(tmp_path / "alone")
    assert result(tmp_path / "resumed") == result(tmp_path / "alone")
