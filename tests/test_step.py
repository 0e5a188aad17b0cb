"""The fast path's pieces on CPU: the lr-as-tensor schedule, and packed runs that keep their own seeds, data
order, dropout draws and run folders; which packed graphs share one RNG stream (by torch version), and on a GPU,
graphs with dropout, ghost BN and every optimizer captured. That a graph capture's warm-up is undone by `restore`
is a contract over every optimizer (test_contracts.py)."""
import types

import pytest
import torch
from helpers import TINY, metrics, needs_cuda, result

from resnet_ablate.errors import UsageError
from resnet_ablate.training.compiled import compile_net
from resnet_ablate.training.optim import OPTIMIZERS, lr_at, param_groups
from resnet_ablate.training.parse import parse
from resnet_ablate.training.state import RunState, build_state
from resnet_ablate.training.step import eager_step, make_stepper, one_rng_stream
from resnet_ablate.training.trainer import train


def _run(args: list[str]) -> RunState:
    return build_state(parse(args), torch.device("cpu"))


def _weights(run: RunState) -> list[torch.Tensor]:
    return [t.clone() for t in run.model.state_dict().values()]


def test_lr_tensor_follows_the_schedule_and_drives_the_update(tmp_path):
    """The optimizer reads the run's device lr tensor: filling it changes the step size exactly as
    a float lr would, warm-up and milestones included."""
    run = _run([*TINY, "warmup_iters=3", "milestones=[5,8]", f"run_dir={tmp_path / 'r'}"])
    assert all(g["lr"] is run.lrs.tensor(1.0) for g in run.optimizer.param_groups)
    reference = _run([*TINY, "warmup_iters=3", "milestones=[5,8]", f"run_dir={tmp_path / 'r2'}"])
    float_sgd = torch.optim.SGD(param_groups(reference.model, reference.cfg, reference.lrs)[0], lr=0.1, momentum=0.9)
    seen = []
    for i in range(10):
        run.iteration = i
        eager_step([run])
        seen.append(run.lrs.tensor(1.0).item())
        for g in float_sgd.param_groups:
            g["lr"] = lr_at(reference.cfg, i)
        with reference.own_rng():
            x, y = reference.batch()
            float_sgd.zero_grad()
            torch.nn.functional.cross_entropy(reference.model(x), y).backward()
            float_sgd.step()
    assert seen == pytest.approx([0.01] * 3 + [0.1] * 2 + [0.01] * 3 + [0.001] * 2)
    for a, b in zip(run.model.parameters(), reference.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_packed_runs_equal_the_same_runs_alone(tmp_path):
    """Two seeds and two variants packed in one process give the numbers each gives alone, each in
    its own run folder (dropout draws from each run's own stream)."""
    variants = [["shortcut=dropout", "seed=0"], ["shortcut=dropout", "seed=1"], ["shortcut=gating", "seed=0"]]
    packed = [parse([*TINY, *v, f"run_dir={tmp_path / 'packed' / str(i)}"]) for i, v in enumerate(variants)]
    train(packed)
    for i, v in enumerate(variants):
        train([parse([*TINY, *v, f"run_dir={tmp_path / 'alone' / str(i)}"])])
        assert metrics(tmp_path / "packed" / str(i)) == metrics(tmp_path / "alone" / str(i))
        packed_result, alone_result = result(tmp_path / "packed" / str(i)), result(tmp_path / "alone" / str(i))
        assert (packed_result.pop("pack_mode"), packed_result.pop("pack_runs")) == ("streams", 3)
        assert (alone_result.pop("pack_mode"), alone_result.pop("pack_runs")) == ("alone", 1)
        assert packed_result == alone_result
    assert metrics(tmp_path / "packed" / "0") != metrics(tmp_path / "packed" / "1")


def test_packed_runs_must_share_the_lockstep_settings(tmp_path):
    cfgs = [parse([*TINY, f"run_dir={tmp_path / 'a'}"]), parse([*TINY, "batch_size=16", f"run_dir={tmp_path / 'b'}"])]
    with pytest.raises(UsageError, match="packed runs must share batch_size"):
        train(cfgs)


def test_cpu_steps_eagerly(tmp_path):
    step = make_stepper([_run([*TINY, f"run_dir={tmp_path / 'r'}"])])
    assert step.graphs is None and step.capture_s is None
    assert step.facts() == {"pack_mode": "alone", "pack_runs": 1, "step_mode": "eager", "fallbacks": [],
                            "compiled": False}


def _max_rel(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(((x.double() - y.double()).norm() / y.double().norm().clamp_min(1e-30)).item()
               for x, y in zip(a, b) if y.dtype.is_floating_point)


def test_compiled_step_equals_the_eager_step_and_a_recompile_limit_is_said(tmp_path, capsys, monkeypatch):
    """compile=true: the compiled net's step from the same state gives the eager step's gradients and weights to
    1e-5 relative (seed 0, where both fp32 forwards make the float64 ReLU decisions; bench/equality.py
    has the whole matrix against float64). Another net through the same forward code beyond dynamo's recompile
    limit is a warning and the eager net, not an eager net recorded as compiled."""
    eager, compiled = (_run([*TINY, f"run_dir={tmp_path / n}"]) for n in ("e", "c"))
    compiled.cfg.compile = True
    step = make_stepper([compiled])
    assert step.facts()["compiled"] and step.compile_s > 0 and compiled.net is not compiled.model
    for run in (eager, compiled):
        run.follow_schedule()
        run.step()
    assert _max_rel([p.grad for p in compiled.model.parameters()], [p.grad for p in eager.model.parameters()]) < 1e-5
    assert _max_rel(list(compiled.model.state_dict().values()), list(eager.model.state_dict().values())) < 1e-5
    assert "warning" not in capsys.readouterr().out
    import torch._dynamo

    def tight(model, runs=1):  # the limit set after compile_net raises it: the next net is one too many
        net = compile_net(model, runs)
        monkeypatch.setattr(torch._dynamo.config, "recompile_limit", 1)
        return net

    monkeypatch.setattr("resnet_ablate.training.step.compile_net", tight)
    other = _run([*TINY, "shortcut=gating", "compile=true", f"run_dir={tmp_path / 'g'}"])
    capsys.readouterr()
    assert not make_stepper([other]).facts()["compiled"] and other.net is other.model
    assert capsys.readouterr().out.startswith("warning: compile=true failed (FailOnRecompileLimitHit: ")


def test_a_failed_compile_is_one_warning_and_the_eager_net(tmp_path, monkeypatch, capsys):
    def broken(model, runs=1):
        def call(x):
            raise RuntimeError("no C++ compiler\ndetails")
        return call

    monkeypatch.setattr("resnet_ablate.training.step.compile_net", broken)
    run, reference = (_run([*TINY, "compile=true", f"run_dir={tmp_path / 'r'}"]),
                      _run([*TINY, f"run_dir={tmp_path / 'q'}"]))
    capsys.readouterr()
    step = make_stepper([run])
    assert capsys.readouterr().out == "warning: compile=true failed (RuntimeError: no C++ compiler); training the " \
                                      "eager net\n"
    assert run.net is run.model and step.facts()["compiled"] is False
    assert step.facts()["fallbacks"] == ["compile=true failed (RuntimeError: no C++ compiler); training the eager net"]
    for r in (run, reference):
        r.follow_schedule()
        r.step()
    assert all(torch.equal(a, b)
               for a, b in zip(run.model.state_dict().values(), reference.model.state_dict().values()))


def _fake_runs(*draws: bool):
    return [types.SimpleNamespace(draws_random=lambda d=d: d) for d in draws]


def test_packed_graphs_that_draw_random_numbers_share_one_stream_before_torch_2_13():
    assert one_rng_stream(_fake_runs(True, True), "2.11.0+cu126")
    assert one_rng_stream(_fake_runs(True, False, True), "2.12.1")
    assert not one_rng_stream(_fake_runs(True, True), "2.13.0")
    assert not one_rng_stream(_fake_runs(True, True), "2.14.1+cu130")
    assert not one_rng_stream(_fake_runs(True, False), "2.11.0")  # one drawing graph cannot race
    assert not one_rng_stream(_fake_runs(True), "2.11.0")


@needs_cuda
def test_packed_dropout_graphs_on_cuda_equal_the_runs_alone(tmp_path):
    """On a GPU: packed runs with dropout (graphs on streams, or one stream on torch < 2.13) give the numbers
    each gives alone."""
    args = [a for a in TINY if a != "device=cpu"] + ["device=cuda", "precision=fp32", "deterministic=true",
                                                     "shortcut=dropout"]
    train([parse([*args, f"seed={s}", f"run_dir={tmp_path / 'p' / str(s)}"]) for s in (0, 1)])
    for s in (0, 1):
        train([parse([*args, f"seed={s}", f"run_dir={tmp_path / 'a' / str(s)}"])])
        assert metrics(tmp_path / "p" / str(s)) == metrics(tmp_path / "a" / str(s))


@needs_cuda
@pytest.mark.parametrize("optim_name", OPTIMIZERS.names())
def test_ghost_bn_and_adam_are_captured_in_the_cuda_graph(tmp_path, capsys, optim_name):
    """On a GPU: ghost BN (no host sync, static shapes) and every optimizer (Adam's capturable) train inside the
    captured graph, with no fallback to eager (result.json's capture_s exists only for graphs)."""
    args = [a for a in TINY if a != "device=cpu"] + ["device=cuda", "bn_batch=4", f"optim={optim_name}", "lr=0.01"]
    (summary,) = train([parse([*args, f"run_dir={tmp_path / 'r'}"])])
    assert "capture failed" not in capsys.readouterr().out
    assert summary["capture_s"] > 0 and summary["status"] in ("done", "fail")
