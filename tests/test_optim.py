"""Optimizers and schedules: the lr function matches PyTorch's schedulers, bad settings are one line (a schedule
that would never take effect too); the parameter groups keep the gates out of weight decay on request, and Adam
is capturable on CUDA only. That every optimizer and schedule trains and resumes exactly is a contract over the
registries (test_contracts.py)."""
import types

import pytest
import torch
from helpers import TINY

from resnet_ablate.errors import UsageError
from resnet_ablate.models.cifar import build_model
from resnet_ablate.models.shortcuts import ExclusiveGating
from resnet_ablate.training.optim import OPTIMIZERS, SCHEDULES, LearningRates, lr_at, make_optimizer, param_groups
from resnet_ablate.training.parse import parse


def _torch_lrs(make_scheduler, n: int, lr: float) -> list[float]:
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    sched, seen = make_scheduler(opt), []
    for _ in range(n):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return seen


@pytest.mark.parametrize("schedule", ["cosine", "onecycle"])
def test_schedules_follow_pytorch_after_warm_up(schedule):
    cfg = parse(["schedule=" + schedule, "iterations=1000", "warmup_iters=100", "lr=0.4"])
    if schedule == "cosine":
        make = lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=900)  # noqa: E731
    else:
        make = lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.4, total_steps=900)  # noqa: E731
    expected = _torch_lrs(make, 900, 0.4)
    ours = [lr_at(cfg, i) for i in range(1000)]
    assert ours[:100] == [cfg.warmup_lr] * 100
    assert ours[100:] == pytest.approx(expected, rel=1e-6, abs=1e-12)


def test_step_schedule_is_the_papers():
    cfg = parse([])
    assert [lr_at(cfg, i) for i in (0, 399, 400, 31999, 32000, 47999, 48000, 63999)] == pytest.approx(
        [0.01, 0.01, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


@pytest.mark.parametrize("args, message", [
    (["optim=lamb"], f"unknown optim 'lamb'; allowed: {', '.join(OPTIMIZERS.names())}"),
    (["schedule=cos"], f"unknown schedule 'cos' (did you mean 'cosine'?); allowed: {', '.join(SCHEDULES.names())}"),
    (["optim=adam", "betas=[0.9]"], "betas=[0.9] must be two numbers in [0, 1)"),
    (["optim=adamw", "betas=[0.9,1.0]"], "betas=[0.9,1.0] must be two numbers in [0, 1)"),
    (["onecycle_pct=1.5"], "onecycle_pct=1.5 is out of range; allowed: 0 < onecycle_pct < 1"),
    (["optim=adam", "eps=0"], "eps=0.0 is out of range; allowed: > 0"),
    (["nesterov=true", "momentum=0"], "nesterov=true needs momentum > 0"),
    (["iterations=4000", "milestones=[2000,4000]"], "milestones=[2000,4000] reach past iterations=4000"),
])
def test_bad_optimizer_settings_are_one_line(args, message):
    with pytest.raises(UsageError) as e:
        parse(args)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_milestones_past_the_run_bind_the_step_schedule_only():
    assert parse(["iterations=4000", "schedule=cosine"]).milestones == [32000, 48000]


@pytest.mark.parametrize("overrides,message", [
    (["iterations=4000"], "milestones=[32000,48000] reach past iterations=4000, so the lr would never drop at "
                          "32000, 48000; set milestones=[2000,3000] (the papers' 1/2 and 3/4 of the run) or "
                          "milestones=[] for a constant lr"),
    (["iterations=100", "milestones=[50,100]", "warmup_iters=0"], "milestones=[50,100] reach past iterations=100"),
    (["iterations=300", "milestones=[100]"], "warmup_iters=400 is not shorter than iterations=300, so the run "
                                             "never leaves warm-up; set warmup_iters=0 or fewer than 300"),
])
def test_a_schedule_that_never_takes_effect_is_refused(overrides, message):
    with pytest.raises(UsageError) as e:
        parse(overrides)
    assert str(e.value).startswith(message)


def test_gate_weight_decay_false_keeps_the_gate_out_of_decay():
    args = [*TINY, "shortcut=gating"]
    for flag, decayed in (("true", True), ("false", False)):
        cfg = parse([*args, f"gate_weight_decay={flag}"])
        model = build_model(8, shortcut="gating", gate_weight_decay=cfg.gate_weight_decay)
        groups, _ = param_groups(model, cfg, LearningRates(0.1, torch.device("cpu")))
        gate_ids = {id(p) for m in model.modules() if isinstance(m, ExclusiveGating) for p in m.gate.parameters()}
        decay = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
        assert (gate_ids <= decay) is decayed and (not gate_ids & decay) is (not decayed)
        assert len(gate_ids) == 6


def test_adam_is_capturable_on_cuda_only(monkeypatch):
    seen = []

    class Fake:
        def __init__(self, groups, **kwargs):
            seen.append(kwargs)

    monkeypatch.setattr(torch.optim, "Adam", Fake)
    monkeypatch.setattr(torch.optim, "AdamW", Fake)
    for device in ("cuda", "cpu"):
        for name in ("adam", "adamw"):
            cfg = parse([*TINY, f"optim={name}"])
            make_optimizer(cfg, [], types.SimpleNamespace(device=torch.device(device)))
    assert [k["capturable"] for k in seen] == [True, True, False, False]
    assert all(k["fused"] for k in seen)
