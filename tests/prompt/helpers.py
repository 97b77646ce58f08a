"""Shared helpers for the prompt tests."""

from __future__ import annotations

from dataclasses import dataclass, fields, is_dataclass
from typing import Any

from allium.source import Span


def shape(node: Any) -> Any:
    """A node as plain data with every span dropped: 'equal modulo spans'."""
    if isinstance(node, Span):
        return None
    if is_dataclass(node):
        return (type(node).__name__,
                tuple((f.name, shape(getattr(node, f.name))) for f in fields(node) if f.name != "span"))
    if isinstance(node, tuple):
        return tuple(shape(x) for x in node)
    return node


@dataclass(frozen=True)
class FakeObligation:
    """Stands in for allium.plan's Obligation (id, category, description, span)."""

    id: str
    category: str
    description: str
    span: Any = None
