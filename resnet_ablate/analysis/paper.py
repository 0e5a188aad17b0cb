"""The papers' CIFAR tables as data, mapped to this package's config names, so a report can put the
papers' numbers beside its own.

2016: He, Zhang, Ren, Sun, "Identity Mappings in Deep Residual Networks", ECCV 2016, Tables 1-3.
2015: He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016 (arXiv 2015),
      Table 6 (CIFAR-10). Its plain nets have no table values (only the curves of Fig. 6).

A row's `match` lists the settings it corresponds to (any one of several alternatives); a tuple
(lo, hi) matches any value in that closed range; an empty `match` means no config of this package
corresponds to the row (it is kept so the table is complete). `value` None is the papers' "fail"
(test error above 20%).

The papers leave some choices open (`OPEN_CHOICES`: whether the gate is weight-decayed, how its 1x1 weights
start, whether the dropout shortcut rescales); a paper row stands for the package's reading of each (its
default), and a run that differs only there is a *variant* of that row (`variant_of`), never the row itself.

Each cell says which statistic it is, so a report compares like with like: the 2016 tables give the median
of 5 runs, failures included ("median of 5"); the 2015 table gives ResNet-110 as the best of 5 runs with
their mean and std beside it ("best of 5"), and its other rows as one number whose statistic the paper does
not state ("as reported", compared with a median).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

UNITS = "test error (%) on CIFAR"
MEDIAN, BEST, REPORTED = "median of 5", "best of 5", "as reported"
SOURCE_2016 = 'He et al., "Identity Mappings in Deep Residual Networks", ECCV 2016'
SOURCE_2015 = 'He et al., "Deep Residual Learning for Image Recognition", CVPR 2016 (arXiv 2015)'


@dataclass(frozen=True)
class Row:
    """One cell of a paper table: its label, value (None = fail) and the settings it corresponds to."""

    case: str
    value: float | None
    match: tuple[Mapping[str, Any], ...]
    note: str = ""
    statistic: str = MEDIAN  # what `value` is: MEDIAN, BEST or REPORTED
    mean: float | None = None  # when the table value is a best-of-n, the paper's mean and std beside it
    std: float | None = None

    def text(self) -> str:
        """The paper's value as printed, with its statistic: `fail`, `6.61 (median of 5)`, or
        `6.43 (best of 5); 6.61±0.16 (mean±sd)`."""
        if self.value is None:
            return f"fail ({self.statistic})"
        text = f"{self.value:.2f} ({self.statistic})"
        return text + (f"; {self.mean:.2f}±{self.std:.2f} (mean±sd)" if self.mean is not None else "")


@dataclass(frozen=True)
class Table:
    """A paper table: where it is from, its units, its baseline row and its rows."""

    key: str
    source: str
    title: str
    baseline: str  # the row the paper compares the others with ("" where it compares none)
    notes: str
    rows: tuple[Row, ...]
    units: str = UNITS


def _t1(case: str, value: float | None, *alternatives: Mapping[str, Any], note: str = "") -> Row:
    base = {"dataset": "cifar10", "depth": 110, "unit": "original"}
    return Row(case, value, tuple({**base, **a} for a in alternatives), note)


TABLE1_2016 = Table(
    "2016-T1", SOURCE_2016, "Table 1: shortcut variants, ResNet-110 (original units), CIFAR-10",
    "original (identity shortcut)",
    "fail: test error above 20%. Exclusive gating with b_g from 0 to -5 fails for every b_g in that range.",
    (
        _t1("original (identity)", 6.61, {"shortcut": "identity"}),
        _t1("constant scaling: 0 on shortcut, 1 on F", None, {"shortcut": "none"},
            {"shortcut": "scaling", "scale": 0.0, "residual_scale": 1.0}, note="this is a plain net"),
        _t1("constant scaling: 0.5 on shortcut, 1 on F", None,
            {"shortcut": "scaling", "scale": 0.5, "residual_scale": 1.0}),
        _t1("constant scaling: 0.5 on shortcut, 0.5 on F", 12.35,
            {"shortcut": "scaling", "scale": 0.5, "residual_scale": 0.5}, note="frozen gating"),
        _t1("exclusive gating, init b_g = 0 to -5", None, {"shortcut": "gating", "gate_bias": (-5.0, 0.0)}),
        _t1("exclusive gating, init b_g = -6", 8.70, {"shortcut": "gating", "gate_bias": -6.0}),
        _t1("exclusive gating, init b_g = -7", 9.81, {"shortcut": "gating", "gate_bias": -7.0}),
        _t1("shortcut-only gating, init b_g = 0", 12.86, {"shortcut": "shortcut_gating", "gate_bias": 0.0}),
        _t1("shortcut-only gating, init b_g = -6", 6.91, {"shortcut": "shortcut_gating", "gate_bias": -6.0}),
        _t1("1x1 conv shortcut", 12.22, {"shortcut": "conv1x1"}),
        _t1("dropout shortcut, ratio 0.5", None, {"shortcut": "dropout", "p": 0.5, "inverted": False}),
    ),
)


def _cell(case: str, value: float, dataset: str, depth: int, unit: str) -> Row:
    return Row(case, value, ({"dataset": dataset, "depth": depth, "unit": unit, "shortcut": "identity"},))


_T2_UNITS = {  # unit: (ResNet-110, ResNet-164)
    "original": (6.61, 5.93), "bn_after_add": (8.17, 6.50), "relu_before_add": (7.84, 6.14),
    "relu_preact": (6.71, 5.91), "full_preact": (6.37, 5.46),
}
TABLE2_2016 = Table(
    "2016-T2", SOURCE_2016, "Table 2: residual-unit variants (identity shortcuts), CIFAR-10", "original",
    "ResNet-110 has basic units, ResNet-164 bottleneck units.",
    tuple(_cell(f"{unit}, ResNet-{depth}", err, "cifar10", depth, unit)
          for unit, errs in _T2_UNITS.items() for depth, err in zip((110, 164), errs)),
)

_T3_CELLS = {  # (dataset, depth): (original, full pre-activation)
    ("cifar10", 110): (6.61, 6.37), ("cifar10", 164): (5.93, 5.46), ("cifar10", 1001): (7.61, 4.92),
    ("cifar100", 164): (25.16, 24.33), ("cifar100", 1001): (27.82, 22.71),
}
TABLE3_2016 = Table(
    "2016-T3", SOURCE_2016, "Table 3: original vs pre-activation units, CIFAR-10/100", "original",
    "pre-activation = full_preact. The ResNet-110 with 1-layer skips has no unit in this package.",
    (
        Row("CIFAR-10, ResNet-110 (1-layer skip), original", 9.90, (), note="no 1-layer-skip unit here"),
        Row("CIFAR-10, ResNet-110 (1-layer skip), pre-activation", 8.91, (), note="no 1-layer-skip unit here"),
        *(_cell(f"{'CIFAR-10' if ds == 'cifar10' else 'CIFAR-100'}, ResNet-{depth}, {label}", err, ds, depth, unit)
          for (ds, depth), errs in _T3_CELLS.items()
          for (unit, label), err in zip((("original", "original"), ("full_preact", "pre-activation")), errs)),
    ),
)


def _t6(depth: int, value: float, params: str, **extra: Any) -> Row:
    match = ({"dataset": "cifar10", "depth": depth, "unit": "original", "shortcut": "identity"},)
    return Row(f"ResNet-{depth} ({params} params)", value, match, **{"statistic": REPORTED, **extra})


TABLE6_2015 = Table(
    "2015-T6", SOURCE_2015, "Table 6: ResNets of increasing depth, CIFAR-10", "",
    "Plain nets have no table values (only the curves of Fig. 6).",
    (
        _t6(20, 8.75, "0.27M"), _t6(32, 7.51, "0.46M"), _t6(44, 7.17, "0.66M"), _t6(56, 6.97, "0.85M"),
        _t6(110, 6.43, "1.7M", note="best of 5 runs; mean±std 6.61±0.16", statistic=BEST, mean=6.61, std=0.16),
        _t6(1202, 7.93, "19.4M"),
    ),
)

TABLES: dict[str, Table] = {t.key: t for t in (TABLE1_2016, TABLE2_2016, TABLE3_2016, TABLE6_2015)}

# Choices the papers leave open, with the value a paper row stands for (the package's reading): the authors'
# code decays every parameter; it has no gates, so the gate's start is every conv's He init; "dropout with
# expectation 0.5" on the shortcut is a plain 0/1 mask (Caffe's and PyTorch's dropout rescale: inverted=true).
OPEN_CHOICES: dict[str, Any] = {"gate_weight_decay": True, "gate_init": "he", "inverted": False}


def _matches(want: Mapping[str, Any], settings: Mapping[str, Any]) -> bool:
    """Whether `settings` has every wanted value (a (lo, hi) tuple is a closed range)."""
    for key, expected in want.items():
        value = settings.get(key)
        if isinstance(expected, tuple):
            if value is None or not expected[0] <= value <= expected[1]:
                return False
        elif value != expected:
            return False
    return True


def open_choices(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The open choices (`OPEN_CHOICES`) where `settings` differ from the paper rows' reading (None: a parameter
    of another shortcut, which does not apply)."""
    return {k: settings[k] for k, v in OPEN_CHOICES.items() if settings.get(k) not in (None, v)}


