"""Name -> entry maps, so every component is chosen by name on the command line; what an entry declares it can do
(its capabilities, which the fast paths read); which plugin registered it; and the config keys that registered
entries declare: a `KeyedRegistry` entry's keyword-only parameters are keys, each with its default, --help text
and allowed values (`Range`, choices) declared on the entry. Torch-free."""
from __future__ import annotations

import contextlib
import functools
import inspect
import re
import typing
from typing import Any, Callable, Generic, Iterator, Mapping, NamedTuple, Sequence, TypeVar

from .errors import UsageError, unknown
from .values import override_text

__all__ = ["Key", "Keyed", "KeyedRegistry", "Range", "Registry", "check_value", "parameters", "providing"]

T = TypeVar("T")
_PROVIDERS: list[str] = []  # the plugin being loaded (`providing`), innermost last


@contextlib.contextmanager
def providing(plugin: str) -> Iterator[None]:
    """Record `plugin` as the provider of every entry registered while the block runs (`plugins.load`)."""
    _PROVIDERS.append(plugin)
    try:
        yield
    finally:
        _PROVIDERS.pop()


class Registry(Generic[T]):
    """A named collection of factories (classes or functions), registered with a decorator. `checks` run on
    every new entry (and, when added, on the entries already there), so a bad plugin fails at registration.
    `version` counts the changes, so what is derived from the entries can be cached per state.

    `capabilities` names what an entry may declare it can do, each with what it promises (the fast paths that
    rely on it read it with `can`): `@SHORTCUTS.register("identity", channelwise=True)`. An entry that declares
    nothing can do nothing: the safe answer, so a new entry is never taken down a path it was not checked for."""

    def __init__(self, kind: str, capabilities: Mapping[str, str] | None = None) -> None:
        self.kind = kind
        self.version = 0
        self.capabilities = dict(capabilities or {})
        self._items: dict[str, T] = {}
        self._abilities: dict[str, frozenset[str]] = {}
        self._providers: dict[str, str] = {}
        self._checks: list[Callable[[str, T], None]] = []

    def register(self, name: str, **capabilities: bool) -> Callable[[T], T]:
        """Decorator: make `obj` available as `name`, able to do the `capabilities` declared true."""
        for flag in capabilities.keys() - self.capabilities.keys():
            raise TypeError(f"{self.kind} '{name}': unknown capability '{flag}'; allowed: "
                            f"{', '.join(self.capabilities) or 'none'}")

        def add(obj: T) -> T:
            if name in self._items:
                raise KeyError(f"{self.kind} '{name}' is registered twice")
            for check in self._checks:
                check(name, obj)
            self._items[name] = obj
            self._abilities[name] = frozenset(flag for flag, value in capabilities.items() if value)
            if _PROVIDERS:
                self._providers[name] = _PROVIDERS[-1]
            self.version += 1
            return obj

        return add

    def unregister(self, name: str) -> None:
        """Remove `name` (a plugin that is unloaded, or a test's temporary entry)."""
        del self._items[name]
        self._abilities.pop(name, None)
        self._providers.pop(name, None)
        self.version += 1

    def can(self, name: str, capability: str) -> bool:
        """Whether entry `name` declared `capability` (False for one it did not, or a name not registered)."""
        if capability not in self.capabilities:
            raise KeyError(f"{self.kind}: no capability '{capability}'")
        return capability in self._abilities.get(name, frozenset())

    def provider(self, name: str) -> str | None:
        """The plugin that registered `name` (`providing`); None for the package's own entries or a script's."""
        return self._providers.get(name)

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


_INTERVAL = re.compile(r"([\[(])\s*([^,\s]+)\s*,\s*([^\s\])]+)\s*([\])])")


class Range:
    """The numbers a key allows, written as an interval: '[0, 1)', '(0, inf)' ('inf' / '-inf' for no bound).
    `words` is how an error message says it; by default made from the interval, e.g. '0 <= p < 1' or '> 0'."""

    def __init__(self, interval: str, words: str = "") -> None:
        match = _INTERVAL.fullmatch(interval.strip())
        if match is None:
            raise ValueError(f"range '{interval}' is not an interval such as '[0, 1)' or '(0, inf)'")
        opening, self._low, self._high, closing = match.groups()
        self.low, self.high = float(self._low), float(self._high)
        self.low_in, self.high_in = opening == "[", closing == "]"
        self.interval, self.words = interval, words

    def __contains__(self, value: float) -> bool:
        above = self.low < value or (self.low_in and value == self.low)
        return above and (value < self.high or (self.high_in and value == self.high))

    def allowed(self, key: str) -> str:
        """The allowed values in words, for `key`'s messages."""
        if self.words:
            return self.words
        low, high = f"{'<=' if self.low_in else '<'}", f"{'<=' if self.high_in else '<'}"
        if self.high == float("inf"):
            return f"{low.replace('<', '>')} {self._low}"
        if self.low == float("-inf"):
            return f"{high} {self._high}"
        return f"{self._low} {low} {key} {high} {self._high}"

    def __repr__(self) -> str:
        return f"Range({self.interval!r})"


def as_range(declared: str | Range | None) -> Range | None:
    """A declared range (an interval string or a Range) as a Range."""
    return Range(declared) if isinstance(declared, str) else declared


