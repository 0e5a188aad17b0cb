"""Shortcut variants of "Identity Mappings in Deep Residual Networks" (He et al. 2016, Fig. 2, Table 1).

A shortcut decides how a residual unit merges its input x with the residual branch F(x):
`forward(x, f)` returns h(x) (+) F(x). At the units where the dimension increases (stride 2, more
channels), x first goes through the unit's *projection* (`downsample`): option A of the 2015 paper
(`zeropad`: subsample + zero channels, no parameters) or a 1x1 convolution (`conv1x1`). Every variant
then works on that projected signal s, so at those units:

- identity: s + F;  scaling: lambda*s + beta*F;  dropout: dropout(s) + F
- gating / shortcut_gating: the gate g is computed from s (a 1x1 conv from the unit's output channels)
- conv1x1: ignores `downsample` and uses its own strided 1x1 conv, which is then the projection
- none: no shortcut at all, at any unit (the plain net).

A new variant is one registered subclass of `Shortcut`; its keyword-only arguments (each with a default)
are its parameters, and registering the class makes each a config key (`shortcut=NAME PARAM=VALUE`), with
its line of `--help` from `param_help` and its allowed values from `param_range` / `param_choices`. A variant
whose merge works channel by channel declares it (`channelwise=True` at registration): only then do its runs
pack as one wide net.

The merge runs in fp32 whatever autocast is around (`Shortcut.forward`; `residual_fp32=false` turns this off):
under bf16 the convolutions may be bf16, but the identity path is then never rounded (ResNet-110 would round it 54
times) and gating keeps 1 - sigmoid(-6) = 0.99753 instead of bf16's 0.99609 (x0.81 over 54 units instead of x0.87,
the quantity Table 1 ablates); the gate's 1x1 conv and sigmoid, the scaling and the dropout mask product are fp32
too, and so is the unit's output, the stream between units.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import unknown
from ..registry import Keyed, KeyedRegistry, parameters

SHORTCUTS = KeyedRegistry("shortcut", capabilities={
    "channelwise": "its merge works channel by channel: it mixes channels only inside layers of its own "
                   "(convolutions, BN), which a wide net makes grouped, so K runs side by side as channels merge "
                   "each as alone (pack_mode=wide)"})


class ZeroPad(nn.Module):
    """Option A of the 2015 paper: stride-s subsampling and zero-padded extra channels, no parameters."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.stride, self.extra = stride, out_ch - in_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))


def conv1x1(in_ch: int, out_ch: int, stride: int, bn: bool) -> nn.Module:
    """A 1x1 projection, followed by BN when `bn` (option B/C of the 2015 paper)."""
    conv = nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(out_ch)) if bn else conv


def projection(in_ch: int, out_ch: int, stride: int, downsample: str, bn: bool) -> nn.Module:
    """The shortcut's path to the unit's output shape: identity where the shape is kept."""
    if in_ch == out_ch and stride == 1:
        return nn.Identity()
    if downsample == "zeropad":
        return ZeroPad(in_ch, out_ch, stride)
    if downsample == "conv1x1":
        return conv1x1(in_ch, out_ch, stride, bn)
    raise unknown("downsample", downsample, ["zeropad", "conv1x1"])


