"""Folder data sets (ImageFolder trees of generated PNGs) and transfer learning: init from a torchvision
state dict file, a new head, frozen parts and per-stage learning rates."""
import json
import os

import numpy as np
import pytest
import torch
import torchvision
from helpers import run_cli
from PIL import Image

from resnet_ablate.errors import UsageError
from resnet_ablate.models.imagenet import to_torchvision
from resnet_ablate.models.transfer import read_state_dict
from resnet_ablate.run import main as run_main
from resnet_ablate.training import datasets
from resnet_ablate.training.evaluate import evaluate
from resnet_ablate.training.parse import parse
from resnet_ablate.training.signals import StopRequest
from resnet_ablate.training.state import build_state
from resnet_ablate.training.trainer import train

CLASSES = ("cat", "dog", "owl")
FAST = ["warmup_iters=0", "eval_every=2", "iterations=2", "milestones=[]", "batch_size=4", "device=cpu"]


def make_tree(root, classes=CLASSES, test_name="test", per_class=3, size=(40, 48)):
    """An ImageFolder tree of PNGs: class k's images are a flat colour k*80 in channel 0, plus noise."""
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), (test_name, 2)):
        for k, name in enumerate(classes):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 30, (*size, 3), dtype=np.uint8)
                pixels[..., 0] += np.uint8(k * 80)
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")
    return root


def test_folder_is_decoded_once_resized_and_labelled(tmp_path):
    make_tree(tmp_path, test_name="val")
    train_split, test_split, classes = datasets.read_folder(tmp_path, 32)
    assert classes == 3
    assert train_split.images.shape == (9, 3, 32, 32) and train_split.images.dtype == torch.uint8
    assert test_split.images.shape == (6, 3, 32, 32)
    assert train_split.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    red = train_split.images[:, 0].float().mean((1, 2))
    assert red[0] < 30 and 80 <= red[3] < 110 and 160 <= red[6] < 190  # class k: red k*80 + noise 0..29


def test_augment_crops_and_flips_at_the_image_size():
    images = torch.arange(2 * 3 * 48 * 48, dtype=torch.float32).view(2, 3, 48, 48).to(torch.uint8)
    data = datasets.Data(None, None, None, 2, torch.zeros(3, 1, 1), torch.ones(3, 1, 1))  # type: ignore[arg-type]
    centre = datasets.augment(images, torch.full((2, 2), 4), torch.zeros(2, dtype=torch.bool), data)
    assert torch.equal(centre, images.float())
    flipped = datasets.augment(images, torch.tensor([[0, 8], [4, 4]]), torch.tensor([False, True]), data)
    assert torch.equal(flipped[1], images[1].flip(-1).float())
    assert torch.equal(flipped[0, :, 4:, :44], images[0, :, :44, 4:].float())  # shifted by the pad of 4
    assert flipped[0, :, :4].abs().sum() == 0 and flipped[0, :, :, 44:].abs().sum() == 0


@pytest.mark.parametrize("arch", [["arch=cifar", "depth=8", "image_size=32"],
                                  ["arch=imagenet", "depth=18", "image_size=64"]])
def test_trains_on_a_folder(tmp_path, arch):
    make_tree(tmp_path / "tree")
    cfg = parse(["dataset=folder", f"data_dir={tmp_path / 'tree'}", *arch, *FAST, f"run_dir={tmp_path / 'run'}",
                 "fail_threshold=100"])
    [res] = train([cfg])
    assert res["status"] == "done" and res["iterations"] == 2
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["final_test_error"] == res["final_test_error"] and 0 <= saved["final_test_error"] <= 100
    rows = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 1 and json.loads(rows[0])["epoch"] == pytest.approx(2 * 4 / 9)


@pytest.mark.parametrize("setup,message", [
    (lambda root: None, "dataset=folder needs {root}/train/ with one folder per class (and test/ or val/)"),
    (lambda root: (root / "train").mkdir(parents=True), "dataset=folder needs {root}/test/ or {root}/val/ next "
                                                        "to train/"),
    (lambda root: make_tree(root, test_name="test") and (root / "test" / "cat").rename(root / "test" / "bat"),
     "{root}/train and {root}/test have different class folders: bat, cat only in one of them"),
    (lambda root: make_tree(root, classes=("cat",)), "dataset=folder needs at least two class folders in "
                                                     "{root}/train/; it has one, cat"),
])
def test_bad_folder_says_what_is_wrong(tmp_path, setup, message):
    root = tmp_path / "tree"
    setup(root)
    with pytest.raises(UsageError) as e:
        datasets.read_folder(root, 32)
    assert str(e.value) == message.format(root=root)


