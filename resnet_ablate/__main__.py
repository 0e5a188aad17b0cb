"""`python -m resnet_ablate COMMAND ...` and the `resnet-ablate COMMAND ...` console script: the package's
commands under one name. Each command runs exactly as `python -m resnet_ablate.COMMAND ...` does (its module
as __main__, so its own signal handling and exit codes hold); with no command or --help, the list.
"""
from __future__ import annotations

import runpy
import sys

# command: what it does, in a line (each module's --help says the rest)
COMMANDS = {
    "run": "train a run, or a sweep of runs (a spec, comma lists, random search), inline, locally or on SLURM",
    "status": "where each run of a sweep stands, and why",
    "report": "tables, figures and the papers' claims judged, from run folders",
    "lr_find": "the lr range test",
    "zoo": "parameter counts of the papers' nets beside the papers' figures",
    "layer_responses": "the 2015 paper's layer responses from a run folder's checkpoint",
}
USAGE = "usage: resnet-ablate COMMAND [ARGS ...]   (or python -m resnet_ablate COMMAND [ARGS ...])"


def help_text() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:{width}}  {what}" for name, what in COMMANDS.items()]
    return "\n".join([USAGE, "", "commands:", *lines, "",
                      "COMMAND --help lists its keys; `python -m resnet_ablate.COMMAND ...` is the same command."])


def main(argv: list[str] | None = None) -> int:
    """Run COMMAND as its module's __main__ with the remaining arguments; the list for none or --help, one line
    and exit 2 for an unknown one."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help", "help"):
        print(help_text())
        return 0 if args else 2
    command = args[0].replace("-", "_")
    if command not in COMMANDS:
        print(f"error: unknown command '{args[0]}'; commands: {', '.join(COMMANDS)} (--help says what each does)",
              file=sys.stderr)
        return 2
    sys.argv = [f"resnet-ablate {args[0]}", *args[1:]]
    try:
        runpy.run_module(f"resnet_ablate.{command}", run_name="__main__", alter_sys=True)
    except SystemExit as e:  # the command's own exit code
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
