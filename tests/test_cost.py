"""What a sweep costs before it runs: the architecture estimate against a hand count, the launcher's cost line
against a hand computation (estimate and speed table), and the bench's machine-readable speed table."""
import importlib.util
import math
import subprocess
import sys
from argparse import Namespace

import pytest
from helpers import REPO, cli_env

from resnet_ablate.sweeps import cost, plancost
from resnet_ablate.sweeps.launcher import launch_main

RESNET20 = {"depth": 20, "batch_size": 128, "dataset": "cifar10", "precision": "bf16"}
# ResNet-20 by hand: stem 3x3 3->16 on 32x32; 3 stages of 3 basic units (16, 32, 64 channels on 32, 16, 8);
# the first convs of stages 2 and 3 read 16 and 32 channels; classifier 64 x 10.
MACS = 9 * 3 * 16 * 1024 + 6 * 9 * 16 * 16 * 1024 + (9 * 16 * 32 * 256 + 5 * 9 * 32 * 32 * 256) \
    + (9 * 32 * 64 * 64 + 5 * 9 * 64 * 64 * 64) + 64 * 10
# activations: every conv output 3 times (conv, BN, ReLU), every unit output twice (addition, activation)
ELEMENTS = 3 * 16 * 1024 + 3 * 8 * 16 * 1024 + 3 * 8 * 32 * 256 + 3 * 8 * 64 * 64
OPS = 3 + 9 * 8 + 2


def test_the_estimate_counts_resnet20_as_by_hand():
    assert MACS == 40_551_040 and ELEMENTS == 737_280
    work = cost.forward_work(RESNET20)
    assert (work.macs, work.elements, work.ops) == (MACS, ELEMENTS, OPS)
    assert cost.forward_work({"depth": 18, "arch": "imagenet", "image_size": 224}).macs == pytest.approx(1.81e9,
                                                                                                     rel=0.02)
    assert cost.forward_work({**RESNET20, "shortcut": "highway_gating"}).macs > 1.9 * MACS  # two 3x3 gate convs


def _per_run_seconds() -> float:
    """64k iterations of ResNet-20 (bf16, batch 128) on an H200 by the documented model, by hand."""
    image = 6 * MACS / (989e12 * 0.4) + 6 * ELEMENTS * 2 / (4.8e12 * 0.4)
    return 64000 * (128 * image + 3 * OPS * cost.kernel_seconds("graph")) + 64 * 10000 * image / 3


def test_the_estimate_meets_the_speeds_measured_on_an_h100():
    """The time per kernel is fitted to hand-written loops on an H100 (bf16, batch 128): ResNet-110 at 10.9k img/s
    in a graph and 2.7k eager, ResNet-20's 64k iterations in 135 s. With 2.5 us per kernel, the assumption it
    replaces, the estimate said 15.0k img/s and 97 s: 1.4x too fast."""
    def rate(depth, **extra):
        s = {**RESNET20, "depth": depth, "eval_every": 64000, **extra}
        return 64000 * 128 / cost.estimated_run_seconds(s, "H100", 64000)
    assert rate(110) == pytest.approx(10_900, rel=0.01) and rate(110, cuda_graph=False) == pytest.approx(2_700,
                                                                                                       rel=0.01)
    assert 64000 * 128 / rate(20) == pytest.approx(135, rel=0.03)
    per_image, work = cost.image_seconds({"depth": 110}, "H100")
    assert 128 / (128 * per_image + 3 * work.ops * 2.5e-6) == pytest.approx(15_000, rel=0.01)
    assert (4e-6 < cost.kernel_seconds("graph") < 6e-6 and
            cost.kernel_seconds("eager") > 6 * cost.kernel_seconds("graph"))


def _dry_run(capsys, tmp_path, *launch: str) -> str:
    runs = ["depth=20", "seed=0,1", "recipe=default", "precision=bf16", "dataset=cifar10"]
    assert launch_main(["dry_run=true", f"sweep_dir={tmp_path / 'sweep'}", *launch], runs, "cmd") == 0
    return next(line for line in capsys.readouterr().out.splitlines() if line.startswith("cost:"))


