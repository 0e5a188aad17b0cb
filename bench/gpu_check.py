"""The GPU check: one command for a lent GPU machine (15 minutes of device time, 10 minutes a command), kept in the
project so that CI keeps it in step with the code: its CPU dry mode (`--dry`, the same pieces with tiny settings)
runs in tests/test_bench.py. It installs nothing the machine has; the wheels its image lacks (omegaconf, submitit)
come from --wheels, a CIFAR-10 copy from --cifar-copy when asked (else the speed rows train on synthetic images:
speed does not depend on the pixels). Then it runs the pieces below in order, each a process of its own with its
own time limit, so that a hang loses one piece, and all within --budget seconds (default 540; a piece gets its
limit from what is left, less what the pieces after it need at least, but at least its own floor):

  env          the machine, torch, CUDA, the GPU, and the package's imports
  tests        the tests marked `cuda` (tests/test_gpu.py last): captures, equalities, resume, compile
  grouped      bench/grouped_conv.py: a stage's conv, K dense serially and on streams against one grouped conv
  speed-110    bench/train_speed.py at ResNet-110: the tutorial loop, graph, streams and wide x8, eager, the papers'
               recipe in fp32 with and without ghost BN, ghost BN and the bf16 residual stream in bf16, eager sampling
  speed-20-164 ResNet-20 and -164: graph, streams and wide x8, eager, the fp32 recipe
  memory-1001  ResNet-1001 at batch 128 trains; its peak memory
  compiled     compile=true at ResNet-110, alone and wide x8 (capped: a compile can take minutes)
  kernels      kernels per run-step on the GPU (bench/opcount.py), bf16 with one BN and the fp32 recipe

It writes at most 8 files into --out: summary.md (a line per piece, the environment, the kernel counts),
tests.log, grouped_conv.md, the speed table <date>-<gpu>.md and the CSV the cost line reads,
<date>-<gpu>.speed.csv (bench/results/'s formats), and pieces.log (every other piece's output); and prints one
summary line per piece. Exit code 0 when every piece ran to its end with exit code 0.

    python bench/gpu_check.py --out "$OUT" --wheels .gpu/whl          # on the GPU machine (docs/speed.md)
    python bench/gpu_check.py --dry --out /tmp/gpu-dry                 # the same pieces on the CPU, tiny
"""
from __future__ import annotations

import argparse
import datetime
import importlib
import importlib.util
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import MappingProxyType
from typing import Mapping, NamedTuple

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
SPEED = "bench/train_speed.py"
IMPORTS = ("omegaconf", "submitit", "yaml", "torchvision", "PIL", "pytest", "resnet_ablate.training.trainer")
WHEELS = {"omegaconf": "omegaconf", "submitit": "submitit"}  # module -> wheel name, what the GPU image lacks
SITE = Path(tempfile.gettempdir()) / "resnet-ablate-gpu-site"


class Piece(NamedTuple):
    """One piece: its commands (run in turn), time limit, the least it needs (`floor`: the earlier pieces leave
    it that), where its output goes, and the environment it adds."""

    name: str
    commands: list[list[str]]
    limit_s: float
    floor_s: float = 0.0
    log: str = "pieces.log"
    summary: bool = False  # its whole output also goes into summary.md
    env: Mapping[str, str] = MappingProxyType({})


def cuda_test_files() -> list[str]:
    """The test files holding tests marked `cuda` (helpers.needs_cuda): found by name, so a new one joins without
    an edit here, and pytest collects only these (the whole suite takes long). tests/test_gpu.py last: its last
    test compiles, the longest, so a cut loses the least."""
    found = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "tests").glob("test_*.py")
                   if "needs_cuda" in p.read_text())
    return sorted(found, key=lambda f: f == "tests/test_gpu.py")


