"""What a training process sets up before any run starts (`training/runtime.py`): the threads key, TF32
off for an fp32 run on a GPU, and the determinism switches of each pack a process trains in turn."""
import pytest
import torch
from helpers import DONE, TINY

from resnet_ablate import run
from resnet_ablate.errors import UsageError
from resnet_ablate.training import runtime
from resnet_ablate.training.parse import parse
from resnet_ablate.training.progress import cores, device_line


def test_threads_key_sets_torch_threads_and_the_start_up_line_shows_it():
    n = min(2, cores())  # more than the cores is refused (the next test)
    try:
        device, precision = runtime.setup(parse([*TINY, f"threads={n}"]))  # what train() calls first
        assert torch.get_num_threads() == n
        assert device_line(device, precision, graphs=True).startswith(f"device: CPU, {n} thread{'s' * (n > 1)} on ")
    finally:
        torch.set_num_threads(1)


def test_more_threads_than_cores_are_refused_in_one_line(tmp_path, monkeypatch, capsys):
    """threads=1000 was accepted, and 4 iterations did not finish in a minute; a SLURM sweep is checked against
    the CPUs its jobs get."""
    many = cores() + 1
    with pytest.raises(UsageError, match=rf"^threads={many} is more than the {cores()} cores this process may use; "
                                         rf"use threads={cores()} or fewer \(0 = torch's choice\)$"):
        runtime.setup(parse([*TINY, f"threads={many}"]))
    assert torch.get_num_threads() == 1
    monkeypatch.chdir(tmp_path)
    assert run.main([*DONE, f"threads={many}"]) == 2
    assert capsys.readouterr().err.count("\n") == 1 and list(tmp_path.iterdir()) == []
    assert run.main([*DONE, "threads=2", "seed=0,1", "launcher=slurm", "profile=local", "dry_run=true"]) == 2
    assert capsys.readouterr().err == "error: threads=2 is more than the 1 CPUs a job gets (slurm.cpus_per_task); " \
                                      "use threads=1 or fewer (0 = torch's choice), or raise slurm.cpus_per_task\n"


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
