"""The registries as the one source of options: a shortcut, an optimizer and a schedule registered in a test
file train from the command line with their parameters as config keys; each key's range and choices come from
its declaration; clashing or badly declared parameters fail at registration; configs with registered keys
pickle (submitit sends them to jobs)."""
import json
import pickle

import pytest
import torch
from helpers import DONE

from resnet_ablate import run
from resnet_ablate.errors import UsageError
from resnet_ablate.models.cifar import build_model
from resnet_ablate.models.shortcuts import SHORTCUTS, Shortcut, shortcut_parameters
from resnet_ablate.registry import KeyedRegistry, Range
from resnet_ablate.training.config import fields
from resnet_ablate.training.configfile import from_yaml, run_name
from resnet_ablate.training.optim import OPTIMIZERS, SCHEDULES, Optimizer, Schedule, lr_at
from resnet_ablate.training.parse import help_text, parse
from resnet_ablate.training.state import build_network

_GATES = [name for name in SHORTCUTS if "gate_bias" in shortcut_parameters(SHORTCUTS.get(name))]  # the package's


class ScaledResidual(Shortcut):
    """x + alpha * F(x): a variant that is not in the papers, registered by this test only."""

    param_help = {"alpha": "factor on F"}

    def __init__(self, *args, alpha: float = 1.0) -> None:
        super().__init__(*args)
        self.alpha = alpha

    def merge(self, s, f):
        return s + self.alpha * f


@pytest.fixture
def scaled_residual():
    SHORTCUTS.register("test_scaled_residual")(ScaledResidual)
    yield
    SHORTCUTS.unregister("test_scaled_residual")


def test_a_registered_shortcut_trains_from_the_command_line_with_its_parameter(scaled_residual, tmp_path, capsys):
    folder = tmp_path / "run"
    assert run.main([*DONE, "shortcut=test_scaled_residual", "alpha=0.25", f"run_dir={folder}"]) == 0
    cfg = from_yaml(folder / "config.yaml")
    assert (cfg.shortcut, cfg.alpha) == ("test_scaled_residual", 0.25)
    assert json.loads((folder / "result.json").read_text())["status"] == "done"
    net = build_network(cfg, 10)
    assert {u.shortcut.alpha for u in net.units()} == {0.25} and len(net.units()) == 3
    assert "alpha=0.25" in run_name(cfg) and "      alpha=1.0  (float)  factor on F" in help_text().splitlines()
    assert "    test_scaled_residual: x + alpha * F(x): a variant that is not in the papers, registered by this test " \
           "only." in help_text().splitlines()
    with pytest.raises(UsageError, match="bad value for alpha: 'x' is not a valid float"):
        parse(["shortcut=test_scaled_residual", "alpha=x"])


def test_the_key_leaves_with_the_shortcut(scaled_residual):
    assert "alpha" in fields()
    SHORTCUTS.unregister("test_scaled_residual")
    try:
        assert "alpha" not in fields()
        with pytest.raises(UsageError, match="^unknown key 'alpha'"):
            parse(["alpha=0.5"])
    finally:
        SHORTCUTS.register("test_scaled_residual")(ScaledResidual)


def _shortcut_with(param: str, default):
    """A shortcut class whose one parameter is `param` with `default`."""
    namespace: dict = {}
    exec(f"def __init__(self, *args, {param}={default!r}):\n    Shortcut.__init__(self, *args)", {"Shortcut": Shortcut},
         namespace)
    return type(f"With_{param}", (ScaledResidual,), {"__init__": namespace["__init__"]})


@pytest.mark.parametrize("param, default, message", [
    ("init", "", "shortcut 'test_clash': parameter 'init' clashes with the config key 'init'; rename the parameter"),
    ("lr", 0.5, "shortcut 'test_clash': parameter 'lr' clashes with the config key 'lr'"),
    ("budget", "x", "shortcut 'test_clash': parameter 'budget' clashes with the launcher key 'budget'"),
    ("gate_bias", 0.0, f"shortcut 'test_clash': parameter 'gate_bias' (default 0.0) clashes with {', '.join(_GATES)}'s "
                       "gate_bias (default -6.0); rename it"),
])
def test_a_clashing_parameter_fails_at_registration(param, default, message):
    with pytest.raises(UsageError) as e:
        SHORTCUTS.register("test_clash")(_shortcut_with(param, default))
    assert str(e.value).startswith(message) and "\n" not in str(e.value)
    assert "test_clash" not in SHORTCUTS


def test_a_shared_parameter_with_the_same_default_is_one_key():
    SHORTCUTS.register("test_gate_like")(_shortcut_with("gate_bias", -6.0))
    try:
        assert fields()["gate_bias"].metadata["help"].startswith(f"{', '.join([*_GATES, 'test_gate_like'])}:")
        assert parse(["shortcut=test_gate_like", "gate_bias=-2"]).gate_bias == -2.0
    finally:
        SHORTCUTS.unregister("test_gate_like")


