"""The speed benchmark runs end to end (tiny CPU settings; its numbers are not asserted, only its table)."""
import subprocess
import sys

from helpers import REPO, cli_env


def test_benchmark_writes_its_table(tmp_path):
    cmd = [sys.executable, str(REPO / "bench" / "train_speed.py"), "--device", "cpu", "--depths", "8", "--packs", "2",
           "--warmup", "2", "--iterations", "2", "--batch-size", "8", "--synthetic-size", "64", "--no-1001",
           "--out", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=cli_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr
    (table,) = tmp_path.glob("*.md")
    rows = [line for line in table.read_text().splitlines() if line.startswith("| ResNet-8 |")]
    assert [r.split(" | ")[1] for r in rows] == ["tutorial loop (eager fp32, DataLoader workers)",
                                                 "trainer, cuda_graph=false", "trainer", "trainer, pack=2"]
    assert all(float(r.split(" | ")[3].replace(",", "")) > 0 for r in rows)


def test_expansion_benchmark_lists_its_grid(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "expand_speed.py"), "--lrs", "3", "--seeds", "4"],
                          capture_output=True, text=True, env=cli_env(), timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("12 runs: dry run in ") and proc.stdout.endswith(" s (exit code 0)\n")
