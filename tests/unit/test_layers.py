"""The house plan, checked: no import cycles, every import points down, the core needs no pytest.

Layers, lowest first, as docs/ARCHITECTURE.md draws them. A module may import its own layer and the
layers below; packages that share a layer (``oci``, ``audit``, ``host``) do not import each other.
Imports under ``if TYPE_CHECKING:`` are annotations, not dependencies, and are not counted.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "pytest_multiarch"

LAYERS: list[tuple[str, ...]] = [
    ("pytest_multiarch", "errors", "platforms", "_fs", "_secret"),
    ("oci", "audit", "host"),
    ("runners",),
    ("checks",),
    ("session",),
    ("plugin", "cli"),
]
#: Packages whose modules (and only those) may import pytest.
GLUE = {"plugin"}
#: Modules that belong to another unit: ``python -m pytest_multiarch`` is the console script.
SAME_UNIT = {"__main__": "cli"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_only(tree: ast.AST) -> set[int]:
    hidden: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                hidden.update(id(n) for n in ast.walk(child))
    return hidden


def _is_module(name: str) -> bool:
    base = PACKAGE.parent / Path(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports, at module level and inside functions."""
    graph: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = _module_name(path)
        tree = ast.parse(path.read_text(), str(path))
        hidden = _type_checking_only(tree)
        deps: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in hidden:
                continue
            if isinstance(node, ast.ImportFrom) and node.level:
                raise AssertionError(f"{name}: relative import; the code base imports absolutely")
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(PACKAGE.name):
                assert node.module is not None
                deps.add(node.module)
                deps.update(f"{node.module}.{a.name}" for a in node.names
                            if _is_module(f"{node.module}.{a.name}"))
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.startswith(PACKAGE.name))
        deps.discard(name)
        graph[name] = deps
    return graph


def layer_of(module: str) -> tuple[int, str]:
    """(layer index, top-level unit) of a module: ``pytest_multiarch.oci.registry`` -> (1, oci)."""
    parts = module.split(".")
    unit = parts[1] if len(parts) > 1 else parts[0]
    unit = SAME_UNIT.get(unit, unit)
    for index, units in enumerate(LAYERS):
        if unit in units:
            return index, unit
    raise AssertionError(f"{module}: in no layer of LAYERS; add it there and to ARCHITECTURE.md")


def test_every_module_has_a_layer() -> None:
    for module in import_graph():
        layer_of(module)


def test_imports_point_down() -> None:
    wrong = []
    for module, deps in import_graph().items():
        level, unit = layer_of(module)
        for dep in sorted(deps):
            dep_level, dep_unit = layer_of(dep)
            if dep_level > level or (dep_level == level and dep_unit != unit and level > 0):
                wrong.append(f"{module} -> {dep}")
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


def test_no_import_cycles() -> None:
    graph = import_graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph.get(node, ())):
            if dep not in graph:
                continue
            if state.get(dep) == 1:
                cycles.append([*path[path.index(dep):], dep])
            elif dep not in state:
                visit(dep)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def _core_modules() -> list[str]:
    return [m for m in import_graph() if layer_of(m)[1] not in GLUE]


@pytest.mark.parametrize("module", _core_modules())
def test_core_module_imports_without_pytest(module: str) -> None:
    code = (f"import sys, {module}; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('pytest', '_pytest')); "
            "sys.exit(', '.join(bad) if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, f"{module} imports pytest: {result.stderr.strip()}"


def test_engine_detection_needs_no_docker_sdk() -> None:
    """``--engine=auto`` probes sockets itself, so a rootfs-only user needs no Docker SDK loaded."""
    code = "import sys, pytest_multiarch.runners.detect; sys.exit('docker' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False, timeout=60).returncode == 0
