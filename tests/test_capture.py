"""The GPU-only step code on the CPU (tests/standins.py: torch.cuda's graphs and streams replaced by stand-ins whose
replay reruns the captured ops on the captured tensors): every step mode's captured steps give the eager steps'
numbers bit for bit over epochs of buffered draws, through the trainer too (evaluation, checkpoint, resume); the
capture-safety scan passes every captured step (no host synchronisation, no host tensor, random numbers only where
declared); and the negative controls: without `restore`, without the epoch refill, with a value the host fixed at
capture, and with each unsafe op, the checks fail. A capture that fails is recorded in result.json and `status`."""
from __future__ import annotations

import pytest
import standins
import torch
from contracts import all_registered, combinations, entries
from helpers import DONE, TINY, merged, metrics, result, stop_now

from resnet_ablate import run, status
from resnet_ablate.training import step as step_module
from resnet_ablate.training.parse import parse
from resnet_ablate.training.runtime import data_key, load_data
from resnet_ablate.training.state import RunState, build_state
from resnet_ablate.training.step import Stepper, make_stepper
from resnet_ablate.training.trainer import train

CPU = torch.device("cpu")
SHORT = ["synthetic_size=24", "milestones=[5]"]  # 3 steps an epoch: 10 steps refill the draws 4 times, lr drops
STEPS = 10

# step mode -> (settings, runs packed, the pack mode they step in)
MODES = {
    "alone": ([], 1, "alone"),
    "alone-eager-sampling": (["sampling=eager"], 1, "alone"),
    "alone-adam-ghost-bn": (["optim=adam", "lr=0.003", "bn_batch=4"], 1, "alone"),
    "streams-dropout": (["shortcut=dropout"], 2, "streams"),
    "streams-eager-sampling": (["shortcut=dropout", "sampling=eager"], 2, "streams"),
    "wide-ghost-bn": (["pack_mode=wide", "bn_batch=4"], 2, "wide"),
    "wide-eager-sampling": (["pack_mode=wide", "sampling=eager"], 2, "wide"),
    "wide-dropout-as-streams": (["pack_mode=wide", "shortcut=dropout"], 2, "streams"),  # one graph, one RNG stream
}
# Every registered shortcut, unit and optimizer once (the others at their defaults), and their cross product under
# the slow mark (tests/contracts.py's enumeration, shared with the contracts).
ENTRY_CASES = [*entries("shortcut", "unit", "optim"), *combinations("shortcut", "unit", "optim")]


@pytest.fixture
def standin(monkeypatch):
    standins.install(monkeypatch)


def states(settings: list[str], k: int) -> list[RunState]:
    cfgs = [parse([*TINY, *SHORT, *settings, f"seed={s}"]) for s in range(k)]
    data = load_data(cfgs[:1], CPU)[data_key(cfgs[0])]
    return [build_state(c, CPU, "fp32", data) for c in cfgs]


def run_steps(runs: list[RunState], stepper: Stepper, steps: int = STEPS) -> None:
    for _ in range(steps):
        stepper(runs)
        for r in runs:
            r.advance()


def check_random_declared(stepper: Stepper) -> None:
    """The scan's third rule: a captured step draws random numbers exactly where its part says it does."""
    for graph_step in stepper.graphs.values():
        drawn = sorted(set(graph_step.graph.random_ops))
        assert bool(drawn) == graph_step.part.draws_random(), f"random ops {drawn}, declared " \
                                                              f"{graph_step.part.draws_random()}"


def check_replay(settings: list[str], k: int) -> Stepper:
    """K runs stepped by captured graphs (the stand-ins) against the same runs stepped eagerly in the same pack
    mode: graphs captured, every graph replayed once a step, random ops only where declared, and after STEPS steps
    every tensor a step changes (weights, BN buffers, optimizer state, meters, draw counter) and the samplers'
    states bit for bit the eager runs'."""
    graphed = states(settings, k)
    graph_step = make_stepper(graphed)
    eager = states([*settings, "cuda_graph=false", f"pack_mode={'wide' if graph_step.mode == 'wide' else 'streams'}"],
                   k)
    eager_step = make_stepper(eager)
    assert graph_step.facts()["step_mode"] == "graph" and graph_step.mode == eager_step.mode
    check_random_declared(graph_step)
    run_steps(eager, eager_step)
    run_steps(graphed, graph_step)
    assert all(g.graph.replays == STEPS for g in graph_step.graphs.values())
    for a, b in zip(eager, graphed):
        assert len(a.step_tensors()) == len(b.step_tensors())
        different = [i for i, (x, y) in enumerate(zip(a.step_tensors(), b.step_tensors())) if not torch.equal(x, y)]
        assert different == [], f"{len(different)} of {len(a.step_tensors())} step tensors differ"
        assert str(a.sampler.state_dict()) == str(b.sampler.state_dict())
    return graph_step


