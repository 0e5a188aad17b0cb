"""Gradient probe: per-unit input-gradient norms, and the contrast between shortcuts at initialization."""
import pytest
import torch

from resnet_ablate.models.cifar import build_model
from resnet_ablate.models.probes import gradient_norms


def _ratio(shortcut: str, **params) -> float:
    """First unit's input-gradient norm over the last unit's, for a fresh depth-56 net."""
    torch.manual_seed(0)
    model = build_model(56, shortcut=shortcut, **params)
    x, y = torch.randn(32, 3, 32, 32, generator=torch.Generator().manual_seed(1)), torch.arange(32) % 10
    norms = gradient_norms(model, x, y)["unit_input"]
    assert len(norms) == 27
    return norms[0] / norms[-1]


def test_identity_keeps_the_gradient_where_plain_and_scaling_distort_it_by_orders_of_magnitude():
    # Measured (seed 0, batch 32): identity ~35x from last to first unit, plain ~1e4x, scaling(0.5) ~3e3x.
    # With BN in training mode the distortion is growth towards the input (BN's gradient explosion in
    # deep nets without identity paths); the shortcut term lambda^L of the paper's Eq. 5 vanishes.
    identity = _ratio("identity")
    assert 1 < identity < 100
    assert _ratio("none") / identity > 100
    assert _ratio("scaling", scale=0.5) / identity > 30


def test_probe_reports_every_unit_and_conv_and_leaves_the_model_untouched():
    torch.manual_seed(0)
    model = build_model(8, shortcut="dropout")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(4, 3, 32, 32)
    rng = torch.get_rng_state()
    out = gradient_norms(model.eval(), x, torch.tensor([0, 1, 2, 3]))
    assert len(out["unit_input"]) == 3
    assert len(out["conv_weight"]) == 7
    assert all(v > 0 for v in out["unit_input"] + out["conv_weight"])
    assert not model.training
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


# --- issue 28 item 8: the shortcut path's term (2016 Eq. 5) ------------------------------------------------

def _probe(shortcut: str, unit: str = "full_preact", depth: int = 20, **params) -> dict:
    torch.manual_seed(0)
    model = build_model(depth, unit, shortcut, **params)
    x, y = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1)), torch.arange(8)
    return gradient_norms(model, x, y)


def _per_stage(values: list[float], shapes: list[list[int]]) -> list[list[float]]:
    """The values split where the unit input's shape changes."""
    parts: list[list[float]] = []
    for i, v in enumerate(values):
        if i == 0 or shapes[i] != shapes[i - 1]:
            parts.append([])
        parts[-1].append(v)
    return parts


def test_the_shortcut_path_of_full_preact_identity_units_is_the_same_gradient_within_a_stage():
    out = _probe("identity")
    assert out["unit_shape"] == [[16, 32, 32]] * 4 + [[32, 16, 16]] * 3 + [[64, 8, 8]] * 2  # where stages change
    stages = _per_stage(out["shortcut_path_rms"], out["unit_shape"])
    assert [len(s) for s in stages] == [4, 3, 2]
    for stage in stages:  # Eq. 5: dL/dx_l through the shortcuts is dL/dx_L, exactly
        assert max(stage) == pytest.approx(min(stage), rel=1e-6)
    totals = _per_stage(out["unit_input_rms"], out["unit_shape"])
    assert totals[0][0] / totals[0][-1] > 1.5  # the total grows towards the input under BN
    sizes = [8 * c * h * w for c, h, w in out["unit_shape"]]
    assert out["shortcut_path_rms"] == pytest.approx([n / s ** 0.5 for n, s in zip(out["shortcut_path"], sizes)])


def test_scaling_halves_the_shortcut_path_at_every_unit_and_a_plain_net_has_none():
    for stage in _per_stage(_probe("scaling", scale=0.5)["shortcut_path_rms"], _probe("identity")["unit_shape"]):
        assert [a / b for a, b in zip(stage, stage[1:])] == pytest.approx([0.5] * (len(stage) - 1), rel=1e-5)
    plain = _probe("none")
    assert plain["shortcut_path"] == [0.0] * 9 and min(plain["unit_input"]) > 0


def test_the_shortcut_probe_keeps_the_forward_values_dropout_masks_and_model_as_they_were():
    torch.manual_seed(0)
    model = build_model(8, "full_preact", "dropout")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(4, 3, 32, 32)
    rng = torch.get_rng_state()
    out = gradient_norms(model.eval(), x, torch.arange(4))
    assert len(out["shortcut_path"]) == len(out["unit_input"]) == 3 and all(v > 0 for v in out["shortcut_path"])
    assert torch.equal(torch.get_rng_state(), rng) and not model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert gradient_norms(model, torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2)),
                          torch.arange(4)) == gradient_norms(  # the same masks on every call (and in both passes)
        model, torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2)), torch.arange(4))


def test_probe_runs_in_fp32_under_autocast_and_reads_once(monkeypatch):
    torch.manual_seed(0)
    model = build_model(8)
    x, y = torch.randn(8, 3, 32, 32), torch.arange(8) % 10
    plain = gradient_norms(model, x, y)
    monkeypatch.setattr(torch.Tensor, "item", lambda self: pytest.fail("the probe syncs once per tensor"))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = gradient_norms(model, x, y)
    assert under == plain


def test_probe_reports_the_per_element_rms_beside_the_l2_norm():
    torch.manual_seed(0)
    out = gradient_norms(build_model(8), torch.randn(4, 3, 32, 32), torch.arange(4))
    sizes = [4 * 16 * 32 * 32, 4 * 16 * 32 * 32, 4 * 32 * 16 * 16]  # inputs of the three units
    assert out["unit_input_rms"] == pytest.approx([n / s ** 0.5 for n, s in zip(out["unit_input"], sizes)])
