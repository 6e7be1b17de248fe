"""No import cycles in the package: every ``import`` of one of its modules by another, at module level or inside a
function, is an edge, and the graph must have no cycle (a cycle of function-local imports is still a cycle of
responsibilities; the restorer's construction -> memory_profiles -> pipeline -> construction was one).

The one exception is a module's ``__getattr__`` (PEP 562), which only resolves names that saved run configs still
use from a module's old home.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def package_modules() -> dict[str, tuple[Path, bool]]:
    """Module name -> (file, is a package ``__init__``), from pyproject's package folders."""
    package_dirs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    modules = {}
    for package, folder in package_dirs.items():
        for path in (REPO / folder).rglob("*.py"):
            parts = [p for p in path.relative_to(REPO / folder).with_suffix("").parts if p != "__init__"]
            name = ".".join([package, *parts])
            if name.split(".")[:2] == ["artifactworld_ns", "restorer"] and package == "artifactworld_ns":
                continue  # artifactworld_ns/ has no restorer folder; guard against a stray one
            modules[name] = (path, path.name == "__init__.py")
    return modules


def imported_modules(tree: ast.Module, name: str, is_package: bool, known: set[str]) -> set[str]:
    base = name.split(".") if is_package else name.split(".")[:-1]
    skip = {
        id(n)
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and node.name == "__getattr__"
        for n in ast.walk(node)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom):
            target = (
                ".".join(base[: len(base) - node.level + 1] + [node.module or ""]).strip(".")
                if node.level
                else node.module
            )
            candidates = [target] + [f"{target}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        found |= {c for c in candidates if c in known and c != name}
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of modules, or None (depth-first search)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for other in sorted(graph[module]):
            if state.get(other) == 1:
                return path[path.index(other) :] + [other]
            if other not in state and (cycle := visit(other)) is not None:
                return cycle
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)) is not None:
            return cycle
    return None


def import_graph() -> dict[str, set[str]]:
    modules = package_modules()
    known = set(modules)
    return {
        name: imported_modules(ast.parse(path.read_text()), name, is_package, known)
        for name, (path, is_package) in modules.items()
    }


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert "artifactworld_ns.restorer.configs" in graph and "artifactworld_ns.trainer" in graph
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_the_model_configurations_are_a_leaf():
    """Everything may import the configurations; they import nothing of the package."""
    assert import_graph()["artifactworld_ns.restorer.configs"] == set()


def test_the_cycle_check_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