@pytest.mark.parametrize("mode", MODES)
def test_captured_steps_replay_as_the_eager_steps_in_every_step_mode(standin, mode):
    settings, k, pack_mode = MODES[mode]
    stepper = check_replay(settings, k)
    fell_back = pack_mode != "wide" and "pack_mode=wide" in settings
    assert stepper.mode == pack_mode and len(stepper.fallbacks) == fell_back


@pytest.mark.parametrize("parts", ENTRY_CASES)
def test_every_registered_entry_captured_replays_as_eager(standin, parts):
    """Each entry as a wide pack of two (on streams, with a note, where it cannot be one wide net), through the
    capture-safety scan and the replay."""
    with all_registered(parts) as settings:
        check_replay([*settings, "pack_mode=wide"], 2)


def test_packed_dropout_graphs_share_one_stream_before_torch_2_13(standin, monkeypatch, capsys):
    monkeypatch.setattr(step_module, "PER_GRAPH_RNG", "99")  # as if this torch were older than per-graph RNG
    graph_step = check_replay(["shortcut=dropout"], 2)
    assert "replay on one stream" in capsys.readouterr().out
    first, second = graph_step.graphs.values()
    assert first.stream is second.stream


def test_a_run_trained_through_captured_graphs_is_the_eager_run_and_resumes_as_it(standin, tmp_path):
    """train(): evaluations and checkpoints between replays, and a run stopped after its first step and resumed
    (captured anew mid-epoch) gives the uninterrupted run's numbers; result.json says how each stepped."""
    args = [*TINY, *SHORT, "iterations=12", "eval_every=4", "shortcut=dropout"]
    graphed = train([parse([*args, f"run_dir={tmp_path / 'graph'}"])])[0]
    eager = train([parse([*args, "cuda_graph=false", f"run_dir={tmp_path / 'eager'}"])])[0]
    assert (graphed["step_mode"], eager["step_mode"], graphed["fallbacks"]) == ("graph", "eager", [])
    assert graphed["capture_s"] > 0 and "capture_s" not in eager
    assert metrics(tmp_path / "graph") == metrics(tmp_path / "eager") and len(metrics(tmp_path / "graph")) == 3
    cut = parse([*args, f"run_dir={tmp_path / 'cut'}"])
    assert train([cut], stop_now())[0]["status"] == "paused"
    train([cut])
    assert metrics(tmp_path / "cut") == metrics(tmp_path / "graph")


# --- negative controls: what the checks above catch ------------------------------------------------------------

@pytest.mark.parametrize("sampling, error", [("eager", "step tensors differ"), ("buffered", "index out of range")])
def test_without_restore_the_warm_up_and_capture_stay_in_the_run(standin, monkeypatch, sampling, error):
    """The warm-up's and the capture's steps stay in the weights, BN buffers and optimizer state (eager draws: the
    numbers differ), and the draw counter stays moved on (buffered draws: the replays read past the buffer)."""
    monkeypatch.setattr(step_module, "restore", lambda part, saved: None)
    with pytest.raises((AssertionError, IndexError), match=error):
        check_replay([f"sampling={sampling}"], 1)


def test_without_the_epoch_refill_the_replays_read_past_the_draws(standin, monkeypatch):
    """The refill between replays, once an epoch, is the host's part of in-graph sampling: without it the
    captured draw reads past its buffer (on a GPU: a device-side assert, or another epoch's rows)."""
    runs = states([], 1)
    stepper = make_stepper(runs)
    monkeypatch.setattr(runs[0].sampler, "refill_if_due", lambda: None)
    with pytest.raises(IndexError, match="out of range"):
        run_steps(runs, stepper)


