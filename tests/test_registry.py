"""The registries as the one source of model options: a shortcut registered in a test file trains from the
command line with its parameter as a config key; clashing parameter names fail at registration; configs
with registered keys pickle (submitit sends them to jobs)."""
import json
import pickle

import pytest
from helpers import TINY

from resnet_ablate import run
from resnet_ablate.models.shortcuts import SHORTCUTS, Shortcut
from resnet_ablate.registry import UsageError, first_line, unknown
from resnet_ablate.training.config import fields, from_yaml, run_name
from resnet_ablate.training.parse import help_text, parse
from resnet_ablate.training.state import build_network


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
    assert run.main([*TINY, "shortcut=test_scaled_residual", "alpha=0.25", "fail_threshold=100",
                     f"run_dir={folder}"]) == 0
    cfg = from_yaml(folder / "config.yaml")
    assert (cfg.shortcut, cfg.alpha) == ("test_scaled_residual", 0.25)
    assert json.loads((folder / "result.json").read_text())["status"] == "done"
    net = build_network(cfg, 10)
    assert {u.shortcut.alpha for u in net.units()} == {0.25} and len(net.units()) == 3
    assert "alpha=0.25" in run_name(cfg) and "alpha=1.0  (float)  test_scaled_residual: factor on F" in help_text()
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
    ("gate_bias", 0.0, "shortcut 'test_clash': parameter 'gate_bias' (default 0.0) clashes with gating, "
                       "shortcut_gating, highway_gating's gate_bias (default -6.0); rename it"),
])
def test_a_clashing_parameter_fails_at_registration(param, default, message):
    with pytest.raises(UsageError) as e:
        SHORTCUTS.register("test_clash")(_shortcut_with(param, default))
    assert str(e.value).startswith(message) and "\n" not in str(e.value)
    assert "test_clash" not in SHORTCUTS


def test_a_shared_parameter_with_the_same_default_is_one_key():
    SHORTCUTS.register("test_gate_like")(_shortcut_with("gate_bias", -6.0))
    try:
        assert fields()["gate_bias"].metadata["help"].startswith("gating, shortcut_gating, highway_gating, test_gate_like:")
        assert parse(["shortcut=test_gate_like", "gate_bias=-2"]).gate_bias == -2.0
    finally:
        SHORTCUTS.unregister("test_gate_like")


def test_configs_pickle_by_value(scaled_residual):
    cfg = parse(["shortcut=test_scaled_residual", "alpha=3", "depth=20"])
    assert pickle.loads(pickle.dumps(cfg)) == cfg


def test_message_helpers():
    assert str(unknown("launcher", "cloud", ["inline", "slurm"])) == "unknown launcher 'cloud'; allowed: inline, slurm"
    assert str(unknown("budget", "quik", ["full", "quick"], where="a.yaml", of="for t1")) == \
        "a.yaml: unknown budget 'quik' for t1 (did you mean 'quick'?); allowed: full, quick"
    assert first_line(RuntimeError("")) == "RuntimeError" and first_line(ValueError("\n a\nb")) == "a"
    assert first_line("") == ""