def check_value(key: str, value: Any, allowed: Range | None, choices: Sequence[str] | None) -> None:
    """One-line UsageError unless `value` is among `choices` and inside `allowed` (either may be None)."""
    if choices is not None and value not in choices:
        raise unknown(key, value, choices)
    if allowed is not None and not isinstance(value, (bool, list, str)) and value not in allowed:
        raise UsageError(f"{key}={override_text(value)} is out of range; allowed: {allowed.allowed(key)}")


class Key(NamedTuple):
    """A config key declared by registered entries: its default, the entries taking it, its --help text, the
    values it allows and its type (the parameter's annotation, else its default's type)."""

    default: Any
    owners: tuple[str, ...]
    help: str
    range: Range | None
    choices: tuple[str, ...] | None
    type: Any


class Keyed:
    """A base for a KeyedRegistry's entries: the declarations of their parameters, empty by default."""

    param_help: dict[str, str] = {}  # parameter -> its --help text
    param_range: dict[str, str | Range] = {}  # parameter -> its allowed numbers, an interval such as "[0, 1)"
    param_choices: dict[str, Sequence[str]] = {}  # parameter -> its allowed names


@functools.cache
def parameters(cls: type) -> dict[str, Any]:
    """The keyword-only parameters of `cls.__init__` with their defaults (read-only: cached per class, since
    signature inspection is slow and a sweep asks thousands of times)."""
    sig = inspect.signature(cls.__init__)
    return {n: p.default for n, p in sig.parameters.items() if p.kind is p.KEYWORD_ONLY}


@functools.cache
def _annotations(cls: type) -> dict[str, Any]:
    """The resolved annotations of `cls.__init__` ({} when one cannot be resolved)."""
    try:
        return typing.get_type_hints(cls.__init__)
    except (NameError, TypeError):
        return {}


class KeyedRegistry(Registry[type]):
    """A registry of classes whose keyword-only `__init__` parameters (each with a default) are config keys:
    `shortcut=NAME PARAM=VALUE`. On the class, `param_help` gives a parameter's --help text, `param_range` its
    allowed numbers (an interval, see `Range`) and `param_choices` its allowed names. A parameter several
    entries take is one key, with one default; what a declaration gets wrong fails at registration."""

    def __init__(self, kind: str, capabilities: Mapping[str, str] | None = None) -> None:
        super().__init__(kind, capabilities)
        self._keys: tuple[int, dict[str, Key]] = (-1, {})
        self.add_check(self._declares_keys)

    def keys(self) -> dict[str, Key]:
        """Every entry's keys, in registration order (read-only; computed once per state of the registry)."""
        if self._keys[0] != self.version:
            keys: dict[str, Key] = {}
            for name in self:
                for param, key in self._declared(name, self.get(name)).items():
                    keys[param] = keys[param]._replace(owners=(*keys[param].owners, name)) if param in keys else key
            self._keys = (self.version, keys)
        return self._keys[1]

    def about(self, name: str) -> str:
        """The first paragraph of the entry's own docstring on one line, for --help."""
        doc = inspect.cleandoc(self.get(name).__dict__.get("__doc__") or "")
        return " ".join(doc.split("\n\n")[0].split())

    def bind(self, name: str, values: Mapping[str, Any]) -> functools.partial:
        """The entry `name` with its parameters taken from `values` (a flat config's keys: those of other
        entries are left out) and checked against their declared ranges and choices."""
        cls, keys = self.get(name), self.keys()
        own = {k: values[k] for k in parameters(cls) if k in values}
        for k, v in own.items():
            check_value(k, v, keys[k].range, keys[k].choices)
        return functools.partial(cls, **own)

    def _declared(self, name: str, cls: type) -> dict[str, Key]:
        """The keys one entry declares."""
        helps, ranges, choices = (getattr(cls, a, {}) for a in ("param_help", "param_range", "param_choices"))
        types = _annotations(cls)
        return {p: Key(d, (name,), helps.get(p, ""), as_range(ranges.get(p)),
                       tuple(choices[p]) if p in choices else None, types.get(p, type(d)))
                for p, d in parameters(cls).items()}

    def _declares_keys(self, name: str, cls: type) -> None:
        """Registration check: every parameter has a default (it becomes the key's default); the class's own
        `param_help`, `param_range` and `param_choices` name parameters; a parameter another entry takes has its
        default."""
        params, sig = parameters(cls), inspect.signature(cls.__init__)
        missing = [n for n, p in sig.parameters.items() if p.kind is p.KEYWORD_ONLY and p.default is p.empty]
        if missing:
            raise TypeError(f"{self.kind} '{name}': parameter '{missing[0]}' needs a default (it becomes a config key)")
        for attr in ("param_help", "param_range", "param_choices"):
            for param in set(cls.__dict__.get(attr, {})) - set(params):  # its own (an inherited one may be wider)
                raise TypeError(f"{self.kind} '{name}': {attr} names '{param}', which is not one of its parameters")
        known = self.keys()
        for param, key in self._declared(name, cls).items():
            if param in known and ((known[param].default, type(known[param].default)) !=
                                   (key.default, type(key.default))):
                raise UsageError(f"{self.kind} '{name}': parameter '{param}' (default {key.default!r}) clashes with "
                                 f"{', '.join(known[param].owners)}'s {param} (default {known[param].default!r}); "
                                 f"rename it")
