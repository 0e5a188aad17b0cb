"""Name -> factory maps with one-line errors, so every component is chosen by name on the command line."""
from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class UsageError(ValueError):
    """A user mistake (bad name, bad value, missing file): reported as one line, exit code 2."""


def closest(word: str, choices: list[str]) -> str:
    """' (did you mean X?)' for the nearest choice, or '' when nothing is close."""
    match = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


class Registry(Generic[T]):
    """A named collection of factories (classes or functions), registered with a decorator."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: make `obj` available as `name`."""

        def add(obj: T) -> T:
            if name in self._items:
                raise KeyError(f"{self.kind} '{name}' is registered twice")
            self._items[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        """The factory for `name`, or a UsageError that lists the allowed names."""
        if name not in self._items:
            raise UsageError(
                f"unknown {self.kind} '{name}'{closest(str(name), self.names())}; "
                f"allowed: {', '.join(self.names())}"
            )
        return self._items[name]

    def names(self) -> list[str]:
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)
