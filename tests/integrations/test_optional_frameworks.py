"""The frameworks of the integrations stay optional: only their own integration module imports them."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "memprof"
OWNERS = {
    "lightning": "integrations/lightning.py",
    "pytorch_lightning": "integrations/lightning.py",
    "transformers": "integrations/transformers.py",
    "accelerate": "integrations/transformers.py",
}


def _imported(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_only_the_integration_imports_its_framework() -> None:
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        for name in _imported(ast.parse(path.read_text())) & OWNERS.keys():
            if OWNERS[name] != rel:
                wrong.append(f"memprof/{rel} imports {name}")
    assert not wrong, "\n".join(wrong)
