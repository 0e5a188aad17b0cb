"""The model zoo: every shortcut x unit builds and trains, the papers' parameter counts, the unit rules; the
residual stream and the gates in fp32 under bf16, the gates' init, and the shared pre-activation of fb's units."""
import itertools

import pytest
import torch
from torch import nn

from resnet_ablate.errors import UsageError
from resnet_ablate.models.cifar import build_model, resolve_block
from resnet_ablate.models.resnet import count_parameters
from resnet_ablate.models.shortcuts import SHORTCUTS, Dropout, ExclusiveGating, Identity, ShortcutOnlyGating, ZeroPad
from resnet_ablate.models.units import UNITS

COMBOS = list(itertools.product(SHORTCUTS.names(), UNITS.names(), [(8, "basic"), (11, "bottleneck")]))


@pytest.mark.parametrize("shortcut,unit,depth_block", COMBOS)
def test_every_combination_runs_forward_and_backward(shortcut, unit, depth_block):
    depth, block = depth_block
    torch.manual_seed(0)
    model = build_model(depth, unit=unit, shortcut=shortcut, block=block, num_classes=7)
    out = model(torch.randn(2, 3, 16, 16))
    assert out.shape == (2, 7)
    out.logsumexp(1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == []
    assert len(model.units()) == 3


@pytest.mark.parametrize("downsample", ["zeropad", "conv1x1"])
def test_both_downsample_options_build_for_both_blocks(downsample):
    for depth, block in [(8, "basic"), (11, "bottleneck")]:
        model = build_model(depth, block=block, downsample=downsample)
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    convs = sum(isinstance(m, nn.Conv2d) for m in build_model(8, downsample=downsample).modules())
    assert convs == 1 + 6 + (2 if downsample == "conv1x1" else 0)


# (depth, block, unit, include_bn, paper's count in M as printed, digits printed)
PAPER_COUNTS = [
    (20, "basic", "original", True, 0.27, 2),
    (32, "basic", "original", True, 0.46, 2),
    (44, "basic", "original", True, 0.66, 2),
    (56, "basic", "original", True, 0.85, 2),
    (110, "basic", "original", True, 1.7, 1),
    (1202, "basic", "original", True, 19.4, 1),
    (164, "bottleneck", "full_preact", False, 1.7, 1),
    (1001, "bottleneck", "full_preact", False, 10.2, 1),
]


@pytest.mark.parametrize("depth,block,unit,include_bn,paper,digits", PAPER_COUNTS)
def test_parameter_counts_match_the_papers(depth, block, unit, include_bn, paper, digits):
    model = build_model(depth, unit=unit, block=block)
    assert round(count_parameters(model, include_bn) / 1e6, digits) == paper


def test_resnet1001_counts_differ_only_by_bn_parameters():
    model = build_model(1001, unit="full_preact")
    assert count_parameters(model) == 10_327_706
    assert count_parameters(model, include_bn=False) == 10_178_490


def test_block_follows_the_papers_and_rejects_misfit_depths():
    assert [resolve_block(d) for d in (20, 56, 110, 1202, 164, 1001, 29)] == [
        "basic", "basic", "basic", "basic", "bottleneck", "bottleneck", "bottleneck"]
    with pytest.raises(UsageError, match=r"depth 57 is neither 6n\+2 .* nor 9n\+2"):
        resolve_block(57)
    with pytest.raises(UsageError, match=r"depth 24 is not 9n\+2 for block=bottleneck"):
        resolve_block(24, "bottleneck")


def test_the_papers_shortcuts_and_units_are_registered():
    """2016 paper Fig. 2 / Table 1 and Fig. 4 / Table 2 (every registered entry is checked by the tests above)."""
    assert {"identity", "scaling", "gating", "shortcut_gating", "conv1x1", "dropout", "none"} <= set(SHORTCUTS)
    assert {"original", "bn_after_add", "relu_before_add", "relu_preact", "full_preact"} <= set(UNITS)


def test_unknown_names_list_the_allowed_ones():
    with pytest.raises(UsageError) as e:
        build_model(20, shortcut="gatting")
    assert str(e.value) == f"unknown shortcut 'gatting' (did you mean 'gating'?); allowed: " \
                           f"{', '.join(SHORTCUTS.names())}"
    with pytest.raises(UsageError) as e:
        build_model(20, unit="foo")
    assert str(e.value) == f"unknown unit 'foo'; allowed: {', '.join(UNITS.names())}"
    with pytest.raises(UsageError, match="unknown shortcut parameter 'gate_bais'"):
        build_model(20, shortcut="gating", gate_bais=-6)


def test_scaling_zero_is_the_plain_net():
    torch.manual_seed(0)
    plain = build_model(20, shortcut="none").eval()
    scaled = build_model(20, shortcut="scaling", scale=0.0, residual_scale=1.0).eval()
    scaled.load_state_dict(plain.state_dict())
    x = torch.randn(4, 3, 32, 32)
    torch.testing.assert_close(scaled(x), plain(x))


def test_gates_at_their_limits_reduce_to_known_shortcuts():
    s, f = torch.randn(2, 16, 8, 8), torch.randn(2, 16, 8, 8)
    closed = ExclusiveGating(16, 16, 1, "zeropad", True, gate_bias=-100.0)
    opened = ExclusiveGating(16, 16, 1, "zeropad", True, gate_bias=100.0)
    only = ShortcutOnlyGating(16, 16, 1, "zeropad", True, gate_bias=-100.0)
    torch.testing.assert_close(closed(s, f), s)
    torch.testing.assert_close(opened(s, f), f)
    torch.testing.assert_close(only(s, f), Identity(16, 16, 1, "zeropad", True)(s, f))
    assert closed.gate.bias.eq(-100.0).all()


def test_gate_bias_survives_model_init():
    model = build_model(8, shortcut="gating", gate_bias=-6.0)
    biases = [m.shortcut.gate.bias for m in model.units()]
    assert len(biases) == 3 and all(b.eq(-6.0).all() for b in biases)


@pytest.mark.parametrize("inverted,train_mean,eval_scale", [(False, 0.5, 0.5), (True, 1.0, 1.0)])
def test_dropout_shortcut_scales(inverted, train_mean, eval_scale):
    torch.manual_seed(0)
    drop = Dropout(8, 8, 1, "zeropad", True, p=0.5, inverted=inverted)
    s, f = torch.ones(64, 8, 16, 16), torch.zeros(64, 8, 16, 16)
    out = drop(s, f)
    assert abs(out.mean().item() - train_mean) < 0.01
    assert set(out.unique().tolist()) == ({0.0, 1.0} if not inverted else {0.0, 2.0})
    drop.eval()
    torch.testing.assert_close(drop(s, f), s * eval_scale)


def test_zeropad_subsamples_and_pads_channels():
    x = torch.arange(2 * 16 * 8 * 8, dtype=torch.float32).reshape(2, 16, 8, 8)
    y = ZeroPad(16, 32, 2)(x)
    assert y.shape == (2, 32, 4, 4)
    torch.testing.assert_close(y[:, :16], x[:, :, ::2, ::2])
    assert y[:, 16:].abs().sum() == 0


def test_preactivation_rules_for_first_and_last_unit():
    pre = build_model(11, unit="full_preact")
    units = pre.units()
    assert isinstance(units[0].pre_act, nn.Identity)  # stem's BN-ReLU serves the first unit
    assert [type(m) for m in units[1].pre_act] == [nn.BatchNorm2d, nn.ReLU]
    assert [type(m) for m in pre.final_act] == [nn.BatchNorm2d, nn.ReLU]  # extra activation before pooling
    assert [u.shared_preact for u in units] == [True, True, True]  # 1x1 projections read the (pre-)activation
    assert isinstance(build_model(8).final_act, nn.Identity)
    assert [u.shared_preact for u in build_model(8, unit="full_preact").units()] == [False, False, False]


def test_projection_bn_follows_the_unit():
    post = build_model(8, shortcut="conv1x1", unit="original").units()[1].shortcut.project
    pre = build_model(8, shortcut="conv1x1", unit="full_preact").units()[1].shortcut.project
    assert [type(m) for m in post] == [nn.Conv2d, nn.BatchNorm2d]
    assert isinstance(pre, nn.Conv2d)


def test_bn_momentum_is_applied():
    model = build_model(8, bn_momentum=0.03)
    assert {m.momentum for m in model.modules() if isinstance(m, nn.BatchNorm2d)} == {0.03}


@pytest.mark.parametrize("shortcut", SHORTCUTS.names())
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


def test_gate_init_zero_starts_every_gate_at_sigmoid_of_its_bias():
    torch.manual_seed(0)
    he, zero = build_model(8, shortcut="gating"), build_model(8, shortcut="gating", gate_init="zero")
    for a, b in zip((m for m in he.modules() if isinstance(m, ExclusiveGating)),
                    (m for m in zero.modules() if isinstance(m, ExclusiveGating))):
        assert a.gate.weight.abs().sum() > 0 and b.gate.weight.abs().sum() == 0
        assert torch.equal(b.gate.bias, torch.full_like(b.gate.bias, -6.0))


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
