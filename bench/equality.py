"""The equality matrix of the fast paths on the CPU (issue 26) or, with --device cuda, a GPU (eager steps, fp32 with
TF32 off), beyond the suite's subset (tests/test_wide.py, tests/test_sampling.py, tests/test_step.py):

  (a) one step from identical states, for every unit x shortcut (+ ghost BN, Adam): the gradients and the updated
      state (weights, BN buffers, optimizer state) of each run in a wide pack of K = 4 (seeds 0..3) against the
      run alone, max over tensors of |a - b| / |b|; and the compiled step against the eager one. The steps are
      also measured against the same step in float64, which shows what any rounding difference in the forward
      does: a ReLU whose input is within rounding of 0 decides the other way (seed 3 of the plain net: 2 of
      589,824 decisions), which moves the first layers' gradients by up to 1e-2. The wide forward is bit-exact
      on the CPU (c), so wide against alone never meets this; compiled against eager does, on some seeds.
      Gradients that are zero in float64 (a BN shift that another BN follows) are left out and counted;
  (b) no cross-talk: run 0's whole trajectory is bit-identical in packs that differ in the other runs (other
      seeds, or one run turned to NaN);
  (c) where bit-exactness holds: the wide net's forward against each net alone (fp32; on the CPU it holds);
  (d) a short run's final metrics, wide against alone: each of 5 seeds trained in one wide pack, against the mean
      and standard deviation of the same 5 seeds trained alone (within 2 sd);
  (e) buffered sampling draws the images, crops and flips of the per-step Sampler for the same seed.

    OMP_NUM_THREADS=1 python bench/equality.py                 # all of it (about 30 min on 2 cores, compiles)
    OMP_NUM_THREADS=1 python bench/equality.py --no-compile    # without the compiled column (a few minutes)
    OMP_NUM_THREADS=1 python bench/equality.py --parts d --data DIR  # (d) on CIFAR-10 in DIR/cifar-10-batches-py
    python bench/equality.py --device cuda --no-compile --parts a b c   # on a GPU

Prints a markdown report (and writes it to --out when given).
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from resnet_ablate.errors import UsageError
from resnet_ablate.folders import runfolder as rf
from resnet_ablate.models.cifar import build_model
from resnet_ablate.models.shortcuts import SHORTCUTS, Shortcut
from resnet_ablate.models.units import UNITS
from resnet_ablate.models.wide import slice_of, widen
from resnet_ablate.training.datasets import Sampler
from resnet_ablate.training.parse import parse
from resnet_ablate.training.runtime import data_key, device_name, load_data, setup
from resnet_ablate.training.sampling import BufferedSampler
from resnet_ablate.training.state import RunState, build_state
from resnet_ablate.training.step import compile_parts
from resnet_ablate.training.trainer import train
from resnet_ablate.training.wide import WidePack

CPU = torch.device("cpu")
BASE = ["dataset=synthetic", "depth=8", "batch_size=8", "synthetic_size=64", "warmup_iters=0", "milestones=[]",
        "iterations=1000", "precision=fp32"]


def runs(extra: list[str], seeds: list[int], device: torch.device = CPU) -> list[RunState]:
    cfgs = [parse([*BASE, *extra, f"device={device}", f"seed={s}"]) for s in seeds]
    data = load_data(cfgs[:1], device)[data_key(cfgs[0])]
    return [build_state(c, device, "fp32", data) for c in cfgs]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def grads(run: RunState) -> list[torch.Tensor]:
    return [p.grad for p in run.model.parameters()]


def state(run: RunState, skip: set[str] = frozenset()) -> list[torch.Tensor]:
    """Weights, BN buffers and optimizer state, in a fixed order, without the tensors of the parameters `skip`."""
    tensors = [t for n, t in run.model.state_dict().items() if n not in skip]
    tensors += [v for n, p in run.model.named_parameters() if n not in skip
                for v in run.optimizer.state.get(p, {}).values() if torch.is_tensor(v)]
    return [t for t in tensors if t.dtype.is_floating_point]


def zero_names(run: RunState, skip: list[bool]) -> set[str]:
    return {n for (n, _), s in zip(run.model.named_parameters(), skip) if s}


def worst(a: list[torch.Tensor], b: list[torch.Tensor], skip: list[bool] | None = None) -> float:
    return max(rel(x, y) for i, (x, y) in enumerate(zip(a, b)) if not (skip and skip[i]))


def zero(reference: list[torch.Tensor]) -> list[bool]:
    """The gradients that are zero in float64 (below 1e-9 of the largest): a BN shift that another BN follows
    (bn_after_add with a conv1x1 shortcut) has none, and its fp32 rounding noise has no relative size."""
    top = max(g.norm().item() for g in reference)
    return [g.norm().item() < 1e-9 * top for g in reference]


def step(part) -> None:
    part.follow_schedule()
    part.step()


def float64_grads(run: RunState) -> list[torch.Tensor]:
    """The gradients of `run`'s next step in float64 (its net copied, the residual stream in the net's dtype),
    on a copy of its batch and RNG stream; the run itself is left as it was."""
    net = copy.deepcopy(run.model).double()
    for m in net.modules():
        if isinstance(m, Shortcut):
            m.residual_fp32 = False
    sampler = copy.deepcopy(run.sampler)
    x, y = run.augmented(*sampler.next())
    saved = run.rng_state()
    with run.own_rng():
        F.cross_entropy(net(x.double()), y).backward()
    run.set_rng_state(saved)
    return [p.grad for p in net.parameters()]


def one_step(extra: list[str], compiled: bool, device: torch.device = CPU, k: int = 4) -> dict[str, float]:
    """(a) for one variant: every figure of the report's first table."""
    alone, packed = runs(extra, list(range(k)), device), runs(extra, list(range(k)), device)
    reference = [float64_grads(r) for r in alone]
    skips = [zero(ref) for ref in reference]
    wide = WidePack(packed)
    for r in alone:
        step(r)
    step(wide)
    wide_params = dict(wide.model.named_parameters())
    wide_grads = [[slice_of(wide_params[n].grad, i, k) for n, _ in alone[0].model.named_parameters()] for i in range(k)]
    out = {"wide grad": max(worst(wide_grads[i], grads(r), skips[i]) for i, r in enumerate(alone)),
           "wide state": max(worst(state(p, zero_names(a, sk)), state(a, zero_names(a, sk)))
                             for a, p, sk in zip(alone, packed, skips)),
           "eager grad vs f64": max(worst(grads(r), ref, sk) for r, ref, sk in zip(alone, reference, skips)),
           "wide grad vs f64": max(worst(g, ref, sk) for g, ref, sk in zip(wide_grads, reference, skips)),
           "zero grads": sum(map(sum, skips)) // k}
    if compiled:
        torch._dynamo.reset()  # every variant is another net through the same forward code
        eager, fast = runs(extra, [0], device), runs(extra, [0], device)
        if compile_parts(fast) is None:
            raise SystemExit(f"compile failed for {extra}")
        ref = float64_grads(eager[0])
        step(eager[0])
        step(fast[0])
        out.update({"compiled grad": worst(grads(fast[0]), grads(eager[0]), zero(ref)),
                    "compiled state": worst(state(fast[0], zero_names(eager[0], zero(ref))),
                                            state(eager[0], zero_names(eager[0], zero(ref)))),
                    "compiled grad vs f64": worst(grads(fast[0]), ref, zero(ref)),
                    "seed-0 eager grad vs f64": worst(grads(eager[0]), ref, zero(ref))})
    return out


def trajectory(extra: list[str], seeds: list[int], device: torch.device = CPU, poison: int | None = None,
               steps: int = 10) -> list[torch.Tensor]:
    rs = runs(extra, seeds, device)
    wide = WidePack(rs)
    seen = []
    for i in range(steps):
        if i == 3 and poison is not None:
            with torch.no_grad():
                next(rs[poison].model.parameters()).fill_(float("nan"))
        step(wide)
        for r in rs:
            r.advance()
        seen += [t.clone() for t in rs[0].model.state_dict().values()] + [rs[0].loss_sum.clone()]
    return seen


def no_cross_talk(extra: list[str], device: torch.device = CPU) -> bool:
    """(b): run 0 in packs (0, 1, 2), (0, 5, 6) and (0, 1 turned NaN, 2), bit for bit."""
    ref = trajectory(extra, [0, 1, 2], device)
    return all(all(torch.equal(a, b) for a, b in zip(ref, other))
               for other in (trajectory(extra, [0, 5, 6], device), trajectory(extra, [0, 1, 2], device, poison=1)))


def forward_bit_exact(unit: str, shortcut: str, device: torch.device = CPU) -> bool:
    """(c): the wide net's training-mode forward against each net's, fp32 (no dropout: its masks need streams)."""
    nets = []
    for seed in range(3):
        torch.manual_seed(seed)
        nets.append(build_model(8, unit, shortcut).to(device, memory_format=torch.channels_last))
    wide, _ = widen(nets)
    xs = [torch.randn(4, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last) for _ in nets]
    out = wide(torch.cat(xs, 1).contiguous(memory_format=torch.channels_last)).view(4, 3, 10)
    return all(torch.equal(out[:, k], net(x)) for k, (net, x) in enumerate(zip(nets, xs)))


def short_run(data: str, device: torch.device = CPU) -> list[str]:
    """(d)'s settings: depth 8, batch 32, on synthetic images or (`data`) CIFAR-10 from that folder."""
    source = ["dataset=cifar10", f"data_dir={data}", "download=false", "iterations=400", "milestones=[300]",
              "eval_every=200"] if data else ["dataset=synthetic", "synthetic_size=512", "iterations=60",
                                              "milestones=[40]", "eval_every=20"]
    return [*source, "depth=8", "batch_size=32", "warmup_iters=0", f"device={device}", "precision=fp32",
            "fail_threshold=100"]


def final_metrics(seeds: list[int], root: Path, args: list[str]) -> list[str]:
    """(d): the seeds trained alone, then together in one wide pack; each wide run's final test error, test loss
    and training loss against the alone runs' mean and sd."""
    folders = {mode: [root / mode / str(s) for s in seeds] for mode in ("alone", "wide")}
    for s, folder in zip(seeds, folders["alone"]):
        train([parse([*args, f"seed={s}", f"run_dir={folder}"])])
    train([parse([*args, "pack_mode=wide", f"seed={s}", f"run_dir={f}"]) for s, f in zip(seeds, folders["wide"])])
    last = {mode: [rf.read_jsonl(f / rf.METRICS)[-1] for f in fs] for mode, fs in folders.items()}
    lines = []
    for key in ("test_error", "test_loss", "train_loss"):
        values = [row[key] for row in last["alone"]]
        mean, sd = statistics.mean(values), statistics.stdev(values)
        inside = [abs(row[key] - mean) <= 2 * sd for row in last["wide"]]
        lines.append(f"| final {key} | {mean:.3f} ± {sd:.3f} | {', '.join(f'{row[key]:.3f}' for row in last['wide'])}"
                     f" | {sum(inside)}/{len(inside)} within 2 sd |")
    return lines


def sampling_identical(device: torch.device = CPU) -> bool:
    """(e): several data sizes, batch sizes and buffer lengths over three epochs and more."""
    for n, b, steps, seed, augment in [(10, 4, 3, 0, True), (50, 8, 7, 1, True), (64, 8, 8, 2, False),
                                       (33, 5, 2, 3, True)]:
        plain = Sampler(n, b, seed, device, augment)
        buffered = BufferedSampler(Sampler(n, b, seed, device, augment), steps)
        for _ in range(3 * n // b + 5):
            if not all(torch.equal(x, y) for x, y in zip(plain.next(), buffered.next())):
                return False
    return True


def variants() -> list[list[str]]:
    found = [[f"unit={u}", f"shortcut={s}"] for u in UNITS.names() for s in SHORTCUTS.names()]
    return found + [["bn_batch=4"], ["bn_batch=4", "shortcut=dropout"], ["optim=adam"], ["optim=adamw"],
                    ["nesterov=true"], ["stage_lr_mult=[0.5,1,2]"]]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--no-compile", dest="compile", action="store_false", help="skip the compiled column")
    p.add_argument("--parts", nargs="+", default=list("abcde"), choices=list("abcde"), help="which checks")
    p.add_argument("--data", default="", help="(d) on CIFAR-10 from this folder (default: synthetic images)")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--device", default="cpu", help="cpu, or cuda (TF32 off: fp32 as the recipes train)")
    args = p.parse_args(argv)
    try:
        device, _ = setup(parse([*BASE, f"device={args.device}"]))
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    columns = ["wide grad", "wide state", "eager grad vs f64", "wide grad vs f64", "zero grads"]
    columns += (["compiled grad", "compiled state", "compiled grad vs f64", "seed-0 eager grad vs f64"]
                if args.compile else [])
    report = [f"# Equality of the fast paths ({device_name(device)}, fp32; torch {torch.__version__})", ""]
    if "a" in args.parts:
        report += ["## (a) one step from identical states (depth 8, batch 8): max over tensors of |a - b| / |b|", "",
                   "| variant | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
        for extra in variants():
            figures = one_step(extra, args.compile, device)
            report.append(f"| {' '.join(extra)} | " + " | ".join(f"{figures[c]:.1e}" if c != "zero grads" else
                                                                   str(figures[c]) for c in columns) + " |")
            print(report[-1], flush=True)
    if "b" in args.parts or "c" in args.parts:
        report += ["", "## (b) no cross-talk, (c) forward bit-exact", "", "| variant | (b) run 0 bit-identical | "
                   "(c) forward bit-exact |", "|---|---|---|"]
        for unit in UNITS.names():
            for shortcut in SHORTCUTS.names():
                exact = "n/a (masks)" if shortcut == "dropout" else forward_bit_exact(unit, shortcut, device)
                report.append(f"| unit={unit} shortcut={shortcut} | "
                              f"{no_cross_talk([f'unit={unit}', f'shortcut={shortcut}'], device)} | {exact} |")
                print(report[-1], flush=True)
    if "d" in args.parts:
        settings = short_run(args.data, device)
        with tempfile.TemporaryDirectory() as tmp:
            report += ["", f"## (d) a short run, 5 seeds alone and in one wide pack: {' '.join(settings)}", "",
                       "| metric | alone: mean ± sd | wide pack of 5 | |", "|---|---|---|---|",
                       *final_metrics(list(range(5)), Path(tmp), settings)]
    if "e" in args.parts:
        report += ["", f"## (e) buffered sampling draws the Sampler's: {sampling_identical(device)}", ""]
    text = "\n".join(report)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
