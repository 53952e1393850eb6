"""The package table of docs/CONTRACTS.md ("Packages"), checked on every import of every module.

The table is the one copy of the rules: this test parses its "may import (of ours)" and "must
not import" columns. It walks the AST of each module, so imports inside functions count as
much as those at the top. A new arrow that the table does not allow fails here with the file,
the line and the rule.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONTRACTS = ROOT / "docs" / "CONTRACTS.md"
SECTION = "## Packages"
MAY_IMPORT = "may import (of ours)"
MUST_NOT = "must not import"
NOT_PACKAGES = {"tests", "benchmarks"}  # folders with an __init__.py that are not rooms


@dataclass(frozen=True)
class Rule:
    may_import: frozenset[str]  # packages of ours, itself not listed
    must_not_import: frozenset[str]  # third-party top-level modules


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _names(cell: str) -> frozenset[str]:
    """Backticked names of a cell (`data/` -> data); the word `nothing` is the empty set."""
    names = frozenset(name.rstrip("/") for name in re.findall(r"`([^`]+)`", cell))
    if not names and cell.strip() != "nothing":
        raise ValueError(f"cell {cell!r}: expected backticked names or 'nothing'")
    return names


def parse_package_table(markdown: str) -> dict[str, Rule]:
    """The rules of the first table after the "## Packages" heading, checked for consistency."""
    lines = markdown.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith(SECTION)]
    if not starts:
        raise ValueError(f"no {SECTION!r} section")
    rows = []
    for line in lines[starts[0] + 1 :]:
        if line.startswith("|"):
            rows.append(_cells(line))
        elif rows or line.startswith("#"):
            break
    if len(rows) < 3:
        raise ValueError(f"no table under {SECTION!r}")
    header = rows[0]
    for column in (MAY_IMPORT, MUST_NOT):
        if column not in header:
            raise ValueError(f"package table has no column {column!r}; found {header}")
    may, must_not = header.index(MAY_IMPORT), header.index(MUST_NOT)
    rules: dict[str, Rule] = {}
    for row in rows[2:]:  # rows[1] is the |---| line
        if len(row) != len(header):
            raise ValueError(f"row {row[0]!r} has {len(row)} cells, the header {len(header)}")
        (package,) = _names(row[0])
        rules[package] = Rule(_names(row[may]) - {package}, _names(row[must_not]))
    for package, rule in rules.items():
        unknown = rule.may_import - set(rules)
        if unknown:
            raise ValueError(f"{package} may import unknown package(s) {sorted(unknown)}")
        ours = rule.must_not_import & set(rules)
        if ours:
            raise ValueError(f"{package}: 'must not import' is for third-party modules: {ours}")
    return rules


RULES = parse_package_table(CONTRACTS.read_text())
OURS = set(RULES)


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
    on_disk = {p.parent.name for p in ROOT.glob("*/__init__.py")} - NOT_PACKAGES
    assert on_disk == OURS, f"packages on disk vs rows of {CONTRACTS.name}: {on_disk ^ OURS}"


@pytest.mark.parametrize("package", sorted(RULES))
def test_imports_follow_the_table(package: str) -> None:
    rule = RULES[package]
    broken = []
    for path in _modules(package):
        for line, module in _imports(path):
            top = module.split(".")[0]
            rel = path.relative_to(ROOT)
            if top in OURS and top != package and top not in rule.may_import:
                broken.append(f"{rel}:{line} imports {module} ({package} -> {top} not allowed)")
            if top in rule.must_not_import:
                broken.append(f"{rel}:{line} imports {module} ({package} must not import {top})")
    assert not broken, "\n".join(broken)


def test_the_table_keeps_the_cli_on_top() -> None:
    # the CLI imports everything and is imported by nothing
    assert RULES["tastemaker"].may_import == OURS - {"tastemaker"}
    assert not [p for p, rule in RULES.items() if "tastemaker" in rule.may_import]


def test_the_parser_reads_the_real_rows() -> None:
    assert RULES["serving"] == Rule(
        frozenset({"core", "data", "index"}), frozenset({"torch", "lightning", "pytorch_lightning"})
    )
    assert RULES["core"].may_import == frozenset()
    assert RULES["training"].may_import == {"core", "data", "models", "evaluation", "index"}
    assert RULES["jobs"].may_import == OURS - {"jobs", "tastemaker"}


TABLE = """\
# Contracts

## Packages

| folder | owns | may import (of ours) | must not import |
|---|---|---|---|
| `core/` | the ground | nothing | `torch` |
| `app/` | an app | `core` {extra} | nothing |

## Next section
"""


def test_the_parser_reads_a_known_table() -> None:
    rules = parse_package_table(TABLE.format(extra=""))
    assert rules == {
        "core": Rule(frozenset(), frozenset({"torch"})),
        "app": Rule(frozenset({"core"}), frozenset()),
    }


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (TABLE.format(extra="`nowhere`"), "unknown package"),
        (TABLE.format(extra="").replace("`core` ", "core "), "backticked names"),
        (TABLE.format(extra="").replace("nothing | `torch`", "nothing | `app`"), "third-party"),
        (TABLE.format(extra="").replace("must not import", "forbidden"), "no column"),
        (TABLE.replace("## Packages", "## Rooms"), "no '## Packages' section"),
    ],
)
def test_the_parser_refuses_a_broken_table(table: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_package_table(table)


def test_the_walker_sees_imports_inside_functions(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import os\n\ndef f():\n    from training.train import x\n    return x\n")
    assert (4, "training.train") in _imports(module)
