"""The training loop: the papers' recipe for one run, or several packed runs stepping in lockstep on one
device; evaluation, the run folder, checkpoint/resume, and `fail` for a run that diverges.

Everything a step needs lives on the device: uint8 images, the sampler's generator, the learning rate
(a tensor, so a captured step sees schedule changes), the loss and error sums (read only at
evaluations, so steps never wait on the host).
"""
from __future__ import annotations

import contextlib
import math
import os
import platform
import signal
import subprocess
import time
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F

from . import data as datamod
from . import runfolder as rf
from . import tracking, transfer
from .config import Config, default_data_dir, from_yaml, identity_items, run_dir, run_name, to_yaml
from .imagenet import build_imagenet_model
from .model import ResNet, build_model, count_parameters, shortcut_parameters
from .probes import gradient_norms
from .registry import UsageError
from .shortcuts import SHORTCUTS
from .step import make_stepper

EVAL_BATCH = 1000
PROBE_BATCH = 128
# Settings packed runs must share: they step together on one device.
LOCKSTEP = ("device", "precision", "cuda_graph", "batch_size", "iterations", "eval_every", "deterministic")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"device={name} but no CUDA GPU is available; use device=cpu or device=auto")
    return torch.device(name)


def resolve_precision(name: str, device: torch.device) -> str:
    """`auto`: bf16 on GPUs that support it, fp32 elsewhere."""
    if name == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    return name


def lr_at(cfg: Config, iteration: int) -> float:
    """The lr of 0-based `iteration`: warm-up, then the schedule. A pure function of the iteration, so
    resuming needs no scheduler state; cosine and onecycle follow PyTorch's CosineAnnealingLR (to 0)
    and OneCycleLR (defaults: from lr/25 up to lr, down to lr/25e4) over the iterations after warm-up."""
    if iteration < cfg.warmup_iters:
        return cfg.warmup_lr
    if cfg.schedule == "step":
        return cfg.lr * 0.1 ** sum(iteration >= m for m in cfg.milestones)
    steps, t = cfg.iterations - cfg.warmup_iters, iteration - cfg.warmup_iters
    if cfg.schedule == "cosine":
        return _anneal(cfg.lr, 0.0, t / steps)
    peak, low = cfg.onecycle_pct * steps - 1, cfg.lr / 25
    if t <= peak:
        return _anneal(low, cfg.lr, t / peak)
    return _anneal(cfg.lr, low / 1e4, (t - peak) / (steps - 1 - peak))


def _anneal(start: float, end: float, fraction: float) -> float:
    return end + (start - end) / 2 * (math.cos(math.pi * fraction) + 1)


def make_optimizer(cfg: Config, groups: list[dict], lr: torch.Tensor) -> torch.optim.Optimizer:
    """The configured optimizer, fused (one kernel for all weights; step counts on the device, so a
    captured CUDA graph can hold the update), reading the run's lr tensor."""
    if cfg.optim == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov, fused=True)
    cls = torch.optim.Adam if cfg.optim == "adam" else torch.optim.AdamW
    return cls(groups, lr=lr, betas=tuple(cfg.betas), eps=cfg.eps, fused=True)


def git_commit() -> str | None:
    """The package's git commit (with '-dirty' for uncommitted changes), or None outside a checkout."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("-dirty" if dirty else "")


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _duration(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class StopRequest:
    """Set by SIGTERM/SIGUSR2 (preemption, time limit) or a first Ctrl-C: runs checkpoint at the next
    iteration and stop. A second Ctrl-C interrupts at once."""

    def __init__(self) -> None:
        self.reason: str | None = None

    def install(self) -> None:
        def handler(num: int, _frame) -> None:
            self.reason = signal.Signals(num).name
            if num == signal.SIGINT:
                signal.signal(signal.SIGINT, signal.default_int_handler)

        with contextlib.suppress(ValueError, AttributeError):  # not the main thread, or no SIGUSR2 here
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2):
                signal.signal(sig, handler)


def build_network(cfg: Config, num_classes: int) -> ResNet:
    """The config's net: a CIFAR (`arch=cifar`) or ImageNet-style (`arch=imagenet`) ResNet from the registries."""
    build = build_imagenet_model if cfg.arch == "imagenet" else build_model
    params = {k: getattr(cfg, k) for k in shortcut_parameters(SHORTCUTS.get(cfg.shortcut))}
    return build(cfg.depth, cfg.unit, cfg.shortcut, cfg.block, num_classes, cfg.downsample, cfg.bn_momentum,
                 cfg.groups, cfg.width_per_group, **params)


