"""The collector every obligation emitter writes into."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from allium.plan.model import Obligation, make_id
from allium.source import Span


@dataclass
class Emitter:
    """Collects obligations for one module; `construct` names the declaration."""

    component: str
    text: str | None
    out: list[Obligation]
    construct: str = ""

    def add(self, category: str, parts: Sequence[object], description: str, span: Span, **extra: Any) -> None:
        self.out.append(
            Obligation(make_id(category, *parts), category, description, self.construct, span, self.component, **extra)
        )

    def source(self, start: Span, end: Span) -> str | None:
        if self.text is None:
            return None
        # As written, but with one kind of line end whatever the file uses.
        return self.text[start.start.offset : end.end.offset].strip().replace("\r\n", "\n")
