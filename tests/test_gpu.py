"""The GPU path on a GPU (marked `cuda`: skipped without one, with the reason; `python bench/gpu_check.py` runs them
first on a lent GPU, `python -m pytest -m cuda` anywhere): every capture happens (a fallback to eager fails the
test); captured steps equal eager steps, in-graph sampling equals eager sampling, streams x2 equal alone, resume
after a stop equals the uninterrupted run, each exactly with deterministic kernels; a wide pack x2 equals its runs
alone to rounding after one step, and a run's numbers do not depend on its pack-mate (bit for bit); Adam, AdamW
and ghost BN are captured; `deterministic=true` holds for wide packs; compile=true at depth 20 is within 1e-5 of
eager on one step. In fp32 (the papers' precision, TF32 off) and bf16."""
from __future__ import annotations

import pytest
import torch
from helpers import TINY, merged, metrics, needs_cuda, stop_now

from resnet_ablate.training.optim import OPTIMIZERS
from resnet_ablate.training.parse import parse
from resnet_ablate.training.runtime import data_key, load_data, setup
from resnet_ablate.training.state import RunState, build_state
from resnet_ablate.training.step import Stepper, make_stepper
from resnet_ablate.training.trainer import train

pytestmark = needs_cuda
PRECISIONS = ["fp32", "bf16"]
GPU = merged(TINY, "device=cuda", "iterations=12", "eval_every=4", "milestones=[6]", "deterministic=true")
ONE_STEP = {"fp32": 1e-5, "bf16": 1e-2}  # a wide pack's one step against alone, relative (norm over all tensors)


def run_dir(tmp_path, name: str) -> str:
    return f"run_dir={tmp_path / name}"


def trained(tmp_path, name: str, *keys: str) -> dict:
    """One run on the GPU, trained in this process; its result.json, after checking that it was captured."""
    (summary,) = train([parse([*GPU, *keys, run_dir(tmp_path, name)])])
    assert_captured(summary)
    return summary


def assert_captured(summary: dict) -> None:
    """A captured step, no fallback: what a silent fallback to eager would break."""
    assert summary["status"] in ("done", "fail"), summary
    assert (summary["step_mode"], summary["fallbacks"]) == ("graph", []), summary
    assert summary["capture_s"] > 0


def states(keys: list[str], seeds: list[int]) -> list[RunState]:
    cfgs = [parse([*GPU, *keys, f"seed={s}"]) for s in seeds]
    device, precision = setup(cfgs[0])
    data = load_data(cfgs[:1], device)[data_key(cfgs[0])]
    return [build_state(c, device, precision, data) for c in cfgs]


def step_once(runs: list[RunState], stepper: Stepper) -> None:
    stepper(runs)
    torch.cuda.synchronize()
    for r in runs:
        r.advance()


def flat(run: RunState) -> torch.Tensor:
    """Every float tensor a step changes (weights, BN buffers, optimizer state, meters), as one vector."""
    return torch.cat([t.detach().double().reshape(-1) for t in run.step_tensors() if t.dtype.is_floating_point])


@pytest.mark.parametrize("precision", PRECISIONS)
def test_graph_steps_equal_eager_steps(tmp_path, precision):
    trained(tmp_path, "graph", f"precision={precision}")
    (eager,) = train([parse([*GPU, f"precision={precision}", "cuda_graph=false", run_dir(tmp_path, "eager")])])
    assert eager["step_mode"] == "eager"
    assert metrics(tmp_path / "graph") == metrics(tmp_path / "eager")


@pytest.mark.parametrize("precision", PRECISIONS)
def test_in_graph_sampling_equals_eager_sampling(tmp_path, precision):
    trained(tmp_path, "buffered", f"precision={precision}", "sampling=buffered")
    trained(tmp_path, "eager", f"precision={precision}", "sampling=eager")
    assert metrics(tmp_path / "buffered") == metrics(tmp_path / "eager")


@pytest.mark.parametrize("precision", PRECISIONS)
def test_two_runs_on_streams_equal_each_run_alone(tmp_path, precision):
    keys = [*GPU, f"precision={precision}", "shortcut=dropout"]
    packed = train([parse([*keys, f"seed={s}", run_dir(tmp_path, f"p{s}")]) for s in (0, 1)])
    for s, summary in enumerate(packed):
        assert_captured(summary)
        assert summary["pack_mode"] == "streams"
        trained(tmp_path, f"a{s}", f"precision={precision}", "shortcut=dropout", f"seed={s}")
        assert metrics(tmp_path / f"p{s}") == metrics(tmp_path / f"a{s}")
    assert metrics(tmp_path / "p0") != metrics(tmp_path / "p1")


