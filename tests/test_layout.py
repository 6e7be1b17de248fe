"""The design card's boundaries: restorer never imports nerfstudio; both methods are registered."""

from __future__ import annotations

import ast
from importlib.metadata import entry_points
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> set:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_restorer_never_imports_nerfstudio():
    files = sorted((ROOT / "restorer").rglob("*.py")) + [ROOT / "method_configs" / "__init__.py"]
    assert files
    offenders = [str(f.relative_to(ROOT)) for f in files if {"nerfstudio", "artifactworld_ns"} & imported_modules(f)]
    assert offenders == []


def test_methods_are_registered_with_nerfstudio():
    registered = {ep.name: ep for ep in entry_points(group="nerfstudio.method_configs")}
    assert {"artifactworld", "artifactworld-tiny"} <= set(registered)
    full = registered["artifactworld"].load()
    tiny = registered["artifactworld-tiny"].load()
    assert full.config.method_name == "artifactworld"
    assert full.config.pipeline.datamanager.restorer_preset == "full"
    assert tiny.config.method_name == "artifactworld-tiny"
    assert tiny.config.pipeline.datamanager.restorer_preset == "tiny"
    assert tiny.config.machine.device_type == "cpu"
    assert "UNTRAINED" in tiny.description
