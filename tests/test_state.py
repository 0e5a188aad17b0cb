"""A run's state (`training/state.py`): the precision policy its result names, and whether its step draws
random numbers (which decides whether packed graphs share one RNG stream, `training/step.py`)."""
import torch
from helpers import TINY

from resnet_ablate.training.parse import parse
from resnet_ablate.training.state import build_state
from resnet_ablate.training.trainer import train


def test_result_names_the_precision_policy(tiny):
    (summary,) = train([parse(tiny)])
    assert summary["precision_policy"] == "fp32 throughout"


def test_a_run_knows_whether_its_step_draws_random_numbers(tmp_path):
    for shortcut, draws in (("dropout", True), ("identity", False)):
        assert build_state(parse([*TINY, f"shortcut={shortcut}"]), torch.device("cpu")).draws_random() is draws
