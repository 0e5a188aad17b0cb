"""Fixtures; the helpers the test modules import are in helpers.py."""
from __future__ import annotations

import pytest
import torch
from helpers import TINY

# Tiny nets gain nothing from intra-op threads, and two threads on a shared 2-core machine were measured
# >10x slower than one; tests and the CLI subprocesses they start use one.
torch.set_num_threads(1)


@pytest.fixture
def tiny(tmp_path):
    """TINY settings writing into a fresh run folder under tmp_path."""
    return [*TINY, f"run_dir={tmp_path / 'run'}"]
