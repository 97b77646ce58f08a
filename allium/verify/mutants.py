"""Mutation operators: small, plausible bugs in a generated module's functions.

Each mutant changes one node inside one function (module-level, or a method of
a module-level class) and is delivered as that function's recompiled code
object: the runner swaps it into the live function (``func.__code__``), so
every reference the tests hold sees the bug without re-importing anything.
Module-level statements (constants, tables) are not mutated: their values are
fixed at import time.

Operators (``Mutant.operator``):

* ``boundary``: ``<`` <-> ``<=``, ``>`` <-> ``>=``;
* ``negate``: ``==`` <-> ``!=``, ``is`` <-> ``is not``, ``in`` <-> ``not in``;
* ``arithmetic``: ``+`` <-> ``-``, ``*`` <-> ``/``, ``//`` -> ``/``, ``%`` -> ``*``,
  and the same for augmented assignment;
* ``boolean``: ``and`` <-> ``or``, ``not x`` -> ``x``, ``True`` <-> ``False``;
* ``constant``: an integer ``n`` -> ``n + 1``, a non-empty string -> ``"XX" + s``
  (not strings with whitespace: those are messages, not values the spec constrains);
* ``remove-statement``: a call statement or an attribute/item assignment -> ``pass``;
* ``remove-return``: ``return x`` -> ``return None``;
* ``remove-raise``: ``raise ...`` -> ``pass``;
* ``remove-guard``: ``if c:`` whose body ends in ``raise``/``return`` -> ``if False:``.
"""

from __future__ import annotations

import ast as pyast
import copy
import difflib
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import CodeType
from typing import Any

OPERATORS_VERSION = "2"  # bump when operators change: cached results are keyed on it

_CMP_SWAP: dict[type, type] = {
    pyast.Lt: pyast.LtE, pyast.LtE: pyast.Lt, pyast.Gt: pyast.GtE, pyast.GtE: pyast.Gt,
    pyast.Eq: pyast.NotEq, pyast.NotEq: pyast.Eq, pyast.Is: pyast.IsNot, pyast.IsNot: pyast.Is,
    pyast.In: pyast.NotIn, pyast.NotIn: pyast.In,
}
_BOUNDARY = {pyast.Lt, pyast.LtE, pyast.Gt, pyast.GtE}
_ARITH_SWAP: dict[type, type] = {
    pyast.Add: pyast.Sub, pyast.Sub: pyast.Add, pyast.Mult: pyast.Div, pyast.Div: pyast.Mult,
    pyast.FloorDiv: pyast.Div, pyast.Mod: pyast.Mult,
}
_SYMBOLS = {pyast.Lt: "<", pyast.LtE: "<=", pyast.Gt: ">", pyast.GtE: ">=", pyast.Eq: "==",
            pyast.NotEq: "!=", pyast.Is: "is", pyast.IsNot: "is not", pyast.In: "in", pyast.NotIn: "not in",
            pyast.Add: "+", pyast.Sub: "-", pyast.Mult: "*", pyast.Div: "/", pyast.FloorDiv: "//",
            pyast.Mod: "%", pyast.And: "and", pyast.Or: "or"}


@dataclass(frozen=True, slots=True)
class Mutant:
    id: str  # stable: file, function, operator, position and change
    file: str  # relative to the package root, e.g. ledger/core.py
    module: str  # importable name, e.g. ledger.core
    qualname: str  # Class.method or function
    line: int
    operator: str
    description: str  # one line: `a < b` -> `a <= b`
    code: bytes  # marshal of the mutated function's code object
    diff: str  # unified diff of the function

    def short(self) -> str:
        return f"{self.file}:{self.line} {self.qualname}: {self.description}"


@dataclass(frozen=True, slots=True)
class Site:
    """One mutable function: where it is, and its AST."""

    qualname: str
    node: pyast.FunctionDef | pyast.AsyncFunctionDef
    cls: pyast.ClassDef | None


def functions(tree: pyast.Module) -> Iterator[Site]:
    for node in tree.body:
        if isinstance(node, (pyast.FunctionDef, pyast.AsyncFunctionDef)):
            yield Site(node.name, node, None)
        elif isinstance(node, pyast.ClassDef):
            for sub in node.body:
                if isinstance(sub, (pyast.FunctionDef, pyast.AsyncFunctionDef)):
                    yield Site(f"{node.name}.{sub.name}", sub, node)


