"""Reproduction fidelity (issue 17): ghost batch norm, the fp32 residual stream under bf16, the papers' open
choices as switches, recipes, and the GPU-path rules that can be checked on the CPU (fake versions/devices).
GPU-only checks are skipped without CUDA."""
from __future__ import annotations

import dataclasses
import json
import types

import pytest
import torch
from helpers import REPO, TINY, make_run_folder, metrics, result, run_cli
from torch import nn

from resnet_ablate.models.cifar import build_model
from resnet_ablate.models.norm import GhostBatchNorm2d
from resnet_ablate.models.probes import gradient_norms
from resnet_ablate.models.responses import layer_responses
from resnet_ablate.models.shortcuts import ExclusiveGating
from resnet_ablate.errors import UsageError
from resnet_ablate.training import optim
from resnet_ablate.analysis.scan import settings_of
from resnet_ablate.analysis.tables import recipe_label
from resnet_ablate.sweeps.launcher import parse_launch
from resnet_ablate.sweeps.specs import expand, load_spec
from resnet_ablate.training.config import identity_items, run_name, to_yaml
from resnet_ablate.training.recipes import RECIPES
from resnet_ablate.training.parse import help_text, parse
from resnet_ablate.training.step import one_rng_stream
from resnet_ablate.training.trainer import StopRequest, train

gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


# --- 1. ghost batch norm ---------------------------------------------------------------------------------

def test_ghost_bn_equals_separate_bn_passes_over_the_halves_outputs_gradients_and_running_stats():
    torch.manual_seed(0)
    x = torch.randn(128, 5, 4, 4) * 3 + 1
    ghost = GhostBatchNorm2d(5, 64, momentum=0.1)
    with torch.no_grad():
        ghost.weight.uniform_(0.5, 2)
        ghost.bias.uniform_(-1, 1)
    halves = [nn.BatchNorm2d(5, momentum=0.1) for _ in range(2)]
    for bn in halves:
        bn.load_state_dict(ghost.state_dict())
    xg, xs = x.clone().requires_grad_(), x.clone().requires_grad_()
    out = ghost(xg)
    ref = torch.cat([bn(part) for bn, part in zip(halves, xs.split(64))])
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    weights = torch.randn_like(out)
    (out * weights).sum().backward()
    (ref * weights).sum().backward()
    torch.testing.assert_close(xg.grad, xs.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ghost.weight.grad, halves[0].weight.grad + halves[1].weight.grad, rtol=1e-4, atol=1e-4)
    # the rule: two per-device BNs whose buffers are averaged after the step
    torch.testing.assert_close(ghost.running_mean, (halves[0].running_mean + halves[1].running_mean) / 2)
    torch.testing.assert_close(ghost.running_var, (halves[0].running_var + halves[1].running_var) / 2)
    assert ghost.num_batches_tracked.item() == 1
    # off: no groups (0), or a batch no larger than a group: plain BN
    plain = nn.BatchNorm2d(5)
    for size in (0, 128):
        off = GhostBatchNorm2d(5, size)
        torch.testing.assert_close(off(x), plain(x))


def test_ghost_bn_in_a_net_keeps_state_dict_keys_and_uses_the_groups(tmp_path):
    torch.manual_seed(0)
    plain = build_model(8)
    torch.manual_seed(0)
    ghost = build_model(8, bn_batch=4)
    assert list(plain.state_dict()) == list(ghost.state_dict())
    assert sum(isinstance(m, GhostBatchNorm2d) for m in ghost.modules()) == \
        sum(type(m) is nn.BatchNorm2d for m in plain.modules()) > 0
    x = torch.randn(8, 3, 32, 32)
    torch.testing.assert_close(plain.eval()(x), ghost.eval()(x))  # eval: the same running statistics (both fresh)
    assert not torch.allclose(plain.train()(x), ghost.train()(x))  # train mode: statistics over groups of 4


def test_bn_batch_trains_packed_and_resumes_to_identical_numbers(tmp_path):
    args = [*TINY, "bn_batch=4", "shortcut=dropout"]
    train([parse([*args, "seed=0", f"run_dir={tmp_path / 'p0'}"]), parse([*args, "seed=1", f"run_dir={tmp_path / 'p1'}"])])
    train([parse([*args, "seed=0", f"run_dir={tmp_path / 'alone'}"])])
    assert metrics(tmp_path / "p0") == metrics(tmp_path / "alone")
    cfg = parse([*args, "seed=0", f"run_dir={tmp_path / 'resumed'}"])
    stop = StopRequest()
    stop.reason = "test stop"  # checkpoint and pause after the first iteration
    (summary,) = train([cfg], stop)
    assert summary["status"] == "paused"
    train([cfg])
    assert metrics(tmp_path / "resumed") == metrics(tmp_path / "alone")
    assert result(tmp_path / "resumed") == result(tmp_path / "alone")


