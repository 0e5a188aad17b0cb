"""Fixtures; the helpers the test modules import are in helpers.py."""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import pytest
import torch
from helpers import TINY

from resnet_ablate.training import datacache

# Tiny nets gain nothing from intra-op threads, and two threads on a shared 2-core machine were measured
# >10x slower than one; tests and the CLI subprocesses they start use one.
torch.set_num_threads(1)

# The tests never read or write the user's data cache (training/datacache.py): each test process has its own,
# which the CLI subprocesses it starts inherit.
os.environ[datacache.ENV] = tempfile.mkdtemp(prefix="resnet-ablate-test-cache-")
atexit.register(shutil.rmtree, os.environ[datacache.ENV], ignore_errors=True)


@pytest.fixture
def tiny(tmp_path):
    """TINY settings writing into a fresh run folder under tmp_path."""
    return [*TINY, f"run_dir={tmp_path / 'run'}"]


def pytest_collection_modifyitems(config, items):
    """The tests marked `cuda` (helpers.needs_cuda) skip, with the reason, where torch sees no CUDA GPU."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False here); "
                                   "bench/gpu_check.py runs them on a GPU machine")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)