def test_configs_pickle_by_value(scaled_residual):
    cfg = parse(["shortcut=test_scaled_residual", "alpha=3", "depth=20"])
    assert pickle.loads(pickle.dumps(cfg)) == cfg


class _SignMomentum(torch.optim.Optimizer):
    """Lion's update (Chen et al. 2023) with one beta: w -= lr * (sign(beta*m + (1-beta)*g) + wd*w), then m moves
    towards g; counts its steps."""

    steps = 0

    def __init__(self, params, lr, beta: float) -> None:
        super().__init__(params, {"lr": lr, "beta": beta, "weight_decay": 0.0})

    @torch.no_grad()
    def step(self, closure=None):
        type(self).steps += 1
        for group in self.param_groups:
            for p in (p for p in group["params"] if p.grad is not None):
                m = self.state[p].setdefault("exp_avg", torch.zeros_like(p))
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.sub_(group["lr"] * (group["beta"] * m + (1 - group["beta"]) * p.grad).sign())
                m.lerp_(p.grad, 1 - group["beta"])


class Lion(Optimizer):
    """Lion-style sign momentum, registered by this test only."""

    param_help = {"lion_beta": "interpolation between momentum and gradient"}
    param_range = {"lion_beta": "[0, 1)"}

    def __init__(self, *, lion_beta: float = 0.9) -> None:
        self.beta = lion_beta

    def build(self, groups, lr):
        return _SignMomentum(groups, lr=lr, beta=self.beta)


@pytest.fixture
def lion():
    OPTIMIZERS.register("test_lion")(Lion)
    _SignMomentum.steps = 0
    yield
    OPTIMIZERS.unregister("test_lion")


def test_a_registered_optimizer_trains_from_the_command_line_with_its_key(lion, tmp_path):
    folder = tmp_path / "run"
    assert run.main([*DONE, "optim=test_lion", "lion_beta=0.5", "lr=0.01", "weight_decay=0.0005",
                     f"run_dir={folder}"]) == 0
    cfg = from_yaml(folder / "config.yaml")
    assert (cfg.optim, cfg.lion_beta) == ("test_lion", 0.5)
    assert _SignMomentum.steps == 30 == cfg.iterations  # every iteration stepped the plugin's optimizer
    assert json.loads((folder / "result.json").read_text())["status"] == "done"
    state = torch.load(folder / "checkpoint.pt", weights_only=False)["optimizer"]
    assert {"exp_avg"} == {k for s in state["state"].values() for k in s}
    assert {g["beta"] for g in state["param_groups"]} == {0.5}
    assert "optim=test_lion_lr=0.01_warmup_iters=0_lion_beta=0.5_weight_decay=0.0005" in run_name(cfg)
    lines = help_text().splitlines()
    at = lines.index("    test_lion: Lion-style sign momentum, registered by this test only.")
    assert lines[at + 1] == "      lion_beta=0.9  (float)  interpolation between momentum and gradient  " \
                            "[allowed: 0 <= lion_beta < 1]"
    with pytest.raises(UsageError, match=r"^lion_beta=1.5 is out of range; allowed: 0 <= lion_beta < 1$"):
        parse(["optim=test_lion", "lion_beta=1.5"])
    notes: list[str] = []
    assert parse(["lion_beta=0.5"], notes).lion_beta == 0.9 and notes[0].startswith("note: lion_beta does not apply")


def test_the_optimizers_key_leaves_with_it(lion):
    assert "lion_beta" in fields()
    OPTIMIZERS.unregister("test_lion")
    try:
        with pytest.raises(UsageError, match="^unknown key 'lion_beta'"):
            parse(["lion_beta=0.5"])
        with pytest.raises(UsageError, match="^unknown optim 'test_lion'"):
            parse(["optim=test_lion"])
    finally:
        OPTIMIZERS.register("test_lion")(Lion)


