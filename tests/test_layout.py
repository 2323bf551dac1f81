"""DESIGN.md's import rule: launch.py -> systems/ -> models/ -> framework/, never upwards."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# package -> the packages it must not import
FORBIDDEN = {"framework": ("models", "systems", "launch"), "models": ("systems", "launch")}


def imported_packages(path: Path) -> set[str]:
    """Top-level package of every import in the file, function-local ones included."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_upward_imports(package):
    offenders = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for name in sorted(imported_packages(path) & set(FORBIDDEN[package]))
    ]
    assert not offenders, "upward imports (DESIGN.md, Layout):\n" + "\n".join(offenders)
