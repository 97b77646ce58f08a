"""Data-flow vacuity: can any of a test's assertions fail because of the code under test?

A test's assertions are judged one by one. An assertion is *weak* when it
cannot fail, or cannot fail because of the package:

* ``constant``: ``assert True``, ``assert 1 == 1`` (no name at all);
* ``tautology``: ``assert x == x``, ``assert x or True``;
* ``type-only``: only ``isinstance`` / ``type(...) is`` / ``hasattr`` checks;
* ``self-built``: only values the test built itself (literals, builtins, the
  standard library, ``parametrize`` arguments), never anything the package
  returned or could have changed;
* ``unreachable``: after a ``raise`` or ``pytest.skip``, or under ``if False``;
* ``early-exit``: after the test has already returned;
* ``swallowed``: inside a ``try`` whose handler catches the AssertionError and
  does not re-raise it (or under ``contextlib.suppress``);
* ``raises-unrelated``: ``pytest.raises`` around code that never touches the
  package.

*Tainted* means "may hold what the package computed": anything imported from
outside the standard library and pytest, test parameters (fixtures), unknown
names, and every local assigned from, or passed to, something tainted. Unsure
is tainted: a strong test must never be reported.
"""

from __future__ import annotations

import ast as pyast
import builtins
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

_BUILTINS = frozenset(dir(builtins))
_UNTAINTED_MODULES = frozenset({*sys.stdlib_module_names, "pytest", "_pytest", "__future__"})
_TYPE_CHECKS = frozenset({"isinstance", "issubclass", "callable", "hasattr"})
_SWALLOWING = frozenset({"AssertionError", "Exception", "BaseException"})
_STOPPERS = frozenset({"skip", "exit", "xfail"})  # pytest.skip(...) etc. end the test
Func = pyast.FunctionDef | pyast.AsyncFunctionDef

# One line each: the phrase that follows the assertion's source in a finding.
PHRASES = {
    "constant": "is a constant: it cannot fail",
    "tautology": "is always true",
    "type-only": "checks only a type",
    "self-built": "checks only values the test built itself",
    "unreachable": "cannot be reached",
    "early-exit": "comes after the test has returned",
    "swallowed": "is swallowed: an except or suppress() catches its failure and does not re-raise",
    "raises-unrelated": "expects an exception from code that never touches the package",
}


@dataclass(frozen=True, slots=True)
class Weak:
    line: int
    kind: str
    text: str  # the assertion's source, shortened

    def explain(self) -> str:
        return f"line {self.line}: `{self.text}` {PHRASES[self.kind]}"


@dataclass(frozen=True, slots=True)
class Judgement:
    effective: int  # assertions that can fail because of the package
    weak: tuple[Weak, ...]


class Scope:
    """What the names of one test file mean: imports, helpers, fixtures."""

    def __init__(self, tree: pyast.Module, fixtures: dict[str, Func]) -> None:
        self.functions = {n.name: n for n in tree.body if isinstance(n, (pyast.FunctionDef, pyast.AsyncFunctionDef))}
        self.fixtures = fixtures
        self._func_taint: dict[str, bool] = {}
        self.tainted_globals: set[str] = set()
        self.clean_globals: set[str] = set()
        for node in tree.body:
            if isinstance(node, (pyast.Import, pyast.ImportFrom)):
                clean = _clean_import(node)
                for alias in node.names:
                    name = (alias.asname or alias.name).split(".")[0]
                    (self.clean_globals if clean else self.tainted_globals).add(name)
            elif isinstance(node, pyast.ClassDef):
                self.tainted_globals.add(node.name)  # a test-file class may wrap anything
        for node in tree.body:  # module constants: clean when built from clean parts
            if isinstance(node, (pyast.Assign, pyast.AnnAssign)) and node.value is not None:
                targets = node.targets if isinstance(node, pyast.Assign) else [node.target]
                dest = self.tainted_globals if self._dirty(node.value, set()) else self.clean_globals
                for target in targets:
                    dest.update(_bound_names(target))
        # same-file helpers whose own body asserts: a call to one is an assertion
        self.asserting = frozenset(name for name, f in self.functions.items() if _asserts_directly(f))

    def _dirty(self, expr: pyast.AST, local_taint: set[str], local_clean: frozenset[str] = frozenset()) -> bool:
        return any(self._name_dirty(n, local_taint, local_clean) for n in _free_names(expr))

    def _name_dirty(self, name: str, local_taint: set[str], local_clean: frozenset[str]) -> bool:
        if name in local_taint:
            return True
        if name in local_clean or name in self.clean_globals:
            return False
        if name in self.tainted_globals:
            return True
        if name in self.functions:
            return self.function_tainted(name)
        return name not in _BUILTINS  # unknown: assume the worst

    def function_tainted(self, name: str) -> bool:
        """Does a same-file helper (or fixture) touch anything tainted?"""
        if name not in self._func_taint:
            self._func_taint[name] = True  # recursion guard: a cycle is assumed tainted
            func = self.functions.get(name) or self.fixtures.get(name)
            self._func_taint[name] = func is not None and Flow(func, self).body_tainted()
        return self._func_taint[name]


