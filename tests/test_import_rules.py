"""The package table of docs/CONTRACTS.md ("Packages"), checked on every import of every module.

Walks the AST of each module, so imports inside functions count as much as those at the top.
A new arrow that the table does not allow fails here with the file, the line and the rule.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# package -> the packages of ours it may import (itself always allowed)
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "data": {"core"},
    "world": {"core", "data"},
    "index": {"core"},
    "models": {"core"},
    "evaluation": {"core", "data", "models"},
    "training": {"core", "data", "models", "evaluation", "index"},
    "jobs": {"core", "data", "world", "index", "models", "evaluation", "training", "serving"},
    "serving": {"core", "data", "index"},
    "tastemaker": {
        "core",
        "data",
        "world",
        "index",
        "models",
        "evaluation",
        "training",
        "serving",
        "jobs",
    },
}
# third-party modules a package must never import
FORBIDDEN_THIRD_PARTY: dict[str, set[str]] = {
    "serving": {"torch", "pytorch_lightning", "lightning"},
    "models": {"pytorch_lightning", "lightning"},
    "index": {"torch", "pytorch_lightning", "lightning"},
    "data": {"torch", "pytorch_lightning", "lightning"},
    "core": {"torch", "pytorch_lightning", "lightning"},
}
OURS = set(ALLOWED)


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def test_every_package_is_in_the_table() -> None:
    on_disk = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests", "benchmarks"}
    assert on_disk == OURS, f"packages without a row in ALLOWED: {on_disk ^ OURS}"


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_follow_the_table(package: str) -> None:
    broken = []
    for path in _modules(package):
        for line, module in _imports(path):
            top = module.split(".")[0]
            rel = path.relative_to(ROOT)
            if top in OURS and top != package and top not in ALLOWED[package]:
                broken.append(f"{rel}:{line} imports {module} ({package} -> {top} not allowed)")
            if top in FORBIDDEN_THIRD_PARTY.get(package, set()):
                broken.append(f"{rel}:{line} imports {module} ({package} must not import {top})")
    assert not broken, "\n".join(broken)


def test_nothing_imports_the_cli_package() -> None:
    users = [
        f"{path.relative_to(ROOT)}:{line}"
        for package in sorted(OURS - {"tastemaker"})
        for path in _modules(package)
        for line, module in _imports(path)
        if module.split(".")[0] == "tastemaker"
    ]
    assert not users, f"tastemaker/ is the top; imported by {users}"


def test_the_walker_sees_imports_inside_functions(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import os\n\ndef f():\n    from training.train import x\n    return x\n")
    assert (4, "training.train") in _imports(module)
