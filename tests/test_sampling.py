"""Sampling inside the step (sampling=buffered): the buffered draws are today's Sampler's exactly, across epoch
ends in mid-batch, and the checkpoint's sampler state is the one the Sampler would have at that batch."""
import pytest
import torch
from helpers import TINY, metrics, stop_now

from resnet_ablate.training.datasets import Sampler
from resnet_ablate.training.parse import parse
from resnet_ablate.training.sampling import BufferedSampler
from resnet_ablate.training.trainer import train

CPU = torch.device("cpu")


def _same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("augment", [True, False])
def test_buffered_draws_equal_the_samplers_across_epoch_ends(augment):
    """10 images in batches of 4: a new permutation is drawn in the middle of batches 3, 5, 8, ... between the
    crop/flip draws of the batches around it; a buffer of 3 batches refills 4 times in 12 batches."""
    plain = Sampler(10, 4, 7, CPU, augment)
    buffered = BufferedSampler(Sampler(10, 4, 7, CPU, augment), steps=3)
    for i in range(12):
        want, got = plain.next(), buffered.next()
        assert _same(got, want), f"batch {i}"
    assert buffered.counter.item() == 3 and buffered.used == 3


def test_device_counter_reads_the_rows_a_replay_would():
    """The graph's view: refill before, draw (device only), count after; the counter alone moves the rows."""
    plain = Sampler(10, 4, 3, CPU, True)
    buffered = BufferedSampler(Sampler(10, 4, 3, CPU, True), steps=5)
    for _ in range(7):
        buffered.refill_if_due()
        got = buffered.draw()
        buffered.count()
        assert _same(got, plain.next())


def test_checkpoint_state_mid_buffer_is_the_samplers_and_resumes_either_way():
    plain = Sampler(10, 4, 5, CPU, True)
    buffered = BufferedSampler(Sampler(10, 4, 5, CPU, True), steps=4)
    for _ in range(6):  # two rows into the second buffer
        plain.next(), buffered.next()
    state = buffered.state_dict()
    expected = plain.state_dict()
    assert torch.equal(state["generator"], expected["generator"]) and torch.equal(state["order"], expected["order"])
    assert state["pos"] == expected["pos"]
    to_plain, to_buffered = Sampler(10, 4, 99, CPU, True), BufferedSampler(Sampler(10, 4, 99, CPU, True), steps=3)
    to_plain.load_state_dict(state)
    to_buffered.load_state_dict(plain.state_dict())
    for _ in range(5):
        want = plain.next()
        assert _same(to_plain.next(), want) and _same(to_buffered.next(), want)


def test_buffered_and_eager_sampling_train_identical_runs_and_resume(tmp_path):
    args = [*TINY, "shortcut=dropout", "iterations=20", "milestones=[10]"]
    train([parse([*args, "sampling=eager", f"run_dir={tmp_path / 'eager'}"])])
    train([parse([*args, f"run_dir={tmp_path / 'buffered'}"])])
    assert metrics(tmp_path / "buffered") == metrics(tmp_path / "eager")
    cut = parse([*args, f"run_dir={tmp_path / 'cut'}"])
    assert train([cut], stop_now())[0]["status"] == "paused"
    train([parse([*args, "sampling=eager", f"run_dir={tmp_path / 'cut'}"])])  # resumed with the other sampling
    assert metrics(tmp_path / "cut") == metrics(tmp_path / "eager")
