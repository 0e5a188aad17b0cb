"""What every command-line module shares (`cli.guarded`): a second Ctrl-C is one line and exit 130, output
into a closed pipe a quiet exit 141, and each tool answers --help."""
import os
import subprocess
import sys

import pytest
from helpers import TINY, cli_env

from resnet_ablate import lr_find, status, zoo
from resnet_ablate.cli import guarded


def test_a_second_ctrl_c_is_one_line_and_exit_130(capsys):
    def interrupted(argv):
        raise KeyboardInterrupt
    assert guarded(interrupted, []) == 130
    assert capsys.readouterr().err == ("\ninterrupted; a run folder keeps its last checkpoint and the same command "
                                       "resumes from it\n")


def test_output_into_a_closed_pipe_is_a_quiet_exit_141(tmp_path):
    """`run ... dry_run=true | head`: the reader goes away; no BrokenPipeError traceback."""
    read, write = os.pipe()
    os.close(read)
    proc = subprocess.run([sys.executable, "-m", "resnet_ablate.run", *TINY, "seed=0,1,2", "dry_run=true"],
                          cwd=tmp_path, stdout=write, stderr=subprocess.PIPE, text=True, env=cli_env(), timeout=120)
    os.close(write)
    assert (proc.returncode, proc.stderr) == (141, "")


@pytest.mark.parametrize("module,expected", [
    (status, "usage: python -m resnet_ablate.status <sweep folder>\nPrints how many of a sweep's runs"),
    (zoo, "usage: python -m resnet_ablate.zoo\nPrints the parameter counts"),
    (lr_find, "usage: python -m resnet_ablate.lr_find [start_lr=1e-05] [end_lr=10.0] [steps=200] [training key"),
])
def test_the_tools_answer_help(module, expected, capsys):
    assert module.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(expected)
    if module is lr_find:
        assert "  depth=110  (int)" in out and "  seed=0  (int)" in out
