"""A researcher's own variant as an installed plugin package (plugins.py), made visible here without pip: a
dist-info folder on the path declares the entry point, as `pip install -e` would. Its shortcut trains from the
command line and in a sweep's local jobs (in SLURM jobs: tests/test_slurm.py), the run records
the plugin, `status` counts its runs and `report` knows them; a report without the plugin names the one to
install, and never imports a module because a run folder names it. A plugin that fails to import is one line,
and --help still works."""
from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import pytest
from helpers import DONE, TINY, use_cli_env

from resnet_ablate import plugins, report, run, status
from resnet_ablate.training.config import ENTRIES
from resnet_ablate.training.configfile import run_name
from resnet_ablate.training.parse import parse

PLUGIN = '''"""A shortcut of one's own, in a package of one's own."""
from resnet_ablate.models.shortcuts import SHORTCUTS, Shortcut


@SHORTCUTS.register("channel_centred")
class ChannelCentred(Shortcut):
    """x + F(x) - the mean of F(x) over its channels."""

    def merge(self, s, f):
        return s + f - f.mean(1, keepdim=True)
'''
NEEDS = ("config.yaml: shortcut 'channel_centred' comes from the plugin ablate-extra 0.1, which is not installed "
         "here: pip install ablate-extra")


def make_plugin(site: Path, module: str, code: str, dist: str = "ablate-extra", version: str = "0.1") -> Path:
    """A plugin as pip installs one, without pip: `module` and a dist-info folder declaring it in the group
    resnet_ablate.plugins, in `site` (a folder for the path)."""
    site.mkdir(parents=True, exist_ok=True)
    (site / f"{module}.py").write_text(code)
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[{plugins.GROUP}]\n{module} = {module}\n")
    return site


@contextlib.contextmanager
def installed(site: Path, module: str):
    """The plugins in `site` visible and loaded in this process while the block runs, as in a fresh process;
    then their entries and module gone again."""
    before = {key: set(registry) for key, registry in ENTRIES.items()}
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(site))
        mp.setattr(plugins, "_loaded", None)
        try:
            yield
        finally:
            for key, registry in ENTRIES.items():
                for name in set(registry) - before[key]:
                    registry.unregister(name)
            sys.modules.pop(module, None)


@pytest.fixture
def site(tmp_path) -> Path:
    return make_plugin(tmp_path / "site", "ablate_extra", PLUGIN)


def test_a_plugin_trains_in_local_jobs_is_recorded_and_counted_and_a_report_without_it_names_it(
        site, tmp_path, monkeypatch, capsys):
    sweep = tmp_path / "sweep"
    use_cli_env(monkeypatch, site)  # the local jobs are processes of their own: the plugin on their path
    with installed(site, "ablate_extra"):
        assert run.main([*DONE, "shortcut=channel_centred", "seed=0,1", "pack_mode=wide", "runs_per_job=2",
                         "launcher=local", f"sweep_dir={sweep}"]) == 0
        names = [run_name(parse([*DONE, "shortcut=channel_centred", "pack_mode=wide", f"seed={s}"])) for s in (0, 1)]
        assert report.main([str(sweep), "--out", str(tmp_path / "with"), "--formats", "png"]) == 0
    results = [json.loads((sweep / n / "result.json").read_text()) for n in names]
    assert [(r["status"], r["pack_mode"], r["pack_runs"]) for r in results] == [("done", "streams", 2)] * 2
    log = next((sweep / ".submitit").glob("*_0_log.out")).read_text()
    assert "note: pack_mode=wide cannot pack these 2 runs (shortcut 'channel_centred' does not declare " \
           "channelwise); they step as streams" in log
    assert (sweep / names[0] / "config.yaml").read_text().endswith("\nplugins:\n  shortcut: ablate-extra 0.1\n")
    assert "damaged" not in (tmp_path / "with" / "report.md").read_text()
    capsys.readouterr()
    assert status.main([str(sweep)]) == 0  # status reads no key: it needs no plugin
    assert capsys.readouterr().out.startswith(f"{sweep}: 2 runs: 2 done, 0 fail\n")
    with pytest.MonkeyPatch.context() as mp:  # the module importable, but no plugin installed: never imported
        mp.syspath_prepend(str(tmp_path / "bare"))
        (tmp_path / "bare").mkdir()
        (tmp_path / "bare" / "ablate_extra.py").write_text(PLUGIN)
        assert report.main([str(sweep), "--out", str(tmp_path / "without"), "--formats", "png"]) in (0, 2)
        assert "ablate_extra" not in sys.modules
    shown = capsys.readouterr()
    assert f"{sweep / names[0]}: {NEEDS}" in shown.out + shown.err


def test_a_plugin_that_fails_to_import_is_one_line_and_help_still_works(tmp_path, capsys):
    site = make_plugin(tmp_path / "site", "ablate_broken", "raise ImportError('no module named torch_extras')",
                       dist="ablate-broken")
    with installed(site, "ablate_broken"):
        assert run.main(["--help"]) == 0
        out, err = capsys.readouterr()
        assert err == ("warning: plugin ablate-broken 0.1 (ablate_broken) did not load, so its entries are missing: "
                       "ImportError: no module named torch_extras\n")
        assert "shortcut=identity" in out
        assert run.main([*TINY, "dry_run=true", f"run_dir={tmp_path / 'r'}"]) == 0
        assert capsys.readouterr().err == ""  # loaded once a process: said once
