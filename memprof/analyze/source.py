"""From a holder the census caught to the statement that changes it.

The runtime tells *which* holder grows or lingers, through which chain of references, and what
ran: the op that made the newest node of its graph (an add for ``+=``), whether what it keeps
carries a graph, the user line that made its newest storage. The source of the scope the chain is
written in tells *where* it is changed. Python semantics decide what counts: an augmented
assignment (also of an item, ``totals[k] += loss``), a rebinding that reads the holder, a call of
``.append``/``.extend``/``.insert``/``.add``/``.update``, an item assignment. Among several, the
one that matches what ran wins: a statement that adds a number (``.item()``, ``float()``) or a
detached tensor can't grow a graph, and one whose op is the graph's newest op is preferred; then
the one in the loop that encloses the frame's current line (or the line that made the storage).
"""

from __future__ import annotations

import ast
import functools
import linecache
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

from memprof.model.run import VarObservation

MUTATORS = frozenset({"append", "extend", "insert", "add", "update", "appendleft", "extendleft", "setdefault", "__setitem__", "__iadd__"})
NUMERIC_CALLS = frozenset({"item", "tolist", "float", "int", "len", "round", "bool", "numpy", "sum_", "fsum"})
DETACHING_CALLS = frozenset({"detach", "detach_", "item", "tolist", "numpy"})
_OPS = {ast.Add: "add", ast.Sub: "sub", ast.Mult: "mul", ast.Div: "div", ast.MatMult: "mm", ast.Pow: "pow",
        ast.FloorDiv: "div", ast.Mod: "remainder", ast.BitOr: "or"}
# What a statement can do to each kind of container: its mutating methods, item assignment, and
# the augmented assignments it supports (``+=`` on a list, ``|=`` on a dict or a set).
_CAN = {
    "dict": (frozenset({"update", "setdefault", "__setitem__"}), True, frozenset({"or"})),
    "list": (frozenset({"append", "extend", "insert", "__setitem__", "__iadd__"}), True, frozenset({"add"})),
    "deque": (frozenset({"append", "appendleft", "extend", "extendleft", "insert", "__iadd__"}), True, frozenset({"add"})),
    "set": (frozenset({"add", "update"}), False, frozenset({"or"})),
    "tuple": (frozenset(), False, frozenset({"add"})),
}
_RANK = {"augassign": 0, "augitem": 0, "mutate": 1, "setitem": 2, "assign": 3}


@dataclass(frozen=True)
class Want:
    """What ran, as the census saw it: how the holder grows and what its newest tensor came from.

    ``growth``: ``history`` (its autograd history grows), ``count`` (it keeps more tensors),
    ``bytes`` (a tensor grows in place or by concatenation), ``rebind`` (it was assigned)."""

    growth: str = "count"
    graph: bool = False  # the tensors held carry autograd graphs
    root_op: str | None = None  # "AddBackward0"
    operand_ops: tuple[str, ...] = ()
    site: tuple[str, int] | None = None  # the user line that made the newest storage
    container: str | None = None  # "dict", "list", "deque", "set", "tuple": what its statement can call

    @staticmethod
    def of(obs: VarObservation, growth: str) -> Want:
        return Want(growth=growth, graph=obs.graph.graphs > 0, root_op=getattr(obs, "root_op", None),
                    operand_ops=getattr(obs, "operand_ops", ()), site=getattr(obs, "site", None),
                    container=getattr(obs, "container", None))


@dataclass
class Candidate:
    stmt: ast.stmt
    kind: str  # augassign | augitem | mutate | setitem | assign
    value: ast.expr | None  # what is added or stored
    op: str | None = None  # the statement's own op: the augmented assignment's, or the rebinding's top one

    @property
    def line(self) -> int:
        return self.stmt.lineno


def parse(filename: str) -> ast.Module | None:
    """The file's syntax tree, parsed once per version of the file (its size and time)."""
    try:
        st = os.stat(filename)
    except OSError:
        return _parse_cached(filename)
    return _parse_version(filename, st.st_size, st.st_mtime_ns)


def _parse_cached(filename: str) -> ast.Module | None:
    """Code with no file (an IPython cell, ``<ipython-input-3-...>``): its source is in linecache."""
    lines = linecache.getlines(filename)
    if not lines:
        return None
    try:
        return ast.parse("".join(lines), filename)
    except (SyntaxError, ValueError):
        return None


