"""From a variable the census caught to the statement that changes it.

The runtime tells *which* variable grows or lingers and in which frame; the source of that
frame's function tells *where* it is changed. Python semantics decide what counts: an augmented
assignment, a rebinding, ``.append``/``.extend``/``.insert``/``.add``/``.update``, or an item
assignment on that name. Among several, the one in the loop that encloses the frame's current
line wins.
"""

from __future__ import annotations

import ast
import functools

from memprof.model.run import VarObservation

MUTATORS = frozenset({"append", "extend", "insert", "add", "update", "appendleft", "extendleft", "setdefault", "__setitem__", "__iadd__"})


@functools.lru_cache(maxsize=64)
def _parse(filename: str) -> ast.Module | None:
    try:
        with open(filename, encoding="utf-8") as fh:
            return ast.parse(fh.read(), filename)
    except (OSError, SyntaxError, ValueError, UnicodeDecodeError):
        return None


def _name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _name(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def _function_at(tree: ast.Module, first_line: int, function: str) -> ast.AST:
    if function == "<module>":
        return tree
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == function:
            lines = [node.lineno] + [d.lineno for d in node.decorator_list]
            if first_line in lines:
                return node
    for node in ast.walk(tree):  # the line moved (decorators): match by name alone
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == function:
            return node
    return tree


def _loops(scope: ast.AST) -> list[ast.AST]:
    return [n for n in ast.walk(scope) if isinstance(n, (ast.For, ast.While, ast.AsyncFor))]


def _contains(node: ast.AST, line: int) -> bool:
    start: int = getattr(node, "lineno", 0) or 0
    end: int = getattr(node, "end_lineno", None) or start
    return start <= line <= end


def _statements(scope: ast.AST, path: str, rebinding: bool) -> list[tuple[ast.stmt, str]]:
    found: list[tuple[ast.stmt, str]] = []
    for node in ast.walk(scope):
        if isinstance(node, ast.AugAssign) and _name(node.target) == path:
            found.append((node, "augassign"))
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                elts = t.elts if isinstance(t, ast.Tuple) else [t]
                for e in elts:
                    if _name(e) == path:
                        value = node.value
                        self_ref = value is not None and any(_name(n) == path for n in ast.walk(value))
                        if rebinding or self_ref:
                            found.append((node, "assign" if not self_ref else "augassign"))
                    elif isinstance(e, ast.Subscript) and _name(e.value) == path:
                        found.append((node, "setitem"))
        elif isinstance(node, ast.Call):  # also inside expressions: lambdas, comprehensions, hooks
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr in MUTATORS:
                base = func.value
                if isinstance(base, ast.Subscript):  # metrics[k].append(v)
                    base = base.value
                if _name(base) == path:
                    found.append((node, "mutate"))  # type: ignore[arg-type]
    return found


def find_statement(
    filename: str, function: str, first_line: int, current_line: int | None, path: str, rebinding: bool = False,
    owner_file: str | None = None,
) -> int | None:
    """The line of the statement that accumulates into (or, with ``rebinding``, assigns) ``path``.

    ``owner_file``: for ``obj.attr`` paths, the file of ``obj``'s class, where ``self.attr`` is changed.
    """
    tree = _parse(filename)
    if tree is None:
        return None
    line = _find(tree, function, first_line, current_line, path, rebinding)
    if line is None and "." in path and owner_file:
        owner = _parse(owner_file)
        if owner is not None:
            line = _find(owner, "<module>", 0, None, "self." + path.rsplit(".", 1)[1], rebinding)
    return line


def owner_line(owner_file: str, path: str, rebinding: bool = False) -> int | None:
    """Where ``self.<attr>`` is changed in the class file of the object at ``path``."""
    owner = _parse(owner_file)
    if owner is None:
        return None
    return _find(owner, "<module>", 0, None, "self." + path.rsplit(".", 1)[1], rebinding)


def _find(
    tree: ast.Module, function: str, first_line: int, current_line: int | None, path: str, rebinding: bool
) -> int | None:
    scope = _function_at(tree, first_line, function)
    found = _statements(scope, path, rebinding)
    if not found and "." in path:  # self.history.append(...) may live in another method
        found = _statements(tree, path, rebinding)
    if not found and path.startswith("self."):
        found = _statements(tree, path, rebinding)
    if not found:
        return None
    loops = _loops(scope)
    if current_line is not None:
        enclosing = [lp for lp in loops if _contains(lp, current_line)]
        for loop in sorted(enclosing, key=lambda lp: getattr(lp, "lineno", 0), reverse=True):  # innermost first
            inside = [s for s, _ in found if _contains(loop, s.lineno)]
            if inside:
                return _best(inside, found)
    in_any = [s for s, _ in found if any(_contains(lp, s.lineno) for lp in loops)]
    if in_any:
        return _best(in_any, found)
    return _best([s for s, _ in found], found)


def _best(stmts: list[ast.stmt], found: list[tuple[ast.stmt, str]]) -> int:
    rank = {"augassign": 0, "mutate": 1, "setitem": 2, "assign": 3}
    kinds = {id(s): k for s, k in found}
    best = min(stmts, key=lambda s: (rank[kinds[id(s)]], -s.lineno))
    return best.lineno


def statement_start(filename: str, line: int) -> int:
    """The first line of the statement that contains ``line`` (multi-line calls)."""
    tree = _parse(filename)
    if tree is None:
        return line
    best: ast.stmt | None = None
    for node in ast.walk(tree):
        if isinstance(node, ast.stmt) and not isinstance(
            node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.For, ast.While, ast.If, ast.With, ast.Try)
        ) and _contains(node, line):
            if best is None or node.lineno >= best.lineno:
                best = node
    return best.lineno if best is not None else line


def variable_line(obs: VarObservation, rebinding: bool = False) -> tuple[str, int]:
    """(file, line) of the statement changing the variable: in the frame's function, or for
    ``obj.attr`` in ``obj``'s class (``self.attr += ...`` in a method, maybe in another file)."""
    line = find_statement(obs.file, obs.function, obs.first_line, obs.line, obs.path, rebinding=rebinding)
    if line is not None:
        return obs.file, line
    if "." in obs.path and obs.owner_file:
        line = owner_line(obs.owner_file, obs.path, rebinding=rebinding)
        if line is not None:
            return obs.owner_file, line
    return obs.file, obs.line
