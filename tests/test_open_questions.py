"""The open questions as registered variants: a Highway-style gate at matched parameter count, a unit without the
ReLU after the addition, and the spec that trains them beside the paper's rows."""
import torch
from helpers import DONE, merged
from torch import nn

from resnet_ablate.models.cifar import build_model
from resnet_ablate.models.shortcuts import SHORTCUTS, HighwayGating
from resnet_ablate.models.units import UNITS
from resnet_ablate.sweeps.launchkeys import Launch
from resnet_ablate.sweeps.specs import expand
from resnet_ablate.training.configfile import run_name
from resnet_ablate.training.parse import parse
from resnet_ablate.training.trainer import train


def _conv_weights(module: nn.Module) -> int:
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, nn.Conv2d))


def test_highway_gate_has_the_residual_branchs_convolutions():
    model = build_model(20, "no_relu_after_add", "highway_gating", gate_bias=-6.0)
    for unit in model.units():  # where the shape is kept; at a stage's first unit the gate reads out_ch channels
        same = _conv_weights(unit.shortcut.gate) == _conv_weights(unit.body)
        assert same != unit.reshapes and torch.all(unit.shortcut.gate[-1].bias == -6.0)
    gating = build_model(20, "original", "gating")  # the paper's 1x1 gate: a ninth of one of those convs
    assert 18 * _conv_weights(gating.units()[0].shortcut.gate) == _conv_weights(model.units()[0].shortcut.gate)
    assert "highway_gating" in SHORTCUTS and "no_relu_after_add" in UNITS


def test_highway_gate_zero_init_is_sigmoid_of_the_bias_and_decay_exempts_the_stack():
    gate = HighwayGating(16, 16, 1, "zeropad", True, gate_bias=-6.0, gate_init="zero", gate_weight_decay=False)
    gate.init_parameters()
    x, f = torch.randn(4, 16, 8, 8), torch.randn(4, 16, 8, 8)
    g = torch.sigmoid(torch.tensor(-6.0))
    assert torch.allclose(gate(x, f), (1 - g) * x + g * f, atol=1e-6)
    assert {id(p) for p in gate.decay_exempt()} == {id(p) for p in gate.gate.parameters()}


def test_no_relu_after_the_addition_lets_a_unit_output_negative_values():
    torch.manual_seed(0)
    x = torch.randn(8, 3, 32, 32)
    plain, original = build_model(8, "no_relu_after_add", "identity"), build_model(8, "original", "identity")
    stem = plain.stem(x)
    assert plain.units()[0](stem).min() < 0 <= original.units()[0](original.stem(x)).min()


def test_the_highway_gate_trains_end_to_end(tmp_path):
    cfg = parse(merged(DONE, "iterations=4", "milestones=[]", "eval_every=4", "unit=no_relu_after_add",
                       "shortcut=highway_gating", f"run_dir={tmp_path / 'run'}"))
    (result,) = train([cfg])
    assert result["status"] == "done" and 0 <= result["final_test_error"] <= 100


def test_open_questions_spec_trains_both_questions_beside_the_papers_rows():
    plan = expand(Launch(ablation="open_questions"), [])
    assert len(plan.cfgs) == 30
    variants = {(c.unit, c.shortcut, c.preact_shortcut_input) for c in plan.cfgs}
    assert variants == {("original", "identity", "raw"), ("original", "gating", "raw"),
                        ("no_relu_after_add", "highway_gating", "raw"), ("no_relu_after_add", "identity", "raw"),
                        ("full_preact", "identity", "raw"), ("full_preact", "identity", "shared")}
    assert len({run_name(c) for c in plan.cfgs}) == 30