@functools.lru_cache(maxsize=64)
def _parse_version(filename: str, size: int, mtime: int) -> ast.Module | None:
    try:
        with open(filename, encoding="utf-8") as fh:
            return ast.parse(fh.read(), filename)
    except (OSError, SyntaxError, ValueError, UnicodeDecodeError):
        return None


_parse = parse


def name_of(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = name_of(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


_name = name_of


def op_name(node_type: str | None) -> str | None:
    """``AddBackward0`` -> ``add``; ``MmBackward0`` -> ``mm``."""
    if not node_type:
        return None
    base = re.sub(r"Backward\d*$", "", node_type).lower()
    return {"matmul": "mm", "addmm": "mm", "bmm": "mm", "rsub": "sub"}.get(base, base)


def _call_name(node: ast.Call) -> str | None:
    f = node.func
    if isinstance(f, ast.Attribute):
        return f.attr
    if isinstance(f, ast.Name):
        return f.id
    return None


def top_op(value: ast.AST | None) -> str | None:
    if isinstance(value, ast.BinOp):
        return _OPS.get(type(value.op))
    if isinstance(value, ast.Call):
        name = _call_name(value)
        return name.rstrip("_").lower() if name else None
    return None


def numeric(value: ast.AST | None) -> bool:
    """The expression makes a Python number (``loss.item() * n``, ``float(loss)``, ``3``)."""
    if isinstance(value, ast.Constant):
        return isinstance(value.value, (int, float, complex)) and not isinstance(value.value, bool)
    if isinstance(value, ast.Call):
        return _call_name(value) in NUMERIC_CALLS
    if isinstance(value, ast.BinOp):
        return numeric(value.left) and numeric(value.right)
    if isinstance(value, ast.UnaryOp):
        return numeric(value.operand)
    return False


def carries_no_graph(value: ast.AST | None, path: str) -> bool:
    """The expression can't bring autograd history: numbers, detached tensors, and the holder itself."""
    if value is None or numeric(value):
        return True
    if name_of(value) == path:
        return True
    if isinstance(value, ast.Call) and _call_name(value) in DETACHING_CALLS:
        return True
    if isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute) and value.func.attr in ("cpu", "to", "clone"):
        return carries_no_graph(value.func.value, path)
    if isinstance(value, ast.BinOp):
        return carries_no_graph(value.left, path) and carries_no_graph(value.right, path)
    if isinstance(value, ast.UnaryOp):
        return carries_no_graph(value.operand, path)
    if isinstance(value, (ast.List, ast.Tuple)):
        return all(carries_no_graph(e, path) for e in value.elts)
    return False


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


def _class_in(tree: ast.Module, name: str) -> ast.ClassDef | None:
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == name:
            return node
    return None


def _loops(scope: ast.AST) -> list[ast.AST]:
    return [n for n in ast.walk(scope) if isinstance(n, (ast.For, ast.While, ast.AsyncFor))]


def _contains(node: ast.AST, line: int) -> bool:
    start: int = getattr(node, "lineno", 0) or 0
    end: int = getattr(node, "end_lineno", None) or start
    return start <= line <= end


def _other_side(value: ast.expr | None, path: str) -> ast.expr | None:
    """In ``x = x + v``, ``v``."""
    if isinstance(value, ast.BinOp):
        if name_of(value.left) == path:
            return value.right
        if name_of(value.right) == path:
            return value.left
    return value


def candidates(scope: ast.AST, path: str, rebinding: bool) -> list[Candidate]:
    """Every statement in ``scope`` that accumulates into (with ``rebinding``, also assigns) ``path``."""
    found: list[Candidate] = []
    for node in ast.walk(scope):
        if isinstance(node, ast.AugAssign):
            target = node.target
            if name_of(target) == path:
                found.append(Candidate(node, "augassign", node.value, _OPS.get(type(node.op))))
            elif isinstance(target, ast.Subscript) and name_of(target.value) == path:
                found.append(Candidate(node, "augitem", node.value, _OPS.get(type(node.op))))
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            value = node.value
            for t in targets:
                elts = t.elts if isinstance(t, ast.Tuple) else [t]
                for e in elts:
                    if name_of(e) == path:
                        self_ref = value is not None and any(name_of(n) == path for n in ast.walk(value))
                        if self_ref:
                            found.append(Candidate(node, "augassign", _other_side(value, path), top_op(value)))
                        elif rebinding:
                            found.append(Candidate(node, "assign", value, top_op(value)))
                    elif isinstance(e, ast.Subscript) and name_of(e.value) == path:
                        found.append(Candidate(node, "setitem", value, top_op(value)))
        elif isinstance(node, ast.Call):  # also inside expressions: lambdas, comprehensions, hooks
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr in MUTATORS:
                base = func.value
                if isinstance(base, ast.Subscript):  # metrics[k].append(v)
                    base = base.value
                if name_of(base) == path:
                    stmt = _enclosing_stmt(scope, node)
                    arg = node.args[-1] if node.args else None
                    found.append(Candidate(stmt, "mutate", arg, func.attr))
    return found


def _enclosing_stmt(scope: ast.AST, node: ast.AST) -> ast.stmt:
    """The innermost statement holding ``node`` (a call inside a lambda: the lambda's statement)."""
    best: ast.stmt | None = None
    line = getattr(node, "lineno", 0)
    for s in ast.walk(scope):
        if isinstance(s, ast.stmt) and _contains(s, line) and (best is None or s.lineno >= best.lineno):
            if not isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.For, ast.While,
                                  ast.If, ast.With, ast.Try, ast.AsyncFor, ast.AsyncWith)):
                best = s
    if best is None:
        fake = ast.Expr(value=node)  # type: ignore[arg-type]
        ast.copy_location(fake, node)
        return fake
    return best


