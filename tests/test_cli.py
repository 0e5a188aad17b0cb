"""What every command-line module shares (`cli.guarded`): a second Ctrl-C is one line and exit 130, output
into a closed pipe a quiet exit 141, each tool answers --help, and `python -m resnet_ablate` (the `resnet-ablate`
console script) lists and runs them."""
import os
import subprocess
import sys

import pytest
import tomllib
from helpers import REPO, TINY, cli_env

from resnet_ablate import __main__ as commands
from resnet_ablate import layer_responses, lr_find, status, zoo
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
    (layer_responses, "usage: python -m resnet_ablate.layer_responses RUN_DIR [RUN_DIR ...] [device=auto|cpu|cuda]\n"
                      "\nMeasures the layer responses of the 2015 paper's Fig. 7"),
])
def test_the_tools_answer_help(module, expected, capsys):
    assert module.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(expected)
    if module is lr_find:
        assert "  depth=110  (int)" in out and "  seed=0  (int)" in out


def test_python_dash_m_resnet_ablate_lists_the_commands_each_with_a_module(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "resnet_ablate", "--help"], cwd=tmp_path, capture_output=True,
                          text=True, env=cli_env(), timeout=60)
    assert proc.returncode == 0 and proc.stderr == ""
    assert proc.stdout.startswith("usage: resnet-ablate COMMAND [ARGS ...]")
    listed = [line.split()[0] for line in proc.stdout.splitlines() if line.startswith("  ")]
    assert listed == ["run", "status", "report", "lr_find", "zoo", "layer_responses"]
    assert all((REPO / "resnet_ablate" / f"{name}.py").is_file() for name in listed)


# in-process, the modules are imported already, which runpy warns about; a process of its own imports them once
@pytest.mark.filterwarnings("ignore:'resnet_ablate.:RuntimeWarning")
def test_a_command_runs_as_its_module_would_and_an_unknown_one_is_one_line(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert commands.main(["run", "dataset=cifar01"]) == 2
    assert capsys.readouterr().err == ("error: unknown dataset 'cifar01' (did you mean 'cifar10'?); allowed: cifar10, "
                                       "cifar100, synthetic, folder\n")
    assert commands.main(["zoo"]) == 0 and "| 20 | basic | original |" in capsys.readouterr().out
    assert commands.main(["fly"]) == 2
    assert capsys.readouterr().err == ("error: unknown command 'fly'; commands: run, status, report, lr_find, zoo, "
                                       "layer_responses (--help says what each does)\n")
    assert commands.main([]) == 2 and capsys.readouterr().out.startswith("usage: resnet-ablate COMMAND")


def test_the_console_script_is_the_command_list():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"resnet-ablate": "resnet_ablate.__main__:main"}
