"""CPU stand-ins for torch.cuda's graphs and streams, so that CI runs the package's own capture and replay code
(training/step.py: `capture`, `GraphStep`, the `Stepper`) on the CPU; and the capture-safety scan inside every
capture. `install(monkeypatch)` puts them in place for one test.

A stand-in graph records the aten ops its capture runs (a TorchDispatchMode) and its replay runs them again on the
capture's tensors, each result written into the tensor the capture made: as a CUDA graph, a replay redoes device
work only, at fixed addresses, and whatever the host decided at capture (a Python number, a branch, a value read
back) stays as it was then. Views are not rerun (they alias tensors that stay in place). Streams are no-ops: the
CPU runs every op in order.

The scan: an op that a CUDA graph cannot hold raises `CaptureError` (a RuntimeError, as a failed capture is on a
GPU, so the package's fallback runs): a host synchronisation (an op whose result the host must read: `.item()`,
`nonzero`, `bool(t)`), a tensor made from host data (`torch.tensor(x, device=...)`), a tensor made without
`device=` (torch's default device is `meta` while a capture runs, so a missing device shows on the CPU too, where
the tensor is made or, for `torch.tensor(x)`, where it is used). Random ops are
recorded (`Graph.random_ops`): a part's step draws random numbers only where it declares so (`draws_random`).
What the CPU cannot show: a copy to the host of a tensor already there (`.cpu()`, `.tolist()` dispatch nothing).
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from resnet_ablate.training import runtime

INDEX = torch.ops.aten.index.Tensor  # tagged as of dynamic shape for its boolean masks; integer indices are not
HOST_DATA = (torch.ops.aten.lift_fresh.default, torch.ops.aten.lift_fresh_copy.default)
NO_DEVICE = torch.device("meta")  # the default device while a capture runs


class CaptureError(RuntimeError):
    """An op a CUDA graph cannot hold, met during a capture."""


class Graph:
    """Stand-in for torch.cuda.CUDAGraph: the ops of its capture (`capturing`), rerun by `replay`."""

    def __init__(self) -> None:
        self.ops: list[tuple[Any, tuple, dict, Any]] = []
        self.random_ops: list[str] = []
        self.replays = 0

    def replay(self) -> None:
        """Rerun the ops as the capture met them: below autograd, as a dispatch mode sees them."""
        with torch.no_grad(), torch._C._AutoDispatchBelowAutograd():
            for func, args, kwargs, out in self.ops:
                if not func.is_view:
                    _write_into(out, func(*args, **kwargs))
        self.replays += 1


def _same_memory(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (a.untyped_storage().data_ptr(), a.storage_offset(), a.stride(), a.shape) == \
        (b.untyped_storage().data_ptr(), b.storage_offset(), b.stride(), b.shape)


def _write_into(out: Any, new: Any) -> None:
    """Put a rerun op's result where the capture's result lives (in-place ops wrote there already)."""
    if isinstance(out, torch.Tensor):
        if new is not out and not _same_memory(out, new):
            out.copy_(new)
    elif isinstance(out, (list, tuple)):
        for o, n in zip(out, new):
            _write_into(o, n)


def _host_sync(func, args: tuple) -> bool:
    """Whether the op's result (its value or its shape) must be read by the host."""
    if torch.Tag.data_dependent_output in func.tags:
        return True
    if func is INDEX:
        return any(i is not None and i.dtype == torch.bool for i in args[1])
    return torch.Tag.dynamic_output_shape in func.tags


class _Capturing(TorchDispatchMode):
    """Records each op into `graph` after the scan has passed it."""

    def __init__(self, graph: Graph) -> None:
        super().__init__()
        self.graph = graph

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if _host_sync(func, args):
            raise CaptureError(f"{func}: the host reads a result inside the captured step (a host synchronisation)")
        if func in HOST_DATA:
            raise CaptureError(f"{func}: a tensor made from host data inside the captured step")
        if kwargs.get("device") == NO_DEVICE:
            raise CaptureError(f"{func}: a tensor made without device= inside the captured step (a host tensor)")
        if any(isinstance(a, torch.Tensor) and a.device == NO_DEVICE for a in tree_leaves((args, kwargs))):
            raise CaptureError(f"{func}: an operand made without device= inside the captured step (a host tensor)")
        if torch.Tag.nondeterministic_seeded in func.tags:
            self.graph.random_ops.append(str(func))
        out = func(*args, **kwargs)
        self.graph.ops.append((func, args, kwargs, out))
        return out


@contextlib.contextmanager
def graph(cuda_graph: Graph, pool: Any = None, stream: Any = None, **_: Any) -> Iterator[None]:
    """Stand-in for torch.cuda.graph: capture the block's ops into `cuda_graph` (they run once, here)."""
    with torch.device(NO_DEVICE), _Capturing(cuda_graph):
        yield


class Stream:
    """Stand-in for torch.cuda.Stream: the CPU runs every op in order."""

    def __init__(self, device: Any = None, priority: int = 0) -> None:
        self.device = device

    def wait_stream(self, stream: Stream) -> None:
        pass

    def synchronize(self) -> None:
        pass


_MAIN = Stream()


def current_stream(device: Any = None) -> Stream:
    return _MAIN


def stream(s: Stream | None) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext()


def synchronize(device: Any = None) -> None:
    pass


def install(monkeypatch) -> None:
    """The stand-ins in torch.cuda for one test, and CPU steps captured (`runtime.graph_device`)."""
    for name, value in {"CUDAGraph": Graph, "graph": graph, "Stream": Stream, "stream": stream,
                        "current_stream": current_stream, "synchronize": synchronize}.items():
        monkeypatch.setattr(torch.cuda, name, value)
    monkeypatch.setattr(runtime, "graph_device", lambda device: True)
