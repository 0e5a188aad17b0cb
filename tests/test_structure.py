"""The package's import graph runs one way: no module imports, directly or through others, a module that
imports it back (imports under TYPE_CHECKING, used only for type hints, do not count)."""
import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "resnet_ablate"


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The package modules `path` imports at run time (a `from .pkg import name` counts as pkg.name when that
    is a module, else pkg)."""
    module, tree = _module(path), ast.parse(path.read_text())
    base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    hints = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
             for n in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in hints:
            continue
        if isinstance(node, ast.ImportFrom) and node.level:
            target = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                found.add(candidate if candidate in MODULES else target)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            found |= {n for n in names if n and n.startswith("resnet_ablate")}
    return {m for m in found if m in MODULES and m != module}


MODULES = {_module(p): p for p in PACKAGE.rglob("*.py")}


def test_no_import_circles():
    graph = {m: _imports(p) for m, p in MODULES.items()}
    assert graph["resnet_ablate.training.state"] >= {"resnet_ablate.models.resnet", "resnet_ablate.training.optim"}

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph[todo.pop()] - seen:
                seen.add(nxt)
                todo.append(nxt)
        return seen

    circles = sorted(m for m in graph if m in reach(m))
    assert circles == []


def _third_party(path: Path) -> set[str]:
    """The top-level names of the packages outside this one that `path` imports (anywhere in it)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module.split(".")[0])
    return found - {"resnet_ablate"}


def test_the_folder_formats_and_status_import_no_torch_nor_training_models_or_sweeps():
    """What `status` needs (the folder formats, the states, the job records) loads in a blink: it reaches no
    module that imports torch, and none of the packages that do (training, models, sweeps, analysis)."""
    graph = {m: _imports(p) for m, p in MODULES.items()}
    reached, todo = {"resnet_ablate.status"}, ["resnet_ablate.status"]
    todo += [m for m in MODULES if m.startswith("resnet_ablate.folders")]
    reached |= set(todo)
    while todo:
        for nxt in graph[todo.pop()] - reached:
            reached.add(nxt)
            todo.append(nxt)
    heavy = ("resnet_ablate.training", "resnet_ablate.models", "resnet_ablate.sweeps", "resnet_ablate.analysis")
    assert sorted(m for m in reached if m.startswith(heavy)) == []
    assert sorted(m for m in reached if {"torch", "torchvision", "numpy"} & _third_party(MODULES[m])) == []
    assert "resnet_ablate.folders.runfolder" in reached and "resnet_ablate.folders.jobstate" in reached


def test_the_code_map_lists_every_module_below_what_it_imports():
    """docs/extending.md's code map: every module of the package, each in a row at or below the rows of the
    modules it imports (imports run one way, from the bottom of the list up)."""
    table = (PACKAGE.parent / "docs" / "extending.md").read_text().split("## Code map", 1)[1]
    rows = [re.findall(r"`([\w/]+\.py)`", line.split("|")[1]) for line in table.splitlines() if line.startswith("| `")]
    row = {f"resnet_ablate.{path[:-3].replace('/', '.')}": i for i, paths in enumerate(rows) for path in paths}
    modules = {m for m, p in MODULES.items() if p.name != "__init__.py"}
    assert sorted(modules - row.keys()) == [] and sorted(row.keys() - modules) == []
    upward = [f"{m} imports {d}" for m in modules for d in _imports(MODULES[m]) if d in row and row[d] > row[m]]
    assert sorted(upward) == []


def test_packing_and_plugins_import_no_torch():
    """What packs with what, and the plugin loader, are read by torch-free tools (the cost line's arithmetic)."""
    graph = {m: _imports(p) for m, p in MODULES.items()}
    for start in ("resnet_ablate.packing", "resnet_ablate.plugins"):
        reached, todo = {start}, [start]
        while todo:
            for nxt in graph[todo.pop()] - reached:
                reached.add(nxt)
                todo.append(nxt)
        assert sorted(m for m in reached if {"torch", "numpy"} & _third_party(MODULES[m])) == [], start