class Flow:
    """Taint of one function's locals (flow-insensitive, to a fixed point), then its assertions."""

    def __init__(self, func: Func, scope: Scope) -> None:
        self.func, self.scope = func, scope
        params = [a.arg for a in (*func.args.posonlyargs, *func.args.args, *func.args.kwonlyargs)]
        clean = set(_parametrized(func)) | {"self", "cls"}
        self.taint: set[str] = {p for p in params if p not in clean and self._param_dirty(p)}
        self.clean = frozenset(clean | {p for p in params if p not in self.taint})
        self.assigned = {n for stmt in func.body for t in _targets(stmt) for n in _bound_names(t)}
        self._solve()

    def _param_dirty(self, name: str) -> bool:
        fixture = self.scope.fixtures.get(name)
        return fixture is None or self.scope.function_tainted(name)

    def dirty(self, expr: pyast.AST) -> bool:
        # a local that is assigned but never tainted is clean, whatever the module says
        clean = self.clean | frozenset(n for n in self.assigned if n not in self.taint)
        return self.scope._dirty(expr, self.taint, clean)

    def _solve(self) -> None:
        while True:
            before = len(self.taint)
            for node in _walk_body(self.func.body):
                self._step(node)
            if len(self.taint) == before:
                return

    def _step(self, node: pyast.AST) -> None:
        if isinstance(node, (pyast.Assign, pyast.AnnAssign, pyast.AugAssign, pyast.NamedExpr)) and node.value is not None:
            targets = node.targets if isinstance(node, pyast.Assign) else [node.target]
            if self.dirty(node.value):
                for target in targets:
                    self.taint.update(_bound_names(target))
        elif isinstance(node, (pyast.For, pyast.AsyncFor, pyast.comprehension)) and self.dirty(node.iter):
            self.taint.update(_bound_names(node.target))
        elif isinstance(node, pyast.withitem) and node.optional_vars is not None and self.dirty(node.context_expr):
            self.taint.update(_bound_names(node.optional_vars))
        elif isinstance(node, pyast.ExceptHandler) and node.name:
            self.taint.add(node.name)
        elif isinstance(node, (pyast.FunctionDef, pyast.AsyncFunctionDef)) and node.name not in self.taint:
            if Flow(node, self.scope).body_tainted():
                self.taint.add(node.name)
        elif isinstance(node, pyast.Call):
            self._call(node)

    def _call(self, call: pyast.Call) -> None:
        """What a call may change: its arguments (tainted callee), or its receiver (tainted argument)."""
        args = [*call.args, *(k.value for k in call.keywords)]
        if self.dirty(call.func):
            for arg in args:
                self.taint.update(_base_names(arg))
        if isinstance(call.func, pyast.Attribute) and any(self.dirty(a) for a in args):
            self.taint.update(_base_names(call.func.value))

    def body_tainted(self) -> bool:
        return bool(self.taint) or any(self.dirty(stmt) for stmt in self.func.body)

    def judge(self) -> Judgement:
        weak: list[Weak] = []
        effective = 0
        for node, state in _assertions(self.func.body, self.scope.asserting):
            kind = state or self._kind(node)
            if kind is None:
                effective += 1
            else:
                weak.append(Weak(getattr(node, "lineno", self.func.lineno), kind, _source(node)))
        return Judgement(effective, tuple(weak))

    def _kind(self, node: pyast.AST) -> str | None:
        """Why one reachable assertion is weak, or None when it can fail because of the package."""
        if isinstance(node, pyast.Assert):
            return _static_kind(node.test) or (None if self.dirty(node.test) else "self-built")
        if isinstance(node, pyast.With):  # pytest.raises / warns as a context manager
            return None if any(self.dirty(s) for s in node.body) else "raises-unrelated"
        assert isinstance(node, pyast.Call)
        name = _call_name(node.func)
        args = [*node.args, *(k.value for k in node.keywords)]
        if name in ("raises", "warns"):  # pytest.raises(E, func, *args)
            return None if len(node.args) < 2 or any(self.dirty(a) for a in node.args[1:]) else "raises-unrelated"
        if name == "fail" or name in self.scope.functions and self.scope.function_tainted(name):
            return None  # pytest.fail() / self.fail(): conservative; a helper that calls into the package
        if not args:
            return None
        if not any(_free_names(a) for a in args):
            return "constant"
        return None if any(self.dirty(a) for a in args) else "self-built"


