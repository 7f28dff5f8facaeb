"""Which way imports point, checked by reading the source with ast; and the public face.

The parts of the package (a top-level module, or a sub-package such as ``runner/``) stand in
layers, top to bottom. A part may import only parts in layers below its own, so that, for
example, the client knows nothing of the manifest, the runner nothing of the session that
wires it, and nothing below the CLI imports it. A new module must be given its layer here.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import batchpod

PACKAGE = Path(__file__).resolve().parent.parent / "batchpod"

# Top to bottom. The sandbox is apart: it imports nothing of batchpod at all.
LAYERS: list[set[str]] = [
    {"__main__"},
    {"cli"},
    {"batchpod"},  # the package root: the public face
    {"api"},
    {"session", "reporters", "cleanup"},
    {"runner", "standing", "recovery", "census"},
    {"config", "merge", "reconcile", "layouts", "catalogue"},
    {"manifest", "keys", "charges", "poller", "estimate", "report", "fleet", "storage"},
    {"metrics"},
    {"client", "journal", "paths", "templates"},
    {"flow", "identity", "results", "shards"},
    {"budget", "retry", "logs", "audio", "encode", "spool", "pings"},
    {"errors", "models", "_version", "sandbox"},
]
LAYER = {part: depth for depth, parts in enumerate(LAYERS) for part in parts}

# The package's own version is read from one private module by every part that reports it
# (STYLE.md: "nothing imports the package root").
SHARED_PRIVATE = {"batchpod._version"}


def _module_of(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    return ".".join(rel.parts).removesuffix(".__init__")


def _part_of(module: str) -> str:
    """``batchpod.runner._pool`` -> ``runner``; ``batchpod`` -> ``batchpod``."""
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else "batchpod"


def _imports(path: Path) -> Iterator[tuple[str, str | None]]:
    """(module, name) for each absolute import of ``path``; name is None for ``import m``.
    ``from batchpod import runner`` yields ``("batchpod.runner", None)``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                if node.module == "batchpod" and alias.name != "__version__":
                    yield f"batchpod.{alias.name}", None
                else:
                    yield node.module, alias.name


def _own_imports() -> Iterator[tuple[Path, str, str | None]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        for module, name in _imports(path):
            if module == "batchpod" or module.startswith("batchpod."):
                yield path, module, name


def test_sandbox_imports_nothing_from_batchpod() -> None:
    """The sandbox is an independent implementation of the wire contract."""
    files = sorted((PACKAGE / "sandbox").rglob("*.py"))
    assert files
    for path in files:
        bad = {m for m, _ in _imports(path) if m == "batchpod" or m.startswith("batchpod.")}
        assert not bad, f"{path.name} imports {bad}"


def test_only_the_cli_decides_exit_codes() -> None:
    """No library module exits the process; exit codes are decided in the cli package."""
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.is_relative_to(PACKAGE / "cli") or path.name == "__main__.py":
            continue
        text = path.read_text(encoding="utf-8")
        assert "sys.exit(" not in text and "SystemExit" not in text, path


def test_library_modules_do_not_import_the_cli() -> None:
    """The cli package is the composition root: nothing below it imports it."""
    for path, module, _ in _own_imports():
        if path.is_relative_to(PACKAGE / "cli") or path.name == "__main__.py":
            continue
        assert _part_of(module) != "cli", path


def test_every_part_has_a_layer() -> None:
    """A new module or package is placed in LAYERS, where its imports are then checked."""
    parts = {_part_of(_module_of(path)) for path in PACKAGE.rglob("*.py")}
    assert parts - LAYER.keys() == set(), "give each new part a layer in LAYERS"
    assert LAYER.keys() - parts == set(), "LAYERS names a part that no longer exists"


def test_imports_point_down_the_layers() -> None:
    """A part imports only parts below it (see the module docstring)."""
    wrong = set()
    for path, module, _ in _own_imports():
        importer, imported = _part_of(_module_of(path)), _part_of(module)
        if importer != imported and LAYER[imported] <= LAYER[importer]:
            wrong.add(f"{importer} -> {imported} ({path.relative_to(PACKAGE)})")
    assert not wrong, sorted(wrong)


def test_no_module_imports_another_parts_private_names() -> None:
    """Underscore names (modules or attributes) are their part's own business."""
    wrong = []
    for path, module, name in _own_imports():
        if module in SHARED_PRIVATE or _part_of(module) == _part_of(_module_of(path)):
            continue
        private_module = any(piece.startswith("_") for piece in module.split(".")[1:])
        private_name = name is not None and name.startswith("_") and name != "__version__"
        if private_module or private_name:
            wrong.append(f"{path.relative_to(PACKAGE)}: {module} {name or ''}")
    assert not wrong, wrong


def test_the_public_face_is_pinned() -> None:
    """``batchpod.__all__`` is the public API; a change to it is a change of the API."""
    assert sorted(batchpod.__all__) == [
        "BatchpodError",
        "ConfigError",
        "ExitCode",
        "JobResult",
        "JobStatus",
        "ManifestError",
        "MissingApiKey",
        "RunConfig",
        "RunSummary",
        "Shard",
        "__version__",
        "run_manifest",
        "run_manifest_sync",
    ]
    for name in batchpod.__all__:
        assert getattr(batchpod, name) is not None, name