def pieces(args: argparse.Namespace) -> list[Piece]:
    """The pieces in order; `--dry`: the same commands on the CPU with tiny sizes (numbers meaningless)."""
    out, data = str(args.out), ["--data", ".data"] if args.cifar_copy else []
    if args.dry:
        speed = [PY, SPEED, "--device", "cpu", "--packs", "2", "--warmup", "2", "--iterations", "2", "--batch-size",
                 "8", "--synthetic-size", "64", "--repeats", "1", "--memory-depth", "8", "--out", out, *data]
        grouped = [PY, "bench/grouped_conv.py", "--device", "cpu", "--batch", "8", "--packs", "2", "--warmup", "0",
                   "--repeats", "1", "--inner", "1", "--precisions", "fp32"]
        count = [PY, SPEED, "--count-ops", "--device", "cpu", "--count-depth", "8", "--count-runs", "2"]
        d110, d20, s20 = ["8"], ["8"], ["graph"]
    else:
        speed = [PY, SPEED, "--packs", "8", "--warmup", "30", "--iterations", "100", "--repeats", "1", "--out", out,
                 *data]
        grouped, count = [PY, "bench/grouped_conv.py"], [PY, SPEED, "--count-ops"]
        d110, d20, s20 = ["110"], ["20", "164"], ["graph", "streams", "wide", "eager", "fp32_recipe"]
    setups110 = ["tutorial", "graph", "streams", "wide", "eager", "fp32_recipe", "fp32_recipe_one_bn", "ghost_bn",
                 "bf16_stream", "sampling_eager"]
    counts = [[*count, "--count-modes", "alone", "streams", "wide", "--count-keys", "recipe=default",
               "precision=bf16"], [*count, "--count-modes", "alone", "wide"]]
    return [
        Piece("env", [[PY, "bench/gpu_check.py", "--env"]], 30, 10, summary=True),
        Piece("tests", [[PY, "-m", "pytest", "-q", "-m", "cuda", "-rfEs", "--durations=10", "-p", "no:cacheprovider",
                         *cuda_test_files()]], 170, 60, log="tests.log"),
        Piece("grouped", [[*grouped, "--out", f"{out}/grouped_conv.md"]], 45, 15),
        Piece("speed-110", [[*speed, "--depths", *d110, "--setups", *setups110, "--no-1001"]], 150, 60),
        Piece("speed-20-164", [[*speed, "--depths", *d20, "--setups", *s20, "--no-1001", "--append"]], 70, 20),
        Piece("memory-1001", [[*speed, "--depths", "--setups", "--append"]], 45, 20),
        Piece("compiled", [[*speed, "--depths", *d110, "--setups", "compile", "wide_compile", "--no-1001", "--append"]],
              90, 0, env={"TORCHDYNAMO_DISABLE": "1"} if args.dry else {}),  # dry: the rows, nothing compiled
        Piece("kernels", counts, 45, 25, summary=True),
    ]


def run_plan(args: argparse.Namespace) -> list[Piece]:
    """The pieces this call runs (`--only`), after `env` the CIFAR copy written where asked and not there yet."""
    plan = [x for x in pieces(args) if args.only is None or x.name in args.only]
    if args.cifar_copy and not (REPO / ".data" / "cifar-10-batches-py").is_dir():
        plan.insert(1 if plan and plan[0].name == "env" else 0,
                    Piece("data", [[PY, str(args.cifar_copy / "make_cifar10.py"), ".data"]], 60, 30))
    return plan


def environment() -> int:
    """`--env`: the machine, torch, CUDA and the GPU, the commit, and each import the package needs."""
    import torch

    print(f"- python {platform.python_version()} on {platform.node()} ({platform.machine()}, "
          f"{os.cpu_count()} CPUs); torch {torch.__version__}, CUDA {torch.version.cuda}, "
          f"cuDNN {torch.backends.cudnn.version()}")
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        print(f"- GPU {p.name}: {p.total_memory / 2**30:.1f} GiB, compute capability {p.major}.{p.minor}, "
              f"bf16 {torch.cuda.is_bf16_supported()}, {torch.cuda.device_count()} device(s)")
    else:
        print("- no CUDA GPU: torch.cuda.is_available() is False")
    print(f"- commit {commit()}")
    for name in IMPORTS:
        try:
            module = importlib.import_module(name)
            print(f"- import {name}: {getattr(module, '__version__', 'ok')}")
        except Exception as e:  # noqa: BLE001 - what is missing is the finding
            print(f"- import {name}: FAILED ({type(e).__name__}: {e})")
    return 0


def commit() -> str:
    """The checkout's commit: git's, else the one prepare.sh wrote into .gpu/COMMIT (a copy without .git)."""
    found = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    if found.returncode == 0:
        return found.stdout.strip()
    saved = REPO / ".gpu" / "COMMIT"
    return f"{saved.read_text().strip()} (.gpu/COMMIT)" if saved.is_file() else "unknown (no git, no .gpu/COMMIT)"


