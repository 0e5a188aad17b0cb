"""Every example command of README.md and docs/*.md runs as the page shows it: page by page, in a temporary
copy of the checkout's user-facing folders, in-process through each module's `main(argv)`. Long trainings and
sweeps get `dry_run=true`, which checks every key and value and stops before the data are read. A doc command
with an unknown key, a removed module or a wrong folder fails here. The conventions (markers, what runs how)
are in docs/extending.md, "The docs' own test"."""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import os
import re
import shlex
import shutil
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from helpers import REPO, write_fake_cifar

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
COPIED = ("ablations", "slurm", "bench", "results")  # what the docs' relative paths name, from the repo root
MARK = re.compile(r"<!--\s*(?:doc-test:\s*(?P<mode>as-written)|not-run:\s*(?P<why>.*?))\s*-->")
COMMAND_LANGS, TEXT_LANGS = ("bash", "console"), ("text", "yaml", "toml", "")
OWN_COMMAND = re.compile(r"python3? (-m resnet_ablate\b|bench/)")
OPTIONS_WITH_VALUES = {"--out", "--layout", "--formats", "--grad-measure"}  # report's; its runs_dir is positional


class Stopped(Exception):
    """Raised where a command would read the data or start measuring: it was checked up to that point."""


@dataclass
class Block:
    """A fenced code block: its page, first line (1-based), language, lines and how the test runs it."""

    page: str
    line: int
    lang: str
    lines: list[str]
    mode: str = "dry"  # dry (long runs get dry_run=true), as-written, or not-run
    why: str = ""


@dataclass
class Command:
    """One command of a block, with the output a console block shows after it."""

    text: str
    where: str
    expected: list[str] = field(default_factory=list)


def read_blocks(name: str, text: str) -> list[Block]:
    """The fenced blocks of a page, each with the marker on the line before it (if any)."""
    lines, blocks, i = text.splitlines(), [], 0
    while i < len(lines):
        opening = re.fullmatch(r"```(\S*)\s*", lines[i])
        if not opening:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        before = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        mark = MARK.fullmatch(before)
        block = Block(name, i + 1, opening.group(1), lines[i + 1:end])
        if mark and mark.group("mode"):
            block.mode = "as-written"
        elif mark:
            block.mode, block.why = "not-run", mark.group("why")
        blocks.append(block)
        i = end + 1
    return blocks


def commands(block: Block) -> list[Command]:
    """bash: every line (continuations joined, comments dropped); console: each `$ ` line and the lines after
    it (its output)."""
    found: list[Command] = []
    pending = ""
    for n, line in enumerate(block.lines, block.line + 1):
        if block.lang == "console" and not line.startswith("$ ") and not pending:
            if found:
                found[-1].expected.append(line.rstrip())
            continue
        line = line.removeprefix("$ ") if not pending else line
        pending += line.rstrip().removesuffix("\\") + " " if line.rstrip().endswith("\\") else line
        if not line.rstrip().endswith("\\"):
            if pending.strip() and not pending.strip().startswith("#"):
                found.append(Command(pending.strip(), f"{block.page}:{n}"))
            pending = ""
    return found


def ci_lines(text: str) -> list[str]:
    """The command lines of README.md's first code block, exactly as .ci/run's awk reads them."""
    fences, out = 0, []
    for line in text.splitlines():
        if line.startswith("```"):
            fences += 1
        elif fences == 1 and re.match(r"[^#\s]", line):
            out.append(line)
    return out