def judge_test(func: Func, scope: Scope) -> Judgement:
    """The test's own assertions, plus those of the fixtures it requests (counted when tainted)."""
    judgement = Flow(func, scope).judge()
    params = [a.arg for a in (*func.args.posonlyargs, *func.args.args, *func.args.kwonlyargs)]
    extra = 0
    for name in params:
        fixture = scope.fixtures.get(name)
        if fixture is not None and fixture is not func:
            extra += Flow(fixture, scope).judge().effective if scope.function_tainted(name) else 0
    return Judgement(judgement.effective + extra, judgement.weak)


# ---------------------------------------------------------------- assertions and reachability


def _assertions(body: list[pyast.stmt], helpers: frozenset[str], state: str | None = None) -> Iterator[tuple[pyast.AST, str | None]]:
    """(assertion node, weak kind forced by its position or None) in a statement list."""
    for stmt in body:
        yield from _in_stmt(stmt, helpers, state)
        if state is None:
            state = _ends_block(stmt)


def _in_stmt(stmt: pyast.stmt, helpers: frozenset[str], state: str | None) -> Iterator[tuple[pyast.AST, str | None]]:
    if isinstance(stmt, (pyast.FunctionDef, pyast.AsyncFunctionDef, pyast.ClassDef)):
        return  # defined, not run here
    if isinstance(stmt, pyast.Assert):
        yield stmt, state
        return
    if isinstance(stmt, (pyast.If, pyast.While)):
        truth = _constant_truth(stmt.test)
        yield from _calls(stmt.test, helpers, state)
        yield from _assertions(stmt.body, helpers, state or ("unreachable" if truth is False else None))
        yield from _assertions(stmt.orelse, helpers, state or ("unreachable" if truth is True and isinstance(stmt, pyast.If) else None))
        return
    if isinstance(stmt, (pyast.For, pyast.AsyncFor)):
        empty = isinstance(stmt.iter, (pyast.List, pyast.Tuple, pyast.Set)) and not stmt.iter.elts
        yield from _calls(stmt.iter, helpers, state)
        yield from _assertions(stmt.body, helpers, state or ("unreachable" if empty else None))
        yield from _assertions(stmt.orelse, helpers, state)
        return
    if isinstance(stmt, pyast.Try) or type(stmt).__name__ == "TryStar":
        swallowed = any(_swallows(h) for h in stmt.handlers)  # type: ignore[attr-defined]
        yield from _assertions(stmt.body, helpers, state or ("swallowed" if swallowed else None))  # type: ignore[attr-defined]
        for handler in stmt.handlers:  # type: ignore[attr-defined]
            yield from _assertions(handler.body, helpers, state)
        yield from _assertions(stmt.orelse, helpers, state)  # type: ignore[attr-defined]
        yield from _assertions(stmt.finalbody, helpers, state)  # type: ignore[attr-defined]
        return
    if isinstance(stmt, (pyast.With, pyast.AsyncWith)):
        raises = any(_call_name(_call_of(i.context_expr)) in ("raises", "warns") for i in stmt.items)
        suppress = any(_suppresses(i.context_expr) for i in stmt.items)
        for item in stmt.items:
            if not raises:
                yield from _calls(item.context_expr, helpers, state)
        if raises:
            yield stmt, state
        yield from _assertions(stmt.body, helpers, state or ("swallowed" if suppress else None))
        return
    yield from _calls(stmt, helpers, state)


