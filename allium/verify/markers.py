"""Rule tags on implementation code, so failures can point from rule to code."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

ATTRIBUTE = "__allium_rules__"


def implements(*rules: str) -> Callable[[F], F]:
    """Mark a function or class as the implementation of spec rules.

    >>> @implements("EntryExpires")
    ... def expire(entry): ...
    >>> implemented_rules(expire)
    ('EntryExpires',)
    """
    if not rules or not all(isinstance(r, str) and r for r in rules):
        raise ValueError("implements() needs one or more rule names")

    def mark(target: F) -> F:
        existing = getattr(target, ATTRIBUTE, ())
        setattr(target, ATTRIBUTE, tuple(dict.fromkeys((*existing, *rules))))
        return target

    return mark


def implemented_rules(target: object) -> tuple[str, ...]:
    return tuple(getattr(target, ATTRIBUTE, ()))


# Test tags (`@pytest.mark.allium(...)`) name obligation ids.  Ids are unique
# within a spec file only, so a tag may name one component's: `component:id`
# (the spec file's stem).  Obligation ids never contain ':'.
def qualified_tag(component: str, obligation_id: str) -> str:
    """The tag for `obligation_id` of `component` only."""
    return f"{component}:{obligation_id}"


def tag_id(tag: str) -> str:
    """The obligation id a tag names, without its component if it has one."""
    return tag.partition(":")[2] or tag
