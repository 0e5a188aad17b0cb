"""The benchmarks run end to end (tiny CPU settings; their numbers are not asserted, only their tables and lines):
the speed table (rows of any keys, appended to), its kernel count (one line per mode, in the configured
precision, wide packing well under alone per run-step), the grouped-convolution comparison (like against like),
the equality matrix's device, and the GPU command's CPU dry mode with its pieces, limits and budget. The speed
benchmark runs in-process through its main() (the expansion benchmark and the GPU command as scripts)."""
import argparse
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import torch
from helpers import REPO, cli_env

from resnet_ablate.sweeps import cost

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


def test_benchmark_writes_its_table_with_rows_of_any_keys_and_appends(tmp_path, monkeypatch, capsys):
    """The rows in SETUPS' order, each naming the precision and BN group its keys resolve to (the papers' recipe:
    fp32, 4 of the batch of 8); a --row of any keys; the speed CSV with the trainer's rows; --append keeps both."""
    tiny = ["--device", "cpu", "--depths", "8", "--packs", "2", "--warmup", "2", "--iterations", "2", "--batch-size",
            "8", "--synthetic-size", "64", "--no-1001", "--out", str(tmp_path), "--repeats", "1"]
    code = _run_train_speed(monkeypatch, *tiny, "--setups", "tutorial", "eager", "graph", "ghost_bn", "streams", "wide",
                            "fp32_recipe", "--row", "recipe=he2016 precision=fp32 bn_batch=0")
    assert code == 0, capsys.readouterr().err
    (table,) = tmp_path.glob("*.md")
    rows = [line.split(" | ") for line in table.read_text().splitlines() if line.startswith("| ResNet-8 |")]
    assert [(r[1], r[2], r[3], r[4]) for r in rows] == [
        ("tutorial loop (eager fp32, DataLoader workers)", "1", "fp32", "8"),
        ("trainer", "1", "fp32", "8"), ("trainer, pack=2 (streams)", "2", "fp32", "8"),
        ("trainer, pack=2 wide", "2", "fp32", "8"), ("trainer, cuda_graph=false", "1", "fp32", "8"),
        ("trainer, recipe=he2016 precision=fp32", "1", "fp32", "4"), ("trainer, bn_batch=4", "1", "fp32", "4"),
        ("trainer, recipe=he2016 precision=fp32 bn_batch=0", "1", "fp32", "8")]
    assert all(float(r[5].replace(",", "")) > 0 for r in rows)
    speed_csv = table.with_suffix(".speed.csv")
    assert [(r["precision"], r["bn_batch"], r["pack"], r["mode"]) for r in cost.read_speed_table(speed_csv)] == [
        ("fp32", "0", "1", "eager"), ("fp32", "0", "2", "eager"), ("fp32", "0", "2", "eager"),
        ("fp32", "0", "1", "eager"), ("fp32", "4", "1", "eager"), ("fp32", "4", "1", "eager"),
        ("fp32", "0", "1", "eager")]
    assert _run_train_speed(monkeypatch, *tiny, "--setups", "graph", "--append") == 0
    text = table.read_text()
    assert len([line for line in text.splitlines() if line.startswith("| ResNet-8 |")]) == 9
    assert text.count("- command: `python ") == 2 and len(cost.read_speed_table(speed_csv)) == 8


def test_a_row_that_fails_is_a_row_and_the_others_still_run(tmp_path, monkeypatch, capsys):
    bench = _train_speed()

    def missing(*args):
        raise ModuleNotFoundError("No module named 'torchvision'")

    monkeypatch.setattr(bench, "tutorial_loop", missing)
    monkeypatch.setattr(sys, "argv", [str(BENCH), "--device", "cpu", "--depths", "8", "--setups", "tutorial", "graph",
                                      "--warmup", "2", "--iterations", "2", "--batch-size", "8", "--synthetic-size",
                                      "64", "--no-1001", "--out", str(tmp_path), "--repeats", "1"])
    assert bench.main() == 0
    rows = [line for line in next(tmp_path.glob("*.md")).read_text().splitlines() if line.startswith("| ResNet-8 |")]
    assert rows[0].startswith("| ResNet-8 | tutorial loop (eager fp32, DataLoader workers) | 1 | fp32 | 8 | failed: "
                              "ModuleNotFoundError: No module named 'torchvision' |")
    assert rows[1].startswith("| ResNet-8 | trainer | 1 | fp32 | 8 | ") and len(rows) == 2


OPS = re.compile(r"ops_per_run_step depth=(\d+) mode=(\S+) runs=(\d+) precision=(\w+) bn_batch=(\d+) ops=(\d+)")


def _op_lines(monkeypatch, capsys, *args: str) -> list[tuple[str, ...]]:
    code = _run_train_speed(monkeypatch, "--count-ops", "--device", "cpu", "--count-depth", "8", *args)
    out, err = capsys.readouterr()
    assert code == 0, err
    return [OPS.fullmatch(line).groups() for line in out.splitlines() if line.startswith("ops_per_run_step")]