def mutants_of(source: str, file: str, module: str, lines: set[int] | None = None) -> list[Mutant]:
    """Every mutant of the module's functions, optionally only on the given lines."""
    import marshal

    tree = pyast.parse(source, file)
    out: list[Mutant] = []
    for site in functions(tree):
        original = pyast.unparse(site.node)
        plain = _compile(site, copy.deepcopy(site.node), file)
        if plain is None:
            continue
        for index, node, operator, apply in _points(site.node):
            line = getattr(node, "lineno", site.node.lineno)
            if lines is not None and line not in lines:
                continue
            mutated_func = copy.deepcopy(site.node)
            target = list(_mutable_nodes(mutated_func))[index]
            replacement = apply(target)
            before, after = _snippet(target), _snippet(replacement)
            _replace(mutated_func, target, replacement)
            code = _compile(site, mutated_func, file)
            if code is None or code.co_freevars != plain.co_freevars:
                continue  # e.g. removing the only super() call drops the __class__ cell: not swappable
            text = pyast.unparse(mutated_func)
            diff = _diff(original, text, file, line)
            if not diff:
                continue  # an equivalent rewrite at source level
            description = f"`{before}` -> `{after}`"
            ident = hashlib.sha256(f"{file}|{site.qualname}|{operator}|{description}|{diff}".encode()).hexdigest()[:12]
            out.append(Mutant(ident, file, module, site.qualname, line, operator, description,
                              marshal.dumps(code), diff))
    return out


# ---------------------------------------------------------------- operators


def _mutable_nodes(func: pyast.FunctionDef | pyast.AsyncFunctionDef) -> Iterator[pyast.AST]:
    """The nodes of a function body in a fixed order (the docstring and nested defs' headers skipped)."""
    body = func.body
    if body and isinstance(body[0], pyast.Expr) and isinstance(body[0].value, pyast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:]
    for stmt in body:
        for node in pyast.walk(stmt):
            if isinstance(node, (pyast.expr, pyast.stmt)) and not _in_annotation(node):
                yield node


def _in_annotation(node: pyast.AST) -> bool:
    return bool(getattr(node, "_allium_annotation", False))


def _points(func: pyast.FunctionDef | pyast.AsyncFunctionDef) -> Iterator[tuple[int, pyast.AST, str, Callable]]:
    """(node's index in _mutable_nodes, node, operator, how to mutate it) for each mutation.

    The index finds the same node again in a deep copy of the function.
    """
    _mark_annotations(func)
    for index, node in enumerate(_mutable_nodes(func)):
        for operator, apply in _ways(node):
            yield index, node, operator, apply


