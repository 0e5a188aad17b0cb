"""Config parsing, validation, names and --help; the CLI's one-line errors with exit code 2."""
import pytest
from helpers import TINY, run_cli

from resnet_ablate import run
from resnet_ablate.errors import UsageError
from resnet_ablate.models.shortcuts import SHORTCUTS, shortcut_parameters
from resnet_ablate.models.units import UNITS
from resnet_ablate.registry import parameters
from resnet_ablate.sweeps.launchkeys import help_text as launch_help_text
from resnet_ablate.training.config import FAMILIES, defaults, downsampling, fields, registered_keys
from resnet_ablate.training.configfile import from_yaml, run_name, to_yaml
from resnet_ablate.training.optim import OPTIMIZERS, SCHEDULES
from resnet_ablate.training.parse import help_text, parse


def test_defaults_are_the_papers_recipe():
    cfg = parse([])
    assert (cfg.depth, cfg.unit, cfg.shortcut, cfg.dataset) == (110, "original", "identity", "cifar10")
    assert (cfg.lr, cfg.momentum, cfg.weight_decay, cfg.batch_size) == (0.1, 0.9, 1e-4, 128)
    assert (cfg.iterations, cfg.milestones, cfg.warmup_iters, cfg.warmup_lr) == (64000, [32000, 48000], 400, 0.01)


def test_overrides_are_typed():
    cfg = parse(["shortcut=gating", "depth=56", "gate_bias=-7", "seed=3", "milestones=[100,200]"])
    assert (cfg.shortcut, cfg.depth, cfg.gate_bias, cfg.seed, cfg.milestones) == ("gating", 56, -7.0, 3, [100, 200])
    assert parse(["shortcut=dropout", "inverted=true"]).inverted is True  # (another shortcut's would be ignored)


def test_every_registered_parameter_is_a_config_key_with_the_class_default():
    for family in FAMILIES:
        for name in family.registry:
            for param, default in parameters(family.registry.get(name)).items():
                assert getattr(defaults(), param) == default
                assert fields()[param].metadata["family"] == family.selector
    assert shortcut_parameters(SHORTCUTS.get("dropout")) == {"p": 0.5, "inverted": False}
    assert [k for k, f in fields().items() if f.metadata["family"] in ("optim", "schedule")] == \
        ["momentum", "nesterov", "betas", "eps", "onecycle_pct"]  # their old place: the run names stay


def test_the_keys_stand_where_they_stood_so_run_names_stay():
    assert list(fields())[list(fields()).index("warmup_lr"):][:7] == \
        ["warmup_lr", "momentum", "nesterov", "betas", "eps", "onecycle_pct", "weight_decay"]
    name = run_name(parse(["recipe=default", "optim=adam", "lr=0.003", "betas=[0.8,0.99]", "weight_decay=0.05",
                           "seed=1"]))
    assert name == "cifar10_d110_original_identity_optim=adam_lr=0.003_betas=0.8-0.99_weight_decay=0.05_s1"
    assert run_name(parse(["recipe=default", "momentum=0.5", "nesterov=true", "warmup_lr=0.02"])) == \
        "cifar10_d110_original_identity_warmup_lr=0.02_momentum=0.5_nesterov=True_s0"


