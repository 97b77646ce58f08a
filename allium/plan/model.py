"""The obligation record and the category vocabulary.

Category names (snake_case) and id prefixes (kebab-case) are JUXT's, from
`allium plan`; the three allium-only categories are marked below.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from allium.source import Span

# category -> id prefix, in the order JUXT's CLI declares them, then ours.
CATEGORIES: dict[str, str] = {
    "entity_fields": "entity-fields",
    "entity_optional": "entity-optional",
    "entity_relationship": "entity-relationship",
    "value_equality": "value-equality",
    "enum_comparable": "enum-comparable",
    "sum_type_variant": "sum-type-variant",
    "derived": "derived",
    "projection": "projection",
    "config_default": "config-default",
    "invariant": "invariant",
    "rule_success": "rule-success",
    "rule_failure": "rule-failure",
    "rule_entity_creation": "rule-entity-creation",
    "transition_edge": "transition-edge",
    "transition_rejected": "transition-rejected",
    "transition_terminal": "transition-terminal",
    "when_presence": "when-presence",
    "when_set": "when-set",
    "when_clear": "when-clear",
    "temporal": "temporal",
    "surface_exposure": "surface-exposure",
    "surface_provides": "surface-provides",
    "surface_actor": "surface-actor",
    "contract_signature": "contract-signature",
    # allium-only: taxonomy items JUXT's CLI has no category for.
    "rule_branch": "rule-branch",
    "rule_chained": "rule-chained",
    "config_required": "config-required",
}

ORACLE_CATEGORIES: frozenset[str] = frozenset(list(CATEGORIES)[:24])


@dataclass(frozen=True)
class Obligation:
    """One test a suite must contain to discharge the spec.

    `id` is stable: it is built from declaration names and per-construct
    ordinals only, never from positions, so editing another declaration
    leaves it unchanged.
    """

    id: str
    category: str
    description: str
    source_construct: str  # "rule ShipOrder", "entity Order", "config", ...
    span: Span
    component: str  # the module file's stem
    detail: Mapping[str, Any] | None = field(default=None, hash=False)
    expression: str | None = None
    dependencies: Mapping[str, Any] | None = field(default=None, hash=False)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "category": self.category,
            "description": self.description,
            "source_construct": self.source_construct,
            "component": self.component,
            "source_span": span_json(self.span),
        }
        if self.detail is not None:
            out["detail"] = dict(self.detail)
        if self.expression is not None:
            out["expression"] = self.expression
        if self.dependencies is not None:
            out["dependencies"] = dict(self.dependencies)
        return out


def span_json(span: Span) -> dict[str, Any]:
    # `start`/`end` are byte offsets, as in JUXT's `source_span`, so tools
    # written against the oracle keep working; the rest is for humans.
    return {
        "file": span.file,
        "line": span.start.line,
        "col": span.start.column,
        "end_line": span.end.line,
        "end_col": span.end.column,
        "start": span.start.byte_offset,
        "end": span.end.byte_offset,
    }


def make_id(category: str, *parts: object) -> str:
    return ".".join([CATEGORIES[category], *(str(p) for p in parts)])