def test_an_image_size_whose_decoded_set_exceeds_the_memory_is_refused_before_decoding(tmp_path, monkeypatch):
    """image_size=100000 grew past 10 GB in 50 s: N*3*S^2 bytes are checked against the memory available first."""
    root = make_tree(tmp_path / "tree")  # 9 training and 6 test images
    monkeypatch.setattr(datasets, "available_memory", lambda: 10 ** 9)
    monkeypatch.setattr(datasets, "_decode", lambda *a: pytest.fail("decoded"))
    with pytest.raises(UsageError) as e:
        datasets.read_folder(root, 5000)
    assert str(e.value) == f"image_size=5000: the 15 images of {root} decode to 1.12 GB (N*3*S^2 bytes), more than " \
                           f"the 1 GB of memory available; use a smaller image_size"
    assert 0 < datasets.available_memory() < 2 ** 50 or datasets.available_memory() is None


def test_a_stop_while_a_folder_decodes_ends_the_run_before_it_starts(tmp_path):
    """SIGTERM did not stop a run that decoded its folder data set for minutes: the decoding takes the stop up, and
    the run ends paused at iteration 0 with nothing written."""
    make_tree(tmp_path / "tree")
    cfg = parse(["dataset=folder", f"data_dir={tmp_path / 'tree'}", "depth=8", *FAST, f"run_dir={tmp_path / 'run'}"])
    stop = StopRequest()
    with stop.installed():
        stop.reason = "SIGTERM"
        assert train([cfg], stop) == [{"status": "paused", "iteration": 0, "reason": "SIGTERM"}]
    assert not (tmp_path / "run").exists()