def test_op_count_prints_one_line_per_mode_and_wide_cuts_the_ops_per_run(monkeypatch, capsys):
    found = _op_lines(monkeypatch, capsys, "--count-runs", "4", "--count-modes", "alone", "streams", "wide")
    assert [f[:5] for f in found] == [("8", "alone", "1", "fp32", "4"), ("8", "streams", "4", "fp32", "4"),
                                      ("8", "wide", "4", "fp32", "4")]  # a bare command's: he2016
    alone, streams, wide = (int(f[5]) for f in found)
    assert streams == alone and wide * 3 < alone


def test_op_count_honours_the_configured_precision(monkeypatch, capsys):
    """--count-keys precision=bf16 counts the step under bf16 autocast (the casts are ops), as the run trains."""
    fp32, bf16 = (_op_lines(monkeypatch, capsys, "--count-modes", "alone", "--count-keys", "recipe=default", *keys)[0]
                  for keys in ([], ["precision=bf16"]))
    assert (fp32[3], bf16[3]) == ("fp32", "bf16") and int(bf16[5]) > int(fp32[5])


def test_bench_rows_are_the_median_of_repeats_with_precision_bn_group_capture_and_compile_time():
    """(Replaces test_fidelity.py's test_bench_rows_are_the_median_of_repeats_with_capture_time: the rows now name
    their precision and BN group and carry the compile time.)"""
    bench = _train_speed()
    rates = iter([(300.0, None, 2.0, None), (100.0, None, 1.0, None), (200.0, 1.5, 3.0, 40.0)])
    measured = bench._median_of(lambda: next(rates), 3)
    assert measured == (200.0, 1.5, 3.0, 40.0, [100.0, 200.0, 300.0])
    row = bench._row(20, "trainer", 1, "bf16 autocast, fp32 stream", 64, measured).split(" | ")
    assert row[3:7] == ["bf16 autocast, fp32 stream", "64", "200", "100-300"] and row[-3:] == ["3.0", "40.0", "1.5 |"]
    args = argparse.Namespace(batch_size=128, device="cpu")
    assert [bench._bn_group(20, args, keys) for keys in (["bn_batch=64"], [], ["recipe=he2016"], None)] == \
        [64, 128, 64, 128]
    assert [s[0] for s in bench._setups(["wide_compile", "graph", "wide"], [2, 4], 128, ["precision=fp32"])] == [
        "trainer", "trainer, pack=2 wide", "trainer, pack=4 wide", "trainer, pack=4 wide, compile=true",
        "trainer, precision=fp32"]


def test_expansion_benchmark_lists_its_grid(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "expand_speed.py"), "--lrs", "3", "--seeds", "4"],
                          capture_output=True, text=True, env=cli_env(), timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("12 runs: dry run in ") and proc.stdout.endswith(" s (exit code 0)\n")


