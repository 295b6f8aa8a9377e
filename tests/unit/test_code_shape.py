"""The codebase stays small enough to read: no class over 250 lines, no function body over
60 lines (signatures aside, so typer commands' option lists do not count). A module that
outgrows this splits into modules with one job each (issue "one home per concept")."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("relaymd", "worker_entry")
MAX_CLASS_LINES = 250
MAX_FUNCTION_BODY_LINES = 60


def _body_start(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    first = node.body[0]
    docstring = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
    return node.body[1].lineno if docstring and len(node.body) > 1 else first.lineno


def _oversized() -> list[str]:
    found: list[str] = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            where = path.relative_to(REPO)
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                end = getattr(node, "end_lineno", None) or 0
                if isinstance(node, ast.ClassDef):
                    lines = end - node.lineno + 1
                    if lines > MAX_CLASS_LINES:
                        found.append(f"{where}:{node.lineno} class {node.name}: {lines} lines")
                elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    lines = end - _body_start(node) + 1
                    if lines > MAX_FUNCTION_BODY_LINES:
                        found.append(f"{where}:{node.lineno} def {node.name}: {lines} lines")
    return found


def test_no_oversized_class_or_function() -> None:
    oversized = _oversized()
    if oversized:
        pytest.fail("split these into smaller units:\n" + "\n".join(oversized))