@pytest.mark.parametrize("overrides,message", [
    (["deph=20"], "unknown key 'deph' (did you mean 'depth'?); see --help for the keys"),
    (["depth"], "expected key=value, got 'depth'; see --help"),
    (["gate_bias=abc"], "bad value for gate_bias: 'abc' is not a valid float"),
    (["depth=1.5"], "bad value for depth: '1.5' is not a valid int"),
    (["shortcut=foo"], f"unknown shortcut 'foo'; allowed: {', '.join(SHORTCUTS.names())}"),
    (["unit=full_preac"], "unknown unit 'full_preac' (did you mean 'full_preact'?); allowed: "
                          f"{', '.join(UNITS.names())}"),
    (["depth=57"], "depth 57 is neither 6n+2"),
    (["depth=24", "block=bottleneck"], "depth 24 is not 9n+2 for block=bottleneck"),
    (["dataset=mnist"], "unknown dataset 'mnist'; allowed: cifar10, cifar100, synthetic"),
    (["p=1.5"], "p=1.5 is out of range; allowed: 0 <= p < 1"),
    (["momentum=1"], "momentum=1.0 is out of range; allowed: 0 <= momentum < 1"),
    (["val_split=50000"], "val_split=50000 is out of range; allowed: 0..49999"),
    (["gate_init=ones"], "unknown gate_init 'ones'; allowed: he, zero"),
    (["milestones=[48000,32000]"], "milestones=[48000,32000] must be increasing positive iterations"),
    (["milestones=[2,2]", "schedule=cosine"], "milestones=[2,2] must be increasing positive iterations"),
    (["device=tpu"], "unknown device 'tpu' (did you mean 'cpu'?); allowed: auto, cpu, cuda, cuda:N"),
    (["recipe=default", "dataset=synthetic", "synthetic_size=64", "batch_size=65"],
     "batch_size=65 is larger than the 64 training images of dataset=synthetic; use batch_size=64 or less"),
    (["recipe=default", "val_split=49990", "batch_size=11"],
     "batch_size=11 is larger than the 10 training images of dataset=cifar10"),
    (["dataset=synthetic", "val_split=5000"],
     "val_split=5000 leaves no training images (dataset=synthetic has 512); use val_split=511 or less"),
    (["iterations=30", "milestones=[20]", "warmup_iters=0", "grad_probe_at=[0,31,40]"],
     "grad_probe_at=[0,31,40]: 31, 40 lie past iterations=30, so no probe would be taken there; use iterations 0..30"),
    (["run_dir=~/t"], "run_dir=~/t: the shell did not expand '~' here; write the path out, e.g. run_dir="),
    (["data_dir=~/data"], "data_dir=~/data: the shell did not expand '~' here"),
    (["momentum=5"], "momentum=5.0 is out of range; allowed: 0 <= momentum < 1"),
    (["weight_decay=-1"], "weight_decay=-1.0 is out of range; allowed: >= 0"),
    (["bn_momentum=2"], "bn_momentum=2.0 is out of range; allowed: 0 < bn_momentum <= 1"),
    (["fail_threshold=-1"], "fail_threshold=-1.0 is out of range; allowed: a test error in %, 0..100"),
    (["time_limit_s=-5"], "time_limit_s=-5.0 is out of range; allowed: >= 0"),
    (["seed=-1"], "seed=-1 is out of range; allowed: 0 <= seed < 2**32"),
    (["heartbeat_s=-1"], "heartbeat_s=-1.0 is out of range"),
    (["threads=-2"], "threads=-2 is out of range"),
])
def test_bad_input_gives_one_clear_line(overrides, message):
    with pytest.raises(UsageError) as e:
        parse(overrides)
    assert str(e.value).startswith(message)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("arg,fragment", [
    ("shortcut=foo", f"unknown shortcut 'foo'; allowed: {', '.join(SHORTCUTS.names())}"),
    ("unit=foo", f"unknown unit 'foo'; allowed: {', '.join(UNITS.names())}"),
    ("depth=57", "depth 57 is neither 6n+2"),
    ("gate_bias=abc", "bad value for gate_bias: 'abc' is not a valid float"),
    ("seedd=1", "unknown key 'seedd' (did you mean 'seed'?)"),
])
def test_cli_errors_exit_2_with_one_line_and_no_traceback(tmp_path, monkeypatch, capsys, arg, fragment):
    """In-process through run.main (the real process's exit path: the next test)."""
    monkeypatch.chdir(tmp_path)
    assert run.main([arg]) == 2
    out, err = capsys.readouterr()
    assert err.startswith("error: ") and fragment in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err + out
    assert not (tmp_path / "runs").exists()


def test_a_real_process_exits_2_with_one_line_and_no_traceback(tmp_path):
    """The run CLI as a process: `python -m resnet_ablate.run` turns a bad key into exit code 2 and one line (no
    import-time warning above it, no traceback)."""
    proc = run_cli("shortcut=foo", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "unknown shortcut 'foo'; allowed: identity, scaling" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "runs").exists()


