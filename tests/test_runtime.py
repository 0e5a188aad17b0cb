"""What a training process sets up before any run starts (`training/runtime.py`): the threads key, TF32
off for an fp32 run on a GPU, and the determinism switches of each pack a process trains in turn."""
import torch
from helpers import TINY

from resnet_ablate.training import runtime
from resnet_ablate.training.parse import parse
from resnet_ablate.training.progress import device_line


def test_threads_key_sets_torch_threads_and_the_start_up_line_shows_it():
    try:
        device, precision = runtime.setup(parse([*TINY, "threads=2"]))  # what train() calls first
        assert torch.get_num_threads() == 2
        assert device_line(device, precision, graphs=True).startswith("device: CPU, 2 threads on ")
    finally:
        torch.set_num_threads(1)


def test_fp32_on_a_gpu_turns_tf32_convolutions_and_matmuls_off(monkeypatch):
    """Issue 28 item 2: PyTorch lets cuDNN convolve in TF32 by default; an fp32 run on CUDA must not."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    monkeypatch.setattr(runtime, "resolve_device", lambda name: torch.device("cuda"))  # setup only reads flags here
    try:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
        assert runtime.setup(parse(["recipe=he2016"]))[1] == "fp32"
        assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == (False, False)
        torch.backends.cudnn.allow_tf32 = True
        assert runtime.setup(parse(["precision=bf16"]))[1] == "bf16"
        assert torch.backends.cudnn.allow_tf32 is True  # bf16 runs keep PyTorch's default for their fp32 parts
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_determinism_follows_each_packs_setting_in_a_process_that_trains_several():
    """A deterministic pack, then one without: the second gets cuDNN autotuning and torch's fast kernels back (the
    bench and the GPU tests train many packs in one process)."""
    try:
        runtime.setup(parse([*TINY, "deterministic=true"]))
        assert torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.benchmark
        runtime.setup(parse(TINY))
        assert not torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.benchmark
    finally:
        torch.use_deterministic_algorithms(False)
