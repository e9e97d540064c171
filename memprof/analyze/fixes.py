"""The fix for a holder, written from the statement that changes it.

The advice names the holder as that statement writes it and rewrites what it adds or stores:
``epoch_loss += loss * len(x)`` becomes ``epoch_loss += (loss * len(x)).item()``,
``self.y_preds_.append(y_pred)`` becomes ``self.y_preds_.append(y_pred.detach())``. A statement that
already adds a number is never proposed again; without a statement, the advice says what to
change in words.
"""

from __future__ import annotations

import ast
import copy

from memprof.analyze.source import Located, carries_no_graph, name_of, statement_at
from memprof.model.run import IterationRecord

MAX_CODE = 110  # longer code is shown by its changed part only


def _wrapped(value: ast.expr, method: str) -> ast.expr:
    call = ast.Call(func=ast.Attribute(value=copy.deepcopy(value), attr=method, ctx=ast.Load()), args=[], keywords=[])
    return call


def _text(node: ast.AST) -> str:
    try:
        return ast.unparse(node)
    except Exception:
        return ""


def _detached_value(value: ast.expr, method: str, path: str) -> ast.expr:
    """``value`` with what can carry a graph detached: ``[a, b]`` -> ``[a.detach(), b.detach()]``,
    ``x + v`` where ``x`` is the holder -> ``x + v.detach()``."""
    if isinstance(value, (ast.List, ast.Tuple)):
        out = copy.deepcopy(value)
        out.elts = [e if carries_no_graph(e, path) else _detached_value(e, method, path) for e in value.elts]
        return out
    if isinstance(value, ast.Dict):
        d = copy.deepcopy(value)
        d.values = [v if carries_no_graph(v, path) else _detached_value(v, method, path) for v in value.values]
        return d
    if isinstance(value, ast.IfExp):  # ``loss.item() if careful else loss``: the branch with a graph
        if carries_no_graph(value.body, path) or carries_no_graph(value.orelse, path):
            graph = value.orelse if carries_no_graph(value.body, path) else value.body
            fixed = _detached_value(graph, method, path)
            other = value.body if graph is value.orelse else value.orelse
            if _text(fixed) == _text(other):  # both branches now add the same: one expression
                return fixed
            cond = copy.deepcopy(value)
            if graph is value.orelse:
                cond.orelse = fixed
            else:
                cond.body = fixed
            return cond
    if isinstance(value, ast.BinOp) and (name_of(value.left) == path or name_of(value.right) == path):
        b = copy.deepcopy(value)
        if name_of(value.left) == path:
            b.right = _detached_value(value.right, method, path)
        else:
            b.left = _detached_value(value.left, method, path)
        return b
    return _wrapped(value, method)


def _targets(stmt: ast.AugAssign | ast.Assign | ast.AnnAssign, path: str) -> bool:
    """The statement assigns the holder, or an item of it."""
    targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
    for t in targets:
        for e in t.elts if isinstance(t, ast.Tuple) else [t]:
            if name_of(e) == path or (isinstance(e, ast.Subscript) and name_of(e.value) == path):
                return True
    return False


def _rewrite(where: Located, method: str) -> str | None:
    """The statement at ``where`` with what it adds to or stores in the holder detached (``method``:
    ``item`` or ``detach``); None when there is nothing to rewrite."""
    if not where.found:
        return None
    stmt = statement_at(where.file, where.line)
    if stmt is None:
        return None
    path = where.name
    new: ast.AST | None = None
    if isinstance(stmt, ast.AugAssign) and _targets(stmt, path):
        if carries_no_graph(stmt.value, path):
            return None
        new = copy.deepcopy(stmt)
        new.value = _detached_value(stmt.value, method, path)
    elif isinstance(stmt, (ast.Assign, ast.AnnAssign)) and stmt.value is not None and _targets(stmt, path):
        if carries_no_graph(stmt.value, path):
            return None
        new = copy.deepcopy(stmt)
        new.value = _detached_value(stmt.value, method, path)
    else:
        for node in ast.walk(stmt):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args
                    and name_of(node.func.value if not isinstance(node.func.value, ast.Subscript)
                                else node.func.value.value) == path):
                if carries_no_graph(node.args[-1], path):
                    return None
                new = copy.deepcopy(node)
                new.args[-1] = _detached_value(node.args[-1], method, path)
                break
    if new is None:
        return None
    text = _text(new)
    return text if text and len(text) <= MAX_CODE else None


def accumulation_fix(where: Located, scalar: bool) -> str:
    """A holder that adds up graph-carrying tensors (its history grows): add numbers instead."""
    name = where.name
    if scalar:
        code = _rewrite(where, "item")
        if code:
            return f"accumulate a number, not the graph: `{code}` (or `.detach()` to keep a tensor)"
        return (f"accumulate a number in {name}, not the graph: add `.item()` (or `.detach()`) to what is "
                f"added to {name}")
    code = _rewrite(where, "detach")
    if code:
        return f"update {name} without autograd: `{code}` (or do the update under `with torch.no_grad():`)"
    return (f"update {name} without autograd: `.detach()` what is added to it, or do the update under "
            "`with torch.no_grad():`")


def on_gpu(it: IterationRecord) -> bool:
    """Whether the iteration ran on a GPU (the CUDA allocator's counters were read): only then does
    moving a tensor to the CPU (`.cpu()`) free memory that counts."""
    return it.cuda_allocated_peak is not None


def keep_detached_fix(where: Located, on_gpu: bool = True) -> str:
    """A holder that keeps graph-carrying tensors: keep them detached (and on a GPU run, maybe on
    the CPU; on a CPU run `.cpu()` would change nothing)."""
    code = _rewrite(where, "detach")
    alt = "`.detach().cpu()`, or a reduced metric" if on_gpu else "a reduced metric"
    if code:
        return f"keep tensors without their graph: `{code}` (or {alt})"
    return f"store `.detach()`ed tensors (or {alt}) in {where.name}, not graph-carrying ones"
