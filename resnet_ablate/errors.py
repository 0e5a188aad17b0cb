"""The one error type a user's mistake raises (`UsageError`: one line, exit code 2, printed by `cli.guarded`) and
the message helpers every one-line error uses (`unknown`, `closest`, `first_line`)."""
from __future__ import annotations

import difflib
from typing import Iterable


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
