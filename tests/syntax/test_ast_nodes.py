"""AST nodes must behave exactly as `@dataclass(frozen=True, slots=True)` classes.

allium.ast writes their methods itself (see `node`) to save import time;
each class is compared here with a twin that dataclasses builds the usual way.
"""

from __future__ import annotations

import dataclasses
import pickle

import pytest

from allium import ast
from allium.source import Position, Span

SPAN = Span("f.allium", Position(1, 1, 0, 0), Position(1, 4, 3, 3))
CLASSES = [c for c in vars(ast).values() if isinstance(c, type) and issubclass(c, ast.Node)]


def twin(cls: type) -> type:
    specs = [
        (f.name, f.type, dataclasses.field(default=f.default)) if f.default is not dataclasses.MISSING else (f.name, f.type)
        for f in dataclasses.fields(cls)
    ]
    made = dataclasses.make_dataclass(cls.__name__, specs, frozen=True, slots=True)
    made.__qualname__ = cls.__qualname__
    return made


def sample_args(cls: type, salt: str) -> list:
    return [SPAN if f.name == "span" else f"{f.name}-{salt}" for f in dataclasses.fields(cls)]


def test_every_node_class_is_a_dataclass_with_fields():
    assert len(CLASSES) >= 60
    for cls in CLASSES:
        assert dataclasses.is_dataclass(cls)
        assert cls._fields == tuple(f.name for f in dataclasses.fields(cls))


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_node_matches_a_frozen_dataclass(cls):
    reference = twin(cls)
    a, b = sample_args(cls, "a"), sample_args(cls, "b")
    node, same, other = cls(*a), cls(*a), cls(*b)
    ref = reference(*a)
    assert repr(node) == repr(ref)
    assert hash(node) == hash(ref)
    assert node == same and hash(node) == hash(same)
    assert (node == other) == (len(a) == 1)  # a class with only a span differs in nothing
    assert node != ref  # another class, as between two dataclasses
    with pytest.raises(dataclasses.FrozenInstanceError):
        node.span = None
    with pytest.raises(dataclasses.FrozenInstanceError):
        del node.span
    with pytest.raises(AttributeError):
        node.not_a_field = 1  # slotted: no instance dict
    assert pickle.loads(pickle.dumps(node)) == node
    kwargs = {f.name: v for f, v in zip(dataclasses.fields(cls), b, strict=True)}
    assert cls(**kwargs) == other
    assert dataclasses.replace(node, **kwargs) == other


def test_defaults_and_missing_arguments_as_in_dataclasses():
    name = ast.Name(SPAN, "x")
    field = ast.Field(SPAN, "f", "plain", name)
    assert field.when is None and field.params == () and field.owner is None
    with pytest.raises(TypeError):
        ast.Name(SPAN)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        ast.Name(SPAN, "x", "extra")  # type: ignore[call-arg]
