"""lmccheck's modules import one another one way: no circle (tools/import_cycles.py, also run by make lint)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

TOOL = Path(__file__).resolve().parents[1] / "tools" / "import_cycles.py"


def _tool():
    spec = importlib.util.spec_from_file_location("import_cycles", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules["import_cycles"] = module
    spec.loader.exec_module(module)
    return module


def test_lmccheck_has_no_import_circle() -> None:
    assert _tool().cycles() == []


def test_the_tool_finds_a_circle_through_a_deferred_import(tmp_path: Path, monkeypatch) -> None:
    """A function-level import that closes a circle counts; one under TYPE_CHECKING does not."""
    tool = _tool()
    pkg = tmp_path / "lmccheck"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import x\n")
    (pkg / "b.py").write_text("x = 1\n\ndef f():\n    from . import a\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .d import y\n")
    (pkg / "d.py").write_text("from .c import TYPE_CHECKING\ny = 2\n")
    monkeypatch.setattr(tool, "PACKAGE", pkg)
    assert tool.cycles() == [["lmccheck.a", "lmccheck.b", "lmccheck.a"]]


def test_only_the_pytest_plugin_package_imports_pytest() -> None:
    """The library stays usable without pytest: ``pytest`` is imported only under ``lmccheck/pytest_plugin/``."""
    import ast

    lib = TOOL.parents[1] / "lmccheck"
    offenders = []
    for path in sorted(lib.rglob("*.py")):
        if "pytest_plugin" in path.relative_to(lib).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            offenders += [f"{path.relative_to(lib)}: {n}" for n in names if n.split(".")[0] in ("pytest", "_pytest")]
    assert offenders == []
    assert (lib / "pytest_plugin" / "__init__.py").exists()
