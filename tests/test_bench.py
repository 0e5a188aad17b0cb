"""The speed benchmark runs end to end (tiny CPU settings; its numbers are not asserted, only its table), and its
kernel count prints one line per mode in the documented form, wide packing well under alone per run-step."""
import re
import subprocess
import sys

from helpers import REPO, cli_env

BENCH = REPO / "bench" / "train_speed.py"


def test_benchmark_writes_its_table(tmp_path):
    cmd = [sys.executable, str(BENCH), "--device", "cpu", "--depths", "8", "--packs", "2", "--warmup", "2",
           "--iterations", "2", "--batch-size", "8", "--synthetic-size", "64", "--no-1001", "--out", str(tmp_path),
           "--repeats", "1", "--setups", "tutorial", "eager", "graph", "ghost_bn", "streams", "wide"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=cli_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr
    (table,) = tmp_path.glob("*.md")
    rows = [line.split(" | ") for line in table.read_text().splitlines() if line.startswith("| ResNet-8 |")]
    assert [(r[1], r[2], r[3], r[4]) for r in rows] == [
        ("tutorial loop (eager fp32, DataLoader workers)", "1", "fp32", "8"),
        ("trainer", "1", "fp32", "8"), ("trainer, pack=2 (streams)", "2", "fp32", "8"),
        ("trainer, pack=2 wide", "2", "fp32", "8"), ("trainer, bn_batch=4", "1", "fp32", "4"),
        ("trainer, cuda_graph=false", "1", "fp32", "8")]
    assert all(float(r[5].replace(",", "")) > 0 for r in rows)


def test_op_count_prints_one_line_per_mode_and_wide_cuts_the_ops_per_run():
    cmd = [sys.executable, str(BENCH), "--count-ops", "--device", "cpu", "--count-depth", "8", "--count-runs", "4",
           "--count-modes", "alone", "streams", "wide"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=cli_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("ops_per_run_step")]
    found = [re.fullmatch(r"ops_per_run_step depth=(\d+) mode=(\S+) runs=(\d+) ops=(\d+)", line).groups()
             for line in lines]
    assert [(d, m, r) for d, m, r, _ in found] == [("8", "alone", "1"), ("8", "streams", "4"), ("8", "wide", "4")]
    alone, streams, wide = (int(f[3]) for f in found)
    assert streams == alone and wide * 3 < alone


def test_bench_rows_are_the_median_of_repeats_with_precision_bn_group_capture_and_compile_time():
    """(Replaces test_fidelity.py's test_bench_rows_are_the_median_of_repeats_with_capture_time: the rows now name
    their precision and BN group and carry the compile time.)"""
    import importlib.util
    spec = importlib.util.spec_from_file_location("train_speed", BENCH)
    bench = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(BENCH.parent))
    try:
        spec.loader.exec_module(bench)
    finally:
        sys.path.remove(str(BENCH.parent))
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
