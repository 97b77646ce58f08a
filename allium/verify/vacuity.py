"""Static detection of vacuous tests: tagged, green, and proving nothing.

A tagged test is vacuous when

* ``no-assert``: neither it nor the same-file helpers and fixtures it uses
  (one level deep) asserts anything: no ``assert``, ``pytest.raises`` /
  ``warns`` / ``fail``, ``self.assert*`` or ``assert_*`` helper call; or
* ``unrelated``: its body (and those helpers and fixtures) never touches
  anything the obligation is about (see :mod:`allium.verify.terms`), matching
  identifiers, attribute names, string constants and keyword names;
* with ``flow=True``, one of the data-flow kinds of :mod:`allium.verify.flow`
  (``constant``, ``self-built``, ``swallowed``...): it asserts, but no
  assertion can fail because of the code under test.

The test's own name and its decorators are ignored on purpose: they carry the
tag, and naming a rule is exactly what proves nothing. Nothing here imports or
runs the tests; the files are only parsed.
"""

from __future__ import annotations

import ast as pyast
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from allium.verify.flow import Scope, judge_test
from allium.verify.terms import key, phrase_keys

_ASSERTING_ATTRS = frozenset({"raises", "warns", "deprecated_call", "fail"})
_FUNCS = (pyast.FunctionDef, pyast.AsyncFunctionDef)


@dataclass(frozen=True, slots=True)
class Vacuity:
    nodeid: str
    obligation: str
    reason: str  # "no-assert" | "unrelated" | a data-flow kind (flow.PHRASES)
    detail: str
    file: Path
    line: int


@dataclass
class _TestFile:
    """One parsed test file plus the fixtures visible to it from conftest.py files."""

    tree: pyast.Module
    functions: dict[str, pyast.FunctionDef | pyast.AsyncFunctionDef]
    fixtures: dict[str, pyast.FunctionDef | pyast.AsyncFunctionDef] = field(default_factory=dict)
    scope: Scope | None = None  # built on first data-flow use

    def flow_scope(self) -> Scope:
        if self.scope is None:
            self.scope = Scope(self.tree, self.fixtures)
        return self.scope


@dataclass(frozen=True, slots=True)
class _Facts:
    asserts: bool
    tokens: frozenset[str]  # normalised word runs of everything the test touches


def find_vacuous(
    tests: Iterable[tuple[str, tuple[str, ...]]],
    root: Path,
    terms_for: Callable[[str], frozenset[str]],
    *,
    flow: bool = False,
) -> list[Vacuity]:
    """Vacuity findings for (nodeid, obligation ids) pairs; node ids are relative to ``root``.

    ``flow`` adds the data-flow judgement (stricter: it may flag tests the
    lexical rules accept).
    """
    files: dict[Path, _TestFile | None] = {}
    found: list[Vacuity] = []
    for nodeid, obligations in tests:
        path = root / nodeid.split("::", 1)[0]
        if path not in files:
            files[path] = _load(path, root)
        parsed = files[path]
        func = locate(parsed.tree, nodeid) if parsed is not None else None
        if parsed is None or func is None:
            continue  # not statically resolvable (generated, inherited...): no verdict
        found.extend(_judge(nodeid, obligations, func, parsed, path, terms_for, flow))
    return found


def _judge(nodeid: str, obligations: tuple[str, ...], func: pyast.FunctionDef | pyast.AsyncFunctionDef,
           parsed: _TestFile, path: Path, terms_for: Callable[[str], frozenset[str]],
           flow: bool) -> Iterator[Vacuity]:
    facts = body_facts(func, parsed)
    if not facts.asserts:
        for oid in obligations:
            yield Vacuity(nodeid, oid, "no-assert", "asserts nothing", path, func.lineno)
        return
    judged = judge_test(func, parsed.flow_scope()) if flow else None
    for oid in obligations:
        terms = terms_for(oid)
        if terms and not any(key(t) in facts.tokens for t in terms):
            shown = ", ".join(sorted(terms)[:8]) + (", ..." if len(terms) > 8 else "")
            yield Vacuity(nodeid, oid, "unrelated", f"never touches any of: {shown}", path, func.lineno)
        elif judged is not None and judged.weak and judged.effective == 0:
            weak = [w for w in judged.weak if not (w.kind == "type-only" and _about_types(oid))]
            if len(weak) == len(judged.weak):
                yield Vacuity(nodeid, oid, weak[0].kind, _explain(weak), path, weak[0].line)


# Obligations whose very point is a declared shape: a type check is the assertion they need.
_TYPE_CATEGORIES = ("entity-fields.", "entity-optional.", "entity-relationship.", "contract-signature.",
                    "enum-comparable.", "surface-exposure.", "surface-provides.")


def _about_types(obligation: str) -> bool:
    return obligation.partition(":")[2].startswith(_TYPE_CATEGORIES) or obligation.startswith(_TYPE_CATEGORIES)


def _explain(weak: list) -> str:
    """One line: the first weak assertion, and how many more there are."""
    more = len(weak) - 1
    return weak[0].explain() + (f" (and {more} more assertion{'s' if more > 1 else ''} that cannot fail "
                                "because of the code)" if more else "")