def slug(heading: str) -> str:
    """A heading's anchor as GitHub makes it: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


class Sandbox:
    """The folder a page's commands run in, and what they leave for the next: the last exit code and the
    sweep folders their dry runs named."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root, self.mp, self.rc, self.dry_output = root, monkeypatch, 0, ""
        self.dry_runs: dict[tuple[str, ...], tuple[int, str]] = {}  # a dry run writes nothing: the same one again
        for name in COPIED:
            shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        data = root / "data"
        write_fake_cifar(data, "cifar10")
        write_fake_cifar(data, "cifar100")
        (root / "home").mkdir()
        monkeypatch.chdir(root)
        monkeypatch.setenv("RESNET_ABLATE_DATA", str(data))
        monkeypatch.setenv("HOME", str(root / "home"))
        if importlib.util.find_spec("wandb") is None:  # logger=wandb is checked, in a dry run, against a stand-in
            monkeypatch.setitem(sys.modules, "wandb", types.ModuleType("wandb"))

    def run(self, cmd: Command, mode: str) -> tuple[int, str]:
        """Run one command line (`A && B` goes on only after a zero exit code); its exit code and output."""
        out = io.StringIO()
        rc = 0
        for env, argv in split(cmd.text):
            with self.mp.context() as mp, contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                for key, value in env.items():
                    mp.setenv(key, value)
                rc = self.dispatch(argv, mode, cmd, mp)
            if rc != 0:
                break
        self.rc = rc
        return rc, out.getvalue()

    def dispatch(self, argv: list[str], mode: str, cmd: Command, mp: pytest.MonkeyPatch) -> int:
        """One program: pip, the suite, a module of the package or a bench script; anything else fails."""
        if argv[:2] == ["pip", "install"]:
            return check_pip(argv, cmd)
        if argv[:3] == ["python", "-m", "pytest"]:
            return 0  # the suite itself (README's second command, which .ci/run runs)
        if argv[:2] == ["python", "-m"] and argv[2].split(".")[0] == "resnet_ablate":
            return self.module(argv[2], argv[3:], mode, cmd, mp)
        if argv[0] in ("python", "python3") and len(argv) > 1 and argv[1].startswith("bench/"):
            return self.bench(argv[1], argv[2:], mode, mp)
        pytest.fail(f"{cmd.where}: `{cmd.text}` is no command the docs test runs; if it cannot run here, mark its "
                    f"block <!-- not-run: why -->")

    def module(self, name: str, args: list[str], mode: str, cmd: Command, mp: pytest.MonkeyPatch) -> int:
        """`python -m resnet_ablate.X args` through X.main(args): run with dry_run=true, lr_find stopped at its
        data, unless as-written or --help; a status/report of a folder that only a dry run named is expected to
        find it missing."""
        try:
            module = importlib.import_module(f"{name}.__main__" if name == "resnet_ablate" else name)
        except ModuleNotFoundError as e:
            pytest.fail(f"{cmd.where}: `{cmd.text}`: no module {name} ({e})")
        helping = any(a in ("-h", "--help") for a in args)
        if mode == "dry" and not helping:
            if name == "resnet_ablate.run" and not any(a.startswith("dry_run=") for a in args):
                args = [*args, "dry_run=true"]
            if name == "resnet_ablate.lr_find":
                mp.setattr(importlib.import_module("resnet_ablate.training.state"), "load_data", stop)
        folder = runs_dir(name, args)
        if folder is not None and not folder.exists():
            assert announced(folder, self.dry_output), \
                f"{cmd.where}: `{cmd.text}` reads {folder}, which no command before it on this page made or named"
            with contextlib.redirect_stderr(io.StringIO()) as err:
                rc = call(module.main, args)
            said = err.getvalue()
            assert rc == 2 and said.startswith("error: ") and said.count("\n") == 1 and announced(folder, said), \
                f"{cmd.where}: expected the one-line error of a missing {folder}, got exit code {rc}: {said}"
            return 0
        if name != "resnet_ablate.run" or "dry_run=true" not in args:
            self.dry_runs.clear()  # it may write: what a dry run said before may no longer hold
            return call(module.main, args)
        if tuple(args) not in self.dry_runs:
            with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.redirect_stderr(out):
                rc = call(module.main, args)
            self.dry_runs[tuple(args)] = rc, out.getvalue()
        rc, printed = self.dry_runs[tuple(args)]
        print(printed, end="")
        return rc

    def bench(self, script: str, args: list[str], mode: str, mp: pytest.MonkeyPatch) -> int:
        """`python bench/X.py args` through X.main() with sys.argv set; stopped at its first measurement
        unless as-written or --help."""
        spec = importlib.util.spec_from_file_location(Path(script).stem, self.root / script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        if mode == "dry":  # each script's first measurement: the bench's loops and op count, the checks' first runs
            for name in ("tutorial_loop", "trainer", "count_main", "runs", "package_step", "timed_load", "measure_conv",
                         "run_piece"):
                if hasattr(module, name):
                    mp.setattr(module, name, stop)
        mp.setattr(sys, "argv", [script, *args])
        return call(module.main)


def stop(*args, **kwargs):
    """Stands in for loading the data or measuring."""
    raise Stopped()


def call(main, *args) -> int:
    """A main's exit code: its return value, SystemExit's code (argparse), or 0 when it reached `stop`."""
    try:
        return main(*args)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 1
    except Stopped:
        print("(stopped where it would read the data or start measuring)")
        return 0


def split(text: str) -> list[tuple[dict[str, str], list[str]]]:
    """A shell line as (environment assignments, argv) per `&&` part, with $VARIABLES expanded."""
    parts: list[list[str]] = [[]]
    for token in shlex.split(text, comments=True):
        parts.append([]) if token == "&&" else parts[-1].append(token)
    out = []
    for part in parts:
        env = {}
        while part and re.fullmatch(r"[A-Za-z_]\w*=.*", part[0]):
            key, value = part.pop(0).split("=", 1)
            env[key] = value
        out.append((env, [os.path.expandvars(t) for t in part]))
    return out


def runs_dir(name: str, args: list[str]) -> Path | None:
    """The folder a status or report command reads."""
    if name not in ("resnet_ablate.status", "resnet_ablate.report") or any(a in ("-h", "--help") for a in args):
        return None
    positional = [a for i, a in enumerate(args) if not a.startswith("-") and (i == 0 or args[i - 1] not in
                                                                            OPTIONS_WITH_VALUES)]
    return Path(positional[0]) if positional else None


def announced(folder: Path, output: str) -> bool:
    """Whether a dry run's output names `folder` (as a whole path, not the start of a longer one)."""
    return re.search(re.escape(str(folder).rstrip("/")) + r"(?![\w.=-])", output) is not None


def check_pip(argv: list[str], cmd: Command) -> int:
    """`pip install -e .` or `-e '.[extra,...]'`: this checkout, with extras pyproject.toml declares."""
    target = argv[-1]
    assert argv[2:-1] == ["-e"] and re.fullmatch(r"\.(\[[\w,]+\])?", target), f"{cmd.where}: unexpected `{cmd.text}`"
    section = (REPO / "pyproject.toml").read_text().split("[project.optional-dependencies]", 1)[-1].split("\n[", 1)[0]
    declared = re.findall(r"^(\w+)\s*=", section, re.M)  # (no tomllib: Python 3.10 is supported)
    for extra in re.findall(r"\w+", target[1:]):
        assert extra in declared, f"{cmd.where}: pyproject.toml declares no extra '{extra}' ({', '.join(declared)})"
    return 0


def matches(expected: list[str], actual: str) -> bool:
    """The shown lines, in order and whole, `...` standing for any lines."""
    pattern = "".join(r"(?:[^\n]*\n)*?" if line == "..." else re.escape(line) + r"\n" for line in expected)
    text = "".join(line.rstrip() + "\n" for line in actual.splitlines())
    return re.fullmatch(pattern, text) is not None


def expected_code(cmds: list[Command], i: int, mode: str) -> int:
    """0, or 2 for a command whose shown output is an error line, or what a following `$ echo $?` shows."""
    after = cmds[i + 1] if i + 1 < len(cmds) else None
    if mode == "as-written" and after is not None and after.text == "echo $?":
        return int(after.expected[0])
    return 2 if any(line.startswith("error: ") for line in cmds[i].expected) else 0


@contextlib.contextmanager
def registries_restored():
    """Registries as they were: a page's python blocks may register a shortcut or a unit."""
    from resnet_ablate import report, run  # noqa: F401  (imports every registry, the report's figures too)
    from resnet_ablate.registry import Registry

    found = {id(v): v for m in list(sys.modules.values()) if m and m.__name__.startswith("resnet_ablate")
             for v in vars(m).values() if isinstance(v, Registry)}
    before = {key: set(r.names()) for key, r in found.items()}
    try:
        yield
    finally:
        for key, registry in found.items():
            for name in set(registry.names()) - before[key]:
                registry.unregister(name)


def run_page(name: str, text: str, sandbox: Sandbox) -> int:
    """Run every block of a page in order; the number of not-run blocks."""
    skipped = 0
    with registries_restored():
        for block in read_blocks(name, text):
            where = f"{name}:{block.line}"
            if block.lang not in (*COMMAND_LANGS, "python"):
                assert block.lang in TEXT_LANGS and not any(OWN_COMMAND.search(line) or line.startswith("$ ")
                                                            for line in block.lines), \
                    f"{where}: a ```{block.lang} block holding commands; make it ```bash or ```console"
                continue
            if block.mode == "not-run":
                assert block.why, f"{where}: <!-- not-run: --> needs its reason"
                assert not any("resnet_ablate" in line or OWN_COMMAND.search(line) for line in block.lines), \
                    f"{where}: a not-run block holds a command or code of this package, which must be checked"
                skipped += 1
                continue
            if block.lang == "python":
                run_python(block, where)
                continue
            run_commands(block, sandbox)
    return skipped


def run_python(block: Block, where: str) -> None:
    """Execute a python block as a script would, its prints captured."""
    code = compile("\n".join(block.lines) + "\n", where, "exec")
    with contextlib.redirect_stdout(io.StringIO()):
        exec(code, {"__name__": "__docs__"})


def run_commands(block: Block, sandbox: Sandbox) -> None:
    """Run a bash or console block's commands in order, each to its expected exit code (and, as-written, its
    shown output)."""
    cmds = commands(block)
    for i, cmd in enumerate(cmds):
        if cmd.text == "echo $?":
            assert block.lang == "console" and i > 0, f"{cmd.where}: `echo $?` belongs after a console command"
            if block.mode == "as-written":
                assert str(sandbox.rc) == cmd.expected[0], f"{cmd.where}: exit code {sandbox.rc}, the page shows " \
                                                           f"{cmd.expected[0]}"
            continue
        rc, output = sandbox.run(cmd, block.mode)
        if block.mode == "dry":
            sandbox.dry_output += output
        want = expected_code(cmds, i, block.mode)
        assert rc == want, f"{cmd.where}: `{cmd.text}` exited {rc}, expected {want}; it printed:\n{output[-3000:]}"
        if block.mode == "as-written" and block.lang == "console":
            assert matches(cmd.expected, output), \
                f"{cmd.where}: `{cmd.text}` printed\n{output}\nwhere the page shows\n" + "\n".join(cmd.expected)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_command_of_the_page_runs(page, tmp_path, monkeypatch):
    """Each page in its own sandbox; its not-run blocks (root, network, other tools) stay few."""
    threads = torch.get_num_threads()  # a page's `threads=1` must not change the tests that run after it
    try:
        skipped = run_page(page.relative_to(REPO).as_posix(), page.read_text(), Sandbox(tmp_path, monkeypatch))
    finally:
        torch.set_num_threads(threads)
    assert skipped <= 2, f"{page.name}: {skipped} not-run blocks; keep them few"


def test_the_readme_keeps_the_two_commands_ci_runs_and_points_at_every_page():
    """Install-and-run first, install-and-test second (what .ci/run reads); short; every docs page linked."""
    readme = (REPO / "README.md").read_text()
    first, second = ci_lines(readme)[:2]
    assert first.startswith("pip install -e . && python -m resnet_ablate.run"), first
    assert second.startswith("pip install -e '.[dev]' && python -m pytest"), second
    assert "sed -n 2p" in (REPO / ".ci" / "run").read_text()  # .ci/run runs the second one
    assert len(readme.splitlines()) < 200
    for page in PAGES[1:]:
        assert f"](docs/{page.name})" in readme, f"README.md's 'Where to read on' does not list docs/{page.name}"


def test_links_between_pages_lead_somewhere():
    """Every relative link of a page names a file that exists, and a heading of it where it names one."""
    for page in PAGES:
        for target, anchor in re.findall(r"\]\((?!https?:)([^)#\s]*)(?:#([^)\s]*))?\)", page.read_text()):
            path = (page.parent / target).resolve() if target else page
            assert path.exists(), f"{page.name}: link to {target}, which does not exist"
            if anchor and path.suffix == ".md":
                headings = [slug(h) for h in re.findall(r"^#+ (.*)$", path.read_text(), re.M)]
                assert anchor in headings, f"{page.name}: link to {target}#{anchor}: no such heading"


@pytest.mark.parametrize("doc, error", [
    ("```bash\npython -m resnet_ablate.run depht=20\n```\n", "unknown key 'depht'"),
    ("```bash\npython -m resnet_ablate.trian depth=20\n```\n", "no module resnet_ablate.trian"),
    ("```bash\npython -m resnet_ablate.status runs/nowhere\n```\n", "which no command before it"),
    ("```bash\nrm -rf runs\n```\n", "no command the docs test runs"),
    ("<!-- not-run: slow -->\n```bash\npython -m resnet_ablate.zoo\n```\n", "must be checked"),
    ("```text\n$ python -m resnet_ablate.zoo\n```\n", "make it ```bash"),
    ("```bash\npip install -e '.[gpu]'\n```\n", "no extra 'gpu'"),
    ("<!-- doc-test: as-written -->\n```console\n$ python -m resnet_ablate.run depth=57\nerror: depth 57 is odd\n```\n",
     "where the page shows"),
])
def test_a_wrong_doc_command_fails(doc, error, tmp_path, monkeypatch):
    """The checker itself: an unknown key, a removed module, a folder nothing made, a foreign command, a
    package command hidden in a not-run or text block, an unknown extra, output that differs."""
    with pytest.raises((AssertionError, pytest.fail.Exception), match=re.escape(error)):
        run_page("doc.md", doc, Sandbox(tmp_path, monkeypatch))


def test_the_states_table_says_what_the_state_module_says():
    """The words for where a run stands are documented once, in docs/run-folders.md, and defined once, in
    folders/states.py: both list the same states, in the same order, with the same meaning."""
    from resnet_ablate.folders import states

    doc = (REPO / "docs" / "run-folders.md").read_text()
    section = doc.split("## Where a run stands", 1)[1].split("\n## ", 1)[0]
    rows = [line.strip("|").split("|") for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    table = {state.strip(): meaning.strip() for state, meaning in rows[1:]}
    assert list(table) == [s.value for s in states.State]
    text = states.__doc__.split("state        meaning", 1)[1].split("\n\n", 1)[0]
    in_module = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("    ") and not line.startswith("                 "):
            name, meaning = re.split(r"\s{2,}", line.strip(), maxsplit=1)
            in_module[name] = meaning
        else:
            in_module[name] += " " + line.strip()
    assert in_module == table


def test_the_campaigns_2015_recipe_item_passes_recipe_he2015():
    """Issue 28 item 4: results/CAMPAIGN.md's item 1 is labelled the 2015 recipe."""
    commands = (REPO / "results" / "CAMPAIGN.md").read_text().replace("\\\n", " ").splitlines()
    line = next(line for line in commands if "# item 1 " in line)
    assert "recipe=he2015" in line and "normalize=" not in line