def _score(c: Candidate, path: str, want: Want | None) -> tuple[int, int]:
    """How well a statement matches what ran (higher is better): (fits the growth, op matches)."""
    if want is None:
        return (0, 0)
    no_graph = carries_no_graph(c.value, path)
    if want.growth == "history":
        fits = 0 if no_graph or c.kind in ("mutate", "setitem", "assign") else 1
        root = op_name(want.root_op)
        operands = {op_name(o) for o in want.operand_ops}
        match = 2 * (root is not None and c.op == root) + (top_op(c.value) in operands)
        return (fits, match)
    if want.growth == "count":
        fits = 1 if c.kind in ("mutate", "setitem", "augassign", "augitem") and (no_graph != want.graph) else 0
        return (fits and _can(c, want.container), 0)
    if want.growth == "bytes":
        root = op_name(want.root_op)
        return (int(c.kind != "assign"), int(root is not None and (c.op == root or top_op(c.value) == root)))
    return (0, 0)


def _can(c: Candidate, container: str | None) -> int:
    """Whether the statement can grow this kind of container (``.append`` never ran on a dict)."""
    can = _CAN.get(container or "")
    if can is None:
        return 1
    methods, items, augmented = can
    if c.kind == "mutate":
        return int(c.op in methods)
    if c.kind == "setitem":
        return int(items)
    if c.kind == "augassign" and c.op is not None and isinstance(c.stmt, ast.AugAssign):
        return int(c.op in augmented)
    return 1


def find_statement(
    filename: str, function: str, first_line: int, current_line: int | None, path: str, rebinding: bool = False,
    owner_file: str | None = None, want: Want | None = None,
) -> int | None:
    """The line of the statement that accumulates into (or, with ``rebinding``, assigns) ``path``.

    ``owner_file``: for ``obj.attr`` paths, the file of ``obj``'s class, where ``self.attr`` is changed.
    """
    tree = parse(filename)
    if tree is None:
        return None
    c = _find(tree, function, first_line, current_line, path, rebinding, want, filename)
    if c is None and "." in path and owner_file:
        owner = parse(owner_file)
        if owner is not None:
            c = _find(owner, "<module>", 0, None, "self." + path.rsplit(".", 1)[1], rebinding, want, owner_file)
    return c.line if c is not None else None


def owner_line(owner_file: str, path: str, rebinding: bool = False, want: Want | None = None,
               class_name: str | None = None) -> int | None:
    """Where ``self.<attr>`` is changed in the class file of the object at ``path`` (in its class
    ``class_name`` when given and found)."""
    owner = parse(owner_file)
    if owner is None:
        return None
    attr = "self." + path.rsplit(".", 1)[-1]
    if class_name is not None:
        cls = _class_in(owner, class_name)
        if cls is None:
            return None
        found = candidates(cls, attr, rebinding)
        c = _pick(found, cls, None, attr, want, owner_file)
        return c.line if c is not None else None
    c = _find(owner, "<module>", 0, None, attr, rebinding, want, owner_file)
    return c.line if c is not None else None