def install_wheels(folder: Path | None) -> str:
    """pip-install, from `folder`'s wheels, the modules this Python cannot import (nothing it has); a line."""
    missing = [m for m in WHEELS if importlib.util.find_spec(m) is None]
    if not missing:
        return "wheels: none needed"
    wheels = [str(w) for m in missing for w in sorted((folder or Path("/nonexistent")).glob(f"{WHEELS[m]}-*.whl"))]
    if len(wheels) < len(missing):
        return f"wheels: {', '.join(missing)} missing and not all in {folder} (the pieces that import them fail)"
    done = subprocess.run([PY, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--target",
                           str(SITE), *wheels], capture_output=True, text=True)
    return f"wheels: installed {', '.join(missing)} into {SITE}" if done.returncode == 0 else \
        f"wheels: pip failed ({done.stderr.strip().splitlines()[-1:]})"


def piece_limit(piece: Piece, left: float, later_floors: float) -> float:
    """A piece's seconds: its limit, within what is left of the budget less what the later pieces need at least,
    but never less than its own floor while the budget has it (the order is the priority)."""
    return max(min(piece.limit_s, left - later_floors), min(piece.floor_s, left))


def run_piece(piece: Piece, limit: float, env: dict[str, str], out: Path) -> tuple[str, float, str]:
    """Run the piece's commands in turn, its output appended to its log; (outcome, seconds, its output)."""
    started, text = time.monotonic(), ""
    outcome = "ok"
    for command in piece.commands:
        left = limit - (time.monotonic() - started)
        with tempfile.TemporaryFile("w+") as log:
            proc = subprocess.Popen(command, cwd=REPO, env={**env, **piece.env}, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)  # its own process group: a cut takes its workers too
            try:
                code = proc.wait(timeout=max(left, 0.1))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                code = None
            log.seek(0)
            text += log.read()
        if code is None:
            outcome = f"cut at {limit:.0f} s"
            break
        if code != 0:
            outcome = f"failed (exit code {code})"
            break
    with open(out / piece.log, "a") as f:
        f.write(f"===== {piece.name}: {outcome} =====\n{text}\n")
    return outcome, time.monotonic() - started, text


def digest(text: str) -> str:
    """The last line of a piece's output (pytest's tally, the bench's last row or line)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:160] if lines else "(no output)"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("gpu-check"), help="folder for the files (at most 8)")
    p.add_argument("--budget", type=float, default=540, help="seconds for all pieces together")
    p.add_argument("--dry", action="store_true", help="the same pieces on the CPU with tiny settings (for CI)")
    p.add_argument("--wheels", type=Path, default=None, help="folder of the wheels the GPU image lacks (prepare.sh)")
    p.add_argument("--cifar-copy", type=Path, default=None, help="folder holding make_cifar10.py and its copy: "
                   "writes .data/cifar-10-batches-py, and the speed rows train on it")
    p.add_argument("--only", nargs="+", default=None, help="run only these pieces (a second call's rerun)")
    p.add_argument("--env", action="store_true", help=argparse.SUPPRESS)  # the env piece itself
    args = p.parse_args(argv)
    if args.env:
        return environment()
    for key in ("out", "wheels", "cifar_copy"):  # the pieces run in the checkout's root
        if getattr(args, key) is not None:
            setattr(args, key, getattr(args, key).resolve())
    args.out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(SITE), str(REPO), os.environ.get("PYTHONPATH")]))}
    if args.dry:
        env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    plan = run_plan(args)
    started = time.monotonic()
    lines = [f"# GPU check, {datetime.date.today()}{' (dry: CPU, tiny settings)' if args.dry else ''}", "",
             f"- command: `python bench/gpu_check.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
             f"- budget {args.budget:.0f} s; {install_wheels(args.wheels)}", ""]
    said, results = [], []
    for i, piece in enumerate(plan):
        limit = piece_limit(piece, args.budget - (time.monotonic() - started), sum(x.floor_s for x in plan[i + 1:]))
        if limit < 1:
            outcome, seconds, text = "skipped (budget spent)", 0.0, ""
        else:
            outcome, seconds, text = run_piece(piece, limit, env, args.out)
        line = f"[{piece.name}] {outcome} in {seconds:.1f} s (limit {max(limit, 0):.0f} s): {digest(text)}"
        print(line, flush=True)
        results.append(outcome)
        lines.append(f"- {line}")
        if piece.summary and text:
            said += ["", f"## {piece.name}", "", "```text", text.rstrip(), "```"]
        (args.out / "summary.md").write_text("\n".join(lines + said) + "\n")
    ok = sum(r == "ok" for r in results)
    total = f"gpu_check: {ok} of {len(results)} pieces ok in {time.monotonic() - started:.0f} s of " \
            f"{args.budget:.0f} s; files in {args.out}"
    print(total, flush=True)
    (args.out / "summary.md").write_text("\n".join([*lines, f"- {total}", *said]) + "\n")
    return 0 if ok == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