def variant_of(settings: Mapping[str, Any], tables: tuple[str, ...] = tuple(TABLES)) -> tuple[Table, Row] | None:
    """The paper row that `settings` are a variant of (the same but for an open choice), or None."""
    if not open_choices(settings):
        return None
    return lookup({**settings, **{k: OPEN_CHOICES[k] for k in open_choices(settings)}}, tables)


def lookup(settings: Mapping[str, Any], tables: tuple[str, ...] = tuple(TABLES)) -> tuple[Table, Row] | None:
    """The first row of `tables` (by key, in order) that corresponds to `settings`, or None; settings that
    differ from a row in an open choice are a variant of it (`variant_of`), not the row."""
    if open_choices(settings):
        return None
    for key in tables:
        for row in TABLES[key].rows:
            if any(_matches(m, settings) for m in row.match):
                return TABLES[key], row
    return None


@dataclass(frozen=True)
class Spread:
    """A seed-to-seed sd of the final test error that a paper states, the data set and depths it stands for,
    and where it is from."""

    dataset: str
    depths: tuple[int, int]  # the closed range of depths it stands for
    sd: float
    source: str


SPREADS = (
    Spread("cifar10", (20, 164), 0.16, "2015 paper, Table 6: ResNet-110, 6.61±0.16 (mean±std of 5 runs), the one "
                                       "spread the papers give below 1001 layers"),
    Spread("cifar10", (1001, 1001), 0.14, "2016 paper, Table 4: pre-activation ResNet-1001, 4.89±0.14 (mean±std of "
                                          "5 runs)"),
    Spread("cifar100", (164, 1001), 0.22, "2016 paper, Table 4: pre-activation ResNet-1001 on CIFAR-100, "
                                          "22.68±0.22 (mean±std of 5 runs); no spread is given at 164 layers"),
)  # none for ResNet-1202 (one run, 2015 Table 6) nor for the plain nets (curves only)


def spread(dataset: Any, depth: Any) -> Spread | None:
    """The papers' spread of test error for a data set and depth (None: they give none that stands for it)."""
    return next((s for s in SPREADS if s.dataset == dataset and isinstance(depth, int)
                 and s.depths[0] <= depth <= s.depths[1]), None)
