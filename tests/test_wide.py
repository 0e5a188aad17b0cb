"""Packing as one wide net (pack_mode=wide): one step from identical states equals each run alone to 1e-5
relative, the forward bit for bit; no cross-talk between the runs of a pack (bit for bit, a NaN run included);
each run's checkpoint is its own and resumes alone; the launcher packs by the wide key. The whole matrix of
variants is in bench/equality.py."""
import json

import pytest
import torch
from helpers import TINY, metrics, stop_now

from resnet_ablate.models.cifar import build_model
from resnet_ablate.models.wide import slice_of, widen
from resnet_ablate.sweeps.specs import pack
from resnet_ablate.training.parse import parse
from resnet_ablate.training.state import RunState, build_state
from resnet_ablate.training.runtime import data_key, load_data
from resnet_ablate.training.trainer import train
from resnet_ablate.training.wide import WidePack

CPU = torch.device("cpu")


def _runs(extra: list[str], seeds: list[int]) -> list[RunState]:
    cfgs = [parse([*TINY, *extra, f"seed={s}"]) for s in seeds]
    data = load_data(cfgs[:1], CPU)[data_key(cfgs[0])]
    return [build_state(c, CPU, "fp32", data) for c in cfgs]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def one_step_difference(extra: list[str], k: int = 4) -> tuple[float, float]:
    """Max over runs and tensors of |wide - alone| / |alone| for the gradients, and for the updated state (weights,
    BN buffers, optimizer state), after one step of K runs (seeds 0..K-1) from identical states."""
    alone, packed = _runs(extra, list(range(k))), _runs(extra, list(range(k)))
    wide = WidePack(packed)
    for run in alone:
        run.follow_schedule()
        run.step()
    wide.follow_schedule()
    wide.step()
    grads = dict(wide.model.named_parameters())
    grad_worst = state_worst = 0.0
    for i, (a, p) in enumerate(zip(alone, packed)):
        for name, param in a.model.named_parameters():
            grad_worst = max(grad_worst, _rel(slice_of(grads[name].grad, i, k), param.grad))
        pairs = [*zip(a.model.state_dict().values(), p.model.state_dict().values()),
                 *((x, y) for pa, pb in zip(a.model.parameters(), p.model.parameters())
                   for x, y in zip(a.optimizer.state[pa].values(), p.optimizer.state[pb].values()))]
        state_worst = max([state_worst, *(_rel(y, x) for x, y in pairs if x.dtype.is_floating_point)])
        assert a.loss_sum.item() == pytest.approx(p.loss_sum.item(), rel=1e-6) and a.err_sum.item() == p.err_sum.item()
    return grad_worst, state_worst


@pytest.mark.parametrize("extra", [[], ["shortcut=dropout"], ["bn_batch=4"], ["unit=full_preact", "shortcut=gating"],
                                   ["shortcut=conv1x1"]], ids=lambda e: "-".join(e) or "identity")
def test_one_wide_step_equals_each_run_alone(extra):
    assert max(one_step_difference(extra)) < 1e-5


def test_one_wide_adam_step_has_the_gradients_of_alone_and_adams_sign_sensitivity():
    """Adam's first step moves every weight by lr * g / (|g| + eps), about lr * sign(g): a weight whose gradient
    is at rounding level can move the other way, so the updated weights differ more than the gradients."""
    grads, state = one_step_difference(["shortcut=conv1x1", "optim=adam"])
    assert grads < 1e-5 and state < 1e-3


def test_wide_forward_is_bit_exact_on_the_cpu_in_fp32():
    """Where bit-exactness holds: the wide net's forward (grouped convs, BN over K*C channels, the batched
    classifier) gives each net's output alone bit for bit on the CPU in fp32. Its backward does not (oneDNN's
    grouped convolution computes input gradients in another order; bench/equality.py measures it)."""
    nets = []
    for seed in range(3):
        torch.manual_seed(seed)
        nets.append(build_model(8, "full_preact", "gating").to(memory_format=torch.channels_last))
    wide, _ = widen(nets)
    xs = [torch.randn(4, 3, 32, 32).contiguous(memory_format=torch.channels_last) for _ in nets]
    out = wide(torch.cat(xs, 1).contiguous(memory_format=torch.channels_last)).view(4, 3, 10)
    assert all(torch.equal(out[:, k], net(x)) for k, (net, x) in enumerate(zip(nets, xs)))