@pytest.mark.parametrize("precision", PRECISIONS)
def test_one_wide_step_of_two_runs_equals_the_runs_alone_to_rounding(precision):
    keys = [f"precision={precision}", "pack_mode=wide"]
    alone, packed = states(keys, [0, 1]), states(keys, [0, 1])
    alone_step = [make_stepper([r]) for r in alone]
    wide_step = make_stepper(packed)
    assert (wide_step.mode, wide_step.facts()["step_mode"], wide_step.fallbacks) == ("wide", "graph", [])
    for r, s in zip(alone, alone_step):
        step_once([r], s)
    step_once(packed, wide_step)
    for a, p in zip(alone, packed):
        a_flat, p_flat = flat(a), flat(p)
        assert ((p_flat - a_flat).norm() / a_flat.norm()).item() < ONE_STEP[precision]


@pytest.mark.parametrize("precision", PRECISIONS)
def test_a_wide_run_does_not_depend_on_its_pack_mate(tmp_path, precision):
    """Run 0 bit for bit in two wide packs that differ only in the other run's seed."""
    for mate in (1, 2):
        packed = train([parse([*GPU, f"precision={precision}", "pack_mode=wide", f"seed={s}",
                               run_dir(tmp_path, f"{mate}-{s}")]) for s in (0, mate)])
        for summary in packed:
            assert_captured(summary)
            assert summary["pack_mode"] == "wide"
    assert metrics(tmp_path / "1-0") == metrics(tmp_path / "2-0")
    assert metrics(tmp_path / "1-1") != metrics(tmp_path / "2-2")


def test_wide_packs_are_reproducible_with_deterministic_kernels(tmp_path):
    for name in ("a", "b"):
        for summary in train([parse([*GPU, "pack_mode=wide", f"seed={s}", run_dir(tmp_path, f"{name}{s}")])
                              for s in (0, 1)]):
            assert_captured(summary)
    assert metrics(tmp_path / "a0") == metrics(tmp_path / "b0") and metrics(tmp_path / "a1") == metrics(tmp_path / "b1")


@pytest.mark.parametrize("optim", OPTIMIZERS.names())
@pytest.mark.parametrize("precision", PRECISIONS)
def test_every_optimizer_and_ghost_bn_are_captured(tmp_path, optim, precision):
    lr = ["lr=0.003"] if optim != "sgd" else []
    trained(tmp_path, "r", f"precision={precision}", f"optim={optim}", "bn_batch=4", *lr)


def test_the_default_recipe_is_captured_without_deterministic_kernels(tmp_path):
    """he2016 (fp32, TF32 off, ghost BN over half the batch) with cuDNN autotuning, as a user's run steps."""
    (summary,) = train([parse([*merged(GPU, "recipe=he2016", "deterministic=false"), run_dir(tmp_path, "r")])])
    assert_captured(summary)
    assert summary["precision"] == "fp32" and not torch.backends.cuda.matmul.allow_tf32


@pytest.mark.parametrize("precision", PRECISIONS)
def test_resume_after_a_stop_equals_the_uninterrupted_run(tmp_path, precision):
    trained(tmp_path, "whole", f"precision={precision}")
    cut = parse([*GPU, f"precision={precision}", run_dir(tmp_path, "cut")])
    assert train([cut], stop_now())[0]["status"] == "paused"
    (resumed,) = train([cut])
    assert_captured(resumed)
    assert metrics(tmp_path / "cut") == metrics(tmp_path / "whole")


def test_compiled_depth_20_step_is_within_1e_5_of_the_eager_step():
    """compile=true's captured step from the same state as the eager net's captured step (fp32, seed 0): the
    updated state within 1e-5 relative. Last in the file: the compile takes the longest."""
    keys = ["precision=fp32", "depth=20", "batch_size=32", "synthetic_size=128"]
    (eager,), (fast,) = states(keys, [0]), states([*keys, "compile=true"], [0])
    eager_step, fast_step = make_stepper([eager]), make_stepper([fast])
    assert fast_step.facts()["compiled"] and fast_step.facts()["step_mode"] == "graph" and fast_step.fallbacks == []
    step_once([eager], eager_step)
    step_once([fast], fast_step)
    assert ((flat(fast) - flat(eager)).norm() / flat(eager).norm()).item() < 1e-5
