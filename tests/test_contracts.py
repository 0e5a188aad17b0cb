"""The contracts every registered shortcut, unit, optimizer and schedule keeps, each entry from the registries
(tests/contracts.py: their settings, each once in CI, the cross product under the `slow` mark): a wide pack
equals its runs alone (or, for an entry that cannot pack, its runs step as streams with a note and equal alone
exactly); a graph step's warm-up, undone, leaves a fresh run; a paused and resumed run equals the uninterrupted
one. Entries registered here go through the same contracts: a shortcut whose merge mixes channels and an
optimizer whose fresh state is not zero, each declaring nothing it cannot do; a shortcut that declares it merges
channel by channel but does not fails the contract."""
import pytest
import torch
from contracts import Entry, all_registered, combinations, entries
from helpers import TINY, metrics, stop_now

from resnet_ablate.models.shortcuts import Shortcut
from resnet_ablate.models.wide import slice_of
from resnet_ablate.packing import why_not_wide
from resnet_ablate.training.config import ENTRIES
from resnet_ablate.training.optim import Optimizer
from resnet_ablate.training.parse import parse
from resnet_ablate.training.runtime import data_key, load_data
from resnet_ablate.training.state import RunState, build_state
from resnet_ablate.training.step import make_stepper, restore, snapshot
from resnet_ablate.training.trainer import train

CPU = torch.device("cpu")


class ChannelMean(Shortcut):
    """x + F(x) - the mean of F(x) over its channels: a merge that mixes channels, registered by a test."""

    def merge(self, s, f):
        return s + f - f.mean(1, keepdim=True)


class _LazyAdagrad(torch.optim.Optimizer):
    """Adagrad whose accumulator starts at 0.1 and is made at the first step: fresh state that is not zero."""

    def __init__(self, params, lr) -> None:
        super().__init__(params, {"lr": lr, "weight_decay": 0.0})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in (p for p in group["params"] if p.grad is not None):
                total = self.state[p].setdefault("sum", torch.full_like(p, 0.1))
                total.addcmul_(p.grad, p.grad)
                p.sub_(group["lr"] * p.grad / total.sqrt())


class LazyAdagrad(Optimizer):
    """Adagrad with its accumulator made at the first step, registered by a test."""

    def build(self, groups, lr):
        return _LazyAdagrad(groups, lr)


PLUGINS = (Entry("shortcut", "test_channel_mean", (), ChannelMean),
           Entry("optim", "test_lazy_adagrad", ("lr=0.01",), LazyAdagrad, ("elementwise",)))


def _states(args: list[str], seeds: tuple[int, ...] = (0, 1)) -> list[RunState]:
    cfgs = [parse([*args, f"seed={s}"]) for s in seeds]
    data = load_data(cfgs[:1], CPU)[data_key(cfgs[0])]
    return [build_state(c, CPU, "fp32", data) for c in cfgs]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def _flat(tensors) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def _optimizer_state(run: RunState) -> list[torch.Tensor]:
    return [v for p in run.model.parameters() for v in run.optimizer.state.get(p, {}).values() if torch.is_tensor(v)]


def _state_tensors(run: RunState) -> list[torch.Tensor]:
    """A run's weights, BN buffers and optimizer state."""
    return [*run.model.state_dict().values(), *_optimizer_state(run)]


