"""ImageNet-style ResNets and ResNeXt: torchvision's parameter counts, shapes, every unit with the registry's
shortcuts, the config path, and weight mapping to and from torchvision with equal outputs."""
import pytest
import torch
import torchvision
from torch import nn

from resnet_ablate.errors import UsageError
from resnet_ablate.models.cifar import build_model
from resnet_ablate.models.imagenet import (
    TORCHVISION_ARCHS,
    ImageNetResNet,
    build_imagenet_model,
    from_torchvision,
    to_torchvision,
)
from resnet_ablate.models.resnet import count_parameters
from resnet_ablate.models.shortcuts import ExclusiveGating
from resnet_ablate.models.units import UNITS, FullPreactivation
from resnet_ablate.training.parse import parse
from resnet_ablate.training.state import build_network
from resnet_ablate.training.trainer import train
from resnet_ablate.zoo import imagenet_table

# torchvision's counts for weights=None (its docs' figures); asserted against torchvision below too
TORCHVISION_COUNTS = {"resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032,
                      "resnet101": 44_549_160, "resnet152": 60_192_808, "resnext50_32x4d": 25_028_904}
X = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", list(TORCHVISION_ARCHS))
def test_parameter_counts_equal_torchvisions(name):
    with torch.device("meta"):  # shapes only: no memory, no init time
        ours = build_imagenet_model(**TORCHVISION_ARCHS[name])
        theirs = getattr(torchvision.models, name)(weights=None)
    assert count_parameters(ours) == count_parameters(theirs) == TORCHVISION_COUNTS[name]
    shapes = sorted(tuple(v.shape) for v in ours.state_dict().values())
    assert shapes == sorted(tuple(v.shape) for v in theirs.state_dict().values())


