"""Import circles among lmccheck's modules: every import, those inside functions included (a deferred import
that closes a circle still ties two modules to each other), except those under ``if TYPE_CHECKING:``, which
never run.

    python tools/import_cycles.py        # prints each circle; exit 1 when there is one
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lmccheck"


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _resolve(current: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    base = current.split(".") if is_package else current.split(".")[:-1]
    if node.level:
        base = base[: len(base) - (node.level - 1)]
        prefix = ".".join(base + ([node.module] if node.module else []))
    else:
        prefix = node.module or ""
    if not prefix.startswith("lmccheck"):
        return []
    # "from . import kinds" names a module; "from .store import Store" names the module store
    return [f"{prefix}.{a.name}" for a in node.names] + [prefix]


def imports(path: Path, modules: set[str]) -> set[str]:
    """The lmccheck modules ``path`` imports, anywhere but under ``if TYPE_CHECKING:``."""
    current = module_name(path)
    tree = ast.parse(path.read_text())
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in
               ast.unparse(node.test) for n in ast.walk(node)}
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom):
            out |= {m for m in _resolve(current, path.name == "__init__.py", node) if m in modules}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in modules}
    out.discard(current)
    return out


def cycles() -> list[list[str]]:
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {m: imports(p, set(paths)) for m, p in paths.items()}
    found: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                found.append(stack[stack.index(n):] + [n])
            elif n not in state:
                visit(n, stack + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    return found


def main() -> int:
    found = cycles()
    for c in found:
        print(" -> ".join(c))
    print(f"{len(found)} import circle(s) among lmccheck's modules")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