def test_dry_run_prints_gpu_hours_and_jobs_with_requeues_as_by_hand(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(plancost, "SPEED_TABLES", tmp_path / "no-tables")
    seconds = _per_run_seconds()
    starts = math.ceil(seconds / (4 * 60 - 90 - 120))  # usable per start: time - signal delay - start-up
    hours = 2 * (seconds + starts * 120) / 3600
    line = _dry_run(capsys, tmp_path, "launcher=slurm", "slurm.time=4")
    assert starts == 4
    assert line.startswith(f"cost: 2 runs to train in 2 jobs of up to 1 run: {hours:.3g} GPU-hours on H200 "
                           f"(estimate for bf16 in one CUDA graph per run: FLOPs and activation bytes per training "
                           f"image at 0.4 of H200's datasheet peaks and 4.9 µs per kernel in a graph, 32 eager, "
                           f"fitted to hand-written training loops on an H100 (ResNet-110 in one CUDA graph, 10.9k "
                           f"img/s; ")
    assert "): depth 20 0.24 GFLOP/8.85 MB; 120 s a job start)" in line and "fp32" not in line
    assert line.endswith(f"at slurm.time=4 min: {2 * starts} job starts, {2 * starts - 2} of them requeues")
    warned = _dry_run(capsys, tmp_path, "launcher=slurm", "slurm.time=4", "max_num_timeout=1")
    assert warned.endswith("; a job needs 3 requeues, more than max_num_timeout=1: raise slurm.time or "
                           "max_num_timeout")
    local = _dry_run(capsys, tmp_path, "launcher=local")
    assert "launcher=local has no time limit; under launcher=slurm at slurm.time=60 min: 2 job starts" in local


def test_the_cost_line_says_fp32_was_never_measured_and_gives_a_lower_bound(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(plancost, "SPEED_TABLES", tmp_path / "no-tables")
    runs = ["depth=20", "seed=0", "recipe=he2015", "dataset=cifar10"]  # the papers' recipe: fp32
    assert launch_main(["dry_run=true", f"sweep_dir={tmp_path / 'sweep'}", "launcher=slurm"], runs, "cmd") == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("cost:"))
    assert line.startswith("cost: 1 run to train in 1 job of up to 1 run: at least ")
    assert ("these runs train in fp32 with TF32 off (the papers' recipes), which has never been measured on a GPU: "
            "the bf16 estimate is a lower bound") in line


def test_the_bench_speed_table_replaces_the_estimate(tmp_path, capsys, monkeypatch):
    cost.write_speed_table(tmp_path / "2030-01-01-h200.speed.csv", [
        {"gpu": "NVIDIA H200", "arch": "cifar", "depth": 20, "block": "basic", "precision": "bf16", "bn_batch": 0,
         "batch_size": 128, "pack": 2, "mode": "graph", "img_per_s": 50000, "date": "2030-01-01"}])
    monkeypatch.setattr(plancost, "SPEED_TABLES", tmp_path)
    line = _dry_run(capsys, tmp_path, "launcher=slurm", "slurm.time=10", "runs_per_job=2")
    hours = (64000 * 128 * 2 / 50000 + 120) / 3600  # one job of the two runs, one start
    assert line.startswith(f"cost: 2 runs to train in 1 job of up to 2 runs: {hours:.3g} GPU-hours on NVIDIA "
                           f"H200 (measured: {tmp_path}/*.speed.csv; 120 s a job start)")
    assert line.endswith("1 job start, 0 of them requeues")
    rows = cost.read_speed_tables(tmp_path)
    assert cost.measured_rate({**RESNET20, "precision": "auto"}, "NVIDIA H200", 4, rows) == (50000.0, 2)
    assert cost.measured_rate({**RESNET20, "precision": "fp32"}, "NVIDIA H200", 2, rows) is None
    assert cost.choose_gpu("a100", rows) == "A100" and cost.choose_gpu(None, rows) == "NVIDIA H200"


def test_bench_writes_the_machine_readable_speed_table(tmp_path):
    spec = importlib.util.spec_from_file_location("train_speed", REPO / "bench" / "train_speed.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    measured = [(8, "trainer, cuda_graph=false", 1, ["cuda_graph=false"], 200.0), (8, "trainer", 1, [], 300.0),
                (8, "trainer, pack=2 (streams)", 2, [], 500.0),
                (8, "trainer, pack=2 wide", 2, ["pack_mode=wide"], 700.0),
                (8, "trainer, bn_batch=4", 1, ["bn_batch=4"], 250.0),
                (8, "trainer, compile=true", 1, ["compile=true"], 1e3)]
    path = bench.write_speed_table(tmp_path / "x.speed.csv", "cpu", measured, Namespace(device="cpu", batch_size=8))
    rows = cost.read_speed_tables(tmp_path)
    assert path.name == "x.speed.csv" and [(r["pack"], r["mode"], r["bn_batch"], r["img_per_s"]) for r in rows] == [
        ("1", "eager", "0", "200.0"), ("1", "eager", "0", "300.0"), ("2", "eager", "0", "500.0"),
        ("2", "eager", "0", "700.0"), ("1", "eager", "4", "250.0")]  # compile: not a row the cost line tells apart
    assert {(r["gpu"], r["arch"], r["depth"], r["block"], r["precision"], r["batch_size"]) for r in rows} \
        == {("cpu", "cifar", "8", "basic", "fp32", "8")}
    assert all(r["bn_batch"].isdigit() and r["date"] and r["torch"] for r in rows)


def test_the_cost_module_imports_without_torch():
    code = "import sys, resnet_ablate.sweeps.cost; assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], env=cli_env(), cwd=REPO).returncode == 0
