"""A setting's value as text, one formatter per purpose, so every tool writes a value the same way:

- `name_token`: a part of a run or sweep folder name (lists '-'-joined, a path by its file name); a change
  here renames every run, orphaning the folders already trained;
- `override_text`: the text after `key=` that one types: --help's defaults and a recipe's values, a message
  that echoes an override, a spec's YAML value handed to the parser (lists in brackets, no spaces);
- `yaml_verbatim`: such a text for a key of type str, quoted for YAML so that it is read back as typed;
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


def yaml_verbatim(text: str) -> str:
    """A text value for a key of type str as YAML reads it back unchanged (OmegaConf types `key=value` as YAML):
    in single quotes, so ' #' starts no comment and ': ' no mapping (`run_dir=runs #2` named the folder 'runs');
    a value already in quotes (`""`, as `override_text` writes an empty one) is left to YAML."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text
    return "'" + text.replace("'", "''") + "'"


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
