"""The tree is the architecture: gft_core <- workers -> webapp. The web app never imports
`workers` (tasks are sent by name through webapp/dispatch.py), so there is no import loop between
the two. Parsed with ast, so an import inside a function counts as much as one at the top."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHECKED = ("webapp",)


def imported_modules(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """(line, module) of every import statement in a Python file (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((node.lineno, module))
    return sorted(found)


def imports_of(target: str, packages: tuple[str, ...], root: Path = ROOT) -> list[str]:
    """'file:line imports module' for every import of one of `packages` under `target` (a file or folder)."""
    path = root / target
    files = [path] if path.is_file() else sorted(path.rglob("*.py"))
    return [f"{file.relative_to(root)}:{line} imports {module}"
            for file in files for line, module in imported_modules(file, root)
            if any(module == p or module.startswith(p + ".") for p in packages)]


def workers_imports(target: str, root: Path = ROOT) -> list[str]:
    return imports_of(target, ("workers",), root)


def test_the_checker_sees_every_kind_of_import(tmp_path):
    pkg = tmp_path / "webapp" / "runs"
    pkg.mkdir(parents=True)
    (pkg / "m.py").write_text("import workers.tasks\nfrom workers import celery\n"
                              "def f():\n    from workers.sink import X\n"
                              "from .. import dispatch\nNAME = 'workers.tasks.train_run'\n")
    assert workers_imports("webapp/runs", tmp_path) == [
        "webapp/runs/m.py:1 imports workers.tasks", "webapp/runs/m.py:2 imports workers",
        "webapp/runs/m.py:4 imports workers.sink"]  # not the task name string
    assert (5, "webapp") in imported_modules(pkg / "m.py", tmp_path)  # "from .. import" resolved


@pytest.mark.parametrize("target", CHECKED)
def test_the_web_app_never_imports_workers(target):
    assert (ROOT / target).exists(), target
    assert workers_imports(target) == []


def test_gft_core_is_a_plain_library():
    """gft_core knows nothing of Django, Celery, Redis or the other parts of the tree."""
    assert imports_of("gft_core", ("django", "celery", "redis", "webapp", "workers", "stack", "client")) == []
