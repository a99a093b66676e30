"""The app stays readable: no module over 500 lines, no function over 80 (the project's rule).

Counted with the AST over every module of the package, nested functions and migrations included;
a function's length runs from its first decorator to its last line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import grimbots

MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80
SOURCE = Path(grimbots.__file__).parent


def _modules() -> list[Path]:
    modules = sorted(SOURCE.rglob("*.py"))
    assert len(modules) > 30, f"expected the whole package under {SOURCE}"
    return modules


def _function_lengths(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    lengths = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            lengths.append((node.name, node.end_lineno - first + 1))
    return lengths


def test_no_module_in_the_app_is_over_500_lines():
    long = {
        str(path.relative_to(SOURCE)): lines
        for path in _modules()
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


def test_no_function_in_the_app_is_over_80_lines():
    long = {
        f"{path.relative_to(SOURCE)}:{name}": lines
        for path in _modules()
        for name, lines in _function_lengths(path)
        if lines > MAX_FUNCTION_LINES
    }
    assert long == {}


def test_the_shape_check_sees_a_long_function(tmp_path):
    """The counter itself works: a 81-line function is seen as 81 lines."""
    body = "\n".join(f"    x{i} = {i}" for i in range(79))
    sample = tmp_path / "sample.py"
    sample.write_text(f"@staticmethod\ndef f():\n{body}\n", encoding="utf-8")
    assert _function_lengths(sample) == [("f", 81)]
