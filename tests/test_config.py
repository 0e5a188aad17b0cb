"""Config parsing, validation, names and --help; the CLI's one-line errors with exit code 2."""
import pytest
from helpers import run_cli

from resnet_ablate.training.config import defaults, fields, from_yaml, run_name, to_yaml
from resnet_ablate.training.parse import help_text, parse
from resnet_ablate.sweeps.settings import help_text as launch_help_text
from resnet_ablate.models.shortcuts import shortcut_parameters
from resnet_ablate.registry import UsageError
from resnet_ablate.models.shortcuts import SHORTCUTS
from resnet_ablate.training.optim import lr_at
from resnet_ablate.models.units import UNITS


def test_defaults_are_the_papers_recipe():
    cfg = parse([])
    assert (cfg.depth, cfg.unit, cfg.shortcut, cfg.dataset) == (110, "original", "identity", "cifar10")
    assert (cfg.lr, cfg.momentum, cfg.weight_decay, cfg.batch_size) == (0.1, 0.9, 1e-4, 128)
    assert (cfg.iterations, cfg.milestones, cfg.warmup_iters, cfg.warmup_lr) == (64000, [32000, 48000], 400, 0.01)


def test_overrides_are_typed():
    cfg = parse(["shortcut=gating", "depth=56", "gate_bias=-7", "seed=3", "milestones=[100,200]"])
    assert (cfg.shortcut, cfg.depth, cfg.gate_bias, cfg.seed, cfg.milestones) == ("gating", 56, -7.0, 3, [100, 200])
    assert parse(["shortcut=dropout", "inverted=true"]).inverted is True  # (another shortcut's would be ignored)


def test_every_shortcut_parameter_is_a_config_key_with_the_class_default():
    for name in SHORTCUTS:
        for param, default in shortcut_parameters(SHORTCUTS.get(name)).items():
            assert getattr(defaults(), param) == default


@pytest.mark.parametrize("overrides,message", [
    (["deph=20"], "unknown key 'deph' (did you mean 'depth'?); see --help for the keys"),
    (["depth"], "expected key=value, got 'depth'; see --help"),
    (["gate_bias=abc"], "bad value for gate_bias: 'abc' is not a valid float"),
    (["depth=1.5"], "bad value for depth: '1.5' is not a valid int"),
    (["shortcut=foo"], "unknown shortcut 'foo'; allowed: identity, scaling, gating, shortcut_gating, conv1x1, "
                       "dropout, none"),
    (["unit=full_preac"], "unknown unit 'full_preac' (did you mean 'full_preact'?); allowed: original, "
                          "bn_after_add, relu_before_add, relu_preact, full_preact"),
    (["depth=57"], "depth 57 is neither 6n+2"),
    (["depth=24", "block=bottleneck"], "depth 24 is not 9n+2 for block=bottleneck"),
    (["dataset=mnist"], "unknown dataset 'mnist'; allowed: cifar10, cifar100, synthetic"),
    (["p=1.5"], "p=1.5 is out of range; allowed: 0 <= p < 1"),
    (["milestones=[48000,32000]"], "milestones=[48000, 32000] must be increasing positive iterations"),
    (["device=tpu"], "unknown device 'tpu' (did you mean 'cpu'?); allowed: auto, cpu, cuda, cuda:N"),
    (["dataset=synthetic", "synthetic_size=64", "batch_size=65"],
     "batch_size=65 is larger than the 64 training images of dataset=synthetic; use batch_size=64 or less"),
    (["val_split=49990", "batch_size=11"], "batch_size=11 is larger than the 10 training images of dataset=cifar10"),
    (["iterations=30", "milestones=[20]", "warmup_iters=0", "grad_probe_at=[0,31,40]"],
     "grad_probe_at=[0, 31, 40]: 31, 40 lie past iterations=30, so no probe would be taken there; use iterations 0..30"),
    (["run_dir=~/t"], "run_dir=~/t: the shell did not expand '~' here; write the path out, e.g. run_dir="),
    (["data_dir=~/data"], "data_dir=~/data: the shell did not expand '~' here"),
])
def test_bad_input_gives_one_clear_line(overrides, message):
    with pytest.raises(UsageError) as e:
        parse(overrides)
    assert str(e.value).startswith(message)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("arg,fragment", [
    ("shortcut=foo", "unknown shortcut 'foo'; allowed: identity, scaling"),
    ("unit=foo", "unknown unit 'foo'; allowed: original"),
    ("depth=57", "depth 57 is neither 6n+2"),
    ("gate_bias=abc", "bad value for gate_bias: 'abc' is not a valid float"),
    ("seedd=1", "unknown key 'seedd' (did you mean 'seed'?)"),
])
def test_cli_errors_exit_2_with_one_line_and_no_traceback(tmp_path, arg, fragment):
    proc = run_cli(arg, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and fragment in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "runs").exists()


def test_help_lists_every_key_type_default_and_registry_names(tmp_path):
    text = help_text()
    for name in fields():
        assert f"  {name}=" in text
    assert "depth=110  (int)" in text and "gate_bias=-6.0  (float)" in text and "milestones=[32000, 48000]" in text
    for registry in (SHORTCUTS, UNITS):
        assert f"[allowed: {', '.join(registry.names())}]" in text
    proc = run_cli("--help", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == f"{text}\n{launch_help_text()}"  # then the launcher's


def test_run_name_shows_what_differs_from_the_defaults():
    assert run_name(parse([])) == "cifar10_d110_original_identity_s0"
    name = run_name(parse(["shortcut=gating", "gate_bias=-7", "seed=2", "device=cpu", "iterations=8000",
                           "milestones=[4000,6000]"]))
    assert name == "cifar10_d110_original_gating_gate_bias=-7.0_iterations=8000_milestones=4000-6000_s2"


def test_config_round_trips_through_yaml(tmp_path):
    cfg = parse(["shortcut=dropout", "p=0.3", "milestones=[10,20]"])
    (tmp_path / "c.yaml").write_text(to_yaml(cfg))
    assert from_yaml(tmp_path / "c.yaml") == cfg


def test_lr_schedule_warmup_and_milestones():
    cfg = parse([])
    assert [lr_at(cfg, i) for i in (0, 399, 400, 31999, 32000, 47999, 48000, 63999)] == pytest.approx(
        [0.01, 0.01, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