def test_help_lists_every_key_type_default_and_registry_names(capsys):
    text = help_text()
    for name in fields():
        assert f"  {name}=" in text
    assert "depth=110  (int)" in text and "gate_bias=-6.0  (float)" in text and "milestones=[32000,48000]" in text
    for registry in (SHORTCUTS, UNITS, OPTIMIZERS, SCHEDULES):
        assert f"[allowed: {', '.join(registry.names())}]" in text
    assert "  iterations=64000  (int)  training iterations  [allowed: > 0]" in text.splitlines()
    assert run.main(["--help"]) == 0
    assert capsys.readouterr().out.strip() == f"{text}\n{launch_help_text()}"  # then the launcher's


def test_run_name_shows_what_differs_from_the_defaults():
    assert run_name(parse(["recipe=default"])) == "cifar10_d110_original_identity_s0"
    name = run_name(parse(["recipe=default", "shortcut=gating", "gate_bias=-7", "seed=2", "device=cpu",
                           "iterations=8000", "milestones=[4000,6000]"]))
    assert name == "cifar10_d110_original_gating_gate_bias=-7.0_iterations=8000_milestones=4000-6000_s2"


def test_config_round_trips_through_yaml(tmp_path):
    cfg = parse(["shortcut=dropout", "p=0.3", "milestones=[10,20]"])
    (tmp_path / "c.yaml").write_text(to_yaml(cfg))
    assert from_yaml(tmp_path / "c.yaml") == cfg



def test_help_lists_each_optimizer_and_schedule_with_its_keys_under_it():
    lines = help_text().splitlines()
    start = lines.index(next(line for line in lines if line.startswith("  optim=sgd  (str)")))
    assert lines[start + 1:start + 8] == [
        "    sgd: SGD with momentum (the papers), fused.",
        "      momentum=0.9  (float)  SGD momentum  [allowed: 0 <= momentum < 1]",
        "      nesterov=false  (bool)  Nesterov momentum (fb.resnet.torch train.lua:24; the papers: not stated, plain "
        "momentum)",
        "    adam: Adam, fused.",
        "      betas=[0.9,0.999]  (list[float])  moment decay rates",
        "      eps=1e-08  (float)  denominator epsilon  [allowed: > 0]",
        "    adamw: AdamW: Adam with decoupled weight decay, fused."]
    assert lines[start + 8] == "      betas, eps: as adam"
    onecycle = lines.index(next(line for line in lines if line.startswith("    onecycle: ")))
    assert lines[onecycle + 1] == "      onecycle_pct=0.3  (float)  fraction of the schedule spent rising to lr  " \
                                  "[allowed: 0 < onecycle_pct < 1]"
    assert "    shortcut_gating: Fig. 2(d): shortcut-only gating, (1-g)*x + F(x)." in lines


def _note(keys: str, chosen: str, owners: str) -> str:
    verb = "do" if "," in keys else "does"
    return f"note: {keys} {verb} not apply to {chosen} ({owners}); ignored, and left out of the run name"


@pytest.mark.parametrize("args, note", [
    (["optim=sgd", "betas=[0.8,0.9]"], _note("betas", "optim=sgd", "betas: adam, adamw")),
    (["optim=adamw", "momentum=0.5"], _note("momentum", "optim=adamw", "momentum: sgd")),
    (["schedule=step", "onecycle_pct=0.5"], _note("onecycle_pct", "schedule=step", "onecycle_pct: onecycle")),
    (["optim=adam", "nesterov=true"], _note("nesterov", "optim=adam", "nesterov: sgd")),
])
def test_keys_of_an_unused_optimizer_or_schedule_are_ignored_with_a_note_and_kept_out_of_the_name(args, note):
    notes: list[str] = []
    cfg = parse(args, notes)
    assert cfg == parse(args[:1]) and run_name(cfg) == run_name(parse(args[:1]))
    assert notes == [note]


@pytest.mark.parametrize("args, other, note", [
    (["schedule=cosine", "milestones=[100,200]"], "[32000,48000]",
     _note("milestones", "schedule=cosine", "milestones: step")),
    (["precision=fp32", "residual_fp32=false"], "true",
     _note("residual_fp32", "precision=fp32", "residual_fp32: auto, bf16")),
    (["unit=full_preact", "shortcut=none", "preact_shortcut_input=shared"], "raw",
     _note("preact_shortcut_input", "shortcut=none", f"preact_shortcut_input: {', '.join(downsampling())}")),
    (["unit=full_preact", "shortcut=conv1x1", "preact_shortcut_input=shared"], "raw",
     _note("preact_shortcut_input", "shortcut=conv1x1", f"preact_shortcut_input: {', '.join(downsampling())}")),
], ids=["milestones_under_cosine", "residual_fp32_under_fp32", "preact_input_without_shortcut",
        "preact_input_of_a_convolving_shortcut"])