def test_a_value_the_host_fixed_at_capture_stays_fixed_on_replay(standin):
    """The stand-in replays ops, not Python: an lr given to the optimizer as a number is frozen in the graph at
    its capture value, so the replayed run misses the milestone (why the lr lives in a device tensor)."""
    eager, graphed = states(["cuda_graph=false"], 1), states([], 1)
    for r in (*eager, *graphed):
        def number_lr(r: RunState = r) -> None:
            for group in r.optimizer.param_groups:
                group["lr"] = 0.1 if r.iteration < 5 else 0.01
        number_lr()
        r.follow_schedule = number_lr
    eager_step, graph_step = make_stepper(eager), make_stepper(graphed)
    run_steps(eager, eager_step, 5)
    run_steps(graphed, graph_step, 5)
    assert all(torch.equal(x, y) for x, y in zip(eager[0].step_tensors(), graphed[0].step_tensors()))
    run_steps(eager, eager_step, 1)
    run_steps(graphed, graph_step, 1)
    assert not all(torch.equal(x, y) for x, y in zip(eager[0].step_tensors(), graphed[0].step_tensors()))


SYNC, HOST = "inside the captured step (a host synchronisation)", "inside the captured step"
UNSAFE = {  # an op a CUDA graph cannot hold, added to the step -> what the scan says
    "host-sync": (lambda run: run.loss_sum.item(), f"aten._local_scalar_dense.default: the host reads a result {SYNC}"),
    "mask-index": (lambda run: run.loss_sum.view(1)[run.loss_sum.view(1) > 0],
                   f"aten.index.Tensor: the host reads a result {SYNC}"),
    "host-data": (lambda run: run.loss_sum.add_(torch.tensor(0.0, device=run.device)),
                  f"aten.lift_fresh.default: a tensor made from host data {HOST}"),
    "no-device": (lambda run: run.loss_sum.add_(torch.zeros(())),
                  f"aten.zeros.default: a tensor made without device= {HOST} (a host tensor)"),
    "no-device-data": (lambda run: run.loss_sum.add_(torch.tensor(0.0)),
                       f"aten.add_.Tensor: an operand made without device= {HOST} (a host tensor)"),
}


@pytest.mark.parametrize("unsafe", UNSAFE)
def test_the_scan_fails_a_capture_that_holds_an_unsafe_op_and_the_run_steps_eagerly(standin, monkeypatch, capsys,
                                                                                   unsafe):
    add, said = UNSAFE[unsafe]
    real = RunState.train_step

    def train_step(self, x, y):
        real(self, x, y)
        add(self)

    monkeypatch.setattr(RunState, "train_step", train_step)
    stepper = make_stepper(states([], 1))
    assert stepper.graphs is None and stepper.facts()["step_mode"] == "eager"
    assert stepper.fallbacks == [f"CUDA graph capture failed ({said}); training eagerly"]
    assert capsys.readouterr().out.endswith(f"warning: {stepper.fallbacks[0]}\n")


def test_a_step_that_draws_random_numbers_it_does_not_declare_fails_the_scan(standin, monkeypatch):
    monkeypatch.setattr(RunState, "draws_random", lambda self: False)
    with pytest.raises(AssertionError, match=r"random ops \['aten.bernoulli_.float'\], declared False"):
        check_replay(["shortcut=dropout"], 1)


def test_a_fallback_is_recorded_in_result_json_and_shown_by_status(standin, monkeypatch, tmp_path, capsys):
    """A capture that fails (here: a host synchronisation in the step) leaves its reason in every run's
    result.json (`step_mode` eager, `fallbacks`), and `status` lists the runs that fell back."""
    real = RunState.train_step
    monkeypatch.setattr(RunState, "train_step", lambda self, x, y: (real(self, x, y), self.err_sum.item()))
    monkeypatch.chdir(tmp_path)
    assert run.main([*merged(DONE, "iterations=4", "eval_every=2", "milestones=[]"), "seed=0,1", "sweep_dir=s"]) == 0
    reason = ("CUDA graph capture failed (aten._local_scalar_dense.default: the host reads a result inside the "
              "captured step (a host synchronisation)); training eagerly")
    names = sorted(p.name for p in (tmp_path / "s").iterdir() if (p / "result.json").is_file())
    assert [(result(tmp_path / "s" / n)["step_mode"], result(tmp_path / "s" / n)["fallbacks"]) for n in names] == \
        [("eager", [reason])] * 2
    capsys.readouterr()
    assert status.main(["s"]) == 0
    assert capsys.readouterr().out.splitlines() == ["s: 2 runs: 2 done, 0 fail", *(f"  fallback {n}: {reason}"
                                                                                     for n in names)]