def _calls(node: pyast.AST, helpers: frozenset[str], state: str | None) -> Iterator[tuple[pyast.AST, str | None]]:
    """Assertion calls in an expression statement: assert*(...), pytest.raises(E, f), helpers."""
    for sub in pyast.walk(node):
        if isinstance(sub, pyast.Call) and (_is_assert_call(sub) or _call_name(sub.func) in helpers
                                             and isinstance(sub.func, pyast.Name)):
            yield sub, state


def _asserts_directly(func: Func) -> bool:
    return any(isinstance(n, pyast.Assert) or isinstance(n, pyast.Call) and _is_assert_call(n)
               for n in _walk_body(func.body))


def _is_assert_call(call: pyast.Call) -> bool:
    name = _call_name(call.func)
    if name.startswith("assert") or name == "fail":
        return True
    return isinstance(call.func, pyast.Attribute) and name in ("raises", "warns") and len(call.args) >= 2


def _ends_block(stmt: pyast.stmt) -> str | None:
    """Does this statement end its block for good? Then what follows is unreachable."""
    if isinstance(stmt, pyast.Return):
        return "early-exit"
    if isinstance(stmt, (pyast.Raise, pyast.Continue, pyast.Break)):
        return "unreachable"
    if isinstance(stmt, pyast.Expr) and isinstance(stmt.value, pyast.Call):
        func = stmt.value.func
        if isinstance(func, pyast.Attribute) and func.attr in _STOPPERS and _call_name(func.value) == "pytest":
            return "unreachable"
    return None


def _swallows(handler: pyast.ExceptHandler) -> bool:
    if any(isinstance(n, (pyast.Raise, pyast.Assert)) or isinstance(n, pyast.Call) and _is_assert_call(n)
           for s in handler.body for n in pyast.walk(s)):
        return False
    if handler.type is None:
        return True
    names = handler.type.elts if isinstance(handler.type, pyast.Tuple) else [handler.type]
    return any(_call_name(n) in _SWALLOWING for n in names)


def _suppresses(expr: pyast.expr) -> bool:
    call = _call_of(expr)
    return call is not None and _call_name(call.func) == "suppress" and any(_call_name(a) in _SWALLOWING for a in call.args)


# ---------------------------------------------------------------- judging one assert


def _static_kind(test: pyast.expr) -> str | None:
    """Weak whatever the data: constant, tautological or type-only."""
    if not _free_names(test) and not any(isinstance(n, pyast.Call) for n in pyast.walk(test)):
        return "constant"
    if isinstance(test, pyast.Tuple) and test.elts:
        return "tautology"
    reflexive = (pyast.Eq, pyast.Is, pyast.LtE, pyast.GtE)
    if isinstance(test, pyast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], reflexive) \
            and pyast.dump(test.left) == pyast.dump(test.comparators[0]):
        return "tautology"
    if isinstance(test, pyast.BoolOp) and isinstance(test.op, pyast.Or) and any(_constant_truth(v) for v in test.values):
        return "tautology"
    if _type_only(test):
        return "type-only"
    return None


def _type_only(test: pyast.expr) -> bool:
    if isinstance(test, pyast.UnaryOp) and isinstance(test.op, pyast.Not):
        return _type_only(test.operand)
    if isinstance(test, pyast.BoolOp):
        return all(_type_only(v) for v in test.values)
    if isinstance(test, pyast.Call):
        return _call_name(test.func) in _TYPE_CHECKS and isinstance(test.func, pyast.Name)
    if isinstance(test, pyast.Compare) and len(test.ops) == 1:
        left = test.left
        return isinstance(left, pyast.Call) and _call_name(left.func) == "type" and isinstance(
            test.ops[0], (pyast.Is, pyast.IsNot, pyast.Eq, pyast.NotEq))
    return False


