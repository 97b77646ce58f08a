"""Rule obligations: success, one failure per requires, temporal triggers,
entity creation, conditional branches and chained triggers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from allium import ast
from allium.plan import patterns
from allium.plan.deps import ModuleContext, rule_dependencies
from allium.plan.emit import Emitter
from allium.source import Span


@dataclass
class _RuleWalk:
    em: Emitter
    rule: str
    deps: dict[str, object]
    entities: frozenset[str]
    failures: int = 0
    creations: int = 0
    branches: int = 0
    chained: tuple[str, ...] = ()

    def add(self, category: str, parts: Sequence[object], description: str, span: Span, **extra: Any) -> None:
        self.em.add(category, (self.rule, *parts), description, span, dependencies=self.deps, **extra)


def rule_obligations(em: Emitter, decl: ast.RuleDecl, ctx: ModuleContext) -> None:
    # The frozenset itself: copying it per rule made planning quadratic in spec size.
    walk = _RuleWalk(em, decl.name, rule_dependencies(decl, ctx), ctx.entity_names)
    walk.add("rule_success", (), f"Verify rule {decl.name} succeeds when all preconditions are met", decl.span)
    _clauses(walk, decl.clauses)


def _clauses(walk: _RuleWalk, clauses: Sequence[ast.Clause]) -> None:
    for clause in clauses:
        if isinstance(clause, ast.WhenClause):
            _when(walk, clause)
        elif isinstance(clause, ast.RequiresClause):
            walk.failures += 1
            walk.add("rule_failure", (walk.failures,),
                     f"Verify rule {walk.rule} is rejected when requires clause fails", clause.span)
        elif isinstance(clause, ast.EnsuresClause):
            _ensures(walk, clause)
        elif isinstance(clause, ast.ForClause):
            _clauses(walk, clause.clauses)
        elif isinstance(clause, ast.IfClause):
            for branch in clause.branches:
                _branch(walk, branch.condition, branch.span)
                _clauses(walk, branch.clauses)


def _when(walk: _RuleWalk, clause: ast.WhenClause) -> None:
    if patterns.is_temporal(clause.trigger):
        walk.add("temporal", (),
                 f"Verify temporal trigger in {walk.rule} fires at deadline, not before, and does not re-fire",
                 clause.span, detail={"cases": ["before", "at", "after"]})
    if clause.trigger is not None and patterns.is_creation_call(clause.trigger):
        walk.creations += 1
        walk.add("rule_entity_creation", (walk.creations,),
                 f"Verify entity creation in rule {walk.rule} produces the specified fields", clause.span)


def _ensures(walk: _RuleWalk, clause: ast.EnsuresClause) -> None:
    if patterns.ensures_has_creation(clause):
        walk.creations += 1
        walk.add("rule_entity_creation", (walk.creations,),
                 f"Verify entity creation in rule {walk.rule} ensures clause produces the specified fields",
                 clause.span)
    _stmt_branches(walk, clause.body)
    for trigger in patterns.emitted_triggers(clause, walk.entities):
        if trigger in walk.chained:
            continue
        walk.chained += (trigger,)
        walk.add("rule_chained", (trigger,),
                 f"Verify rule {walk.rule} emits {trigger} and the downstream rule fires with the correct parameters",
                 clause.span, detail={"rule": walk.rule, "trigger": trigger})


def _stmt_branches(walk: _RuleWalk, stmts: Sequence[ast.Stmt]) -> None:
    """One `rule_branch` per if/else-if/else branch of an ensures body, pre-order."""
    for stmt in stmts:
        if isinstance(stmt, ast.IfStmt):
            for branch in stmt.branches:
                _branch(walk, branch.condition, branch.span)
                _stmt_branches(walk, branch.body)
        elif isinstance(stmt, ast.ForStmt):
            _stmt_branches(walk, stmt.body)


def _branch(walk: _RuleWalk, condition: ast.Expr | None, span: Span) -> None:
    walk.branches += 1
    kind = "else" if condition is None else "if"
    what = "the else branch" if condition is None else "this branch"
    walk.add("rule_branch", (walk.branches,),
             f"Verify {what} of rule {walk.rule} fires exactly when its condition holds", span,
             detail={"rule": walk.rule, "branch": kind, "condition": walk.em.source(condition.span, condition.span)
                     if condition is not None else None})
