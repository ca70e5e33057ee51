"""The house plan's size rule: a module reads in one sitting, a function on one screen.

A module over ``MAX_MODULE_LINES`` or a function over ``MAX_FUNCTION_LINES`` fails, unless the line
right above its ``def`` (or its first decorator) says why it is long: ``# long: <reason>``. A
module may carry ``# long-module: <reason>`` in its first ten lines. The reason is for the reader;
the test only asks that one is given.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "pytest_multiarch"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
MODULES = sorted(PACKAGE.rglob("*.py"))


def _ids(path: Path) -> str:
    return str(path.relative_to(PACKAGE.parent))


def _has_reason(lines: list[str], lineno: int, marker: str) -> bool:
    """Whether the line before 1-based *lineno* is a ``# long: ...`` comment with a reason."""
    above = lines[lineno - 2].strip() if lineno >= 2 else ""
    return above.startswith(marker) and len(above) > len(marker) + 3


def long_functions(source: str) -> list[str]:
    """``name:line (N lines)`` for every function over the limit without a reason above it."""
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        assert node.end_lineno is not None
        size = node.end_lineno - node.lineno + 1
        first = min([node.lineno] + [d.lineno for d in node.decorator_list])
        if size > MAX_FUNCTION_LINES and not _has_reason(lines, first, "# long:"):
            found.append(f"{node.name}:{node.lineno} ({size} lines)")
    return found


@pytest.mark.parametrize("path", MODULES, ids=_ids)
def test_module_size(path: Path) -> None:
    lines = path.read_text().splitlines()
    exempt = any(line.startswith("# long-module:") for line in lines[:10])
    assert exempt or len(lines) <= MAX_MODULE_LINES, (
        f"{_ids(path)} has {len(lines)} lines (limit {MAX_MODULE_LINES}): split it along a seam, "
        "or say why not in a '# long-module: <reason>' line at its top"
    )


@pytest.mark.parametrize("path", MODULES, ids=_ids)
def test_function_size(path: Path) -> None:
    found = long_functions(path.read_text())
    assert not found, (
        f"{_ids(path)}: functions over {MAX_FUNCTION_LINES} lines: {', '.join(found)}; split them, "
        "or say why not in a '# long: <reason>' comment right above the def"
    )


def test_the_rule_sees_a_long_function_and_honours_a_reason() -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
    plain = f"def f():\n{body}"
    assert long_functions(plain) == [f"f:1 ({MAX_FUNCTION_LINES + 1} lines)"]
    assert long_functions(f"# long: one table, read top to bottom\n{plain}") == []
    assert long_functions(f"# long:\n{plain}") != [], "a marker without a reason is no reason"
    decorated = f"# long: a table\n@staticmethod\n{plain}"
    assert long_functions(decorated) == []
