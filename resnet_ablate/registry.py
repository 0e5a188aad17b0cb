"""Name -> factory maps with one-line errors, so every component is chosen by name on the command line; and
the two message helpers every one-line error uses (`unknown`, `first_line`)."""
from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterable, Iterator, TypeVar

T = TypeVar("T")


class UsageError(ValueError):
    """A user mistake (bad name, bad value, missing file): reported as one line, exit code 2."""


def closest(word: str, choices: Iterable[str]) -> str:
    """' (did you mean X?)' for the nearest choice, or '' when nothing is close."""
    match = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


def unknown(kind: str, value: object, allowed: Iterable[str], *, where: str = "", of: str = "",
            extra: str = "") -> UsageError:
    """The one-line error for a name that is not among `allowed`: "WHERE: unknown KIND 'V' OF (did you mean
    ..?); allowed: A, B EXTRA" (`where`: the file it came from; `of`: e.g. 'for table2_units'; `extra`:
    appended to the allowed list, e.g. '(or a path to a spec .yaml)')."""
    allowed = [str(a) for a in allowed]
    head = f"{where}: " if where else ""
    tail = (f" {of}" if of else "") + closest(str(value), allowed)
    return UsageError(f"{head}unknown {kind} '{value}'{tail}; allowed: {', '.join(allowed)}"
                      + (f" {extra}" if extra else ""))


def first_line(error: BaseException | str) -> str:
    """The first non-empty line of an exception's message (its type name when the message is empty), for
    one-line errors built around another library's multi-line exception."""
    text = str(error).strip()
    if text:
        return text.splitlines()[0].strip()
    return type(error).__name__ if isinstance(error, BaseException) else ""


class Registry(Generic[T]):
    """A named collection of factories (classes or functions), registered with a decorator. `checks` run on
    every new entry (and, when added, on the entries already there), so a bad plugin fails at registration."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._checks: list[Callable[[str, T], None]] = []

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: make `obj` available as `name`."""

        def add(obj: T) -> T:
            if name in self._items:
                raise KeyError(f"{self.kind} '{name}' is registered twice")
            for check in self._checks:
                check(name, obj)
            self._items[name] = obj
            return obj

        return add

    def unregister(self, name: str) -> None:
        """Remove `name` (a plugin that is unloaded, or a test's temporary entry)."""
        del self._items[name]

    def add_check(self, check: Callable[[str, T], None]) -> None:
        """Run `check(name, obj)` on every entry, those already registered first."""
        for name, obj in self._items.items():
            check(name, obj)
        self._checks.append(check)

    def get(self, name: str) -> T:
        """The factory for `name`, or a UsageError that lists the allowed names."""
        if name not in self._items:
            raise unknown(self.kind, name, self.names())
        return self._items[name]

    def names(self) -> list[str]:
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)