def test_settings_that_change_nothing_are_ignored_with_a_note_and_kept_out_of_the_name(args, other, note, tmp_path,
                                                                                       monkeypatch, capsys):
    """As another entry's keys: milestones under schedule=cosine, residual_fp32 under fp32, and so on (each
    entered the run's name, so the same computation got a second folder, and a sweep over it more runs)."""
    notes: list[str] = []
    cfg = parse(args, notes)
    assert cfg == parse(args[:-1]) and run_name(cfg) == run_name(parse(args[:-1]))
    assert notes == [note]
    monkeypatch.chdir(tmp_path)
    assert run.main([*args, "dry_run=true"]) == 0
    assert capsys.readouterr().out == f"{note}\n1 run in runs/{run_name(cfg)}: to train from the start; dry_run=true " \
                                      f"trains nothing\n"
    assert run.main([*args[:-1], f"{args[-1]},{other}", "dry_run=true"]) == 0
    assert capsys.readouterr().out.startswith(f"{note}\nsweep sweep (budget full): 1 runs in ")


def test_ignored_keys_of_every_kind_are_one_note_line():
    notes: list[str] = []
    cfg = parse(["recipe=default", "shortcut=identity", "gate_bias=-3", "eps=1e-6", "schedule=cosine",
                 "onecycle_pct=0.5"], notes)
    assert run_name(cfg) == "cifar10_d110_original_identity_schedule=cosine_s0"
    assert notes == [_note("gate_bias, eps, onecycle_pct", "shortcut=identity, optim=sgd, schedule=cosine",
                           f"gate_bias: {', '.join(_gates())}; eps: adam, adamw; onecycle_pct: onecycle")]


def _gates() -> list[str]:
    """The shortcuts taking gate_bias, as the registry lists them."""
    return [name for name in SHORTCUTS if "gate_bias" in shortcut_parameters(SHORTCUTS.get(name))]


def test_a_recipes_value_for_an_unused_optimizer_is_ignored_too():
    notes: list[str] = []
    cfg = parse(["recipe=fb_torch", "optim=adam", "lr=0.001"], notes)  # fb_torch: SGD with nesterov=true
    assert cfg.nesterov is False and "nesterov" not in run_name(cfg)
    assert notes == [_note("nesterov", "optim=adam", "nesterov: sgd")]
    assert parse(["recipe=fb_torch"]).nesterov is True


def test_keys_of_the_entry_in_use_are_kept():
    notes: list[str] = []
    cfg = parse(["optim=adamw", "betas=[0.8,0.9]", "schedule=onecycle", "onecycle_pct=0.4"], notes)
    assert (cfg.betas, cfg.onecycle_pct, notes) == ([0.8, 0.9], 0.4, [])
    assert "betas=0.8-0.9" in run_name(cfg) and "onecycle_pct=0.4" in run_name(cfg)


FLOAT_KEYS = [k for k, f in fields().items() if f.type in (float, "float")]  # core keys' types are strings


def _in_use(key: str) -> list[str]:
    """The settings under which `key` applies: its first owner chosen, for a registered entry's key."""
    family, owned = registered_keys().get(key, (None, None))
    return [f"{family.selector}={owned.owners[0]}"] if family else []


def test_the_float_keys_include_the_ones_users_type():
    assert {"lr", "warmup_lr", "weight_decay", "momentum", "gate_bias", "scale", "eps", "time_limit_s",
            "fail_threshold"} <= set(FLOAT_KEYS)


@pytest.mark.parametrize("key", FLOAT_KEYS)
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_every_float_key_refuses_nan_and_inf(key, value):
    with pytest.raises(UsageError, match=rf"^{key}={value} is not a finite number$"):
        parse([*_in_use(key), f"{key}={value}"])


def test_a_list_of_floats_refuses_nan():
    with pytest.raises(UsageError, match=r"^betas=\[0.9,nan\] is not a finite number$"):
        parse(["optim=adam", "betas=[0.9,nan]"])


