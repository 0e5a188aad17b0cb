"""Layer responses (the 2015 paper's Fig. 7, `models/responses.py`): equal to a hand computation with hooks, recorded
by a finished run and drawn by the report, and computed on demand from a checkpoint (`layer_responses`)."""
import json

import pytest
import torch
from helpers import DONE, TINY, stop_now
from torch import nn

from resnet_ablate import layer_responses as cli
from resnet_ablate import report
from resnet_ablate.models.cifar import build_model
from resnet_ablate.models.responses import layer_responses
from resnet_ablate.training.parse import parse
from resnet_ablate.training.trainer import train


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


@pytest.mark.parametrize("unit, shortcut",
                         [("original", "identity"), ("original", "none"), ("full_preact", "identity")])
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
    cfgs = [parse([*DONE, f"shortcut={s}", f"run_dir={tmp_path / 'runs' / s}"]) for s in ("identity", "none")]
    train(cfgs)
    saved = json.loads((tmp_path / "runs" / "none" / "responses.json").read_text())
    assert (saved["source"], saved["iteration"], saved["split"], len(saved["std"])) == ("end", 30, "test", 7)
    assert all(v > 0 for v in saved["std"])
    assert report.main([str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--formats", "png"]) == 0
    assert (tmp_path / "out" / "runs-responses.png").is_file()
    assert "![runs-responses](runs-responses.png)" in (tmp_path / "out" / "report.md").read_text()


def test_responses_on_demand_from_a_checkpoint(tmp_path):
    cfg = parse([*TINY, f"run_dir={tmp_path / 'paused'}"])
    train([cfg], stop_now())
    assert not (tmp_path / "paused" / "responses.json").exists()
    assert cli.main([str(tmp_path / "paused"), "device=cpu"]) == 0
    saved = json.loads((tmp_path / "paused" / "responses.json").read_text())
    assert (saved["source"], saved["iteration"], len(saved["std"])) == ("checkpoint", 1, 7)
    assert cli.main([str(tmp_path / "nowhere")]) == 2