def test_bad_folder_is_one_line_at_the_cli(tmp_path, monkeypatch, capsys):
    """In-process through run.main (tests/test_config.py runs the CLI as a real process)."""
    root = tmp_path / "tree"
    for split in ("train", "val"):
        (root / split).mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert run_main(["dataset=folder", f"data_dir={root}", "depth=8", "iterations=1", "warmup_iters=0",
                     "milestones=[]"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err == f"error: {root}/train: Couldn't find any class folder in {root}/train.\n"


def test_folder_settings_are_checked():
    with pytest.raises(UsageError, match=r"^dataset=folder needs data_dir=PATH"):
        parse(["dataset=folder"])
    with pytest.raises(UsageError, match=r"^image_size=64 applies to dataset=folder only; cifar10 images are 32x32$"):
        parse(["image_size=64"])
    with pytest.raises(UsageError, match=r"^init= loads torchvision weights into arch=imagenet nets only$"):
        parse(["init=x.pt", "depth=20"])
    with pytest.raises(UsageError, match=r"^unknown freeze part 'stage4' \(did you mean 'stage3'\?\); allowed: stem, "
                                         r"stage1, stage2, stage3, "):
        parse(["freeze=[stem,stage4]", "depth=20"])
    with pytest.raises(UsageError, match=r"^stage_lr_mult needs 4 values for arch=imagenet"):
        parse(["arch=imagenet", "depth=18", "stage_lr_mult=[0.1,1.0]"])
    assert parse(["arch=imagenet", "depth=18", "freeze=all_but_head"]).freeze == ["all_but_head"]


def imagenet_run(tmp_path, *overrides):
    """A RunState of ResNet-18 on a 3-class folder at 64x64 (data on the CPU), not started."""
    make_tree(tmp_path / "tree")
    cfg = parse(["dataset=folder", f"data_dir={tmp_path / 'tree'}", "arch=imagenet", "depth=18", "image_size=64",
                 *FAST, f"run_dir={tmp_path / 'run'}", *overrides])
    data = datasets.load("folder", tmp_path / "tree", False, "channel", 0, 0, 64)
    return build_state(cfg, torch.device("cpu"), data=data)


@pytest.fixture
def resnet18_file(tmp_path):
    """A torchvision ResNet-18 (1000 classes, random weights and BN statistics) saved with torch.save."""
    torch.manual_seed(1)
    net = torchvision.models.resnet18(weights=None)
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if "running" in name or ("bn" in name and t.is_floating_point()):
                t.uniform_(0.5, 1.5)
    torch.save(net.state_dict(), tmp_path / "resnet18.pt")
    return tmp_path / "resnet18.pt", net.state_dict()


def test_init_loads_the_backbone_and_makes_a_new_head(tmp_path, resnet18_file):
    path, state = resnet18_file
    run = imagenet_run(tmp_path, f"init={path}")
    ours = to_torchvision(run.model)
    assert run.model.fc.weight.shape == (3, 512) and ours["fc.weight"].shape == (3, 512)
    backbone = [k for k in state if not k.startswith("fc.")]
    assert len(backbone) == len(ours) - 2
    for key in backbone:
        assert torch.equal(ours[key], state[key]), key
    assert torch.equal(run.model.fc.bias, torch.zeros(3))  # the fresh head's init, not the file's


def test_bad_init_file_is_one_line(tmp_path):
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(UsageError) as e:
        read_state_dict(str(tmp_path / "junk.pt"))
    assert str(e.value).startswith(f"init={tmp_path / 'junk.pt'} is not a state_dict file (")
    assert "\n" not in str(e.value)
    with pytest.raises(UsageError, match=r"init=.*missing.pt: no such file; give a state_dict file saved with "
                                         r"torch.save$"):
        read_state_dict(str(tmp_path / "missing.pt"))


def test_an_init_fifo_is_refused_in_one_line_and_does_not_hang(tmp_path):
    """A FIFO as init= hung the run (its checksum opened it and waited for a writer)."""
    fifo = tmp_path / "weights.pt"
    os.mkfifo(fifo)
    message = f"init={fifo}: not a regular file; give a state_dict file saved with torch.save"
    with pytest.raises(UsageError, match=f"^{message}$"):
        read_state_dict(str(fifo))
    proc = run_cli("arch=imagenet", "depth=18", "dataset=synthetic", "synthetic_size=16",
                   f"init={fifo}", f"run_dir={tmp_path / 'r'}", *FAST, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2 and proc.stderr == f"error: {message}\n"
    assert not (tmp_path / "r").exists()


def test_freeze_all_but_head_changes_only_the_head(tmp_path, resnet18_file):
    run = imagenet_run(tmp_path, f"init={resnet18_file[0]}", "freeze=all_but_head")
    before = {k: v.clone() for k, v in run.model.state_dict().items()}
    assert [g["params"] for g in run.optimizer.param_groups] == [[run.model.fc.weight, run.model.fc.bias]]
    run.train_step(*run.batch())
    after = run.model.state_dict()
    changed = sorted(k for k in before if not torch.equal(before[k], after[k]))
    assert changed == ["fc.bias", "fc.weight"]  # frozen BN kept its running statistics (eval mode)
    evaluate(run, run.data.test)
    assert not run.model.stem[1].training and run.model.fc.training is True


def test_stage_lr_multipliers_scale_each_groups_lr(tmp_path):
    run = imagenet_run(tmp_path, "stage_lr_mult=[0.01,0.1,0.3,0.5]", "lr=0.2", "freeze=[stem]")
    stem_ids = {id(p) for p in run.model.stem.parameters()}
    by_param = {id(p): g["lr"] for g in run.optimizer.param_groups for p in g["params"]}
    assert not stem_ids & by_param.keys()  # frozen: not in the optimizer
    expected = {"stages.0": 0.002, "stages.1": 0.02, "stages.2": 0.06, "stages.3": 0.1, "fc": 0.2}
    for name, p in run.model.named_parameters():
        if id(p) in by_param:
            prefix = "fc" if name.startswith("fc") else name[:8]
            assert by_param[id(p)].item() == pytest.approx(expected[prefix]), name
    run.iteration = 1
    run.cfg.milestones = [1]
    run.follow_schedule()  # the schedule's /10 reaches every group, in place
    assert sorted(round(t.item(), 6) for t in run.lrs.tensors.values()) == [0.0002, 0.002, 0.006, 0.01, 0.02]
    assert all(g["lr"] is run.lrs.tensor(m) for g, m in zip(run.optimizer.param_groups, run.group_multipliers))


@pytest.mark.parametrize("content,kind", [(b"hello\n", "KeyError"), (bytes(range(256)) * 8, "UnpicklingError")])
def test_an_init_file_that_is_no_state_dict_is_one_short_line(tmp_path, content, kind):
    path = tmp_path / "weights.pt"
    path.write_bytes(content)
    with pytest.raises(UsageError) as e:
        read_state_dict(str(path))
    assert str(e.value) == (f"init={path} is not a state_dict file (torch.load could not read it: {kind}); save one "
                            f"with torch.save(model.state_dict(), PATH)")