def _find(
    tree: ast.Module, function: str, first_line: int, current_line: int | None, path: str, rebinding: bool,
    want: Want | None = None, filename: str | None = None,
) -> Candidate | None:
    scope = _function_at(tree, first_line, function)
    found = candidates(scope, path, rebinding)
    if not found and "." in path:  # self.history.append(...) may live in another method
        found = candidates(tree, path, rebinding)
    if not found:
        return None
    return _pick(found, scope, current_line, path, want, filename)


def _pick(found: list[Candidate], scope: ast.AST, current_line: int | None, path: str, want: Want | None,
          filename: str | None) -> Candidate | None:
    if not found:
        return None
    scored = [(_score(c, path, want), c) for c in found]
    best = max(s for s, _ in scored)
    top = [c for s, c in scored if s == best]
    loops = _loops(scope)
    # Where something ran: the frame's current line, and the line that made the newest storage.
    lines = [current_line] if current_line is not None else []
    if want is not None and want.site is not None and filename is not None and want.site[0] == filename:
        lines.append(want.site[1])
    for line in lines:
        enclosing = [lp for lp in loops if _contains(lp, line)]
        for loop in sorted(enclosing, key=lambda lp: getattr(lp, "lineno", 0), reverse=True):  # innermost first
            inside = [c for c in top if _contains(loop, c.line)]
            if inside:
                return _best(inside)
    in_any = [c for c in top if any(_contains(lp, c.line) for lp in loops)]
    return _best(in_any or top)


def _best(found: Sequence[Candidate]) -> Candidate:
    return min(found, key=lambda c: (_RANK[c.kind], -c.line))


def statement_start(filename: str, line: int) -> int:
    """The first line of the statement that contains ``line`` (multi-line calls)."""
    tree = parse(filename)
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


@dataclass(frozen=True)
class Located:
    """Where a holder is changed: the file and line, and the name it has there (``history``,
    ``self.y_preds_``, ``totals``)."""

    file: str
    line: int
    name: str
    found: bool  # False: no statement matched; the line is where it ran (or was made)


def locate(obs: VarObservation, want: Want | None = None, rebinding: bool = False) -> Located:
    """The statement changing the holder: in the scope its chain is written in, else in the class
    of the object whose attribute it is (``self.attr += ...`` in a method, maybe in another file)."""
    expr = getattr(obs, "expr", "") or obs.path
    running = getattr(obs, "running", True)
    current = obs.line if running else None
    line = find_statement(obs.file, obs.function, obs.first_line, current, expr, rebinding=rebinding, want=want)
    if line is not None:
        return Located(obs.file, line, expr, True)
    attr = getattr(obs, "attr", None)
    owners: tuple[tuple[str, str], ...] = getattr(obs, "owners", ())
    if attr is not None:
        for file, cls in owners:
            line = owner_line(file, attr, rebinding=rebinding, want=want, class_name=cls)
            if line is not None:
                return Located(file, line, "self." + attr, True)
    if "." in expr and obs.owner_file:
        line = owner_line(obs.owner_file, expr, rebinding=rebinding, want=want)
        if line is not None:
            return Located(obs.owner_file, line, "self." + expr.rsplit(".", 1)[1], True)
    site = want.site if want is not None else None
    if site is not None:
        return Located(site[0], site[1], expr, False)
    return Located(obs.file, obs.line, expr, False)


def variable_line(obs: VarObservation, rebinding: bool = False, want: Want | None = None) -> tuple[str, int]:
    """(file, line) of the statement changing the variable (:func:`locate`)."""
    where = locate(obs, want, rebinding)
    return where.file, where.line


def statement_at(filename: str, line: int) -> ast.stmt | None:
    """The simple statement that begins at ``line``."""
    tree = parse(filename)
    if tree is None:
        return None
    best: ast.stmt | None = None
    for node in ast.walk(tree):
        if isinstance(node, ast.stmt) and node.lineno == line and not isinstance(
            node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.For, ast.While, ast.If, ast.With,
                   ast.Try, ast.AsyncFor, ast.AsyncWith)):
            if best is None or (getattr(node, "col_offset", 0) > getattr(best, "col_offset", 0)):
                best = node
    return best