def _trajectory(seeds: list[int], poison: int | None = None, steps: int = 8) -> list[list[torch.Tensor]]:
    runs = _runs(["shortcut=dropout"], seeds)
    wide = WidePack(runs)
    states = []
    for i in range(steps):
        if i == 2 and poison is not None:
            with torch.no_grad():
                next(runs[poison].model.parameters()).fill_(float("nan"))
        wide.follow_schedule()
        wide.step()
        for run in runs:
            run.advance()
        states.append([t.clone() for t in runs[0].model.state_dict().values()] + [runs[0].loss_sum.clone()])
    assert poison is None or torch.isnan(runs[poison].loss_sum)
    return states


def test_no_cross_talk_other_runs_and_a_nan_run_leave_a_run_bit_identical():
    reference = _trajectory([0, 1, 2])
    for other in (_trajectory([0, 5, 6]), _trajectory([0, 1, 2], poison=1)):
        assert all(torch.equal(a, b) for x, y in zip(reference, other) for a, b in zip(x, y))


def test_wide_pack_trains_records_its_mode_and_a_run_resumes_alone(tmp_path):
    args = [*TINY, "pack_mode=wide", "iterations=20", "milestones=[10]"]
    whole = [parse([*args, f"seed={s}", f"run_dir={tmp_path / 'whole' / str(s)}"]) for s in (0, 1)]
    results = train(whole)
    assert [(r["pack_mode"], r["pack_runs"]) for r in results] == [("wide", 2), ("wide", 2)]
    cut = [parse([*args, f"seed={s}", f"run_dir={tmp_path / 'cut' / str(s)}"]) for s in (0, 1)]
    stop = stop_now()  # checkpoint both after iteration 1
    assert [r["status"] for r in train(cut, stop)] == ["paused", "paused"]
    saved = torch.load(tmp_path / "cut" / "0" / "checkpoint.pt", weights_only=False)
    alone = _runs([], [0])[0].state_dict()
    assert {k: v.shape for k, v in saved["model"].items()} == {k: v.shape for k, v in alone["model"].items()}
    assert all(v.untyped_storage().nbytes() == v.numel() * v.element_size() for v in saved["model"].values())
    train(cut)  # the pack resumed as a pack: the uninterrupted numbers, bit for bit
    for s in (0, 1):
        assert metrics(tmp_path / "cut" / str(s)) == metrics(tmp_path / "whole" / str(s))
    train([cut[1]], stop)  # nothing to do: finished
    lone = parse([*TINY, "iterations=20", "milestones=[10]", "seed=0", f"run_dir={tmp_path / 'lone'}"])
    paused = parse([*args, "seed=0", f"run_dir={tmp_path / 'lone'}"])
    train([paused, parse([*args, "seed=1", f"run_dir={tmp_path / 'lone1'}"])], stop_now())
    (resumed,) = train([lone])  # run 0 of a wide pack, resumed alone
    assert resumed["status"] in ("done", "fail") and resumed["iterations"] == 20 and resumed["pack_mode"] == "alone"
    rows = metrics(tmp_path / "lone")
    assert [r["iteration"] for r in rows] == [10, 20]
    assert rows[0]["train_loss"] == pytest.approx(metrics(tmp_path / "whole" / "0")[0]["train_loss"], rel=1e-3)


def test_runs_that_cannot_be_one_wide_net_step_as_streams_with_a_note(tmp_path, capsys):
    cfgs = [parse([*TINY, "pack_mode=wide", f"depth={d}", "iterations=2", "milestones=[]", f"run_dir={tmp_path / str(d)}"])
            for d in (8, 14)]
    results = train(cfgs)
    assert "note: pack_mode=wide cannot pack these 2 runs (they differ in depth); they step as streams" in \
        capsys.readouterr().out
    assert [r["pack_mode"] for r in results] == ["streams", "streams"]
    recorded = json.loads((tmp_path / "8" / "result.json").read_text())
    assert (recorded["pack_runs"], recorded["fallbacks"]) == (
        2, ["pack_mode=wide cannot pack these 2 runs (they differ in depth); they step as streams"])


def test_launcher_packs_wide_runs_by_every_setting_but_the_seed():
    cfgs = [parse([*TINY, f"seed={s}", f"shortcut={sc}", f"pack_mode={mode}"])
            for mode in ("wide", "streams") for sc in ("identity", "gating") for s in range(3)]
    groups = pack(cfgs, 4)
    assert [[(c.pack_mode, c.shortcut, c.seed) for c in g] for g in groups] == [
        [("wide", "identity", 0), ("wide", "identity", 1), ("wide", "identity", 2)],
        [("wide", "gating", 0), ("wide", "gating", 1), ("wide", "gating", 2)],
        [("streams", sc, s) for sc, s in (("identity", 0), ("identity", 1), ("identity", 2), ("gating", 0))],
        [("streams", "gating", 1), ("streams", "gating", 2)]]
