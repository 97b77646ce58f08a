"""Rule triggers: shape (rule 4/5), reachability, temporal re-firing guards, and
surface `provides:` entries that no rule handles (rule 30)."""

from __future__ import annotations

from collections.abc import Iterator

from allium import ast
from allium.check import queries
from allium.check.context import CheckContext
from allium.check.symbols import ModuleSymbols, SymbolTable
from allium.diagnostics import Diagnostic, error, info, warning

_COMPARISONS = ("<", "<=", ">", ">=", "=", "!=")


def trigger_kind(trigger: ast.Expr | None) -> str | None:
    """external | transition | becomes | temporal | created | derived, or None if invalid."""
    if trigger is None:
        return None
    if queries.trigger_calls(trigger) and _only_calls(trigger):
        return "external"
    if isinstance(trigger, ast.BinOp):
        if trigger.op in ("transitions_to", "becomes") and _entity_rooted(trigger.left):
            return "transition" if trigger.op == "transitions_to" else "becomes"
        if trigger.op in _COMPARISONS and (_mentions_now(trigger.left) or _mentions_now(trigger.right)):
            return "temporal"
        # `x: E.items.count > 0`: a derived condition written inline.
        if trigger.op in (*_COMPARISONS, "and", "or") and _mentions_entity(trigger):
            return "derived"
        return None
    if isinstance(trigger, ast.Call) and isinstance(trigger.func, ast.Member) and trigger.func.name == "created":
        return "created" if _entity_rooted(trigger.func) else None  # `E.created()`
    if isinstance(trigger, ast.Member) and _entity_rooted(trigger):
        return "created" if trigger.name == "created" and isinstance(trigger.target, ast.Name) else "derived"
    return None


def _mentions_entity(expr: ast.Expr) -> bool:
    return any(isinstance(n, ast.Member) and _entity_rooted(n) for n in expr.walk())


def _only_calls(trigger: ast.Expr) -> bool:
    if isinstance(trigger, ast.BinOp) and trigger.op == "or":
        return _only_calls(trigger.left) and _only_calls(trigger.right)
    return isinstance(trigger, ast.Call)


def _entity_rooted(expr: ast.Expr) -> bool:
    chain = queries.member_chain(expr)
    return chain is not None and bool(chain[1]) and queries.is_upper(chain[0])


def _mentions_now(expr: ast.Expr) -> bool:
    return any(isinstance(n, ast.Name) and n.name == "now" for n in expr.walk())


def check_rule_shape(module: ast.Module, context: CheckContext) -> Iterator[Diagnostic]:
    """Rule 4/5: one valid trigger and at least one `ensures:`."""
    for rule in module.rules:
        when = rule.when
        if when is None:
            yield error("allium.rule.missingWhen", f"Rule '{rule.name}' has no `when:` trigger.", rule.span)
        elif trigger_kind(when.trigger) is None:
            what = "an empty `when:` clause" if when.trigger is None else "an unsupported trigger form"
            yield error(
                "allium.rule.invalidTrigger",
                f"Rule '{rule.name}' has {what}; expected an external/chained call, a state "
                "transition (`transitions_to`/`becomes`), `.created`, a temporal condition on "
                "`now` or a derived condition.",
                when.span,
            )
        else:
            yield from _typed_trigger_params(rule.name, when.trigger)
        if not rule.ensures:
            yield error("allium.rule.missingEnsures", f"Rule '{rule.name}' has no `ensures:` clause.", rule.span)


def _typed_trigger_params(rule: str, trigger: ast.Expr | None) -> Iterator[Diagnostic]:
    """`when: AccountSeen(account: Account)`: a receiving trigger takes bare names.

    `name: value` belongs to emissions (`ensures: AccountSeen(account: a)`);
    the first such parameter is reported, as JUXT does.  A declared type
    (`account: Account`) is allowed: v3 rule 6 and JUXT's valid fixtures use it.
    """
    for call in queries.trigger_calls(trigger):
        for arg in call.args:
            declared = queries.type_name(arg.value)
            if arg.name is not None and not (declared and queries.is_upper(declared.split("/")[-1])):
                yield error(
                    "allium.rule.invalidTrigger",
                    f"Rule '{rule}' trigger parameter '{arg.name}' is written 'name: value'; a trigger "
                    "a rule receives takes bare parameter names (with '?' if optional, '_' to discard), "
                    f"'name: value' is for emitting one. Write '{arg.name}'.",
                    arg.span,
                )
                return


def check_temporal_guards(module: ast.Module, context: CheckContext) -> Iterator[Diagnostic]:
    """A temporal trigger without a `requires:` re-fires on every evaluation tick."""
    for rule in module.rules:
        when = rule.when
        if when is not None and trigger_kind(when.trigger) == "temporal" and not rule.requires:
            yield warning(
                "allium.temporal.missingGuard",
                f"Rule '{rule.name}' has a temporal trigger but no `requires:` guard against re-firing.",
                when.span,
            )


def _reachable(table: SymbolTable, syms: ModuleSymbols, trigger: str) -> bool | None:
    """Whether something provides or emits `trigger`; None when it cannot be known."""
    if "/" in trigger:
        alias, bare = trigger.split("/", 1)
        target = table.imported(syms, alias)
        if target is None:
            return None
        return bare in target.emitted or bare in target.provided or trigger in syms.provided or trigger in syms.emitted
    if trigger in syms.provided or trigger in syms.emitted:
        return True
    if any(rule.name in syms.provided for rule in syms.handled.get(trigger, ())):
        return True  # a surface may name the rule itself
    for other in table.modules.values():
        for alias, path in other.imports.items():
            if path == syms.path and f"{alias}/{trigger}" in (other.provided | other.emitted):
                return True
    return False


def check_unreachable_triggers(module: ast.Module, context: CheckContext) -> Iterator[Diagnostic]:
    table, syms = context.symbols, context.of(module)
    for rule in module.rules:
        when = rule.when
        for call in queries.trigger_calls(when.trigger if when else None):
            name = queries.call_name(call)
            if name is not None and _reachable(table, syms, name) is False:
                yield info(
                    "allium.rule.unreachableTrigger",
                    f"Rule '{rule.name}' listens for trigger '{name}' but no surface provides or rule emits it.",
                    call.func.span,
                )


def _handled(table: SymbolTable, syms: ModuleSymbols, name: str) -> bool | None:
    if "/" in name:
        alias, bare = name.split("/", 1)
        target = table.imported(syms, alias)
        return None if target is None else (bare in target.handled or bare in target.rules)
    if name in syms.handled or name in syms.rules:
        return True
    return any(name in other.handled or name in other.rules for other in table.imports_of(syms))


def check_provided_triggers(module: ast.Module, context: CheckContext) -> Iterator[Diagnostic]:
    """Rule 30: every trigger a surface provides must be handled by some rule."""
    table, syms = context.symbols, context.of(module)
    for surface in module.of_type(ast.SurfaceDecl):
        for item in queries.surface_items(surface, "provides"):
            name = queries.call_name(item.expr)
            if name is not None and _handled(table, syms, name) is False:
                yield error(
                    "allium.surface.undefinedProvidesTrigger",
                    f"Surface '{surface.name}' provides '{name}', but no rule handles that trigger.",
                    item.expr.span,
                )
