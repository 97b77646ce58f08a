"""Text and JSON renderings of an obligation list."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from allium.envelope import document, dumps
from allium.plan.model import Obligation



def to_document(obligations: Sequence[Obligation], *, version: int | None = None) -> dict[str, Any]:
    """The `plan` JSON document's own keys (allium/envelope.py adds the rest).

    `version` is the specs' language version (JUXT's `plan` reports it as
    `version`; here that key versions the document's shape)."""
    return {
        "language_version": version,
        "obligations": [o.to_json() for o in obligations],
    }


def render_json(obligations: Sequence[Obligation], *, version: int | None = None) -> str:
    """The document `allium plan --format json` prints for specs that parse cleanly."""
    return dumps(document("plan", (), 0, **to_document(obligations, version=version))) + "\n"


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
