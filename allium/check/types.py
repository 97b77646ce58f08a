"""Undefined types: in declarations (fields, config, given, contracts, defaults,
surfaces) and in rule/invariant expressions (`X.created`, `X{...}`, `Xs`).

Qualified names (`alias/Name`) are left to :mod:`allium.check.references`,
which knows whether the alias is imported and what the target declares.
"""

from __future__ import annotations

from collections.abc import Iterator

from allium import ast
from allium.check import queries, scope
from allium.check.context import CheckContext
from allium.check.symbols import ModuleSymbols, SymbolTable
from allium.diagnostics import Diagnostic, error, warning


def _undefined_type(name: ast.Name) -> Diagnostic:
    return error(
        "allium.type.undefinedReference",
        f"Type '{name.name}' is not declared locally or imported.",
        name.span,
    )


def _unknown(table: SymbolTable, syms: ModuleSymbols, name: str) -> bool:
    return "/" not in name and not table.type_known(syms, name)


def check_declared_types(module: ast.Module, context: CheckContext) -> Iterator[Diagnostic]:
    """Rule 1/2/22/25/42: types named in declarations must exist."""
    table, syms = context.symbols, context.of(module)
    for type_expr in _declared_type_exprs(module):
        for name in queries.type_refs(type_expr):
            if _unknown(table, syms, name.name):
                yield _undefined_type(name)
    for decl in module.of_type(ast.EntityDecl):
        if decl.base and _unknown(table, syms, decl.base):
            yield error(
                "allium.type.undefinedReference",
                f"Variant '{decl.name}' extends '{decl.base}', which is not declared.",
                decl.span,
            )
    for default in module.of_type(ast.DefaultDecl):
        if default.type and _unknown(table, syms, default.type):
            yield error(
                "allium.default.undefinedType",
                f"Default '{default.name}' has type '{default.type}', which is not declared.",
                default.span,
            )


def _declared_type_exprs(module: ast.Module) -> Iterator[ast.Expr | None]:
    for decl in module.decls:
        if isinstance(decl, ast.EntityDecl):
            for f in decl.fields:
                if f.kind == "type":
                    yield f.value
                elif f.kind == "relationship" and isinstance(f.value, ast.BinOp):
                    yield f.value.left
        elif isinstance(decl, ast.ConfigDecl):
            for param in decl.params:
                yield param.type
        elif isinstance(decl, ast.GivenDecl):
            for binding in decl.bindings:
                yield binding.type
        elif isinstance(decl, ast.ContractDecl):
            for sig in decl.signatures:
                for sig_param in sig.params:
                    yield sig_param.type
                yield sig.returns


def is_collection(table: SymbolTable, syms: ModuleSymbols, name: str) -> bool:
    """`Users` names the collection of all `User` entities."""
    if not name.endswith("s"):
        return False
    stems = [name[:-1], name[:-2] if name.endswith("es") else None]
    if name.endswith("ies"):
        stems.append(name[:-3] + "y")
    return any(stem and table.entity(syms, stem) is not None for stem in stems)


def known_in_expr(table: SymbolTable, syms: ModuleSymbols, name: str) -> bool:
    """An uppercase name in an expression: a type, a collection, or something declared."""
    return (
        "/" in name
        or table.type_known(syms, name)
        or is_collection(table, syms, name)
        or syms.declares_any(name)
    )


def _rule_type_error(name: ast.Name) -> Diagnostic:
    return error(
        "allium.rule.undefinedTypeReference",
        f"Type reference '{name.name}' is not declared locally or imported.",
        name.span,
    )


def check_rule_types(module: ast.Module, context: CheckContext) -> Iterator[Diagnostic]:
    """Uppercase names in rule expressions (`X.created`, `X{..}`, `Xs`) must resolve."""
    table, syms = context.symbols, context.of(module)
    for rule in module.rules:
        when = rule.when
        if when is not None and when.trigger is not None:
            yield from _trigger_types(table, syms, when.trigger)
        for ref in scope.rule_refs(rule, frozenset()):
            if ref.role in (scope.FUNC, scope.SHORTHAND) or not queries.is_upper(ref.name.name):
                continue
            if not known_in_expr(table, syms, ref.name.name):
                yield _rule_type_error(ref.name)


