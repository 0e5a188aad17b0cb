"""The speed benchmark runs end to end (tiny CPU settings; its numbers are not asserted, only its table), and its
kernel count prints one line per mode in the documented form, wide packing well under alone per run-step. The
speed benchmark runs in-process through its main() (the expansion benchmark as a script, in a process of its own)."""
import importlib.util
import re
import subprocess
import sys

from helpers import REPO, cli_env

BENCH = REPO / "bench" / "train_speed.py"


def _train_speed():
    """bench/train_speed.py imported as a module (it puts its folder on sys.path itself, for opcount.py)."""
    spec = importlib.util.spec_from_file_location("train_speed", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def _run_train_speed(monkeypatch, *args: str) -> int:
    """`python bench/train_speed.py args` through its main(), sys.argv as a script gets it."""
    monkeypatch.setattr(sys, "argv", [str(BENCH), *args])
    return _train_speed().main()


def test_benchmark_writes_its_table(tmp_path, monkeypatch, capsys):
    code = _run_train_speed(monkeypatch, "--device", "cpu", "--depths", "8", "--packs", "2", "--warmup", "2",
                            "--iterations", "2", "--batch-size", "8", "--synthetic-size", "64", "--no-1001", "--out",
                            str(tmp_path), "--repeats", "1", "--setups", "tutorial", "eager", "graph", "ghost_bn",
                            "streams", "wide")
    assert code == 0, capsys.readouterr().err
    (table,) = tmp_path.glob("*.md")
    rows = [line.split(" | ") for line in table.read_text().splitlines() if line.startswith("| ResNet-8 |")]
    assert [(r[1], r[2], r[3], r[4]) for r in rows] == [
        ("tutorial loop (eager fp32, DataLoader workers)", "1", "fp32", "8"),
        ("trainer", "1", "fp32", "8"), ("trainer, pack=2 (streams)", "2", "fp32", "8"),
        ("trainer, pack=2 wide", "2", "fp32", "8"), ("trainer, bn_batch=4", "1", "fp32", "4"),
        ("trainer, cuda_graph=false", "1", "fp32", "8")]
    assert all(float(r[5].replace(",", "")) > 0 for r in rows)


def test_op_count_prints_one_line_per_mode_and_wide_cuts_the_ops_per_run(monkeypatch, capsys):
    code = _run_train_speed(monkeypatch, "--count-ops", "--device", "cpu", "--count-depth", "8", "--count-runs", "4",
                            "--count-modes", "alone", "streams", "wide")
    out, err = capsys.readouterr()
    assert code == 0, err
    lines = [line for line in out.splitlines() if line.startswith("ops_per_run_step")]
    found = [re.fullmatch(r"ops_per_run_step depth=(\d+) mode=(\S+) runs=(\d+) ops=(\d+)", line).groups()
             for line in lines]
    assert [(d, m, r) for d, m, r, _ in found] == [("8", "alone", "1"), ("8", "streams", "4"), ("8", "wide", "4")]
    alone, streams, wide = (int(f[3]) for f in found)
    assert streams == alone and wide * 3 < alone


def test_bench_rows_are_the_median_of_repeats_with_precision_bn_group_capture_and_compile_time():
    """(Replaces test_fidelity.py's test_bench_rows_are_the_median_of_repeats_with_capture_time: the rows now name
    their precision and BN group and carry the compile time.)"""
    bench = _train_speed()
    rates = iter([(300.0, None, 2.0, None), (100.0, None, 1.0, None), (200.0, 1.5, 3.0, 40.0)])
    measured = bench._median_of(lambda: next(rates), 3)
    assert measured == (200.0, 1.5, 3.0, 40.0, [100.0, 200.0, 300.0])
    row = bench._row(20, "trainer", 1, "bf16 autocast, fp32 stream", 64, measured).split(" | ")
    assert row[3:7] == ["bf16 autocast, fp32 stream", "64", "200", "100-300"] and row[-3:] == ["3.0", "40.0", "1.5 |"]
    assert bench._bn_group(["bn_batch=64"], 128) == 64 and bench._bn_group([], 128) == 128
    assert [s[0] for s in bench._setups(["wide_compile", "graph", "wide"], [2, 4], 128)] == [
        "trainer", "trainer, pack=2 wide", "trainer, pack=4 wide", "trainer, pack=4 wide, compile=true"]


def test_expansion_benchmark_lists_its_grid(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "expand_speed.py"), "--lrs", "3", "--seeds", "4"],
                          capture_output=True, text=True, env=cli_env(), timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("12 runs: dry run in ") and proc.stdout.endswith(" s (exit code 0)\n")


def _bench_module(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_step_ratio_benchmark_prints_its_three_steps_ratios_and_op_counts(capsys):
    assert _bench_module("step_ratio").main(["--depth", "8", "--batch", "16", "--rounds", "3", "--warmup", "1",
                                             "--images", "64"]) == 0
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.splitlines() if "median step" in line] == ["he2016", "he2016", "tutorial"]
    assert re.search(r"he2016 / he2016 bn_batch=0: median ratio \d\.\d{3}", out)
    assert re.search(r"he2016 / tutorial: median ratio \d\.\d{3}", out)
    ops = re.search(r"ops per step \(leaf operators\): he2016 (\d+), bn_batch=0 (\d+)", out)
    assert int(ops[1]) > int(ops[2]) > 0  # ghost BN's second group costs ops; one BN fewer


def test_the_data_check_benchmark_times_an_empty_and_a_filled_cache(tmp_path, capsys):
    from helpers import write_fake_cifar
    write_fake_cifar(tmp_path)
    assert _bench_module("data_checks").main(["--data", str(tmp_path), "--pairs", "2"]) == 0
    assert re.search(r"first \(empty cache\) median [\d.]+ s, second \(cached\) median [\d.]+ s, median ratio [\d.]+",
                     capsys.readouterr().out)