def _constant_truth(expr: pyast.expr) -> bool | None:
    if isinstance(expr, pyast.Constant):
        return bool(expr.value)
    return None


# ---------------------------------------------------------------- small AST helpers


def _free_names(node: pyast.AST) -> set[str]:
    """Names an expression reads, minus those its own comprehensions and lambdas bind."""
    read: set[str] = set()
    bound: set[str] = set()
    for sub in pyast.walk(node):
        if isinstance(sub, pyast.Name) and isinstance(sub.ctx, pyast.Load):
            read.add(sub.id)
        elif isinstance(sub, pyast.comprehension):
            bound.update(_bound_names(sub.target))
        elif isinstance(sub, pyast.Lambda):
            bound.update(a.arg for a in (*sub.args.posonlyargs, *sub.args.args, *sub.args.kwonlyargs))
        elif isinstance(sub, pyast.NamedExpr):
            bound.add(sub.target.id)
    return read - bound


def _bound_names(target: pyast.AST) -> Iterator[str]:
    if isinstance(target, pyast.Name):
        yield target.id
    elif isinstance(target, (pyast.Tuple, pyast.List)):
        for elt in target.elts:
            yield from _bound_names(elt)
    elif isinstance(target, pyast.Starred):
        yield from _bound_names(target.value)
    elif isinstance(target, (pyast.Attribute, pyast.Subscript)):
        yield from _base_names(target)  # x.a = ... / x[k] = ... changes x


def _base_names(expr: pyast.AST) -> Iterator[str]:
    while isinstance(expr, (pyast.Attribute, pyast.Subscript, pyast.Starred)):
        expr = expr.value
    if isinstance(expr, pyast.Name):
        yield expr.id


def _targets(stmt: pyast.AST) -> Iterable[pyast.AST]:
    for node in _walk_body([stmt]) if isinstance(stmt, pyast.stmt) else ():
        if isinstance(node, pyast.Assign):
            yield from node.targets
        elif isinstance(node, (pyast.AnnAssign, pyast.AugAssign, pyast.For, pyast.AsyncFor, pyast.NamedExpr)):
            yield node.target
        elif isinstance(node, pyast.withitem) and node.optional_vars is not None:
            yield node.optional_vars


def _walk_body(body: list[pyast.stmt]) -> Iterator[pyast.AST]:
    """Every node of a body, not descending into nested function or class definitions."""
    stack: list[pyast.AST] = list(reversed(body))
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, (pyast.FunctionDef, pyast.AsyncFunctionDef, pyast.ClassDef, pyast.Lambda)):
            continue
        stack.extend(reversed(list(pyast.iter_child_nodes(node))))


def _parametrized(func: Func) -> Iterator[str]:
    """Argument names a ``@pytest.mark.parametrize("a,b", [...])`` with literal values binds."""
    for deco in func.decorator_list:
        if isinstance(deco, pyast.Call) and _call_name(deco.func) == "parametrize" and len(deco.args) >= 2:
            names, values = deco.args[0], deco.args[1]
            if isinstance(names, pyast.Constant) and isinstance(names.value, str) and not _free_names(values):
                yield from (n.strip() for n in names.value.split(",") if n.strip())


def _clean_import(node: pyast.Import | pyast.ImportFrom) -> bool:
    if isinstance(node, pyast.ImportFrom):
        return node.level == 0 and (node.module or "").split(".")[0] in _UNTAINTED_MODULES
    return all(a.name.split(".")[0] in _UNTAINTED_MODULES for a in node.names)


def _call_of(expr: pyast.expr) -> pyast.Call | None:
    return expr if isinstance(expr, pyast.Call) else None


def _call_name(func: pyast.AST | None) -> str:
    if isinstance(func, pyast.Call):
        func = func.func
    if isinstance(func, pyast.Attribute):
        return func.attr
    return func.id if isinstance(func, pyast.Name) else ""


def _source(node: pyast.AST) -> str:
    if isinstance(node, pyast.With):
        text = "with " + ", ".join(pyast.unparse(i) for i in node.items)
    else:
        text = pyast.unparse(node)
    text = " ".join(text.split())
    return text if len(text) <= 60 else text[:57] + "..."