def _ways(node: pyast.AST) -> Iterator[tuple[str, Callable[..., Any]]]:
    if isinstance(node, pyast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _CMP_SWAP:
        op = type(node.ops[0])
        yield ("boundary" if op in _BOUNDARY else "negate"), lambda n: _with(n, ops=[_CMP_SWAP[type(n.ops[0])]()])
    elif isinstance(node, (pyast.BinOp, pyast.AugAssign)) and type(node.op) in _ARITH_SWAP:
        yield "arithmetic", lambda n: _with(n, op=_ARITH_SWAP[type(n.op)]())
    elif isinstance(node, pyast.BoolOp):
        yield "boolean", lambda n: _with(n, op=pyast.Or() if isinstance(n.op, pyast.And) else pyast.And())
    elif isinstance(node, pyast.UnaryOp) and isinstance(node.op, pyast.Not):
        yield "boolean", lambda n: n.operand
    elif isinstance(node, pyast.Constant):
        yield from _constant_ways(node)
    elif isinstance(node, pyast.Return) and node.value is not None and not _is_none(node.value):
        yield "remove-return", lambda n: _with(n, value=pyast.Constant(None))
    elif isinstance(node, pyast.Raise):
        yield "remove-raise", lambda n: None
    elif isinstance(node, pyast.If) and node.body and isinstance(node.body[-1], (pyast.Raise, pyast.Return)):
        yield "remove-guard", lambda n: _with(n, test=pyast.Constant(False))
    elif isinstance(node, pyast.Expr) and isinstance(node.value, pyast.Call) or isinstance(node, pyast.Assign) and all(isinstance(t, (pyast.Attribute, pyast.Subscript)) for t in node.targets):
        yield "remove-statement", lambda n: None


def _constant_ways(node: pyast.Constant) -> Iterator[tuple[str, Callable[..., Any]]]:
    value = node.value
    if isinstance(value, bool):
        yield "boolean", lambda n: pyast.Constant(not n.value)
    elif isinstance(value, int):
        yield "constant", lambda n: pyast.Constant(n.value + 1)
    elif isinstance(value, str) and value and not any(c.isspace() for c in value) \
            and not getattr(node, "_allium_fstring", False):  # prose (messages) is not behaviour
        yield "constant", lambda n: pyast.Constant("XX" + n.value)
    elif isinstance(value, bytes) and value:
        yield "constant", lambda n: pyast.Constant(b"XX" + n.value)


def _mark_annotations(func: pyast.AST) -> None:
    """Annotations and f-string pieces are not behaviour worth mutating (or cannot be rewritten)."""
    for node in pyast.walk(func):
        for ann in _annotation_fields(node):
            for sub in pyast.walk(ann):
                sub._allium_annotation = True  # type: ignore[attr-defined]
        if isinstance(node, pyast.JoinedStr):
            for sub in pyast.walk(node):
                sub._allium_fstring = True  # type: ignore[attr-defined]
                if isinstance(sub, pyast.Constant):
                    sub._allium_annotation = True  # type: ignore[attr-defined]
        if isinstance(node, pyast.Expr) and isinstance(node.value, pyast.Constant):
            node.value._allium_annotation = True  # type: ignore[attr-defined]  # stray string statements
        if isinstance(node, pyast.Raise) and node.exc is not None:
            for sub in pyast.walk(node.exc):  # an exception's message text is not behaviour
                if isinstance(sub, pyast.Constant) and isinstance(sub.value, str):
                    sub._allium_annotation = True  # type: ignore[attr-defined]


def _annotation_fields(node: pyast.AST) -> Iterator[pyast.AST]:
    if isinstance(node, (pyast.AnnAssign, pyast.arg)) and node.annotation is not None:
        yield node.annotation
    elif isinstance(node, (pyast.FunctionDef, pyast.AsyncFunctionDef)):
        if node.returns is not None:
            yield node.returns
        yield from node.decorator_list
        yield from (d for d in (*node.args.defaults, *node.args.kw_defaults) if d is not None)


def _is_none(expr: pyast.expr) -> bool:
    return isinstance(expr, pyast.Constant) and expr.value is None


def _with(node: pyast.AST, **changes: object) -> pyast.AST:
    new = copy.copy(node)
    for name, value in changes.items():
        setattr(new, name, value)
    return new


# ---------------------------------------------------------------- plumbing


def _replace(root: pyast.AST, target: pyast.AST, replacement: pyast.AST | None) -> None:
    """Put `replacement` where `target` is (a statement removed becomes `pass`)."""
    for parent in pyast.walk(root):
        for name, value in pyast.iter_fields(parent):
            if value is target:
                setattr(parent, name, replacement)
            elif isinstance(value, list) and any(v is target for v in value):
                i = next(i for i, v in enumerate(value) if v is target)
                if replacement is None:
                    value[i] = pyast.Pass()
                else:
                    value[i] = replacement
            else:
                continue
            pyast.fix_missing_locations(root)
            return


def _compile(site: Site, func: pyast.AST, file: str) -> CodeType | None:
    """The mutated function's code object, compiled in its class when it has one (for `super()`)."""
    pyast.fix_missing_locations(func)
    holder: pyast.stmt = func  # type: ignore[assignment]
    if site.cls is not None:
        extra: dict[str, Any] = {"type_params": []} if "type_params" in pyast.ClassDef._fields else {}  # 3.12+
        holder = pyast.ClassDef(name=site.cls.name, bases=[], keywords=[], body=[holder],
                                decorator_list=[], **extra)
        pyast.copy_location(holder, site.cls)
    module = pyast.Module([holder], [])
    try:
        code = compile(pyast.fix_missing_locations(module), file, "exec", dont_inherit=True)
    except (SyntaxError, ValueError, TypeError):
        return None
    name = site.qualname.rsplit(".", 1)[-1]
    if site.cls is not None:
        code = _find_code(code, site.cls.name) or code
    return _find_code(code, name)


def _find_code(code: CodeType, name: str) -> CodeType | None:
    return next((c for c in code.co_consts if isinstance(c, CodeType) and c.co_name == name), None)


def _diff(before: str, after: str, file: str, line: int) -> str:
    """The changed lines of the function, one line of context, under a `file:line` header."""
    lines = difflib.unified_diff(before.splitlines(), after.splitlines(), n=1, lineterm="")
    body = [x for x in lines if not x.startswith(("---", "+++", "@@"))]
    return "\n".join([f"--- {file}:{line}", *body]) if body else ""


def _snippet(node: pyast.AST | None) -> str:
    if node is None:
        return "pass"
    if isinstance(node, pyast.If):
        node = node.test  # a guard: show its condition, not its body
    elif isinstance(node, pyast.Raise):
        return "raise " + _snippet(node.exc) if node.exc is not None else "raise"
    text = " ".join(pyast.unparse(node).split())
    return text if len(text) <= 50 else text[:47] + "..."
