"""The ordered list of checker passes.

Order matters only for readability of output (diagnostics are sorted by
position before printing); each pass is independent and side-effect free.
Shared analyses (symbols, rule effects, usage) are computed once per check
set and cached, so adding a pass costs one walk, not a rebuild.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from allium import ast
from allium.check import (
    bindings,
    config,
    invariants,
    lifecycle,
    modules,
    questions,
    references,
    sums,
    surfaces,
    triggers,
    types,
    unused,
    when_fields,
)
from allium.check.context import CheckContext
from allium.diagnostics import Diagnostic

Pass = Callable[[ast.Module, CheckContext], Iterator[Diagnostic]]

PASSES: tuple[Pass, ...] = (
    questions.check_questions,
    modules.check_use_paths,
    references.check_qualified_references,
    types.check_declared_types,
    types.check_rule_types,
    types.check_surface_types,
    types.check_contract_refs,
    types.check_default_fields,
    triggers.check_rule_shape,
    triggers.check_temporal_guards,
    triggers.check_unreachable_triggers,
    triggers.check_provided_triggers,
    bindings.check_undefined_bindings,
    bindings.check_bare_entity_bindings,
    bindings.check_duplicate_lets,
    config.check_config_references,
    config.check_config_keys,
    lifecycle.check_graph_structure,
    lifecycle.check_undeclared_transitions,
    lifecycle.check_undefined_status_values,
    lifecycle.check_created_status,
    lifecycle.check_status_reachability,
    lifecycle.check_witnessed_edges,
    when_fields.check_when_declarations,
    when_fields.check_when_obligations,
    sums.check_discriminators,
    sums.check_variant_listed,
    sums.check_base_instantiation,
    sums.check_variant_field_access,
    invariants.check_invariant_purity,
    surfaces.check_surface_bindings,
    surfaces.check_related_surfaces,
    unused.check_unused_entities,
    unused.check_unused_fields,
    unused.check_unused_actors,
    modules.check_deferred_hints,
    modules.check_external_sources,
)


def run_passes(modules: dict[str, ast.Module]) -> list[Diagnostic]:
    context = CheckContext.build(modules)
    out: list[Diagnostic] = []
    for module in modules.values():
        for check in PASSES:
            out.extend(check(module, context))
    return out