class Shortcut(nn.Module, Keyed):
    """Base class: projects x to the unit's output shape (`make_projection`), then merges it with F(x).

    `projection_bn` is decided by the unit (BN after a 1x1 projection in post-activation units, as
    in the 2015 paper; none in pre-activation units, whose projection reads the shared BN-ReLU).
    """

    secondary_params: tuple[str, ...] = ()  # parameters a report names only off their defaults
    own_convs: tuple[int, int] = (0, 0)  # (kernel size, count) of the convolutions it adds per unit (cost estimate)
    residual_fp32 = True  # merge and output in fp32 under autocast (`residual_fp32=false`: in the stream's dtype)

    def __init__(self, in_ch: int, out_ch: int, stride: int, downsample: str, projection_bn: bool) -> None:
        super().__init__()
        self.out_ch = out_ch
        self.project = self.make_projection(in_ch, out_ch, stride, downsample, projection_bn)

    def make_projection(self, in_ch: int, out_ch: int, stride: int, downsample: str, bn: bool) -> nn.Module:
        """x's path to the unit's output shape: identity where the shape is kept, else `downsample`.
        A variant that convolves x itself overrides this."""
        return projection(in_ch, out_ch, stride, downsample, bn)

    def convolves(self) -> bool:
        """Whether x reaches the merge through a convolution (then pre-activation units feed it their
        shared BN-ReLU where the shape changes, as the 2016 code)."""
        return any(isinstance(m, nn.Conv2d) for m in self.project.modules())

    def forward(self, x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        """h(x) (+) F(x) in fp32 (a no-op without autocast): the residual stream is never rounded to bf16; with
        `residual_fp32` off, in F's dtype (bf16 under autocast), the result rounded to it."""
        if self.residual_fp32:
            return self.merge(self.project(x).float(), f.float())
        return self.merge(self.project(x).to(f.dtype), f).to(f.dtype)

    def init_parameters(self) -> None:
        """Called after the net's He init of every conv: a variant that initialises its own weights otherwise
        does it here."""

    def decay_exempt(self) -> list[nn.Parameter]:
        """Parameters this shortcut keeps out of weight decay (none by default)."""
        return []

    def merge(self, s: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


@SHORTCUTS.register("identity", channelwise=True)
class Identity(Shortcut):
    """Fig. 2(a): h(x) = x, the original ResNet shortcut."""

    def merge(self, s: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        return s + f


@SHORTCUTS.register("scaling", channelwise=True)
class Scaling(Shortcut):
    """Fig. 2(b): constant scaling, lambda*x + beta*F(x); Table 1 rows (0.5, 1) and (0.5, 0.5)."""

    param_help = {"scale": "lambda on the shortcut", "residual_scale": "factor beta on F"}

    def __init__(self, *args, scale: float = 0.5, residual_scale: float = 1.0) -> None:
        super().__init__(*args)
        self.scale, self.residual_scale = scale, residual_scale

    def merge(self, s: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        return self.scale * s + self.residual_scale * f

    def extra_repr(self) -> str:
        return f"scale={self.scale}, residual_scale={self.residual_scale}"


GATE_INITS = ("he", "zero")


class _Gate(Shortcut):
    """g(x) = sigmoid(W_g x + b_g), element-wise per channel, from a 1x1 conv with bias `gate_bias`, in fp32.

    The papers leave two choices open (the authors' code has no gates): how W_g starts (`gate_init`: he, the
    He init of every conv, or zero, so g = sigmoid(b_g) exactly at the start) and whether weight decay acts on
    the gate (`gate_weight_decay`): with decay and no opposing gradient b_g = -6 drifts towards 0 (to about
    -4.4 over 32k iterations), and Table 1 shows gating is very sensitive to b_g.
    """

    param_help = {"gate_bias": "initial gate bias b_g (2016 paper, Table 1)",
                  "gate_init": "initial 1x1 gate weights: he = He init as every conv (package), zero = g = "
                               "sigmoid(b_g) at the start; the 2016 paper gives b_g only, the authors' code has no "
                               "gates",
                  "gate_weight_decay": "weight decay on the gate's weights and bias: true = decay on every "
                                       "parameter, as fb.resnet.torch train.lua:26 (package); false = b_g does not "
                                       "drift towards 0 with decay; the 2016 paper does not say"}

    param_choices = {"gate_init": GATE_INITS}
    secondary_params = ("gate_init", "gate_weight_decay")
    own_convs = (1, 1)

    def __init__(self, *args, gate_bias: float = -6.0, gate_init: str = "he", gate_weight_decay: bool = True) -> None:
        super().__init__(*args)
        self.gate = nn.Conv2d(self.out_ch, self.out_ch, 1, bias=True)
        self.gate_bias, self.gate_init, self.gate_weight_decay = gate_bias, gate_init, gate_weight_decay
        nn.init.constant_(self.gate.bias, gate_bias)

    def init_parameters(self) -> None:
        if self.gate_init == "zero":
            nn.init.zeros_(self.gate.weight)

    def decay_exempt(self) -> list[nn.Parameter]:
        return [] if self.gate_weight_decay else list(self.gate.parameters())

    def merge(self, s: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        with torch.autocast(s.device.type, enabled=False):
            g = torch.sigmoid(self.gate(s.to(next(self.gate.parameters()).dtype)))
        return self.combine(s, f, g)

    def combine(self, s: torch.Tensor, f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"gate_bias={self.gate_bias}, gate_init={self.gate_init}, gate_weight_decay={self.gate_weight_decay}"


@SHORTCUTS.register("gating", channelwise=True)
class ExclusiveGating(_Gate):
    """Fig. 2(c): exclusive gating, (1-g)*x + g*F(x) (the Highway Network form)."""

    def combine(self, s: torch.Tensor, f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return (1 - g) * s + g * f


@SHORTCUTS.register("shortcut_gating", channelwise=True)
class ShortcutOnlyGating(_Gate):
    """Fig. 2(d): shortcut-only gating, (1-g)*x + F(x)."""

    def combine(self, s: torch.Tensor, f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return (1 - g) * s + f


@SHORTCUTS.register("conv1x1", channelwise=True)
class Conv1x1(Shortcut):
    """Fig. 2(e): h(x) = 1x1 conv(x) at every unit (option C of the 2015 paper), + F(x).

    The 2016 paper calls this option C of the 2015 paper, whose projections are conv + BN, so a BN
    follows the conv in post-activation units; in pre-activation units the conv alone, as there.
    """

    def make_projection(self, in_ch: int, out_ch: int, stride: int, downsample: str, bn: bool) -> nn.Module:
        return conv1x1(in_ch, out_ch, stride, bn)

    def merge(self, s: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        return s + f


@SHORTCUTS.register("dropout", channelwise=True)
class Dropout(Shortcut):
    """Fig. 2(f): dropout on the shortcut, dropout(x) + F(x).

    The paper reads dropout 0.5 as a random scale with expectation 0.5 on the shortcut, so the
    default (`inverted=False`) keeps the plain mask: training multiplies x by a 0/1 mask, evaluation
    by its expectation 1-p. `inverted=True` is PyTorch's dropout (mask / (1-p), identity at eval).
    """

    param_help = {"p": "drop probability on the shortcut",
                  "inverted": "rescale by 1/(1-p) (PyTorch) instead of the paper's plain mask"}
    param_range = {"p": "[0, 1)"}

    def __init__(self, *args, p: float = 0.5, inverted: bool = False) -> None:
        super().__init__(*args)
        self.p, self.inverted = p, inverted

    def merge(self, s: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        s = F.dropout(s, self.p, self.training)
        return (s if self.inverted else s * (1.0 - self.p)) + f

    def extra_repr(self) -> str:
        return f"p={self.p}, inverted={self.inverted}"


@SHORTCUTS.register("none", channelwise=True)
class NoShortcut(Shortcut):
    """No shortcut: the unit outputs F(x) alone, i.e. the plain net of the same depth."""

    def make_projection(self, in_ch: int, out_ch: int, stride: int, downsample: str, bn: bool) -> nn.Module:
        return nn.Identity()

    def convolves(self) -> bool:
        return False

    def forward(self, x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        return f.float() if self.residual_fp32 else f


def shortcut_parameters(cls: type[Shortcut]) -> dict[str, Any]:
    """The keyword-only parameters a shortcut class takes, with their defaults (read-only)."""
    return parameters(cls)


def bind_shortcut(name: str, params: dict[str, Any]) -> Callable[..., Shortcut]:
    """The shortcut `name` with its parameters bound once (the rest of a flat config's shortcut parameters,
    those of other shortcuts, are dropped; its own are checked against their declared values): a factory of
    (in_ch, out_ch, stride, downsample, projection_bn)."""
    known = SHORTCUTS.keys()
    for key in sorted(params.keys() - known.keys()):
        raise unknown("shortcut parameter", key, sorted(known))
    return SHORTCUTS.bind(name, params)


@SHORTCUTS.register("highway_gating", channelwise=True)
class HighwayGating(ExclusiveGating):
    """Exclusive gating, (1-g)*x + g*F(x), with a Highway-style gate at matched parameter count: g comes from a
    stack of two 3x3 convs (conv-BN-ReLU-conv + b_g, sigmoid), the parameters of a basic unit's residual
    branch, instead of Fig. 2(c)'s one 1x1 conv. An open question (ablations/open_questions.yaml): a 2025 re-run
    of Table 1 with such a gate, without the ReLU after the addition (unit=no_relu_after_add), found gated
    ResNet-110 at 6.04 % against identity's 6.25 %, one run each. Matched at the basic units that keep the
    shape (where a stage's first unit widens, the gate reads the wider projected signal; a bottleneck's branch
    has other convs)."""

    own_convs = (3, 2)

    def __init__(self, *args, gate_bias: float = -6.0, gate_init: str = "he", gate_weight_decay: bool = True) -> None:
        super().__init__(*args, gate_bias=gate_bias, gate_init=gate_init, gate_weight_decay=gate_weight_decay)
        last = nn.Conv2d(self.out_ch, self.out_ch, 3, padding=1, bias=True)
        nn.init.constant_(last.bias, gate_bias)
        self.gate = nn.Sequential(nn.Conv2d(self.out_ch, self.out_ch, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(self.out_ch), nn.ReLU(inplace=False), last)

    def init_parameters(self) -> None:
        if self.gate_init == "zero":  # g = sigmoid(b_g) exactly at the start, as the 1x1 gate's `zero`
            nn.init.zeros_(self.gate[-1].weight)
