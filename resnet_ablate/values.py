"""A setting's value as text, one formatter per purpose, so every tool writes a value the same way:

- `name_token`: a part of a run or sweep folder name (lists '-'-joined, a path by its file name); a change
  here renames every run, orphaning the folders already trained;
- `override_text`: the text after `key=` that one types: --help's defaults and a recipe's values, a message
  that echoes an override, a spec's YAML value handed to the parser (lists in brackets, no spaces);
- `report_text`: a value in a report: labels, cells, captions, claim contexts, figure legends (floats %g, lists
  ','-joined, None blank);
- `statistic`: a table's statistic ('fail' for a median that lands on a failed run, blank for none).

Torch-free and standard library only, so any module may import it (registry.py's messages too)."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any


def name_token(value: Any) -> str:
    """A value in a folder name: lists joined by '-' (an empty one 'none'), a path by its file name, else str."""
    if isinstance(value, list):
        return "-".join(map(str, value)) or "none"
    return Path(value).name if isinstance(value, str) and os.sep in value else str(value)


def override_text(value: Any) -> str:
    """A value as typed after `key=`: text as it is ("" when empty), lists as [a,b] (one shell word), floats
    in full, other values as YAML reads them back (true, null, 3)."""
    if isinstance(value, str):
        return value or '""'
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(map(override_text, value)) + "]"
    if isinstance(value, float):
        return repr(value)
    return json.dumps(value)


def report_text(value: Any) -> str:
    """A value in a report: floats as %g (in full where %g would round), lists and tuples joined by ',',
    None blank, else str."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return ",".join(map(report_text, value))
    if isinstance(value, float):
        short = f"{value:g}"
        return short if float(short) == value or math.isnan(value) else repr(value)
    return str(value)


def statistic(value: float | None, spec: str = ".2f") -> str:
    """A statistic's cell (`spec`, 2 decimals by default): 'fail' for a median that lands on a failed run
    (inf), blank for none."""
    return "" if value is None else "fail" if math.isinf(value) else format(value, spec)
