"""DESIGN.md's import rules, read from the source (function-level imports included):

- layers: launch.py -> systems/ -> models/ -> framework/, never upwards;
- no import cycle between any two modules of the project;
- inside models/, a stated order of sub-packages (docs/architecture.md): each imports only itself
  and those before it, so the sub-packages cannot form a cycle either.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("framework", "models", "systems")
# package -> the packages it must not import
FORBIDDEN = {"framework": ("models", "systems", "launch"), "models": ("systems", "launch")}
# models/ sub-packages, lowest first. Training the toy priors uses guidance's CFG and nothing
# imports it, so it is a unit of its own after guidance.
MODELS_ORDER = (
    "encodings",
    "geometry",
    "materials",
    "backgrounds",
    "renderers",
    "priors",
    "prompt_processors",
    "guidance",
    "priors.toy.training",
)


def imported_names(path: Path, package: str = "") -> set[str]:
    """Every import in the file as a dotted name; `from a import b` gives both a and a.b. Relative
    imports are resolved against `package`, the dotted package the file is in."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    """Project module -> the project modules it imports (a name that is no module of the project,
    e.g. a class in `from a.b import C`, counts as its module a.b)."""
    files = [p for package in packages for p in sorted((root / package).rglob("*.py"))]
    if (root / "launch.py").is_file():
        files.append(root / "launch.py")
    modules = {module_name(p, root): p for p in files}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        graph[name] = {n for n in imported_names(path, package) if n in modules and n != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def models_unit(module: str) -> str | None:
    """The MODELS_ORDER entry a models.* module belongs to (the longest that matches)."""
    rest = module.removeprefix("models.")
    matches = [u for u in MODELS_ORDER if rest == u or rest.startswith(u + ".")]
    return max(matches, key=len) if matches else None


def order_violations(graph: dict[str, set[str]]) -> list[str]:
    rank = {unit: i for i, unit in enumerate(MODELS_ORDER)}
    found = []
    for module, deps in sorted(graph.items()):
        unit = models_unit(module)
        if unit is None:
            continue
        for dep in sorted(deps):
            dep_unit = models_unit(dep)
            if dep_unit is not None and rank[dep_unit] > rank[unit]:
                found.append(f"{module} ({unit}) imports {dep} ({dep_unit}, later in the order)")
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_upward_imports(package):
    offenders = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for name in sorted({n.split(".")[0] for n in imported_names(path)} & set(FORBIDDEN[package]))
    ]
    assert not offenders, "upward imports (DESIGN.md, Layout):\n" + "\n".join(offenders)


def test_no_import_cycles():
    found = cycles(import_graph(ROOT))
    assert not found, "import cycles (function-level imports count):\n" + "\n".join(" <-> ".join(c) for c in found)


def test_every_models_subpackage_is_in_the_order():
    subpackages = sorted(p.name for p in (ROOT / "models").iterdir() if (p / "__init__.py").is_file())
    assert [s for s in subpackages if s not in MODELS_ORDER] == []


def test_models_subpackages_import_only_earlier_ones():
    found = order_violations(import_graph(ROOT))
    assert not found, f"models/ order {' -> '.join(MODELS_ORDER)} broken:\n" + "\n".join(found)


def write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_the_checks_catch_a_function_level_cycle_and_an_out_of_order_import(tmp_path):
    """The probes: a cycle closed by an import inside a function, and priors importing guidance."""
    write(tmp_path, "systems/a.py", "from systems.b import helper\n")
    write(tmp_path, "systems/b.py", "def helper():\n    from systems.a import thing\n    return thing\n")
    write(tmp_path, "systems/c.py", "import systems.a\n")
    write(tmp_path, "models/priors/p.py", "from ..guidance.g import rule\n")
    write(tmp_path, "models/guidance/g.py", "rule = 1\n")
    graph = import_graph(tmp_path)
    assert cycles(graph) == [["systems.a", "systems.b"]]
    assert order_violations(graph) == [
        "models.priors.p (priors) imports models.guidance.g (guidance, later in the order)"
    ]