class Run:
    """One training run: its config and folder, model, optimizer, sampler, RNG streams and meters."""

    def __init__(self, cfg: Config, data: datamod.Data, device: torch.device, precision: str) -> None:
        self.cfg, self.data, self.device, self.precision = cfg, data, device, precision
        self.dir, self.name = run_dir(cfg), run_name(cfg)
        torch.manual_seed(cfg.seed)
        model = build_network(cfg, data.num_classes)
        if cfg.init:
            transfer.load_init(model, cfg.init)
        self.frozen_bn = transfer.freeze(model, transfer.frozen_parts(cfg.freeze, len(model.stages)))
        self.parameters = count_parameters(model)
        self.model = model.to(device, memory_format=torch.channels_last)
        self.train_mode()
        self.rng = self._rng_state()  # the run's own dropout stream, continued from its seed
        self.lr = torch.tensor(lr_at(cfg, 0), device=device)
        self.lr_value = lr_at(cfg, 0)
        self.lrs = {1.0: self.lr}  # lr multiplier -> the device tensor its param groups read
        self.group_multipliers: list[float] = []
        self.optimizer = make_optimizer(cfg, self._param_groups(), self.lr)
        self.sampler = datamod.Sampler(len(data.train), cfg.batch_size, cfg.seed, device, cfg.augment)
        self.iteration, self.elapsed, self.best = 0, 0.0, math.inf
        self.loss_sum = torch.zeros((), device=device)
        self.err_sum = torch.zeros((), device=device, dtype=torch.long)
        self.interval_images, self.interval_seconds = 0, 0.0
        self.commit = git_commit()  # the code this process trains with (not whatever HEAD is at the end)
        self.status: str | None = None  # None while training; done | fail | paused
        self.reason = ""
        self.last: dict = {}
        self.tracker: tracking.Tracker | None = None

    def _param_groups(self) -> list[dict]:
        """The trainable parameters per lr multiplier, each split into decayed and (decay_bn=false) BN
        groups; a group reads its multiplier's lr tensor, the run's own for 1.0."""
        bn = {id(p) for m in self.model.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters()}
        groups = []
        for mult, params in transfer.trainable_by_multiplier(self.model, self.cfg.stage_lr_mult).items():
            if mult not in self.lrs:
                self.lrs[mult] = self.lr * mult
            decay = [p for p in params if self.cfg.decay_bn or id(p) not in bn]
            rest = [p for p in params if not (self.cfg.decay_bn or id(p) not in bn)]
            for part, weight_decay in ((decay, self.cfg.weight_decay), (rest, 0.0)):
                if part:
                    groups.append({"params": part, "weight_decay": weight_decay, "lr": self.lrs[mult]})
                    self.group_multipliers.append(mult)
        return groups

    def train_mode(self) -> None:
        """Training mode, except the frozen parts' BN layers, which keep their running statistics (eval mode)."""
        self.model.train()
        for bn in self.frozen_bn:
            bn.eval()

    def _rng_state(self) -> dict:
        cuda = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        return {"cpu": torch.get_rng_state(), "cuda": cuda}

    @contextlib.contextmanager
    def own_rng(self) -> Iterator[None]:
        """Run the block on this run's RNG streams (dropout), so packed runs draw as they would alone."""
        torch.set_rng_state(self.rng["cpu"])
        if self.rng["cuda"] is not None:
            torch.cuda.set_rng_state(self.rng["cuda"], self.device)
        try:
            yield
        finally:
            self.rng = self._rng_state()

    def autocast(self):
        # no weight-cast cache: a captured graph must recompute the casts from the updated fp32 weights
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16",
                              cache_enabled=False)

    # --- folder, checkpoint, resume -------------------------------------------------------------
    def start(self) -> None:
        """Create or resume the run folder; a finished run is marked and left alone."""
        self.dir.mkdir(parents=True, exist_ok=True)
        result = rf.read_result(self.dir)
        if result is not None and result.get("status") in rf.FINISHED:
            self.status, self.last = "finished", result
            return
        self._check_same_config()
        rf.write_text(self.dir / rf.CONFIG, to_yaml(self.cfg))
        state = rf.load_checkpoint(self.dir / rf.CHECKPOINT)
        if state is not None:
            self._restore(state)
        for name in (rf.METRICS, rf.PROBES):
            rf.truncate_jsonl(self.dir / name, self.iteration)
        self.tracker = tracking.open_tracker(self.cfg.logger, self.dir, self.name, self.cfg, self.iteration)

    def _check_same_config(self) -> None:
        path = self.dir / rf.CONFIG
        if not path.is_file():
            return
        old, new = identity_items(from_yaml(path)), identity_items(self.cfg)
        diff = [f"{k}: {old[k]} vs {new[k]}" for k in new if old.get(k) != new[k]]
        if diff:
            raise UsageError(f"{self.dir} holds a run with other settings ({'; '.join(diff)}); "
                             f"use another run_dir or remove it")

    def checkpoint(self) -> None:
        state = {
            "iteration": self.iteration, "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(), "sampler": self.sampler.state_dict(), "rng": self.rng,
            "elapsed": self.elapsed, "best": self.best, "loss_sum": self.loss_sum.cpu(),
            "err_sum": self.err_sum.cpu(), "interval_images": self.interval_images,
            "interval_seconds": self.interval_seconds,
        }
        rf.save_checkpoint(self.dir / rf.CHECKPOINT, state)

    def _restore(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        for group, mult in zip(self.optimizer.param_groups, self.group_multipliers):  # keep the device lr tensors
            group["lr"] = self.lrs[mult]
        self.sampler.load_state_dict(state["sampler"])
        self.rng = state["rng"]
        self.iteration, self.elapsed, self.best = state["iteration"], state["elapsed"], state["best"]
        self.loss_sum.copy_(state["loss_sum"])
        self.err_sum.copy_(state["err_sum"])
        self.interval_images, self.interval_seconds = state["interval_images"], state["interval_seconds"]
        print(f"[{self.name}] resuming from iteration {self.iteration}", flush=True)

    # --- training ------------------------------------------------------------------------------
    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next augmented, normalised batch (channels_last) and its labels."""
        idx, offsets, flips = self.sampler.next()
        x = datamod.augment(self.data.train.images[idx], offsets, flips, self.data)
        return x.contiguous(memory_format=torch.channels_last), self.data.train.labels[idx]

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Forward, backward and SGD update; loss and error sums stay on the device."""
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            out = self.model(x)
        loss = F.cross_entropy(out.float(), y)
        loss.backward()
        self.optimizer.step()
        self.loss_sum += loss.detach()
        self.err_sum += (out.argmax(1) != y).sum()

    def set_lr(self) -> None:
        """Write this iteration's lr into the device tensor the optimizer (and a captured step) reads;
        only when it changes, so steps queue no extra kernel."""
        value = lr_at(self.cfg, self.iteration)
        if value != self.lr_value:
            self.fill_lr(value)
            self.lr_value = value

    def fill_lr(self, value: float) -> None:
        """Write `value` into the run's lr tensor and its multiples into the scaled groups' tensors (in place)."""
        for mult, lr in self.lrs.items():
            lr.fill_(value * mult)

    @torch.no_grad()
    def evaluate(self, split: datamod.Split) -> tuple[float, float]:
        """Loss and error (%) over a whole split, in eval mode, in large batches."""
        self.model.eval()
        loss, wrong = torch.zeros((), device=self.device), torch.zeros((), device=self.device, dtype=torch.long)
        for i in range(0, len(split), EVAL_BATCH):
            x = datamod.normalize_images(split.images[i : i + EVAL_BATCH], self.data)
            y = split.labels[i : i + EVAL_BATCH]
            with self.autocast():
                out = self.model(x.contiguous(memory_format=torch.channels_last))
            loss += F.cross_entropy(out.float(), y, reduction="sum")
            wrong += (out.argmax(1) != y).sum()
        self.train_mode()
        return loss.item() / len(split), 100.0 * wrong.item() / len(split)

    def probe(self) -> None:
        """Per-unit gradient norms on a fixed batch (the first training images, unaugmented)."""
        x = datamod.normalize_images(self.data.train.images[:PROBE_BATCH], self.data)
        x = x.contiguous(memory_format=torch.channels_last)
        with self.autocast():
            norms = gradient_norms(self.model, x, self.data.train.labels[:PROBE_BATCH])
        rf.append_jsonl(self.dir / rf.PROBES, {"iteration": self.iteration, **norms})

    def wants_probe(self) -> bool:
        every = self.cfg.grad_probe_every
        return self.iteration in self.cfg.grad_probe_at or (every > 0 and self.iteration % every == 0)

    def log_interval(self, seconds: float) -> None:
        """Evaluate, append a metrics line, print a progress line, track best; mark divergence."""
        self.elapsed += seconds
        self.interval_seconds += seconds
        images = max(self.interval_images, 1)
        train_loss = self.loss_sum.item() / (images / self.cfg.batch_size)
        train_err = 100.0 * self.err_sum.item() / images
        test_loss, test_err = self.evaluate(self.data.test)
        row = {
            "iteration": self.iteration, "epoch": self.iteration * self.cfg.batch_size / len(self.data.train),
            "lr": lr_at(self.cfg, self.iteration - 1), "train_loss": _finite(train_loss),
            "train_error": train_err, "test_loss": _finite(test_loss), "test_error": test_err,
        }
        if self.data.val is not None:
            val_loss, val_err = self.evaluate(self.data.val)
            row.update(val_loss=_finite(val_loss), val_error=val_err)
        row.update(img_per_s=round(images / max(self.interval_seconds, 1e-9), 1), elapsed_s=round(self.elapsed, 2))
        rf.append_jsonl(self.dir / rf.METRICS, row)
        if self.tracker is not None:
            self.tracker.log(row, self.iteration)
        self.last, self.best = row, min(self.best, test_err)
        left = (self.cfg.iterations - self.iteration) * self.cfg.batch_size / max(row["img_per_s"], 1e-9)
        print(f"[{self.name}] it {self.iteration}/{self.cfg.iterations} lr {row['lr']:.4g} | train loss "
              f"{train_loss:.4f} err {train_err:.2f}% | test loss {test_loss:.4f} err {test_err:.2f}% | "
              f"{row['img_per_s']:.0f} img/s | {_duration(self.elapsed)} elapsed, ETA {_duration(left)}", flush=True)
        self.loss_sum.zero_()
        self.err_sum.zero_()
        self.interval_images, self.interval_seconds = 0, 0.0
        if not math.isfinite(train_loss):
            lo = self.iteration - images // self.cfg.batch_size + 1
            self.finish("fail", f"diverged: training loss is {train_loss} in iterations {lo}..{self.iteration}")

    def close_tracker(self) -> None:
        """Flush and close the tracker when the run finishes or pauses (a resumed run opens a new one)."""
        if self.tracker is not None:
            self.tracker.close()
            self.tracker = None

    def summary(self) -> dict:
        """result.json's contents for a finished run; status and iteration for a paused one."""
        return self.last if self.status in ("finished", "done", "fail") else {"status": "paused", "iteration": self.iteration}

    def finish(self, status: str, reason: str = "") -> None:
        """Write result.json: done, or fail with the reason; earlier files stay as they are."""
        final = self.last.get("test_error")
        if status == "done" and final is not None and final > self.cfg.fail_threshold:
            status, reason = "fail", f"final test error {final:.2f}% is above fail_threshold {self.cfg.fail_threshold}%"
        self.status, self.reason = status, reason
        self.close_tracker()
        result = {
            "status": status, "reason": reason, "name": self.name, "final_test_error": final,
            "final_test_loss": self.last.get("test_loss"), "best_test_error": _finite(self.best),
            "final_train_error": self.last.get("train_error"), "final_val_error": self.last.get("val_error"),
            "iterations": self.iteration, "wall_time_s": round(self.elapsed, 2), "parameters": self.parameters,
            "seed": self.cfg.seed, "precision": self.precision, "torch": torch.__version__,
            "device": device_name(self.device), "git_commit": self.commit,
        }
        rf.write_json(self.dir / rf.RESULT, result)
        self.last = result
        print(f"[{self.name}] {status}" + (f": {reason}" if reason else "") + f" -> {self.dir}", flush=True)


def _check_lockstep(cfgs: list[Config]) -> None:
    for key in LOCKSTEP:
        values = {str(getattr(c, key)) for c in cfgs}
        if len(values) > 1:
            raise UsageError(f"packed runs must share {key} (got {', '.join(sorted(values))})")


def load_data(cfgs: list[Config], device: torch.device) -> dict[tuple, datamod.Data]:
    """Each distinct data set once, on the device, shared by the runs that use it."""
    cache: dict[tuple, datamod.Data] = {}
    for cfg in cfgs:
        key = data_key(cfg)
        if key not in cache:
            root = Path(cfg.data_dir) if cfg.data_dir else default_data_dir()
            cache[key] = datamod.load(cfg.dataset, root, cfg.download, cfg.normalize, cfg.val_split,
                                      cfg.synthetic_size, cfg.image_size).to(device)
    return cache


def data_key(cfg: Config) -> tuple:
    return cfg.dataset, cfg.data_dir, cfg.normalize, cfg.val_split, cfg.synthetic_size, cfg.image_size


def setup(cfg: Config) -> tuple[torch.device, str]:
    """Device, precision and determinism switches for a process that trains `cfg`."""
    device = resolve_device(cfg.device)
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = not cfg.deterministic
    return device, resolve_precision(cfg.precision, device)


def train(cfgs: list[Config], stop: StopRequest | None = None) -> list[dict]:
    """Train the runs of `cfgs` together on one device (one run is the common case) and return their
    result.json contents; finished runs are skipped, unfinished ones resume from their checkpoints."""
    _check_lockstep(cfgs)
    device, precision = setup(cfgs[0])
    datasets = load_data(cfgs, device)
    runs = [Run(cfg, datasets[data_key(cfg)], device, precision) for cfg in cfgs]
    for run in runs:
        run.start()
        if run.status == "finished":
            print(f"[{run.name}] already finished ({run.last.get('status')}) in {run.dir}; nothing to do", flush=True)
    if stop is None:
        stop = StopRequest()
        stop.install()
    loop(runs, stop)
    return [run.summary() for run in runs]


def loop(runs: list[Run], stop: StopRequest) -> None:
    """Step the unfinished runs to the end, evaluating and checkpointing every `eval_every` iterations."""
    active = [r for r in runs if r.status is None]
    step = make_stepper(active)
    started = time.perf_counter()
    for run in active:
        if run.iteration == 0 and run.wants_probe():
            run.probe()
    tick = time.perf_counter()
    while active:
        step(active)
        for run in active:
            run.iteration += 1
            run.interval_images += run.cfg.batch_size
        boundary = [r for r in active if r.iteration % r.cfg.eval_every == 0 or r.iteration == r.cfg.iterations]
        probing = [r for r in active if r.wants_probe()]
        if boundary or probing or stop.reason:
            seconds = _sync_seconds(runs[0].device, tick)
            for run in probing:
                run.probe()
            for run in boundary:
                run.log_interval(seconds)
            for run in (r for r in active if r not in boundary):
                run.interval_seconds += seconds
                run.elapsed += seconds
            _time_limit(active, stop, started)
            for run in active:
                if run.status is None and run.iteration == run.cfg.iterations:
                    run.finish("done")
                if run.status is None and (run in boundary or stop.reason):
                    run.checkpoint()
                if run.status is None and stop.reason:
                    run.status = "paused"
                    run.close_tracker()
                    print(f"[{run.name}] stopped at iteration {run.iteration} ({stop.reason}); "
                          f"checkpoint saved, run the same command again to resume", flush=True)
            overhead = time.perf_counter() - tick - seconds  # evaluation, probes, checkpoints
            for run in active:
                run.elapsed += overhead
            active = [r for r in active if r.status is None]
            tick = time.perf_counter()


def _sync_seconds(device: torch.device, tick: float) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - tick


def _time_limit(active: list[Run], stop: StopRequest, started: float) -> None:
    """Ask for a stop when the next interval would overrun `time_limit_s`."""
    limit = active[0].cfg.time_limit_s if active else 0
    if limit and not stop.reason:
        spent = time.perf_counter() - started
        per_interval = max((r.last.get("img_per_s") or 0) for r in active) or 1.0
        next_interval = active[0].cfg.eval_every * active[0].cfg.batch_size * len(active) / per_interval
        if spent + next_interval > limit:
            stop.reason = f"time_limit_s={limit:g}"
