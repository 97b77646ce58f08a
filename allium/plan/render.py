"""Text and JSON renderings of an obligation list."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from allium.plan.model import Obligation

FORMAT_VERSION = 1


def to_document(obligations: Sequence[Obligation], *, version: int | None = None) -> dict[str, Any]:
    """The `plan` JSON document. `version` is the spec's language version (as
    JUXT's `plan` reports it); `format` versions this document's shape."""
    return {
        "format": FORMAT_VERSION,
        "version": version,
        "obligations": [o.to_json() for o in obligations],
    }


def render_json(obligations: Sequence[Obligation], *, version: int | None = None) -> str:
    return json.dumps(to_document(obligations, version=version), indent=2, ensure_ascii=False) + "\n"


def render_text(obligations: Sequence[Obligation]) -> str:
    """Obligations grouped by file and declaration, one id and description each.

    Groups keep the order of their first obligation, so the when-crossing
    obligations (emitted last) sit with their rule.
    """
    groups: dict[tuple[str, str], list[Obligation]] = {}
    for ob in obligations:
        groups.setdefault((ob.span.file, ob.source_construct), []).append(ob)
    lines: list[str] = []
    for (file, construct), members in groups.items():
        line = min(o.span.start.line for o in members)
        if lines:
            lines.append("")
        lines.append(f"{construct}  ({file}:{line})")
        for ob in members:
            lines += [f"  {ob.id}", f"      {ob.description}"]
    noun = "obligation" if len(obligations) == 1 else "obligations"
    lines.append("" if lines else "No obligations.")
    lines.append(f"{len(obligations)} {noun}, {len({o.category for o in obligations})} categories")
    return "\n".join(lines) + "\n"