@pytest.mark.parametrize("depth,out_ch", [(18, 512), (50, 2048)])
def test_stem_and_stages_shrink_the_input_by_32(depth, out_ch):
    model = build_imagenet_model(depth, num_classes=7).eval()
    x = model.stem(X)
    assert x.shape == (2, 64, 16, 16)
    sizes = []
    for stage in model.stages:
        x = stage(x)
        sizes.append(tuple(x.shape[1:]))
    assert sizes == [(out_ch // 8, 16, 16), (out_ch // 4, 8, 8), (out_ch // 2, 4, 4), (out_ch, 2, 2)]
    assert model(X).shape == (2, 7)


def test_bottleneck_strides_on_its_3x3_here_and_on_its_first_conv_in_cifar_nets():
    strides = lambda unit: [m.stride[0] for m in unit.body if isinstance(m, nn.Conv2d)]  # noqa: E731
    with torch.device("meta"):
        assert strides(build_imagenet_model(50).stages[1][0]) == [1, 2, 1]
        assert strides(build_model(11, block="bottleneck").stages[1][0]) == [2, 1, 1]


def test_resnext_units_have_grouped_3x3_of_torchvisions_width():
    with torch.device("meta"):
        unit = build_imagenet_model(50, groups=32, width_per_group=4).stages[0][0]
    convs = [m for m in unit.body if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.groups) for c in convs] == [(64, 128, 1), (128, 128, 32), (128, 256, 1)]


@pytest.mark.parametrize("unit", UNITS.names())
@pytest.mark.parametrize("shortcut", ["identity", "gating", "conv1x1"])
def test_every_unit_with_registry_shortcuts_runs_forward_and_backward(unit, shortcut):
    torch.manual_seed(0)
    model = build_imagenet_model(18, unit=unit, shortcut=shortcut, num_classes=5)
    out = model(X)
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    out.logsumexp(1).sum().backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    assert len(model.units()) == 8 and all(type(u) is UNITS.get(unit) for u in model.units())


def test_preact_gated_resnext_runs():
    model = build_imagenet_model(50, unit="full_preact", shortcut="gating", groups=32, width_per_group=4,
                                 num_classes=3)
    assert model(X).shape == (2, 3)
    assert [type(m) for m in model.final_act] == [nn.BatchNorm2d, nn.ReLU]  # pre-act nets end with BN-ReLU
    assert isinstance(model.units()[0].pre_act, nn.Identity)  # the stem's BN-ReLU serves the first unit


def test_preact_gating_resnet18_from_the_cli_config():
    cfg = parse(["arch=imagenet", "depth=18", "unit=full_preact", "shortcut=gating", "gate_bias=-3"])
    model = build_network(cfg, num_classes=10)
    assert isinstance(model, ImageNetResNet) and len(model.units()) == 8
    assert all(isinstance(u, FullPreactivation) and isinstance(u.shortcut, ExclusiveGating) for u in model.units())
    assert all(u.shortcut.gate.bias.eq(-3.0).all() for u in model.units())
    assert model(X).shape == (2, 10)
    with torch.device("meta"):
        resnext = build_network(parse(["arch=imagenet", "depth=50", "groups=32", "width_per_group=4"]), 1000)
    assert count_parameters(resnext) == TORCHVISION_COUNTS["resnext50_32x4d"]


@pytest.mark.parametrize("overrides,message", [
    (["arch=imagenet"], "depth 110 is not an ImageNet-style ResNet; allowed: 18, 34, 50, 101, 152"),
    (["arch=imagenet", "depth=50", "block=basic"], "ImageNet-style depth 50 uses bottleneck units; block=basic"),
    (["arch=imagenet", "depth=18", "groups=32"], "groups=32 width_per_group=64 need bottleneck units"),
    (["arch=imagenet", "depth=50", "width_per_group=0"], "groups=1 and width_per_group=0 must be >= 1"),
    (["arch=imagnet"], "unknown arch 'imagnet' (did you mean 'imagenet'?); allowed: cifar, imagenet"),
])
def test_bad_imagenet_settings_give_one_line(overrides, message):
    with pytest.raises(UsageError) as e:
        parse(overrides)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def _randomize(model: nn.Module, seed: int) -> nn.Module:
    """Random weights and BN statistics (so the mapping of every tensor shows in the outputs), eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, value in model.state_dict().items():
            if key.endswith("running_var"):
                value.copy_(torch.rand(value.shape, generator=g) + 0.5)
            elif value.is_floating_point():
                value.copy_(torch.randn(value.shape, generator=g) * (0.05 if value.dim() > 1 else 0.5))
    return model.eval()


@pytest.mark.parametrize("name", ["resnet18", "resnext50_32x4d"])  # basic; bottleneck (+ groups)
def test_weights_map_both_ways_with_equal_outputs(name):
    theirs = _randomize(getattr(torchvision.models, name)(weights=None, num_classes=10), 1)
    ours = build_imagenet_model(**TORCHVISION_ARCHS[name], num_classes=10).eval()
    ours.load_state_dict(from_torchvision(ours, theirs.state_dict()))
    with torch.no_grad():
        torch.testing.assert_close(ours(X), theirs(X))
    _randomize(ours, 2)
    theirs.load_state_dict(to_torchvision(ours))
    with torch.no_grad():
        torch.testing.assert_close(theirs(X), ours(X))
    back = from_torchvision(ours, to_torchvision(ours))
    assert (all(torch.equal(back[k], v) for k, v in ours.state_dict().items()) and
            back.keys() == ours.state_dict().keys())


@pytest.mark.parametrize("kwargs,message", [
    ({"unit": "full_preact", "shortcut": "gating"}, "torchvision has no counterpart for shortcut=gating, "
                                                    "unit=full_preact; weight mapping supports unit=original "
                                                    "shortcut=identity downsample=conv1x1 only"),
    ({"shortcut": "dropout"}, "torchvision has no counterpart for shortcut=dropout;"),
    ({"unit": "relu_preact"}, "torchvision has no counterpart for unit=relu_preact;"),
    ({"downsample": "zeropad"}, "torchvision has no counterpart for downsample=zeropad;"),
])
def test_mapping_refuses_what_torchvision_lacks_in_one_line(kwargs, message):
    with torch.device("meta"):
        model = build_imagenet_model(18, **kwargs)
    for convert in (lambda: to_torchvision(model), lambda: from_torchvision(model, {})):
        with pytest.raises(UsageError) as e:
            convert()
        assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_mapping_refuses_cifar_nets_and_checkpoints_of_another_shape():
    with pytest.raises(UsageError, match="^torchvision has no counterpart for CifarResNet; only ImageNet-style"):
        to_torchvision(build_model(20))
    with torch.device("meta"):
        resnet18, resnet34 = build_imagenet_model(18), build_imagenet_model(34)
        resnet18_10 = build_imagenet_model(18, num_classes=10)
    with pytest.raises(UsageError, match=r"^the torchvision state dict does not fit this net: 96 keys differ, "
                                         r"e.g. 'layer1.2.bn1.bias'$"):
        from_torchvision(resnet18, to_torchvision(resnet34))
    with pytest.raises(UsageError, match=r"^the torchvision state dict does not fit this net: 'fc.weight' has shape "
                                         r"\(10, 512\), this net \(1000, 512\)$"):
        from_torchvision(resnet18, to_torchvision(resnet18_10))


def test_imagenet_net_trains_on_cifar_sized_data(tmp_path):
    cfg = parse(["dataset=synthetic", "synthetic_size=32", "arch=imagenet", "depth=18", "batch_size=4",
                 "iterations=2", "eval_every=2", "warmup_iters=0", "milestones=[1]", "fail_threshold=100",
                 f"run_dir={tmp_path / 'run'}"])
    res = train([cfg])[0]
    assert res["status"] == "done" and res["iterations"] == 2
    assert res["parameters"] == TORCHVISION_COUNTS["resnet18"] - 990 * 513  # 10 classes instead of 1000


def test_zoo_table_lists_the_nets_beside_torchvisions_counts():
    rows = imagenet_table()
    assert len(rows) == 2 + len(TORCHVISION_ARCHS)
    assert "| resnext50_32x4d | 50 | bottleneck | 32x4d | 25,028,904 (25.03M) | 25,028,904 |" in rows
    assert "| resnet18 | 18 | basic | 1x64d | 11,689,512 (11.69M) | 11,689,512 |" in rows