def _bench_module(name: str):
    """bench/<name>.py imported as the module bench_<name> (registered: its dataclasses look themselves up)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
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


def test_the_grouped_conv_benchmark_compares_like_with_like_and_prints_its_lines(capsys):
    """Each pass of the one grouped convolution gives the K dense ones' results side by side (what the timed calls
    compute), and the script prints a documented line per stage, K and pass."""
    grouped_conv = _bench_module("grouped_conv")
    cpu = torch.device("cpu")
    x, w, gy = grouped_conv.tensors(2, 16, 8, 4, torch.float32, cpu)
    for name in grouped_conv.PASSES:
        one = grouped_conv.conv_pass(name, x, w, gy, 2)()
        dense = [grouped_conv.conv_pass(name, *(t.split(16, 0 if t is w else 1)[k] for t in (x, w, gy)), 1)()
                 for k in range(2)]
        if name == "forward":
            torch.testing.assert_close(one, torch.cat(dense, 1))
        else:
            i = 0 if name == "input_grad" else 1
            torch.testing.assert_close(one[i], torch.cat([d[i] for d in dense], 1 if i == 0 else 0), rtol=1e-4,
                                       atol=1e-4)  # grouped gradients sum in another order (docs/speed.md)
    assert grouped_conv.main(["--device", "cpu", "--batch", "4", "--packs", "2", "--warmup", "0", "--repeats", "1",
                              "--inner", "1", "--precisions", "fp32"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 9 and all(re.fullmatch(r"grouped_conv precision=fp32 channels=\d+ size=\d+ K=2 "
                                                r"pass=\w+ serial_ms=[\d.]+ streams_ms=n/a grouped_ms=[\d.]+", line)
                                   for line in lines)


def test_the_equality_matrix_takes_a_device_and_refuses_a_missing_one_in_one_line(capsys):
    equality = _bench_module("equality")
    assert equality.main(["--parts", "e", "--device", "cpu"]) == 0
    assert "## (e) buffered sampling draws the Sampler's: True" in capsys.readouterr().out
    if not torch.cuda.is_available():
        assert equality.main(["--parts", "e", "--device", "cuda"]) == 2
        assert capsys.readouterr().err == "error: device=cuda but no CUDA GPU is available; use device=cpu or " \
                                          "device=auto\n"


def test_the_gpu_command_cuts_a_piece_at_its_limit_and_skips_what_the_budget_leaves_no_time_for(tmp_path, capsys,
                                                                                              monkeypatch):
    """A piece that hangs is cut at its limit (its process group killed) and the next one runs; the budget's end
    cuts a piece too, and the pieces after it are skipped; a piece's limit leaves the later pieces' floors."""
    gpu_check = _bench_module("gpu_check")
    sleep = [sys.executable, "-c", "import time; print('started', flush=True); time.sleep(60)"]
    plan = [gpu_check.Piece("hangs", [sleep], 2), gpu_check.Piece("quick", [[sys.executable, "-c", "print(7)"]], 30),
            gpu_check.Piece("rest", [sleep], 60), gpu_check.Piece("late", [sleep], 30)]
    monkeypatch.setattr(gpu_check, "pieces", lambda args: plan)
    assert gpu_check.main(["--out", str(tmp_path), "--budget", "6"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert re.fullmatch(r"\[hangs\] cut at 2 s in 2\.\d s \(limit 2 s\): started", lines[0])
    assert re.fullmatch(r"\[quick\] ok in [\d.]+ s \(limit \d s\): 7", lines[1])
    assert re.fullmatch(r"\[rest\] cut at \d s in [\d.]+ s \(limit \d s\): started", lines[2])
    assert lines[3] == "[late] skipped (budget spent) in 0.0 s (limit 0 s): (no output)"
    assert lines[4].startswith("gpu_check: 1 of 4 pieces ok in ")
    assert "===== hangs: cut at 2 s =====\nstarted" in (tmp_path / "pieces.log").read_text()
    piece = gpu_check.Piece("p", [], limit_s=90, floor_s=20)
    assert [gpu_check.piece_limit(piece, left, later) for left, later in ((500, 25), (100, 25), (50, 100), (5, 0))] \
        == [90, 75, 20, 5]


def test_the_gpu_command_writes_the_cifar_copy_first_when_asked_and_reruns_only_some_pieces(tmp_path, monkeypatch):
    gpu_check = _bench_module("gpu_check")
    monkeypatch.setattr(gpu_check, "REPO", tmp_path)  # a checkout with no .data yet (this one may have one)
    args = argparse.Namespace(out=tmp_path, dry=False, cifar_copy=Path("/kit/data"), only=None)
    plan = gpu_check.run_plan(args)
    assert [p.name for p in plan][:3] == ["env", "data", "tests"]
    assert plan[1].commands == [[sys.executable, "/kit/data/make_cifar10.py", ".data"]]
    speed = [c for p in plan if p.name.startswith("speed") for c in p.commands]
    assert len(speed) == 2 and all(c[c.index("--data") + 1] == ".data" for c in speed)
    args.only, args.cifar_copy = ["tests", "kernels"], None
    assert [p.name for p in gpu_check.run_plan(args)] == ["tests", "kernels"]


def test_the_gpu_commands_cpu_dry_mode_runs_every_piece_and_writes_its_files(tmp_path):
    """The command a GPU session runs (bench/gpu_check.py), on the CPU with tiny settings: every piece ends with
    exit code 0 within its limit, at most 8 files come back, the table holds each setup's row, the papers' fp32
    recipe among them, the CSV the cost line reads holds the trainer's rows, and the CUDA tests were collected
    (and skipped here, with the reason)."""
    proc = subprocess.run([sys.executable, "bench/gpu_check.py", "--dry", "--out", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, env=cli_env(), timeout=540)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    names = ["env", "tests", "grouped", "speed-110", "speed-20-164", "memory-1001", "compiled", "kernels"]
    assert [re.match(r"\[([\w-]+)\] ok in ", line)[1] for line in lines[:-1]] == names
    files = sorted(p.name for p in tmp_path.iterdir())
    (table,) = tmp_path.glob("????-??-??-*[!v].md")  # <date>-<device>.md beside <date>-<device>.speed.csv
    assert len(files) == 6 and {"summary.md", "tests.log", "grouped_conv.md", "pieces.log", table.name,
                                table.with_suffix(".speed.csv").name} == set(files)
    rows = [line.split(" | ")[1] for line in table.read_text().splitlines() if line.startswith("| ResNet")]
    assert "trainer, recipe=he2016 precision=fp32" in rows and "trainer, pack=2 wide, compile=true" in rows
    assert len(rows) == 14 and not any("failed:" in line for line in table.read_text().splitlines())
    assert len(cost.read_speed_table(table.with_suffix(".speed.csv"))) == 8
    tests_log = (tmp_path / "tests.log").read_text()
    assert re.search(r"\n\d+ skipped, \d+ deselected in ", tests_log) and "needs a CUDA GPU" in tests_log
    summary = (tmp_path / "summary.md").read_text()
    assert "- import resnet_ablate.training.trainer: ok" in summary and "ops_per_run_step depth=8 mode=wide" in summary
