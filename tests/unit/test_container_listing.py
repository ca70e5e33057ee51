"""Every place that lists containers tolerates one going away meanwhile.

``client.containers.list()`` lists, then inspects each container; one removed in between (by the
run being watched, or by another session's clean-up) raises ``docker.errors.NotFound`` unless the
call passes ``ignore_removed=True`` (or ``sparse=True``, which inspects nothing).  That race failed
``make test`` on a bare machine once (TESTBED.md), so this walks every Python file of the project.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TREES = ("pytest_multiarch", "tests", "benchmarks", "scripts", "example_project")
SAFE = {"ignore_removed", "sparse"}


def _files() -> list[Path]:
    found = [ROOT / "conftest.py"]
    for tree in TREES:
        found += sorted(p for p in (ROOT / tree).rglob("*.py") if ".venv" not in p.parts)
    return found


def unsafe_listings(source: str) -> list[int]:
    """Line numbers of ``….containers.list(...)`` calls without a truthy safe keyword."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        target = node.func.value
        if node.func.attr != "list" or not (
            isinstance(target, ast.Attribute) and target.attr == "containers"
        ):
            continue
        safe = any(
            k.arg in SAFE and not (isinstance(k.value, ast.Constant) and not k.value.value)
            for k in node.keywords
        )
        if not safe:
            lines.append(node.lineno)
    return lines


def test_the_checker_finds_an_unsafe_call() -> None:
    assert unsafe_listings("c.containers.list(all=True)\n") == [1]
    assert unsafe_listings("c.containers.list(all=True, ignore_removed=False)\n") == [1]
    assert unsafe_listings("c.containers.list(all=True, ignore_removed=True)\n") == []
    assert unsafe_listings("c.containers.list(sparse=True)\n") == []


@pytest.mark.parametrize("path", _files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_container_listings_ignore_removed(path: Path) -> None:
    lines = unsafe_listings(path.read_text())
    assert not lines, (
        f"{path.relative_to(ROOT)}:{lines}: containers.list() without ignore_removed=True "
        "raises NotFound when a listed container is removed before it is inspected"
    )
