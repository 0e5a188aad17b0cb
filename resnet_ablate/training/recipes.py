"""Recipes (`recipe=NAME`): named bundles of run-setting defaults, each value with its source, applied before
the command line's keys (which win) and so printed in the resolved config and written to config.yaml.

A run's identity is its resolved settings, not the recipe's name: `recipe` is recorded beside them but is not
part of the run name or the report's groups, and a run folder made with `recipe=he2015` is the same run as one
made by typing its values. A bare command gets `he2016` (`DEFAULT_RECIPE`), the 2016 paper's CIFAR recipe;
`default` changes nothing (the config keys' own defaults, the package's recipe before he2016 became the default).

Values can depend on the run: `by_depth` gives a depth its own value (the 2015 paper warms up ResNet-110 and
trains ResNet-1202 "as described above"), `preact` holds values for pre-activation units only, `BN_GROUPS`
splits the batch into that many ghost-BN groups (the papers' 2 GPUs: bn_batch = batch_size / 2, so a smaller
batch keeps working), and a schedule given in epochs (`EPOCHS`, `MILESTONE_EPOCHS`) becomes iterations from
the training-set size and the batch size: ceil(epochs * train images / batch). That counts images: fb.resnet.torch
keeps the partial last batch, so its epoch is 391 iterations of which the last holds 80 images, and its 164
epochs are 64,124 iterations (drops at 31,280 and 47,311) where the recipe trains 64,063 full batches (31,250
and 47,266), the same images. fb drops the lr when the 1-based epoch reaches 81 and 122 (train.lua:180), i.e.
after 80 and 121 epochs. `EVAL_EPOCHS` evaluates every that many epochs (fb tests after every epoch).

Sources: P15 = He et al., "Deep Residual Learning for Image Recognition" (2015), Sec. 4.2 (CIFAR-10);
P16 = He et al., "Identity Mappings in Deep Residual Networks" (2016), Sec. 4 and Appendix;
fb = github.com/facebook/fb.resnet.torch; 1k = github.com/KaimingHe/resnet-1k-layers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..models.units import UNITS
from ..values import override_text

# Keys a recipe resolves for the run, not config keys: the schedule in epochs, the evaluation interval in epochs
# and the number of BN groups a batch is split into.
EPOCHS, MILESTONE_EPOCHS, EVAL_EPOCHS, BN_GROUPS = "epochs", "milestone_epochs", "eval_epochs", "bn_groups"
DERIVED = (EPOCHS, MILESTONE_EPOCHS, EVAL_EPOCHS, BN_GROUPS)
DEFAULT_RECIPE = "he2016"  # what a bare command trains (config.py's `recipe` default)
TRAIN_IMAGES = {"cifar10": 50000, "cifar100": 50000}  # the training split before val_split


@dataclass(frozen=True)
class Value:
    """A recipe's value for one key and where it comes from (a file and line, or the paper's words)."""

    value: Any
    source: str


@dataclass(frozen=True)
class Recipe:
    """A named bundle of defaults: flat values, per-depth values, and where they come from."""

    name: str
    summary: str
    values: Mapping[str, Value]
    by_depth: Mapping[str, Mapping[int, Value]] = field(default_factory=dict)
    preact: Mapping[str, Value] = field(default_factory=dict)  # for pre-activation units only

    def flat(self) -> dict[str, Any]:
        """The values that depend on nothing (the first pass of parsing: batch size, ...)."""
        return {k: v.value for k, v in self.values.items() if k not in DERIVED}

    def keys(self) -> set[str]:
        """Every config key the recipe may set, for some run."""
        derived = {EPOCHS: ("iterations", "milestones"), EVAL_EPOCHS: ("eval_every",), BN_GROUPS: ("bn_batch",)}
        return {k for k in self.values if k not in DERIVED} | {k for d in self.values for k in derived.get(d, ())} \
            | set(self.by_depth) | set(self.preact)

    def resolve(self, depth: int, batch_size: int, train_images: int | None, unit: str = "original") -> dict[str, Any]:
        """Config values for a run of this depth, batch size and unit on `train_images` images (None: unknown
        before loading; then a schedule in epochs is left out, and the caller sees that it is given). The BN
        group is batch_size / BN_GROUPS, rounded down (an odd batch is then refused by bn_batch's check)."""
        out = self.flat()
        for key, per_depth in self.by_depth.items():
            if depth in per_depth:
                out[key] = per_depth[depth].value
        if UNITS.get(unit).is_preact():
            out.update({k: v.value for k, v in self.preact.items()})
        if BN_GROUPS in self.values and batch_size >= self.values[BN_GROUPS].value:
            out["bn_batch"] = batch_size // self.values[BN_GROUPS].value
        if train_images is not None:
            per_epoch = train_images / batch_size
            if EPOCHS in self.values:
                out["iterations"] = math.ceil(self.values[EPOCHS].value * per_epoch)
                out["milestones"] = [math.ceil(e * per_epoch) for e in self.values[MILESTONE_EPOCHS].value]
            if EVAL_EPOCHS in self.values:
                out["eval_every"] = math.ceil(self.values[EVAL_EPOCHS].value * per_epoch)
        return out

    def lines(self) -> list[str]:
        """The recipe for --help: one line per value with its source."""
        text = [f"  {self.name}: {self.summary}"]
        text += [f"      {_shown_key(k, v.value)}  ({v.source})" for k, v in self.values.items()]
        text += [f"      {k}={override_text(v.value)} at depth {d}  ({v.source})"
                 for k, per_depth in self.by_depth.items() for d, v in per_depth.items()]
        text += [f"      {k}={override_text(v.value)} for pre-activation units  ({v.source})"
                 for k, v in self.preact.items()]
        return text


def _shown_key(key: str, value: Any) -> str:
    """A recipe value as --help shows it: the derived keys in words."""
    if key == BN_GROUPS:
        return f"bn_batch=batch_size/{value}"
    if key == EVAL_EPOCHS:
        return f"eval_every={value} epoch{'s' if value != 1 else ''}"
    return f"{key}={override_text(value)}"


P15 = "P15 Sec. 4.2"
P16 = "P16 Appendix"
_P15_SGD = f'{P15}: "weight decay of 0.0001 and momentum of 0.9"; no Nesterov'
_P15_BATCH = f'{P15}: "a mini-batch size of 128 on two GPUs"'
_P15_SCHEDULE = f'{P15}: "start with a learning rate of 0.1, divide it by 10 at 32k and 48k iterations, and ' \
                f'terminate training at 64k iterations"'
_P15_WARMUP = f'{P15}: "until the training error is below 80% (about 400 iterations)"'
_FB_SGD = "fb train.lua:21-26 (nesterov = true, dampening = 0.0); opts.lua:39-41 (LR 0.1, momentum 0.9, " \
          "weightDecay 1e-4)"
_FB_SCHEDULE = "fb train.lua:180 (lr x0.1 at epochs 81 and 122)"
_FP32 = "trained in fp32 (2015-16 GPUs had neither bf16 nor TF32); precision=bf16 is a choice, not the papers'"
# Ghost BN keeps one set of running statistics, the groups' average after every step (models/norm.py); fb's
# DataParallelTable keeps each GPU's own and evaluates with GPU 1's. The training-mode statistics are the same.
_RUNNING = "running statistics: the groups' average (fb keeps each GPU's own and tests with GPU 1's)"

HE2015 = Recipe("he2015", "the 2015 paper's text for CIFAR-10 (Sec. 4.2)", {
    "normalize": Value("pixel_mean", f'{P15}: "32x32 images, with the per-pixel mean subtracted"'),
    "nesterov": Value(False, _P15_SGD),
    "momentum": Value(0.9, _P15_SGD),
    "weight_decay": Value(1e-4, _P15_SGD),
    "batch_size": Value(128, _P15_BATCH),
    BN_GROUPS: Value(2, f"{_P15_BATCH}: one BN per GPU, half the batch each; {_RUNNING}"),
    "lr": Value(0.1, _P15_SCHEDULE),
    "milestones": Value([32000, 48000], _P15_SCHEDULE),
    "iterations": Value(64000, _P15_SCHEDULE),
    "warmup_iters": Value(0, f"{P15}: warm-up is stated for the 110-layer net (and 1202, trained the same way) only"),
    "warmup_lr": Value(0.01, f'{P15}: "we use 0.01 to warm up the training"'),
    "precision": Value("fp32", f"{P15}: {_FP32}"),
}, by_depth={"warmup_iters": {
    110: Value(400, _P15_WARMUP),
    1202: Value(400, f'{P15}: the 1202-layer net is trained "as described above" (as the 110-layer one); '
                     f'fb.resnet.torch users report it does not converge at lr 0.1 without a first epoch at 0.01'),
}})

HE2016 = Recipe("he2016", "the 2016 paper's text for CIFAR (Sec. 4, Appendix); what a bare command trains", {
    "normalize": Value("pixel_mean", f'{P16}: data and augmentation "same as [1]" (the 2015 paper: per-pixel mean)'),
    "nesterov": Value(False, f'{P16}: "the momentum is 0.9"; no Nesterov'),
    "momentum": Value(0.9, f'{P16}: "the momentum is 0.9"'),
    "weight_decay": Value(1e-4, f'{P16}: "the weight decay is 0.0001"'),
    "batch_size": Value(128, f'{P16}: "The mini-batch size is 128 on 2 GPUs (64 each)"'),
    BN_GROUPS: Value(2, f'{P16}: "128 on 2 GPUs (64 each)": one BN per GPU; {_RUNNING}'),
    "lr": Value(0.1, f'{P16}: "starts from 0.1, and is divided by 10 at 32k and 48k iterations"'),
    "milestones": Value([32000, 48000], f'{P16}: "divided by 10 at 32k and 48k iterations"'),
    "iterations": Value(64000, f"{P16}: 64k iterations, as [1]"),
    "warmup_iters": Value(400, f'{P16}: "for all CIFAR experiments we warm up ... at the beginning 400 iterations"'),
    "warmup_lr": Value(0.01, f'{P16}: "a smaller learning rate of 0.01"'),
    "precision": Value("fp32", f"{P16}: {_FP32}"),
})

FB_TORCH = Recipe("fb_torch", "fb.resnet.torch's CIFAR-10 defaults (th main.lua -dataset cifar10 -nGPU 2 "
                  "-batchSize 128)", {
    "normalize": Value("channel", "fb datasets/cifar10.lua:38-46 (per-channel mean/std, ColorNormalize)"),
    "nesterov": Value(True, _FB_SGD),
    "momentum": Value(0.9, _FB_SGD),
    "weight_decay": Value(1e-4, _FB_SGD),
    "lr": Value(0.1, _FB_SGD),
    "batch_size": Value(128, "fb TRAINING.md:9,15 (-nGPU 2 -batchSize 128)"),
    BN_GROUPS: Value(2, f"fb TRAINING.md:9,15: 128 on 2 GPUs, one BN per GPU; {_RUNNING}"),
    "warmup_iters": Value(0, "fb train.lua:174-185: no warm-up in the schedule"),
    EPOCHS: Value(164, "fb opts.lua:81 (nEpochs 164 for cifar10); counted in images: 64,063 full batches, "
                       "where fb's 391 iterations per epoch (the last of 80 images) make 64,124"),
    MILESTONE_EPOCHS: Value([80, 121], _FB_SCHEDULE),
    EVAL_EPOCHS: Value(1, "fb main.lua: tests after every epoch and prints the best epoch's error (the report "
                          "shows that best beside the final error)"),
    "precision": Value("fp32", "fb opts.lua: -precision single (torch.CudaTensor) by default"),
}, preact={"preact_shortcut_input": Value("shared", "fb models/preresnet.lua:65-67,118-120: at a stage's first "
                                                     "unit the zero-pad shortcut reads the shared BN-ReLU")})

RESNET1K = Recipe("resnet1k", "resnet-1k-layers' command for ResNet-1001 (its training settings; add depth=1001 "
                  "unit=full_preact for its net)", {
    **FB_TORCH.values,  # 1k runs fb's main.lua (README.md:57-62): its SGD, normalisation, schedule and precision
    "batch_size": Value(64, "1k README.md:62 (-batchSize 64 -nGPU 2)"),
    BN_GROUPS: Value(2, f"1k README.md:62: 64 on 2 GPUs, one BN per GPU; {_RUNNING}"),
    EPOCHS: Value(200, "1k README.md:62 (-nEpochs 200)"),
}, preact=FB_TORCH.preact)

DEFAULT = Recipe("default", "the config keys' own defaults (the package's recipe before he2016 became the default: "
                 "one BN over the whole batch, fb's per-channel normalisation, precision auto)", {})

RECIPES: dict[str, Recipe] = {r.name: r for r in (DEFAULT, HE2015, HE2016, FB_TORCH, RESNET1K)}


def train_images(dataset: str, val_split: int, synthetic_size: int) -> int | None:
    """The training images a run sees (after holding out `val_split`); None for a folder (known when loaded)."""
    total = synthetic_size if dataset == "synthetic" else TRAIN_IMAGES.get(dataset)
    return None if total is None else total - val_split
