"""Reading pickles that come from files a user did not write (a CIFAR copy in `data_dir`, submitit's result
files in a sweep folder) without running their code: an unpickler that builds only plain Python data and the
classes it is given, and refuses every other global with `Refused` instead of importing it."""
from __future__ import annotations

import pickle
from typing import IO, Any, Iterable

# What the CIFAR python batches hold: dicts of bytes, lists and one uint8 numpy array (numpy 1 and 2 names;
# `_codecs.encode` is how Python 3 writes bytes at protocol 2).
NUMPY_ARRAYS = (("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.numeric", "_frombuffer"),
                ("numpy._core.numeric", "_frombuffer"), ("_codecs", "encode"))


class Refused(pickle.UnpicklingError):
    """The pickle names a global that is not allowed."""


class _Restricted(pickle.Unpickler):
    def __init__(self, file: IO[bytes], allowed: frozenset[tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        self.allowed = allowed

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.allowed:
            raise Refused(f"it names {module}.{name}, which is not allowed here")
        return super().find_class(module, name)


def load(file: IO[bytes], allowed: Iterable[tuple[str, str]] = (), encoding: str = "ASCII") -> Any:
    """Unpickle `file`, admitting only the (module, name) globals in `allowed`; Refused for any other."""
    return _Restricted(file, frozenset(allowed), encoding=encoding).load()