def locate(tree: pyast.Module, nodeid: str) -> pyast.FunctionDef | pyast.AsyncFunctionDef | None:
    """The function a node id names: `file::Class::test_name[param-id]`."""
    parts = nodeid.split("::")[1:]
    if not parts:
        return None
    *classes, name = parts
    name = name.split("[", 1)[0]
    body: list[pyast.stmt] = tree.body
    for cls in classes:
        found = next((n for n in body if isinstance(n, pyast.ClassDef) and n.name == cls), None)
        if found is None:
            return None
        body = found.body
    return next((n for n in body if isinstance(n, _FUNCS) and n.name == name), None)


def tag_location(root: Path, nodeid: str, obligation: str) -> tuple[int, int]:
    """(line, column) of the tag string in the test's decorators, else of the test; (1, 1) if unknown."""
    tree = _parse(root / nodeid.split("::", 1)[0])
    func = locate(tree, nodeid) if tree is not None else None
    if func is None:
        return 1, 1
    for deco in func.decorator_list:
        for node in pyast.walk(deco):
            if isinstance(node, pyast.Constant) and node.value == obligation:
                return node.lineno, node.col_offset + 1
    return func.lineno, func.col_offset + 1


def body_facts(func: pyast.FunctionDef | pyast.AsyncFunctionDef, parsed: _TestFile) -> _Facts:
    """What the test body, plus the same-file helpers it calls and fixtures it takes, does."""
    bodies = [func.body]
    for helper in _helpers(func, parsed):
        bodies.append(helper.body)
    asserts = any(_asserts(node) for body in bodies for stmt in body for node in pyast.walk(stmt))
    tokens: set[str] = set()
    for body in bodies:
        for stmt in body:
            for raw in _raw_tokens(stmt):
                tokens.update(phrase_keys(raw))
    return _Facts(asserts, frozenset(tokens))


def _helpers(func: pyast.FunctionDef | pyast.AsyncFunctionDef, parsed: _TestFile) -> list[pyast.FunctionDef | pyast.AsyncFunctionDef]:
    """One level: module-level functions the test calls, and fixtures it requests by parameter."""
    out = []
    called = {n.func.id for n in pyast.walk(func) if isinstance(n, pyast.Call) and isinstance(n.func, pyast.Name)}
    for name in called:
        helper = parsed.functions.get(name)
        if helper is not None and helper is not func:
            out.append(helper)
    params = [a.arg for a in (*func.args.posonlyargs, *func.args.args, *func.args.kwonlyargs)]
    for name in params:
        fixture = parsed.fixtures.get(name)
        if fixture is not None and fixture not in out:
            out.append(fixture)
    return out


def _asserts(node: pyast.AST) -> bool:
    if isinstance(node, pyast.Assert):
        return True
    if not isinstance(node, pyast.Call):
        return False
    func = node.func
    name = func.attr if isinstance(func, pyast.Attribute) else func.id if isinstance(func, pyast.Name) else ""
    if name.startswith("assert") or name.startswith("fail"):
        return True  # assert_equal, assertEqual, self.assertRaises, np.testing.assert_*, self.fail
    return isinstance(func, pyast.Attribute) and name in _ASSERTING_ATTRS


def _raw_tokens(node: pyast.AST) -> Iterator[str]:
    for sub in pyast.walk(node):
        if isinstance(sub, pyast.Name):
            yield sub.id
        elif isinstance(sub, pyast.Attribute):
            yield sub.attr
        elif isinstance(sub, pyast.keyword) and sub.arg:
            yield sub.arg
        elif isinstance(sub, pyast.Constant) and isinstance(sub.value, str):
            yield sub.value
        elif isinstance(sub, pyast.alias):
            yield sub.asname or sub.name


def _load(path: Path, root: Path) -> _TestFile | None:
    tree = _parse(path)
    if tree is None:
        return None
    functions = {n.name: n for n in tree.body if isinstance(n, _FUNCS)}
    fixtures: dict[str, pyast.FunctionDef | pyast.AsyncFunctionDef] = {}
    # conftest fixtures, outermost first so nearer definitions override (as in pytest)
    for conftest in reversed(list(_conftests(path, root))):
        conf = _parse(conftest)
        if conf is not None:
            fixtures.update({n.name: n for n in conf.body if isinstance(n, _FUNCS) and _is_fixture(n)})
    fixtures.update({n: f for n, f in functions.items() if _is_fixture(f)})
    return _TestFile(tree, functions, fixtures)


def _conftests(path: Path, root: Path) -> Iterator[Path]:
    here = path.parent
    while True:
        if (here / "conftest.py").is_file():
            yield here / "conftest.py"
        if here == root or here.parent == here:
            return
        here = here.parent


def _is_fixture(func: pyast.FunctionDef | pyast.AsyncFunctionDef) -> bool:
    for deco in func.decorator_list:
        target = deco.func if isinstance(deco, pyast.Call) else deco
        name = target.attr if isinstance(target, pyast.Attribute) else getattr(target, "id", "")
        if name == "fixture":
            return True
    return False


def _parse(path: Path) -> pyast.Module | None:
    try:
        return pyast.parse(path.read_text(encoding="utf-8"), str(path))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return None  # pytest reports the collection error; we stay silent
