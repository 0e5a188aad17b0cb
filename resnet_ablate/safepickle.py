"""Reading pickles that come from files a user did not write (a CIFAR copy in `data_dir`, submitit's result
files in a sweep folder) without running their code: an unpickler that builds only plain Python data and the
classes it is given, and refuses every other global with `Refused` instead of importing it. The numpy
constructors it may be given build arrays no larger than the file (`max_bytes`): a pickle holds its arrays'
bytes, so one asking for more (a 1 TiB shape in a 1 kB file) is Refused before anything is allocated."""
from __future__ import annotations

import math
import pickle
import sys
from typing import IO, Any, Callable, Iterable

# What the CIFAR python batches hold: dicts of bytes, lists and one uint8 numpy array (numpy 1 and 2 names;
# `_codecs.encode` is how Python 3 writes bytes at protocol 2).
NUMPY_ARRAYS = (("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.numeric", "_frombuffer"),
                ("numpy._core.numeric", "_frombuffer"), ("_codecs", "encode"))
SHAPED = {"_reconstruct": (1, 2), "ndarray": (0, 1)}  # the constructors that allocate: (shape, dtype) positions


class Refused(pickle.UnpicklingError):
    """The pickle names a global that is not allowed."""


class _Restricted(pickle.Unpickler):
    def __init__(self, file: IO[bytes], allowed: frozenset[tuple[str, str]], max_bytes: int | None,
                 **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        self.allowed, self.max_bytes = allowed, max_bytes

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.allowed:
            raise Refused(f"it names {module}.{name}, which is not allowed here")
        found = super().find_class(module, name)
        if name not in SHAPED or self.max_bytes is None:
            return found
        if isinstance(found, type):  # ndarray is also _reconstruct's first argument: a subclass, not a function
            return type(found.__name__, (found,), {"__new__": _bounded(found.__new__, *SHAPED[name], self.max_bytes,
                                                                       skip=1)})
        return _bounded(found, *SHAPED[name], self.max_bytes)


def _bounded(make: Callable[..., Any], shape_at: int, dtype_at: int, max_bytes: int, skip: int = 0) -> Callable:
    """`make` (an array constructor) refusing a shape and dtype of more bytes than `max_bytes` (a pickle holds
    its arrays' bytes); `skip`: leading arguments to pass through (__new__'s class)."""
    def checked(*args: Any, **kwargs: Any) -> Any:
        np = sys.modules["numpy"]  # loaded: `make` is its constructor (status reads pickles without numpy)
        given = args[skip:]
        shape = kwargs.get("shape", given[shape_at] if len(given) > shape_at else ())
        dims = tuple(shape) if isinstance(shape, (tuple, list)) else (shape,)
        try:
            itemsize = np.dtype(kwargs.get("dtype", given[dtype_at] if len(given) > dtype_at else float)).itemsize
        except (TypeError, ValueError):
            itemsize = 1  # `make` says what is wrong with it
        if not all(isinstance(d, int) and d >= 0 for d in dims) or math.prod(dims) * max(itemsize, 1) > max_bytes:
            raise Refused(f"it asks for an array of shape {str(dims)[:60]} ({itemsize}-byte items), larger than the "
                          f"file's {max_bytes:,} bytes")
        return make(*args, **kwargs)

    return checked


def load(file: IO[bytes], allowed: Iterable[tuple[str, str]] = (), encoding: str = "ASCII",
         max_bytes: int | None = None) -> Any:
    """Unpickle `file`, admitting only the (module, name) globals in `allowed`; Refused for any other, and for
    an array of more elements than `max_bytes` (the file's size, say)."""
    return _Restricted(file, frozenset(allowed), max_bytes, encoding=encoding).load()
