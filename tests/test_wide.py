"""Packing as one wide net (pack_mode=wide): the forward bit for bit; no cross-talk between the runs of a pack
(bit for bit, a NaN run included); each run's checkpoint is its own and resumes alone; runs that cannot be one
wide net step as streams with a note. That one step equals each run alone is a contract over every registered
entry (test_contracts.py); the whole matrix of variants is in bench/equality.py."""
import json

import pytest
import torch
from helpers import TINY, metrics, stop_now

from resnet_ablate.models.cifar import build_model
from resnet_ablate.models.wide import widen
from resnet_ablate.training.parse import parse
from resnet_ablate.training.runtime import data_key, load_data
from resnet_ablate.training.state import RunState, build_state
from resnet_ablate.training.trainer import train
from resnet_ablate.training.wide import WidePack

CPU = torch.device("cpu")


def _runs(extra: list[str], seeds: list[int]) -> list[RunState]:
    cfgs = [parse([*TINY, *extra, f"seed={s}"]) for s in seeds]
    data = load_data(cfgs[:1], CPU)[data_key(cfgs[0])]
    return [build_state(c, CPU, "fp32", data) for c in cfgs]


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
    cfgs = [parse([*TINY, "pack_mode=wide", f"depth={d}", "iterations=2", "milestones=[]",
                   f"run_dir={tmp_path / str(d)}"]) for d in (8, 14)]
    results = train(cfgs)
    assert "note: pack_mode=wide cannot pack these 2 runs (they differ in depth); they step as streams" in \
        capsys.readouterr().out
    assert [r["pack_mode"] for r in results] == ["streams", "streams"]
    recorded = json.loads((tmp_path / "8" / "result.json").read_text())
    assert (recorded["pack_runs"], recorded["fallbacks"]) == (
        2, ["pack_mode=wide cannot pack these 2 runs (they differ in depth); they step as streams"])