@pytest.mark.parametrize("args, message", [
    (["bn_batch=3"], "bn_batch=3 does not divide batch_size=8 into whole groups"),
    (["bn_batch=16"], "bn_batch=16 must be 0 (off) or 2..batch_size (8)"),
    (["bn_batch=1"], "bn_batch=1 must be 0 (off) or 2..batch_size (8)"),
    (["preact_shortcut_input=shared"], "preact_shortcut_input=shared applies to pre-activation units"),
    (["preact_shortcut_input=both"], "unknown preact_shortcut_input 'both'"),
    (["shortcut=gating", "gate_init=ones"], "unknown gate_init 'ones'"),
])
def test_fidelity_keys_refuse_bad_values_in_one_line(args, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse([*TINY, *args])


# --- 2. the residual stream in fp32 under bf16 ---------------------------------------------------------------

@pytest.mark.parametrize("shortcut", ["identity", "gating", "scaling", "dropout", "conv1x1", "none"])
def test_unit_outputs_are_fp32_under_cpu_autocast_bf16(shortcut):
    torch.manual_seed(0)
    model = build_model(8, shortcut=shortcut)
    outputs = []
    for u in model.units():
        u.register_forward_hook(lambda _m, _a, out: outputs.append(out))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(torch.randn(4, 3, 32, 32))
    assert [o.dtype for o in outputs] == [torch.float32] * 3


def test_gate_value_under_bf16_equals_the_fp32_one():
    """1 - sigmoid(-6) is 0.99753 in fp32 and 0.99609 once rounded to bf16: the gate stays fp32."""
    torch.manual_seed(0)
    model = build_model(8, shortcut="gating", gate_bias=-6.0)
    gates: dict[str, list[torch.Tensor]] = {"fp32": [], "bf16": []}
    key = ["fp32"]
    for m in model.modules():
        if isinstance(m, ExclusiveGating):
            m.gate.register_forward_hook(lambda _m, _a, out: gates[key[0]].append(torch.sigmoid(out)))
    x = torch.randn(4, 3, 32, 32)
    model(x)
    key[0] = "bf16"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(x)
    assert all(g.dtype == torch.float32 for g in gates["bf16"])
    # the gate reads the fp32 stream; its input differs only through the bf16 body of earlier units, so
    # the first unit's gate (input: the stem's output) is compared exactly with gate_init=zero below
    zero = build_model(8, shortcut="gating", gate_bias=-6.0, gate_init="zero")
    seen = []
    for m in zero.modules():
        if isinstance(m, ExclusiveGating):
            m.gate.register_forward_hook(lambda _m, _a, out: seen.append(torch.sigmoid(out)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        zero(x)
    expected = torch.sigmoid(torch.tensor(-6.0))
    assert all(torch.equal(1 - g, torch.full_like(g, 1 - expected.item())) for g in seen)
    assert (1 - expected).item() == pytest.approx(0.99753, abs=1e-5)
    assert (1 - expected).bfloat16().float().item() != (1 - expected).item()  # what bf16 would have stored


def test_probe_runs_in_fp32_under_autocast_and_reads_once(monkeypatch):
    torch.manual_seed(0)
    model = build_model(8)
    x, y = torch.randn(8, 3, 32, 32), torch.arange(8) % 10
    plain = gradient_norms(model, x, y)
    monkeypatch.setattr(torch.Tensor, "item", lambda self: pytest.fail("the probe syncs once per tensor"))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = gradient_norms(model, x, y)
    assert under == plain


def test_result_names_the_precision_policy(tiny):
    (summary,) = train([parse(tiny)])
    assert summary["precision_policy"] == "fp32 throughout"


# --- 4. the papers' open choices ---------------------------------------------------------------------------

def test_preact_shortcut_input_shared_feeds_the_zero_pad_shortcut_the_shared_bn_relu():
    """fb.resnet.torch's preresnet.lua: a stage's first unit is 'both_preact', the zero-pad shortcut reads BN-ReLU."""
    torch.manual_seed(0)
    raw = build_model(20, "full_preact").eval()
    with torch.no_grad():
        for m in raw.modules():  # BN with non-trivial statistics, so BN-ReLU(x) != x
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    shared = build_model(20, "full_preact", preact_shortcut_input="shared").eval()
    shared.load_state_dict(raw.state_dict())
    assert [u.shared_preact for u in raw.units()].count(True) == 0
    assert [i for i, u in enumerate(shared.units()) if u.shared_preact] == [3, 6]  # stages 2 and 3, first units
    x = torch.randn(4, 16, 32, 32)
    with torch.no_grad():
        for net, shortcut_input in ((raw, x), (shared, shared.stages[1][0].pre_act(x))):
            unit = net.stages[1][0]
            expected = unit.shortcut.project(shortcut_input) + unit.body(unit.pre_act(x))
            torch.testing.assert_close(unit(x), expected)
        images = torch.randn(4, 3, 32, 32)
        assert (raw(images) - shared(images)).abs().max() > 1e-2


def test_gate_weight_decay_false_keeps_the_gate_out_of_decay():
    args = [*TINY, "shortcut=gating"]
    for flag, decayed in (("true", True), ("false", False)):
        cfg = parse([*args, f"gate_weight_decay={flag}"])
        model = build_model(8, shortcut="gating", gate_weight_decay=cfg.gate_weight_decay)
        groups, _ = optim.param_groups(model, cfg, optim.LearningRates(0.1, torch.device("cpu")))
        gate_ids = {id(p) for m in model.modules() if isinstance(m, ExclusiveGating) for p in m.gate.parameters()}
        decay = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
        assert (gate_ids <= decay) is decayed and (not gate_ids & decay) is (not decayed)
        assert len(gate_ids) == 6


def test_gate_init_zero_starts_every_gate_at_sigmoid_of_its_bias():
    torch.manual_seed(0)
    he, zero = build_model(8, shortcut="gating"), build_model(8, shortcut="gating", gate_init="zero")
    for a, b in zip((m for m in he.modules() if isinstance(m, ExclusiveGating)),
                    (m for m in zero.modules() if isinstance(m, ExclusiveGating))):
        assert a.gate.weight.abs().sum() > 0 and b.gate.weight.abs().sum() == 0
        assert torch.equal(b.gate.bias, torch.full_like(b.gate.bias, -6.0))


def test_help_lists_the_fidelity_keys_with_their_sources():
    text = help_text()
    for key, source in (("recipe=", "recipes:"), ("bn_batch=", "README.md:62"),
                        ("preact_shortcut_input=", "preresnet.lua:65-67"), ("gate_weight_decay=", "train.lua:26"),
                        ("gate_init=", "gives b_g only")):
        line = next(line for line in text.splitlines() if line.strip().startswith(key))
        assert source in line or source in text, key


# --- 7. GPU-path rules -----------------------------------------------------------------------------------

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
            optim.make_optimizer(cfg, [], types.SimpleNamespace(device=torch.device(device)))
    assert [k["capturable"] for k in seen] == [True, True, False, False]
    assert all(k["fused"] for k in seen)


def _fake_runs(*draws: bool):
    return [types.SimpleNamespace(draws_random=lambda d=d: d) for d in draws]


def test_packed_graphs_that_draw_random_numbers_share_one_stream_before_torch_2_13():
    assert one_rng_stream(_fake_runs(True, True), "2.11.0+cu126")
    assert one_rng_stream(_fake_runs(True, False, True), "2.12.1")
    assert not one_rng_stream(_fake_runs(True, True), "2.13.0")
    assert not one_rng_stream(_fake_runs(True, True), "2.14.1+cu130")
    assert not one_rng_stream(_fake_runs(True, False), "2.11.0")  # one drawing graph cannot race
    assert not one_rng_stream(_fake_runs(True), "2.11.0")


def test_a_run_knows_whether_its_step_draws_random_numbers(tmp_path):
    from resnet_ablate.training.state import build_state
    for shortcut, draws in (("dropout", True), ("identity", False)):
        assert build_state(parse([*TINY, f"shortcut={shortcut}"]), torch.device("cpu")).draws_random() is draws


def test_tiny_settings_pin_the_cpu():
    assert "device=cpu" in TINY


@gpu
def test_packed_dropout_graphs_on_cuda_equal_the_runs_alone(tmp_path):
    """On a GPU: packed runs with dropout (graphs on streams, or one stream on torch < 2.13) give the numbers
    each gives alone."""
    args = [a for a in TINY if a != "device=cpu"] + ["device=cuda", "precision=fp32", "deterministic=true",
                                                     "shortcut=dropout"]
    train([parse([*args, f"seed={s}", f"run_dir={tmp_path / 'p' / str(s)}"]) for s in (0, 1)])
    for s in (0, 1):
        train([parse([*args, f"seed={s}", f"run_dir={tmp_path / 'a' / str(s)}"])])
        assert metrics(tmp_path / "p" / str(s)) == metrics(tmp_path / "a" / str(s))


@gpu
def test_sampler_order_is_recorded_on_the_run_stream(monkeypatch):
    from resnet_ablate.training.datasets import Sampler
    recorded = []
    monkeypatch.setattr(torch.Tensor, "record_stream", lambda self, s: recorded.append(s))
    sampler = Sampler(10, 4, 0, torch.device("cuda"), True)
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        sampler.next()
    assert recorded == [side]


def test_run_name_is_unchanged_by_default_settings():
    assert run_name(parse(TINY)) == run_name(parse([*TINY, "bn_batch=0", "recipe=default"]))


def test_cli_reports_fidelity_keys_as_one_line(tmp_path):
    proc = run_cli(*TINY, "bn_batch=5", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: bn_batch=5 does not divide batch_size=8 into whole groups; use a divisor of 8, or bn_batch=0 for one "
        "BN over the batch"]


# --- 3. recipes -------------------------------------------------------------------------------------------

def test_a_bare_command_trains_he2016_and_recipe_default_keeps_the_keys_defaults():
    """Issue 28 item 4: the mission's command trains a Table 1 cell as the 2016 paper did."""
    plain, he2016, default = parse([]), parse(["recipe=he2016"]), parse(["recipe=default"])
    assert (plain.recipe, plain.normalize, plain.bn_batch, plain.warmup_iters, plain.precision) == \
        ("he2016", "pixel_mean", 64, 400, "fp32")
    assert to_yaml(plain) == to_yaml(he2016)
    assert (default.normalize, default.nesterov, default.bn_batch, default.warmup_iters, default.precision) == \
        ("channel", False, 0, 400, "auto")


def test_he2015_warms_up_resnet110_only_and_splits_the_batch_over_two_bns():
    for depth, warmup in ((110, 400), (56, 0), (20, 0)):
        cfg = parse(["recipe=he2015", f"depth={depth}"])
        assert (cfg.normalize, cfg.nesterov, cfg.bn_batch, cfg.warmup_iters, cfg.milestones) == \
            ("pixel_mean", False, 64, warmup, [32000, 48000])
    he2016 = parse(["recipe=he2016", "depth=56"])
    assert (he2016.normalize, he2016.bn_batch, he2016.warmup_iters) == ("pixel_mean", 64, 400)


def test_epoch_schedules_become_iterations_from_the_training_set_and_batch():
    fb = parse(["recipe=fb_torch"])
    assert (fb.iterations, fb.milestones, fb.nesterov, fb.normalize, fb.warmup_iters, fb.bn_batch) == \
        (64063, [31250, 47266], True, "channel", 0, 64)  # ceil(164 * 50000 / 128); 80 and 121 epochs
    assert parse(["recipe=fb_torch", "val_split=5000"]).milestones == [28125, 42540]  # 45000 / 128 per epoch
    k1 = parse(["recipe=resnet1k", "depth=1001"])
    assert (k1.batch_size, k1.bn_batch, k1.iterations, k1.milestones) == (64, 32, 156250, [62500, 94532])
    assert parse(["batch_size=256", "recipe=fb_torch"]).iterations == 32032  # the command line's batch
    assert parse(["recipe=fb_torch", "dataset=synthetic", "synthetic_size=640", "batch_size=64"]).iterations == 1640


def test_the_command_line_wins_wherever_the_recipe_stands():
    assert parse(["lr=0.05", "recipe=fb_torch", "nesterov=false"]).lr == 0.05
    assert parse(["warmup_iters=7", "recipe=he2015", "depth=110"]).warmup_iters == 7
    assert parse(["recipe=fb_torch", "iterations=1000", "milestones=[500]"]).milestones == [500]


def test_an_epoch_recipe_on_a_folder_data_set_needs_the_schedule(tmp_path):
    with pytest.raises(UsageError, match="recipe=fb_torch gives its schedule in epochs"):
        parse(["recipe=fb_torch", "dataset=folder", f"data_dir={tmp_path}"])
    cfg = parse(["recipe=fb_torch", "dataset=folder", f"data_dir={tmp_path}", "iterations=90", "milestones=[60]"])
    assert (cfg.iterations, cfg.nesterov) == (90, True)


def test_a_run_is_its_resolved_settings_not_the_recipe_name(tmp_path):
    """Same name, same config check, same report group, whether spelled as a recipe or as its values."""
    by_recipe = parse(["recipe=he2015", "depth=20"])
    by_hand = parse(["recipe=default", "depth=20", "normalize=pixel_mean", "warmup_iters=0", "bn_batch=64",
                     "precision=fp32"])
    assert run_name(by_recipe) == run_name(by_hand) == "cifar10_d20_original_identity_normalize=pixel_mean_" \
                                                       "warmup_iters=0_bn_batch=64_precision=fp32_s0"
    assert identity_items(by_recipe) == identity_items(by_hand)
    assert "recipe: he2015" in to_yaml(by_recipe) and "normalize: pixel_mean" in to_yaml(by_recipe)


def test_the_run_command_lists_a_recipes_runs_by_their_resolved_settings(tmp_path, capsys, monkeypatch):
    from resnet_ablate import run
    monkeypatch.chdir(tmp_path)
    assert run.main(["recipe=he2015", "depth=110", "dry_run=true", "seed=0,1"]) == 0
    assert "cifar10_d110_original_identity_normalize=pixel_mean_bn_batch=64_precision=fp32_s1" in \
        capsys.readouterr().out


def test_every_spec_names_its_recipe_and_recipe_gap_lists_its_runs():
    for path in sorted((REPO / "ablations").glob("*.yaml")):
        spec = load_spec(str(path))
        assert spec.overrides.get("recipe") in RECIPES, path.name
    plan = expand(parse_launch(["ablation=recipe_gap", "budget=quick"]), [])
    assert len(plan.cfgs) == 26 and plan.layout == "recipe_gap"  # 13 settings (d56's warm-up knob is he2015) x 2
    knobs = {recipe_label(settings_of(dataclasses.asdict(c))) for c in plan.cfgs}
    assert knobs == {"he2015", "fb_torch", "he2015 + nesterov=True", "he2015 + normalize=channel",
                     "he2015 + warmup_iters=0", "he2015 + iterations=64063, milestones=31250,47266",
                     "he2015 + bn_batch=0"}


# --- 5. the report states the papers' statistics like for like ------------------------------------------

def _runs(root, name, settings, errors, **result_fields):
    """Run folders with these final errors (None: a failed run), read from the official CIFAR files unless
    `data_official` says otherwise."""
    for seed, error in enumerate(errors):
        make_run_folder(root / f"{name}_s{seed}", [*settings, f"seed={seed}"], "fail" if error is None else "done",
                        error, **{"data_official": True, **result_fields})


def _table(root, layout):
    from resnet_ablate.analysis.scan import group_by_settings, scan
    from resnet_ablate.analysis.tables import build_table, layouts
    return build_table(layouts()[layout], group_by_settings(scan(root).runs))


def test_the_median_counts_failures_and_paper_cells_compare_like_with_like(tmp_path):
    t1 = ["depth=110", "recipe=he2016"]
    _runs(tmp_path / "t1", "identity", t1, [6.5, 6.7, 6.6, 6.9, 6.4])
    _runs(tmp_path / "t1", "gating2", [*t1, "shortcut=gating"], [8.0, None, 9.0, None, 10.0])
    _runs(tmp_path / "t1", "gating3", [*t1, "shortcut=gating", "gate_bias=-7"], [9.0, None, None, 9.5, None])
    table = _table(tmp_path / "t1", "table1")
    frame, shown = table.frame.set_index("setting"), table.shown.set_index("setting")
    two = frame.loc["gate_bias=-6"]
    assert (two["n"], two["fail"], two["median"], two["mean"]) == (5, 2, 10.0, 9.0)  # mean of the 3 done: optimistic
    assert two["diff"] == pytest.approx(10.0 - 8.70) and shown.loc["gate_bias=-6", "Δ"] == "+1.30 (median)"
    assert shown.loc["gate_bias=-6", "paper"] == "8.70 (median of 5)"
    three = shown.loc["gate_bias=-7"]
    assert (three["median"], three["error (%)"], three["fail"], three["Δ"]) == \
        ("fail", "9.25 ± 0.35 (over 2 of 5)", "3", "")
    assert list(shown.columns[shown.columns.get_loc("n"):][:5]) == ["n", "fail", "median", "error (%)", "min"]
    assert "median over all n runs, a failed run counting as above any error" in table.caption

    _runs(tmp_path / "t6", "r110", ["depth=110", "recipe=he2015"], [6.3, 6.5, 6.6, 6.7, 6.9])
    row = _table(tmp_path / "t6", "depth")
    r110, cells = row.frame.iloc[0], row.shown.iloc[0]
    assert cells["paper"] == "6.43 (best of 5); 6.61±0.16 (mean±sd)"
    assert r110["diff"] == pytest.approx(6.3 - 6.43) and r110["diff_mean"] == pytest.approx(6.6 - 6.61)
    assert cells["Δ"] == "-0.13 (best); -0.01 (mean)"


def test_recipe_gap_layout_gives_each_knobs_delta_against_he2015(tmp_path):
    _runs(tmp_path, "he", ["depth=56", "recipe=he2015"], [7.0, 7.2, 7.1])
    _runs(tmp_path, "nesterov", ["depth=56", "recipe=he2015", "nesterov=true"], [6.8, 6.9, 7.0])
    _runs(tmp_path, "fb", ["depth=56", "recipe=fb_torch"], [6.5, 6.6, 6.7])
    table = _table(tmp_path, "recipe_gap")
    shown = table.shown.set_index("recipe")
    assert shown.loc["he2015", "Δ he2015"] == "baseline"
    assert shown.loc["he2015 + nesterov=True", "Δ he2015"] == "-0.20 (median); -0.20 (mean)"
    assert shown.loc["fb_torch", "Δ he2015"] == "-0.50 (median); -0.50 (mean)"
    assert shown.loc["fb_torch", "schedule"] == "64063 it"
    assert shown.loc["he2015", "paper"] == "6.97 (as reported)"


# --- 6. gradient probe per element ----------------------------------------------------------------------

def test_probe_reports_the_per_element_rms_beside_the_l2_norm():
    torch.manual_seed(0)
    out = gradient_norms(build_model(8), torch.randn(4, 3, 32, 32), torch.arange(4))
    sizes = [4 * 16 * 32 * 32, 4 * 16 * 32 * 32, 4 * 32 * 16 * 16]  # inputs of the three units
    assert out["unit_input_rms"] == pytest.approx([n / s ** 0.5 for n, s in zip(out["unit_input"], sizes)])


def test_spread_table_and_figures_use_the_rms_by_default(tmp_path):
    from resnet_ablate.analysis.frames import gradient_spread, spread_caption
    from resnet_ablate.analysis.scan import group_by_settings, scan
    folder = make_run_folder(tmp_path / "r", TINY)
    (folder / "probes.jsonl").write_text(json.dumps({"iteration": 0, "unit_input": [8.0, 2.0],
                                                     "unit_input_rms": [1.0, 0.5], "conv_weight": [1.0]}) + "\n")
    groups = group_by_settings(scan(tmp_path).runs)
    assert gradient_spread(groups)["first/last"].tolist() == [2.0]
    assert gradient_spread(groups, "l2")["first/last"].tolist() == [4.0]
    assert "per-element RMS" in spread_caption()
    from resnet_ablate import report
    assert report.main([str(tmp_path), "--out", str(tmp_path / "out"), "--formats", "png"]) == 0
    spread = (tmp_path / "out" / "runs-gradnorm.csv").read_text().splitlines()
    assert spread[0].split(",")[-4:] == ["n", "first/last", "min", "max"] and spread[1].split(",")[-4:-2] == ["1", "2.0"]
    assert "per-element RMS" in (tmp_path / "out" / "runs-gradnorm.md").read_text()
    assert (tmp_path / "out" / "runs-gradnorm.png").is_file()


# --- 8. layer responses (2015 Fig. 7) -------------------------------------------------------------------

def _hand_responses(model, x, unit):
    """Forward hooks placed by hand on the modules after each 3x3 conv: stem BN, then per unit."""
    outs = []
    points = [model.stem[1]]
    for u in model.units():
        points += [u.body[1], u.body[4][0] if unit == "original" else u.body[3]]
    hooks = [m.register_forward_hook(lambda _m, _a, o: outs.append(o)) for m in points]
    model.eval()
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return [torch.stack([o[:, c].std(unbiased=False) for c in range(o.shape[1])]).mean().item() for o in outs]


@pytest.mark.parametrize("unit, shortcut", [("original", "identity"), ("original", "none"), ("full_preact", "identity")])
def test_layer_responses_equal_a_hand_computation_with_hooks(unit, shortcut):
    torch.manual_seed(0)
    model = build_model(20, unit, shortcut)
    with torch.no_grad():  # trained-looking BN statistics and scales
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.5, 2), m.weight.uniform_(0.2, 1.5)
    x = torch.randn(6, 3, 32, 32)
    got = layer_responses(model.train(), x)
    assert model.training and len(got) == 19
    assert got == pytest.approx(_hand_responses(model, x, unit), rel=1e-5)


def test_a_finished_run_records_its_responses_and_the_report_draws_them(tmp_path):
    cfgs = [parse([*TINY, "fail_threshold=100", f"shortcut={s}", f"run_dir={tmp_path / 'runs' / s}"])
            for s in ("identity", "none")]
    train(cfgs)
    saved = json.loads((tmp_path / "runs" / "none" / "responses.json").read_text())
    assert (saved["source"], saved["iteration"], saved["split"], len(saved["std"])) == ("end", 30, "test", 7)
    assert all(v > 0 for v in saved["std"])
    from resnet_ablate import report
    assert report.main([str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--formats", "png"]) == 0
    assert (tmp_path / "out" / "runs-responses.png").is_file()
    assert "![runs-responses](runs-responses.png)" in (tmp_path / "out" / "report.md").read_text()


def test_responses_on_demand_from_a_checkpoint(tmp_path):
    cfg = parse([*TINY, f"run_dir={tmp_path / 'paused'}"])
    stop = StopRequest()
    stop.reason = "test stop"
    train([cfg], stop)
    assert not (tmp_path / "paused" / "responses.json").exists()
    from resnet_ablate import layer_responses as cli
    assert cli.main([str(tmp_path / "paused"), "device=cpu"]) == 0
    saved = json.loads((tmp_path / "paused" / "responses.json").read_text())
    assert (saved["source"], saved["iteration"], len(saved["std"])) == ("checkpoint", 1, 7)
    assert cli.main([str(tmp_path / "nowhere")]) == 2


@gpu
@pytest.mark.parametrize("optim_name", ["sgd", "adamw"])
def test_ghost_bn_and_adam_are_captured_in_the_cuda_graph(tmp_path, capsys, optim_name):
    """On a GPU: ghost BN (no host sync, static shapes) and capturable AdamW train inside the captured graph,
    with no fallback to eager (result.json's capture_s exists only for graphs)."""
    args = [a for a in TINY if a != "device=cpu"] + ["device=cuda", "bn_batch=4", f"optim={optim_name}", "lr=0.01"]
    (summary,) = train([parse([*args, f"run_dir={tmp_path / 'r'}"])])
    assert "capture failed" not in capsys.readouterr().out
    assert summary["capture_s"] > 0 and summary["status"] in ("done", "fail")


# --- issue 28: numbers a reviewer would accept ------------------------------------------------------------

def test_the_papers_recipes_train_in_fp32_and_default_keeps_auto():
    """Item 2: bf16 is a choice (precision=bf16), not a recipe's value."""
    for name in ("he2015", "he2016", "fb_torch", "resnet1k"):
        assert parse([f"recipe={name}", "depth=1001" if name == "resnet1k" else "depth=110"]).precision == "fp32", name
    assert parse(["recipe=default"]).precision == "auto"
    assert parse(["precision=bf16"]).precision == "bf16"


def test_fp32_on_a_gpu_turns_tf32_convolutions_and_matmuls_off(monkeypatch):
    """Item 2: PyTorch lets cuDNN convolve in TF32 by default; an fp32 run on CUDA must not."""
    from resnet_ablate.training import runtime
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    monkeypatch.setattr(runtime, "resolve_device", lambda name: torch.device("cuda"))  # setup only reads flags here
    try:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
        assert runtime.setup(parse(["recipe=he2016"]))[1] == "fp32"
        assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == (False, False)
        torch.backends.cudnn.allow_tf32 = True
        assert runtime.setup(parse(["precision=bf16"]))[1] == "bf16"
        assert torch.backends.cudnn.allow_tf32 is True  # bf16 runs keep PyTorch's default for their fp32 parts
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_he2015_warms_up_resnet1202_as_resnet110():
    """Item 3: the 2015 paper trains ResNet-1202 "as described above"."""
    assert [parse(["recipe=he2015", f"depth={d}"]).warmup_iters for d in (20, 56, 110, 1202)] == [0, 0, 400, 400]


def test_the_recipes_bn_group_is_half_the_batch_so_a_smaller_batch_keeps_working():
    """Item 4: the papers' 2 GPUs; today's bn_batch=64 refused batch_size=32."""
    assert parse(["batch_size=32"]).bn_batch == 16
    assert parse(["recipe=he2015", "batch_size=8"]).bn_batch == 4
    assert parse(["recipe=resnet1k", "depth=1001"]).bn_batch == 32 and parse(["recipe=fb_torch"]).bn_batch == 64
    assert parse(["batch_size=32", "bn_batch=8"]).bn_batch == 8  # the command line wins
    with pytest.raises(UsageError) as odd:
        parse(["batch_size=33"])
    assert str(odd.value) == "bn_batch=16 does not divide batch_size=33 into whole groups; use a divisor of 33, or " \
                             "bn_batch=0 for one BN over the batch (recipe he2016 sets the BN group to half the " \
                             "batch: an even batch_size keeps it)"
    smoke = "dataset=synthetic depth=8 batch_size=32 iterations=100 milestones=[50,75] eval_every=50 warmup_iters=0 " \
            "threads=1".split()  # the README's smoke command
    assert (parse(smoke).bn_batch, parse(smoke).recipe) == (16, "he2016")


def test_help_shows_the_default_recipe_its_precision_and_bn_group(tmp_path):
    text = help_text()
    assert "  recipe=he2016  (str)" in text and "A bare command trains he2016" in text
    assert "recipe=default keeps the defaults shown" in text
    assert "the recipes (he2016, the default, too) set fp32" in text
    he2016 = text[text.index("  he2016:"):text.index("  fb_torch:")]
    assert "precision=fp32" in he2016 and "bn_batch=batch_size/2" in he2016
    proc = run_cli("--help", cwd=tmp_path)
    assert proc.returncode == 0 and "recipe=he2016" in proc.stdout


def test_help_documents_ghost_bns_running_statistics_and_fbs_iterations_per_epoch():
    """Items 10 and 11: beside bn_batch, the running-statistics choice; beside the epochs, which count is used."""
    text = help_text()
    assert "running statistics: the groups' average (fb keeps each GPU's own and tests with GPU 1's)" in text
    assert "64,063 full batches, where fb's 391 iterations per epoch (the last of 80 images) make 64,124" in text


def test_fb_torch_reads_the_shared_bn_relu_in_preact_units_only_and_evaluates_every_epoch():
    """Items 6 and 7."""
    assert parse(["recipe=fb_torch", "unit=full_preact", "depth=110"]).preact_shortcut_input == "shared"
    assert parse(["recipe=fb_torch", "unit=relu_preact", "depth=56"]).preact_shortcut_input == "shared"
    assert parse(["recipe=fb_torch", "unit=original", "depth=110"]).preact_shortcut_input == "raw"  # not refused
    fb = parse(["recipe=fb_torch"])
    assert fb.eval_every == 391  # ceil(50000 / 128)
    assert parse(["recipe=fb_torch", "eval_every=1000"]).eval_every == 1000
    assert parse(["recipe=he2015"]).eval_every == 1000


def test_table1_spec_holds_the_open_choices_as_variant_rows():
    """Item 5: gate_weight_decay=false for exclusive gating -6 and -7 and shortcut-only gating -6; inverted dropout."""
    spec = load_spec(str(REPO / "ablations" / "table1_shortcuts.yaml"))
    rows = [dict(v) for v in spec.variants]
    for shortcut, bias in (("gating", -6), ("gating", -7), ("shortcut_gating", -6)):
        assert {"shortcut": shortcut, "gate_bias": bias} in rows
        assert {"shortcut": shortcut, "gate_bias": bias, "gate_weight_decay": False} in rows
    assert {"shortcut": "dropout", "p": 0.5} in rows and {"shortcut": "dropout", "p": 0.5, "inverted": True} in rows
    plan = expand(parse_launch(["ablation=table1_shortcuts", "budget=quick"]), [])
    assert len(plan.cfgs) == 15 * 2


def test_recipe_gap_spec_evaluates_every_epoch():
    """Item 7: the best error is comparable between its rows only at one evaluation interval, fb's."""
    plan = expand(parse_launch(["ablation=recipe_gap", "budget=quick"]), [])
    assert {c.eval_every for c in plan.cfgs} == {391}


def test_gradnorm_spec_measures_full_preact_units_beside_the_original_ones():
    """Item 8: Eq. 5 holds for a pure identity path."""
    plan = expand(parse_launch(["ablation=gradnorm", "budget=cpu_init"]), [])
    assert {c.unit for c in plan.cfgs} == {"original", "full_preact"} and len(plan.cfgs) == 6 * 3 * 2 * 2


def test_the_campaigns_2015_recipe_item_passes_recipe_he2015():
    """Item 4: results/CAMPAIGN.md's item 1 is labelled the 2015 recipe."""
    commands = (REPO / "results" / "CAMPAIGN.md").read_text().replace("\\\n", " ").splitlines()
    line = next(line for line in commands if "# item 1 " in line)
    assert "recipe=he2015" in line and "normalize=" not in line


def test_a_run_records_whether_it_read_the_official_files(tmp_path):
    """Item 1: result.json's data_official (a copy loads all the same)."""
    from helpers import write_fake_cifar
    write_fake_cifar(tmp_path / "data")
    args = [*TINY, "dataset=cifar10", f"data_dir={tmp_path / 'data'}", "fail_threshold=100", "iterations=2",
            "milestones=[1]", "eval_every=2"]
    (summary,) = train([parse([*args, f"run_dir={tmp_path / 'copy'}"])])
    assert summary["data_official"] is False and result(tmp_path / "copy")["data_official"] is False
    (synthetic,) = train([parse([*TINY, "iterations=2", "milestones=[1]", f"run_dir={tmp_path / 's'}"])])
    assert synthetic["data_official"] is False
