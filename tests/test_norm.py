"""Ghost batch norm (`models/norm.py`, `bn_batch=N`): equal to separate BN passes over the groups (outputs,
gradients, running statistics), to the documented running-statistics rule computed by a second pass (every unit,
wide packs, fp32 and bf16), the same state_dict keys in a net, and packed and resumed runs to identical numbers."""
import pytest
import torch
import torch.nn.functional as F
from helpers import TINY, metrics, result, stop_now
from torch import nn

from resnet_ablate.models.cifar import build_model
from resnet_ablate.models.norm import GhostBatchNorm2d, group_momenta
from resnet_ablate.models.units import UNITS
from resnet_ablate.training.parse import parse
from resnet_ablate.training.runtime import data_key, load_data
from resnet_ablate.training.state import build_state
from resnet_ablate.training.trainer import train
from resnet_ablate.training.wide import WidePack


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
    train([parse([*args, "seed=0", f"run_dir={tmp_path / 'p0'}"]),
           parse([*args, "seed=1", f"run_dir={tmp_path / 'p1'}"])])
    train([parse([*args, "seed=0", f"run_dir={tmp_path / 'alone'}"])])
    assert metrics(tmp_path / "p0") == metrics(tmp_path / "alone")
    cfg = parse([*args, "seed=0", f"run_dir={tmp_path / 'resumed'}"])
    (summary,) = train([cfg], stop_now())  # checkpoint and pause after the first iteration
    assert summary["status"] == "paused"
    train([cfg])
    assert metrics(tmp_path / "resumed") == metrics(tmp_path / "alone")
    assert result(tmp_path / "resumed") == result(tmp_path / "alone")


def _second_pass_forward(self: GhostBatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """The arbiter: the documented rule computed as the package did before (commit abb45d0), by a second pass
    over the input for the running statistics (here in float64) and one batch-norm call per group without them."""
    b = x.shape[0]
    if not self.training or not 0 < self.ghost < b:
        return nn.BatchNorm2d.forward(self, x)
    with torch.no_grad():
        groups = x.double().reshape(b // self.ghost, self.ghost, x.shape[1], *x.shape[2:])
        var, mean = torch.var_mean(groups, dim=(1, 3, 4), correction=0)
        n = self.ghost * x.shape[2] * x.shape[3]
        self.num_batches_tracked.add_(1)
        self.running_mean.copy_(self.running_mean.double().lerp(mean.mean(0), self.momentum))
        self.running_var.copy_(self.running_var.double().lerp((var * (n / (n - 1))).mean(0), self.momentum))
    return torch.cat([F.batch_norm(part, None, None, self.weight, self.bias, True, 0.0, self.eps)
                      for part in x.split(self.ghost)])


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def test_group_momenta_weigh_every_group_equally_and_the_old_value_one_minus_m():
    for m, k in [(0.1, 2), (0.1, 4), (0.9, 8), (0.01, 3)]:
        a = group_momenta(m, k)
        weights = [a[i] * torch.prod(1 - torch.tensor(a[i + 1:], dtype=torch.float64)).item() for i in range(k)]
        assert weights == pytest.approx([m / k] * k, rel=1e-12)
        assert torch.prod(1 - torch.tensor(a, dtype=torch.float64)).item() == pytest.approx(1 - m, rel=1e-12)


@pytest.mark.parametrize("precision,bound", [("fp32", 1e-6), ("bf16", 1e-2)])
@pytest.mark.parametrize("unit", UNITS.names())
def test_one_step_equals_the_documented_rule_by_a_second_pass_for_every_unit_and_wide(unit, precision, bound,
                                                                                     monkeypatch):
    """One training step (alone, and a wide pack of two runs) from identical states: every weight, optimizer state
    and running variance equals what the second-pass arbiter gives within `bound` relative (norm); a running mean
    within `bound` of its channels' scale (the norm of the running std): a BN's batch mean can lie near zero
    (the stem's, on mean-subtracted images), where the CPU kernel's fp32 sum, which also normalises, is ~1e-6 of
    that mean (today's normalisation uses the same kernel, so the weights equal to rounding)."""
    def stepped(forward, wide: bool) -> dict[str, torch.Tensor]:
        monkeypatch.setattr(GhostBatchNorm2d, "forward", forward)
        cfgs = [parse([*TINY, f"unit={unit}", "bn_batch=4", f"seed={s}"]) for s in range(2)]
        data = load_data(cfgs[:1], torch.device("cpu"))[data_key(cfgs[0])]
        runs = [build_state(c, torch.device("cpu"), precision, data) for c in cfgs[:2 if wide else 1]]
        part = WidePack(runs) if wide else runs[0]
        part.follow_schedule()
        part.step()
        state = {**part.model.state_dict(), **{f"{name}/{key}": value for name, p in part.model.named_parameters()
                                              for key, value in part.optimizer.state[p].items()}}
        return {name: t for name, t in state.items() if t.dtype.is_floating_point}

    new_forward = GhostBatchNorm2d.forward
    for wide in (False, True):
        ours, arbiter = stepped(new_forward, wide), stepped(_second_pass_forward, wide)
        assert ours.keys() == arbiter.keys() and any(n.endswith("running_mean") for n in ours)
        for name, value in ours.items():
            ref = arbiter[name]
            scale = (arbiter[name.replace("running_mean", "running_var")].sqrt() if name.endswith("running_mean")
                     else ref)
            error = ((value.double() - ref.double()).norm() / scale.double().norm()).item()
            assert error <= bound, (unit, precision, wide, name, error)
