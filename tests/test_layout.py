"""DESIGN.md's import rule: launch.py -> systems/ -> models/ -> framework/, never upwards."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# package -> the packages it must not import
FORBIDDEN = {"framework": ("models", "systems", "launch"), "models": ("systems", "launch")}


def imported_modules(path: Path) -> set[str]:
    """Dotted name of every module the file imports (absolute imports), function-local ones included;
    `from a.b import c` counts as a.b and a.b.c (c may be a module)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def imported_packages(path: Path) -> set[str]:
    """Top-level package of every import in the file, function-local ones included."""
    return {name.split(".")[0] for name in imported_modules(path)}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_upward_imports(package):
    offenders = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for name in sorted(imported_packages(path) & set(FORBIDDEN[package]))
    ]
    assert not offenders, "upward imports (DESIGN.md, Layout):\n" + "\n".join(offenders)


TOY_TRAINING = ROOT / "models" / "priors" / "toy" / "training"


def test_nothing_else_in_models_imports_the_toy_prior_training():
    """models/priors/toy/training/ trains the toy priors and comes last in models/ (it may import
    models.guidance); the rest of models/ never builds on it. The configs reach it by _target_."""
    offenders = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in sorted((ROOT / "models").rglob("*.py"))
        if TOY_TRAINING not in path.parents
        for name in sorted(imported_modules(path))
        if name == "models.priors.toy.training" or name.startswith("models.priors.toy.training.")
    ]
    assert not offenders, "imports of the toy-prior training package from elsewhere in models/:\n" + "\n".join(offenders)
