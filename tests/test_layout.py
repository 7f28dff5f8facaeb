"""Which way imports point, checked by reading the source with ast."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "batchpod"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_sandbox_imports_nothing_from_batchpod() -> None:
    """The sandbox is an independent implementation of the wire contract."""
    files = sorted((PACKAGE / "sandbox").rglob("*.py"))
    assert files
    for path in files:
        bad = {n for n in _imports(path) if n == "batchpod" or n.startswith("batchpod.")}
        assert not bad, f"{path.name} imports {bad}"


def test_only_the_cli_decides_exit_codes() -> None:
    """No library module exits the process; exit codes are decided in cli.py."""
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.is_relative_to(PACKAGE / "cli") or path.name == "__main__.py":
            continue
        text = path.read_text(encoding="utf-8")
        assert "sys.exit(" not in text and "SystemExit" not in text, path


def test_library_modules_do_not_import_the_cli() -> None:
    """cli.py is the composition root: nothing below it imports it."""
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.is_relative_to(PACKAGE / "cli") or path.name == "__main__.py":
            continue
        assert "batchpod.cli" not in _imports(path), path