def test_text_values_are_taken_as_typed_not_as_yaml(tmp_path, monkeypatch, capsys):
    """`run_dir=runs #2` named the folder 'runs' (YAML read ' #2' as a comment); paths and names are verbatim,
    for the launcher's keys too, and an empty value written as "" (a spec's) stays empty."""
    from resnet_ablate.sweeps.launcher import parse_launch

    cfg = parse(["run_dir=runs #2", "data_dir=d: x", "init=", "runs_root=it's"])
    assert (cfg.run_dir, cfg.data_dir, cfg.init, cfg.runs_root) == ("runs #2", "d: x", "", "it's")
    assert parse(['run_dir=""']).run_dir == "" and parse(["shortcut=gating", "gate_init=zero"]).gate_init == "zero"
    assert parse_launch(["sweep_dir=s #1", "ablation=a #b.yaml"]).sweep_dir == "s #1"
    monkeypatch.chdir(tmp_path)
    assert run.main([*TINY, "run_dir=r #2", "dry_run=true"]) == 0
    assert capsys.readouterr().out == "1 run in r #2: to train from the start; dry_run=true trains nothing\n"


def test_the_same_key_twice_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run.main(["depth=20", "depth=32", "dry_run=true"]) == 2
    assert capsys.readouterr().err == "error: depth is set twice (depth=20, depth=32); keep one\n"


def test_parameters_of_another_shortcut_are_ignored_with_a_note_and_kept_out_of_the_name():
    notes: list[str] = []
    cfg = parse(["shortcut=identity", "gate_bias=-3", "p=0.9"], notes)
    assert (cfg.gate_bias, cfg.p) == (-6.0, 0.5)
    assert run_name(cfg) == run_name(parse([]))
    assert notes == [f"note: gate_bias, p do not apply to shortcut=identity (gate_bias: {', '.join(_gates())}; "
                     "p: dropout); ignored, and left out of the run name"]
    assert parse(["shortcut=gating", "gate_bias=-3"], notes).gate_bias == -3.0 and len(notes) == 1


@pytest.mark.parametrize("args, message", [
    (["bn_batch=3"], "bn_batch=3 does not divide batch_size=8 into whole groups"),
    (["bn_batch=16"], "bn_batch=16 must be 0 (off) or 2..batch_size (8)"),
    (["bn_batch=1"], "bn_batch=1 must be 0 (off) or 2..batch_size (8)"),
    (["preact_shortcut_input=shared"], "preact_shortcut_input=shared applies to pre-activation units"),
    (["preact_shortcut_input=both"], "unknown preact_shortcut_input 'both'"),
])
def test_fidelity_keys_refuse_bad_values_in_one_line(args, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse([*TINY, *args])


def test_cli_reports_fidelity_keys_as_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run.main([*TINY, "bn_batch=5"]) == 2
    assert capsys.readouterr().err == "error: bn_batch=5 does not divide batch_size=8 into whole groups; use a " \
                                      "divisor of 8, or bn_batch=0 for one BN over the batch\n"
    assert not (tmp_path / "runs").exists()


def test_help_lists_the_fidelity_keys_with_their_sources():
    text = help_text()
    for key, source in (("recipe=", "recipes:"), ("bn_batch=", "README.md:62"),
                        ("preact_shortcut_input=", "preresnet.lua:65-67"), ("gate_weight_decay=", "train.lua:26"),
                        ("gate_init=", "gives b_g only")):
        line = next(line for line in text.splitlines() if line.strip().startswith(key))
        assert source in line or source in text, key


def test_help_documents_ghost_bns_running_statistics_and_fbs_iterations_per_epoch():
    """Issue 28 items 10 and 11: beside bn_batch, the running-statistics choice; beside the epochs, which count is
    used."""
    text = help_text()
    assert "running statistics: the groups' average (fb keeps each GPU's own and tests with GPU 1's)" in text
    assert "64,063 full batches, where fb's 391 iterations per epoch (the last of 80 images) make 64,124" in text


def test_run_name_is_unchanged_by_default_settings():
    assert run_name(parse(TINY)) == run_name(parse([*TINY, "bn_batch=0", "recipe=default"]))