def check_wide_equals_alone(args: list[str], capsys) -> str:
    """One step of two runs packed with pack_mode=wide against the same two runs alone; the step mode. Wide: each
    run's loss and BN statistics are its own to 1e-6, its gradients to 1e-5 (relative, all of them together:
    grouped kernels sum in another order), and given the pack's gradients each run's own optimizer makes the pack's
    update of its slice. Else: as streams, with a note, equal to alone bit for bit."""
    alone, packed, replay = (_states([*args, "pack_mode=wide"]) for _ in range(3))
    capsys.readouterr()
    step = make_stepper(packed)
    for run in alone:
        run.follow_schedule()
        run.step()
    step(packed)
    if step.mode != "wide":
        assert "note: pack_mode=wide cannot pack these 2 runs (" in capsys.readouterr().out
        for a, p in zip(alone, packed):
            assert all(torch.equal(x, y) for x, y in zip(_state_tensors(a), _state_tensors(p)))
            assert torch.equal(a.loss_sum, p.loss_sum)
        return step.mode
    wide = dict(step.parts[0].model.named_parameters())
    for k, (a, p, r) in enumerate(zip(alone, packed, replay)):
        assert p.loss_sum.item() == pytest.approx(a.loss_sum.item(), rel=1e-6)
        buffers = [(x, y) for x, y in zip(a.model.buffers(), p.model.buffers()) if x.dtype.is_floating_point]
        assert _rel(_flat(y for _, y in buffers), _flat(x for x, _ in buffers)) < 1e-6
        grads = {name: slice_of(wide[name].grad, k, 2) for name, _ in a.model.named_parameters()}
        assert _rel(_flat(grads.values()), _flat(x.grad for x in a.model.parameters())) < 1e-5
        for name, grad in grads.items():
            r.model.get_parameter(name).grad = grad.clone()
        r.follow_schedule()
        r.optimizer.step()
        updated = [*r.model.parameters(), *_optimizer_state(r)], [*p.model.parameters(), *_optimizer_state(p)]
        assert len(updated[0]) == len(updated[1])
        assert all(_rel(y, x) < 1e-6 for x, y in zip(*updated) if x.dtype.is_floating_point)
    return step.mode


@pytest.mark.parametrize("parts", [*entries("shortcut", "unit", "optim", plugins=PLUGINS),
                                   *combinations("shortcut", "unit", "optim")])
def test_a_wide_pack_equals_its_runs_alone(parts, capsys):
    """Wide where the entries declare what a wide net relies on, else streams; equal to alone either way."""
    with all_registered(parts) as args:
        packable = why_not_wide([parse([*TINY, *args])], ENTRIES) is None
        assert check_wide_equals_alone([*TINY, *args], capsys) == ("wide" if packable else "streams")


def test_a_wide_pack_with_ghost_bn_equals_its_runs_alone(capsys):
    """Ghost BN (BN statistics over groups of the batch) is a setting, not an entry: the same check."""
    assert check_wide_equals_alone([*TINY, "bn_batch=4"], capsys) == "wide"


def test_a_shortcut_that_declares_channelwise_but_mixes_channels_fails_the_contract(capsys):
    with Entry("shortcut", "test_channel_mean", (), ChannelMean, ("channelwise",)).registered():
        with pytest.raises(AssertionError, match="assert 2.1"):
            check_wide_equals_alone([*TINY, "shortcut=test_channel_mean"], capsys)


@pytest.mark.parametrize("parts", entries("optim", plugins=PLUGINS))
def test_a_warm_up_undone_by_restore_leaves_a_fresh_run(parts):
    """As a graph step's capture: a few steps on junk batches (fresh optimizer state made), then `restore`; every
    part (two runs alone, or their wide pack) then trains to the weights of runs that never warmed up, bit for
    bit."""
    with all_registered(parts) as args:
        args = [*TINY, *args, "shortcut=dropout", "pack_mode=wide"]
        plain, warmed = _states(args), _states(args)
        plain_step, warmed_step = make_stepper(plain), make_stepper(warmed)
        for part in warmed_step.parts:
            saved = snapshot(part)
            junk = torch.randn(part.batch_shape()), torch.randint(0, 10, part.label_shape())
            with part.own_rng():
                for _ in range(3):
                    part.train_step(*junk)
            restore(part, saved)
        for runs, step in ((plain, plain_step), (warmed, warmed_step)):
            for _ in range(6):
                step(runs)
                for run in runs:
                    run.advance()
        for a, b in zip(plain, warmed):
            assert all(torch.equal(x, y) for x, y in zip(_state_tensors(a), _state_tensors(b)))
            assert torch.equal(a.loss_sum, b.loss_sum)


@pytest.mark.parametrize("parts", [*entries("optim", "schedule", plugins=PLUGINS), *combinations("optim", "schedule")])
def test_a_paused_and_resumed_run_equals_the_uninterrupted_one(tmp_path, parts):
    with all_registered(parts) as args:
        whole = [*TINY, *args, f"run_dir={tmp_path / 'whole'}"]
        res = train([parse(whole)])[0]
        assert res["status"] in ("done", "fail") and res["final_test_error"] < 90
        split = [*TINY, *args, f"run_dir={tmp_path / 'split'}"]
        assert train([parse(split)], stop_now("test"))[0] == {"status": "paused", "iteration": 1, "reason": "test"}
        train([parse(split)])
        assert metrics(tmp_path / "split") == metrics(tmp_path / "whole")