class Halving(Schedule):
    """the lr halves every `halving_every` iterations, registered by this test only."""

    param_help = {"halving_every": "iterations between halvings"}
    param_range = {"halving_every": "(0, inf)"}

    def __init__(self, *, halving_every: int = 10) -> None:
        self.every = halving_every

    def lr(self, cfg, iteration):
        return cfg.lr * 0.5 ** ((iteration - cfg.warmup_iters) // self.every)


def test_a_registered_schedule_sets_the_lr_with_its_key():
    SCHEDULES.register("test_halving")(Halving)
    try:
        cfg = parse(["schedule=test_halving", "halving_every=100", "warmup_iters=50", "lr=0.4"])
        assert [lr_at(cfg, i) for i in (0, 49, 50, 149, 150, 250)] == [0.01, 0.01, 0.4, 0.4, 0.2, 0.1]
        assert "schedule=test_halving_lr=0.4_warmup_iters=50_halving_every=100" in run_name(cfg)
        with pytest.raises(UsageError, match=r"^halving_every=0 is out of range; allowed: > 0$"):
            parse(["schedule=test_halving", "halving_every=0"])
    finally:
        SCHEDULES.unregister("test_halving")


def _optimizer_with(param: str, default):
    namespace: dict = {}
    exec(f"def __init__(self, *, {param}={default!r}):\n    pass", {}, namespace)
    return type(f"With_{param}", (Lion,), {"__init__": namespace["__init__"], "param_help": {}, "param_range": {}})



@pytest.mark.parametrize("param, default, message", [
    ("warmup_lr", 0.1, "optimizer 'test_clash': parameter 'warmup_lr' clashes with the config key 'warmup_lr'"),
    ("gate_bias", -6.0, "optimizer 'test_clash': parameter 'gate_bias' clashes with the shortcut key 'gate_bias' "
                        f"({', '.join(_GATES)}); rename the parameter"),
    ("betas", [0.5, 0.5], "optimizer 'test_clash': parameter 'betas' (default [0.5, 0.5]) clashes with adam, adamw's "
                          "betas (default [0.9, 0.999]); rename it"),
])
def test_a_clashing_optimizer_parameter_fails_at_registration(param, default, message):
    with pytest.raises(UsageError) as e:
        OPTIMIZERS.register("test_clash")(_optimizer_with(param, default))
    assert str(e.value).startswith(message)
    assert "test_clash" not in OPTIMIZERS


def test_an_optimizer_sharing_a_key_with_its_default_is_its_owner_too():
    OPTIMIZERS.register("test_eps")(_optimizer_with("eps", 1e-8))
    try:
        assert fields()["eps"].metadata["help"] == "adam, adamw, test_eps: denominator epsilon"
        assert parse(["optim=test_eps", "eps=0.001"]).eps == 0.001
    finally:
        OPTIMIZERS.unregister("test_eps")


@pytest.mark.parametrize("attrs, message", [
    ({"param_range": {"lion_bta": "[0, 1)"}}, "param_range names 'lion_bta', which is not one of its parameters"),
    ({"param_help": {"beta": "x"}}, "param_help names 'beta', which is not one of its parameters"),
])
def test_a_declaration_of_no_parameter_fails_at_registration(attrs, message):
    registry = KeyedRegistry("optimizer")
    with pytest.raises(TypeError, match=message):
        registry.register("bad")(type("Bad", (Lion,), attrs))


def test_a_parameter_without_default_fails_at_registration():
    namespace: dict = {}
    exec("def __init__(self, *, beta):\n    pass", {}, namespace)
    with pytest.raises(TypeError, match="optimizer 'bad': parameter 'beta' needs a default"):
        KeyedRegistry("optimizer").register("bad")(type("Bad", (Lion,), {"__init__": namespace["__init__"]}))


@pytest.mark.parametrize("interval, inside, outside, words", [
    ("[0, 1)", [0, 0.5, 0.999], [-0.1, 1, 2], "0 <= k < 1"),
    ("(0, 1]", [0.001, 1], [0, 1.001], "0 < k <= 1"),
    ("(0, inf)", [1e-9, 1e9], [0, -1], "> 0"),
    ("[0, inf)", [0, 5], [-1e-9], ">= 0"),
    ("(-inf, 2]", [-5, 2], [2.5], "<= 2"),
])
def test_a_range_reads_as_an_interval(interval, inside, outside, words):
    allowed = Range(interval)
    assert all(v in allowed for v in inside) and not any(v in allowed for v in outside)
    assert allowed.allowed("k") == words and Range(interval, "in words").allowed("k") == "in words"


def test_a_malformed_range_fails_when_declared():
    with pytest.raises(ValueError, match="range '0..1' is not an interval such as"):
        Range("0..1")


def test_declared_values_are_checked_when_a_net_is_built_directly():
    with pytest.raises(UsageError, match=r"^unknown gate_init 'ones'; allowed: he, zero$"):
        build_model(8, shortcut="gating", gate_init="ones")
    with pytest.raises(UsageError, match=r"^p=1.5 is out of range; allowed: 0 <= p < 1$"):
        build_model(8, shortcut="dropout", p=1.5)


def test_an_optimizer_parameter_named_like_a_launcher_key_fails_at_registration():
    """The command line hands launcher keys (budget=, launcher=, ...) to the launcher, so an optimizer or
    schedule parameter of that name could never be set: refused when registered, as for shortcuts."""
    with pytest.raises(UsageError, match="optimizer 'test_clash': parameter 'budget' clashes with the launcher key"):
        OPTIMIZERS.register("test_clash")(_optimizer_with("budget", 1.0))
    assert "test_clash" not in OPTIMIZERS
