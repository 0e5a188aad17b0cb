""".ci/run's exit code: CI fails when the README's test command fails, when the tests ran without a SLURM cluster,
or when `ruff check .` finds a lint error; run in a scratch folder with stand-ins for the README's command and the
cluster scripts."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from helpers import REPO

CLEAN, UNUSED_IMPORT = "x = 1\n", "import os\n"


def _ci(tmp_path, test_cmd: str, source: str, slurm_rc: int) -> subprocess.CompletedProcess:
    """.ci/run in a folder holding a copy of it and of pyproject.toml (ruff's settings), a README whose test command
    is `test_cmd`, cluster scripts whose start exits `slurm_rc` and whose stop leaves a file, and one module."""
    (tmp_path / ".ci").mkdir()
    shutil.copy(REPO / ".ci" / "run", tmp_path / ".ci" / "run")
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "README.md").write_text(f"# x\n\n```bash\ntrue\n{test_cmd}\n```\n")
    (tmp_path / "slurm").mkdir()
    (tmp_path / "slurm" / "start-local-slurm.sh").write_text(f"exit {slurm_rc}\n")
    (tmp_path / "slurm" / "stop-local-slurm.sh").write_text("touch stopped\n")
    (tmp_path / "module.py").write_text(source)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (tmp_path / "bin" / "python").chmod(0o755)  # this interpreter, which has ruff, as CI's `python`
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(["bash", ".ci/run"], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize("test_cmd, source, slurm_rc, code, says", [
    ("true", CLEAN, 0, 0, ""),
    ("true", UNUSED_IMPORT, 0, 1, "ci: the tests passed, but ruff check . failed (above); that is a failure"),
    ("exit 3", CLEAN, 0, 3, ""),
    ("exit 3", UNUSED_IMPORT, 0, 3, ""),
    ("true", CLEAN, 1, 1, "without a SLURM cluster the SLURM tests did not run; that is a failure"),
], ids=["clean", "lint_error", "tests_fail", "both_fail", "no_cluster"])
def test_ci_fails_on_a_failing_test_a_missing_cluster_or_a_lint_error(tmp_path, test_cmd, source, slurm_rc, code,
                                                                      says):
    proc = _ci(tmp_path, test_cmd, source, slurm_rc)
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert says in proc.stderr
    verdict = "All checks passed!" if source == CLEAN else "F401 [*] `os` imported but unused\n --> module.py:1:8"
    assert verdict in proc.stdout  # ruff ran, after failing tests too
    assert (tmp_path / "stopped").is_file()  # the cluster's stop ran on the way out