def _trigger_types(table: SymbolTable, syms: ModuleSymbols, trigger: ast.Expr) -> Iterator[Diagnostic]:
    calls = queries.trigger_calls(trigger)
    if calls:
        for call in calls:
            for arg in call.args:
                if arg.name is None:
                    continue
                for name in queries.type_refs(arg.value):
                    if _unknown(table, syms, name.name):
                        yield _rule_type_error(name)
        return
    for ref in scope.expr_refs(trigger, frozenset()):
        if ref.role != scope.FUNC and queries.is_upper(ref.name.name):
            if not known_in_expr(table, syms, ref.name.name):
                yield _rule_type_error(ref.name)


def check_surface_types(module: ast.Module, context: CheckContext) -> Iterator[Diagnostic]:
    """Rule 28: `facing` names an actor or entity; `context` names an entity."""
    table, syms = context.symbols, context.of(module)
    for surface in module.of_type(ast.SurfaceDecl):
        for member in surface.all_members():
            if isinstance(member, ast.Facing):
                name = _head_type(member.type)
                if name is not None and _unknown(table, syms, name.name):
                    yield warning(
                        "allium.surface.missingActor",
                        f"Surface '{surface.name}' faces '{name.name}', which is neither a declared actor nor an entity.",
                        name.span,
                    )
            elif isinstance(member, ast.Context):
                name = _head_type(member.type)
                if name is not None and _unknown(table, syms, name.name):
                    yield error(
                        "allium.context.undefinedType",
                        f"Surface '{surface.name}' context '{member.binding}' has type '{name.name}', which is not declared.",
                        name.span,
                    )


def _head_type(expr: ast.Expr) -> ast.Name | None:
    """`T`, `T?`, `T where p` -> the name T."""
    if isinstance(expr, ast.BinOp) and expr.op == "where":
        return _head_type(expr.left)
    if isinstance(expr, ast.Unary) and expr.op == "?":
        return _head_type(expr.operand)
    if isinstance(expr, ast.GenericType) and expr.args:
        return _head_type(expr.args[-1])
    return expr if isinstance(expr, ast.Name) else None


def check_contract_refs(module: ast.Module, context: CheckContext) -> Iterator[Diagnostic]:
    """Rule 38: `demands`/`fulfils` name a contract in scope (local or imported)."""
    table, syms = context.symbols, context.of(module)
    for surface in module.of_type(ast.SurfaceDecl):
        for member in surface.all_members():
            if not isinstance(member, ast.ContractsBlock):
                continue
            for ref in member.refs:
                target, bare, resolvable = table.split(syms, ref.name)
                if not resolvable or "/" in ref.name and target is None:
                    continue  # unresolved imports are reported elsewhere
                if target is None or bare not in target.contracts and not (
                    "/" not in ref.name and any(bare in o.contracts for o in table.imports_of(syms))
                ):
                    yield error(
                        "allium.contract.undefinedReference",
                        f"Surface '{surface.name}' {ref.direction} '{ref.name}', which is not a declared contract.",
                        ref.span,
                    )


def check_default_fields(module: ast.Module, context: CheckContext) -> Iterator[Diagnostic]:
    """A `default` instance may only set fields its type declares (as JUXT)."""
    table, syms = context.symbols, context.of(module)
    for default in module.of_type(ast.DefaultDecl):
        entity = table.entity(syms, default.type) if default.type else None
        if entity is None or not isinstance(default.value, ast.ObjectLiteral):
            continue
        for arg in default.value.fields:
            if arg.name and entity.field(arg.name) is None:
                yield error(
                    "allium.default.unknownField",
                    f"Default '{default.name}' sets '{arg.name}', which '{entity.name}' does not declare.",
                    arg.span,
                )
