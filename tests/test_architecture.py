"""The architecture holds: one-way layers, no import cycle, no oversized file.

The layers are also enforced by ruff (``memprof/*/ruff.toml``); this test reads every import the
code can execute, function-local ones included (``if TYPE_CHECKING:`` blocks never run and are
left out), so that a lazy import cannot hide a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "memprof"
MAX_LINES = 500

# package -> memprof packages (or top-level modules) it may import; "*" means any
ALLOWED: dict[str, set[str]] = {
    "model": set(),
    "units": {"errors"},
    "errors": set(),
    "_version": set(),
    "collect": {"model", "units", "errors"},
    "analyze": {"model", "collect", "units", "errors"},
    "advise": {"model", "collect", "units", "errors"},
    "report": {"model", "units", "errors", "_version"},
    "live": {"model", "units", "errors"},
    "hw": {"units", "errors"},
    "tui": {"live", "hw", "model", "units", "errors"},
    "session": {"model", "collect", "analyze", "advise", "report", "live", "units", "errors", "_version"},
    "api": {"session", "report", "model", "units", "errors", "_version"},
    "runner": {"model", "errors"},
    "integrations": {"api", "report", "model", "units", "errors"},
    "cli": {"*"},
    "__init__": {"*"},
    "__main__": {"cli"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> list[str]:
    """Every memprof module an executed import names, at any depth."""
    out: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            out.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                out.append(sub if sub in MODULES else node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return [m for m in out if m == "memprof" or m.startswith("memprof.")]


GRAPH = {name: sorted(set(_imports(ast.parse(path.read_text())))) for name, path in MODULES.items()}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_no_import_cycle() -> None:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def strongconnect(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH.get(v, []):
            if w not in GRAPH:
                continue
            if w not in index:
                strongconnect(w)
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
            if len(component) > 1 or v in GRAPH.get(v, []):
                cycles.append(sorted(component))

    for v in sorted(GRAPH):
        if v not in index:
            strongconnect(v)
    assert not cycles, f"import cycles: {cycles}"


def test_layers() -> None:
    wrong = []
    for module, imported in GRAPH.items():
        allowed = ALLOWED[_layer(module)]
        if "*" in allowed:
            continue
        for target in imported:
            layer = _layer(target)
            if layer != _layer(module) and layer not in allowed:
                wrong.append(f"{module} imports {target}")
    assert not wrong, "\n".join(wrong)


def test_model_imports_no_torch() -> None:
    for name, path in MODULES.items():
        if _layer(name) in ("model", "report", "live", "hw", "tui"):
            tree = ast.parse(path.read_text())
            names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
            names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
            assert not [m for m in names if m == "torch" or m.startswith("torch.")], name


@pytest.mark.parametrize("path", sorted(p for p in PACKAGE.rglob("*") if p.suffix in (".py", ".cpp", ".h")),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_no_source_file_over_500_lines(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{lines} lines"


def test_the_check_can_fail() -> None:
    """The cycle finder sees a function-local import: a fabricated pair of modules is a cycle."""
    a = ast.parse("def f():\n    from memprof.model import report\n")
    assert "memprof.model.report" in _imports(a)
    guarded = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import memprof.session\n")
    assert _imports(guarded) == []
