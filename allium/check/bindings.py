"""Rule 11/24: names in rules must be bound; `let` names bound once per rule."""

from __future__ import annotations

from collections.abc import Iterator

from allium import ast
from allium.check import queries, scope
from allium.check.context import CheckContext
from allium.check.symbols import BUILTIN_NAMES
from allium.diagnostics import Diagnostic, error


def all_literals(context: CheckContext) -> frozenset[str]:
    """Every enum-like literal of the check set: bare lowercase names that are values."""
    out: set[str] = set()
    for syms in context.symbols.modules.values():
        out |= syms.literals
    return frozenset(out)


def check_undefined_bindings(module: ast.Module, context: CheckContext) -> Iterator[Diagnostic]:
    syms = context.of(module)
    base = frozenset(BUILTIN_NAMES | syms.given.keys() | syms.defaults.keys())
    literals = all_literals(context)
    for rule in module.rules:
        reported: set[str] = set()
        for ref in scope.rule_refs(rule, base):
            name = ref.name.name
            # A bare name elsewhere may be an enum literal of a field we cannot
            # type (`template: welcome`); like JUXT, only check where a literal
            # cannot stand: member roots, lookup shorthands and value operands.
            if ref.role not in (scope.ROOT, scope.SHORTHAND, scope.OPERAND):
                continue
            if queries.is_upper(name) or "/" in name or name in ref.bound or name in reported:
                continue
            if ref.role == scope.OPERAND and name in literals:
                continue  # `x.status in {a, b}`, `status < high` on ordered enums
            reported.add(name)
            yield error(
                "allium.rule.undefinedBinding",
                f"Rule '{rule.name}' references '{name}' but no matching binding exists in "
                "context, trigger params, default instances, or local lets.",
                ref.name.span,
            )


def check_bare_entity_bindings(module: ast.Module, context: CheckContext) -> Iterator[Diagnostic]:
    """`when: state: SomeEntity` binds `state` to nothing a rule can read.

    The trigger itself is reported as invalid; like JUXT, the first top-level
    requires/ensures clause that uses the name is reported as well.
    """
    for rule in module.rules:
        when = rule.when
        if when is None or when.binding is None or not isinstance(when.trigger, ast.Name):
            continue
        if not queries.is_upper(when.trigger.name):
            continue
        name = when.binding
        for clause in rule.clauses:
            if isinstance(clause, (ast.RequiresClause, ast.EnsuresClause)) and _mentions(clause, name):
                yield error(
                    "allium.rule.undefinedBinding",
                    f"Rule '{rule.name}' references '{name}' but no matching binding exists in context, "
                    f"trigger params, default instances, or local lets ('when: {name}: "
                    f"{when.trigger.name}' binds it to no trigger).",
                    clause.span,
                )
                break


def _mentions(node: ast.Node, name: str) -> bool:
    return any(isinstance(n, ast.Name) and n.name == name for n in node.walk())


def _let_nodes(stmts: tuple[ast.Stmt, ...]) -> Iterator[tuple[str, ast.Node]]:
    for stmt in stmts:
        if isinstance(stmt, ast.LetStmt):
            yield stmt.name, stmt


def _check_clauses(
    rule: ast.RuleDecl, clauses: tuple[ast.Clause, ...], seen: dict[str, ast.Node]
) -> Iterator[Diagnostic]:
    """Lets are rule-wide, but sibling `if` branches may each bind the same name."""
    for clause in clauses:
        if isinstance(clause, ast.LetClause):
            yield from _bind(rule, clause.name, clause, seen)
        elif isinstance(clause, ast.EnsuresClause):
            yield from _check_stmts(rule, clause.body, seen)
        elif isinstance(clause, ast.ForClause):
            yield from _check_clauses(rule, clause.clauses, seen)
        elif isinstance(clause, ast.IfClause):
            for branch in clause.branches:
                yield from _check_clauses(rule, branch.clauses, dict(seen))


def _check_stmts(rule: ast.RuleDecl, stmts: tuple[ast.Stmt, ...], seen: dict[str, ast.Node]) -> Iterator[Diagnostic]:
    for stmt in stmts:
        if isinstance(stmt, ast.LetStmt):
            yield from _bind(rule, stmt.name, stmt, seen)
        elif isinstance(stmt, ast.IfStmt):
            for branch in stmt.branches:
                yield from _check_stmts(rule, branch.body, dict(seen))
        elif isinstance(stmt, ast.ForStmt):
            yield from _check_stmts(rule, stmt.body, seen)


def _bind(rule: ast.RuleDecl, name: str, node: ast.Node, seen: dict[str, ast.Node]) -> Iterator[Diagnostic]:
    if name in seen:
        yield error(
            "allium.let.duplicateBinding",
            f"Rule '{rule.name}' binds '{name}' with `let` more than once "
            f"(first on line {seen[name].span.start.line}).",
            node.span,
        )
    else:
        seen[name] = node


def check_duplicate_lets(module: ast.Module, context: CheckContext) -> Iterator[Diagnostic]:
    for rule in module.rules:
        yield from _check_clauses(rule, rule.clauses, {})
