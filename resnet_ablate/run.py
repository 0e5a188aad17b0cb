"""`python -m resnet_ablate.run key=value ...`: parse the overrides, print the resolved config, train.

Bad input (unknown key, wrong type, bad value, missing data) ends with one line on stderr and exit 2.
A run that diverges or ends above `fail_threshold` is a result (status fail), not an error: exit 0.
"""
from __future__ import annotations

import sys
import textwrap

from .config import help_text, parse, run_dir, to_yaml
from .registry import UsageError
from .train import train


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(help_text())
        return 0
    try:
        cfg = parse(argv)
        print(f"run folder: {run_dir(cfg)}\nconfig:\n{textwrap.indent(to_yaml(cfg), '  ')}", flush=True)
        train([cfg])
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
