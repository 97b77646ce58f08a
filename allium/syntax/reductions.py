"""Each LALR reduction of the grammar as a straight-line Python function.

A reduction pops its children off the engine's stacks, works out the span
they cover (first and last token) and their depth, and pushes a value: the
child itself (`?rule` of one child, or an inlined `_rule` that passes one
on), a list (an inlined `_rule` of several, its own inlined lists spliced
in), or what the AST builder's method for the rule returns, called with the
kept children as keyword arguments (named as children.py says).  Interpreted from a table entry that
is a loop over the children and another over the kept ones, a few dozen
statements each time, and the corpus makes ~0.85 reductions per token.
Written out per rule (the size and the kept positions are known), it is a
handful, so :func:`compile_reducers` writes one function per distinct
reduction; tables_from() compiles them with the engine's tables, and
grammar.py caches the code.

Every generated function takes the engine's stacks (values, states, infos:
(first token, last token, depth) per value) and the per-parse handlers
(method name -> bound builder method) and returns nothing; the engine then pushes the goto
state.  A builder method gets the new node's info tuple where lark's runtime
passes its Meta: a tuple is made in a small part of the time of a NamedTuple
(~1,400 instructions each, 2.5% of a parse).  tests/syntax/test_engine.py
holds the result to lark's own runtime.
"""

from __future__ import annotations

from collections.abc import Callable
from types import CodeType
from typing import Any

from lark import Token

# How a rule reduces (the engine's tables hold these; see engine._how).
# Unit rules (a `?rule` of one child, or an inlined `_rule` that passes one
# child on) have none: the engine handles them without a call.
LIST = "list"  # (LIST, ((index, splice), ...)): an inlined `_rule` of several children: a list
ONE = "one"  # (ONE, index): an inlined `_rule` passing on its one kept child
PASS = "pass"  # (PASS, index): a `?rule` whose one kept child stands for it (`"(" expr ")"`)
TOKEN_RULE = "token"  # (TOKEN_RULE, method, parameter): a rule of one token, kept (`name`, `number`)
BUILD = "build"  # (BUILD, method, ((parameter, many, ((index, splice), ...)), ...)): the builder's method
Reducer = Callable[[list, list, list, Any], None]


class TooDeep(Exception):
    """The spec nests deeper than the engine's limit."""

    def __init__(self, offset: int) -> None:
        super().__init__(offset)
        self.offset = offset


def compile_reducers(reductions: list[tuple[int, Any]]) -> CodeType:
    """One code object defining a function per (size, how) reduction, listed in REDUCERS.

    A code object, so that grammar.py can keep it in its marshal cache:
    compiling ~300 functions takes ~100 ms, loading them ~1 ms.
    """
    sources = [_source(f"_reduce{index}", size, how) for index, (size, how) in enumerate(reductions)]
    sources.append(f"REDUCERS = [{', '.join(f'_reduce{i}' for i in range(len(reductions)))}]")
    return compile("\n\n".join(sources), "<allium reductions>", "exec")


def load_reducers(code: CodeType, max_depth: int) -> list[Reducer]:
    namespace: dict[str, Any] = {
        "Token": Token,
        "TooDeep": TooDeep,
        "MAX_DEPTH": max_depth,
    }
    exec(code, namespace)  # noqa: S102 - made by compile_reducers from our own grammar
    return namespace["REDUCERS"]


def _source(function: str, size: int, how: Any) -> str:
    head = f"def {function}(values, states, infos, handlers):"
    kind = how[0]
    if kind == TOKEN_RULE:
        # A third of all reductions: no stacks to pop.  A shifted token's
        # info is (token, token, 0), so the node's is (token, token, 1).
        return "\n    ".join([
            head, "token = values[-1]", "del states[-1]", "info = (token, token, 1)",
            f"values[-1] = handlers[{how[1]!r}](info, {how[2]}=token)", "infos[-1] = info",
        ])
    body = _pop(size)
    if kind == LIST:
        body += _kept(how[1]) + ["value = kept", "info = (start, end, depth)"]
    elif kind == ONE:
        body += [f"value = c{how[1]}", "info = (start, end, depth)"]
    elif kind == PASS:  # lark gives a lone token its own position
        body += [f"value = c{how[1]}", "if type(value) is Token:", "    start = end = value"]
        body += ["info = (start, end, depth)"]
    else:
        body += _build(how[1], how[2])
    if size:
        body += ["values[-1] = value", "infos[-1] = info"]
    else:
        body += ["values.append(value)", "infos.append(info)"]
    return head + "".join("\n    " + line for line in body)


def _pop(size: int) -> list[str]:
    """Take `size` children off the stacks; find their first and last token and depth."""
    if size == 0:
        return ["start = end = None", "depth = 0"]
    if size == 1:  # the value and its info are replaced in place
        return ["c0 = values[-1]", "del states[-1]", "start, end, depth = infos[-1]"]
    # Pops, leaving the first child's place for the value: in callgrind a
    # slice (a slice object and a new list) costs more at every rule size.
    lines = [f"c{i} = values.pop()" for i in range(size - 1, 0, -1)] + ["c0 = values[-1]"]
    lines += [f"i{i} = infos.pop()" for i in range(size - 1, 0, -1)] + ["i0 = infos[-1]"]
    lines += [f"del states[-{size}:]"]
    # The first child with a token gives the start, the last one the end.
    lines += ["start = i0[0]"] + [f"if start is None: start = i{i}[0]" for i in range(1, size)]
    lines += [f"end = i{size - 1}[1]"] + [f"if end is None: end = i{i}[1]" for i in range(size - 2, -1, -1)]
    # The deepest child's depth, by comparisons: a call to max() costs more.
    lines += ["depth = i0[2]"] + [f"if i{i}[2] > depth: depth = i{i}[2]" for i in range(1, size)]
    return lines


def _kept(include: tuple[tuple[int, bool], ...]) -> list[str]:
    """An inlined `_rule`'s children as one list, with its own inlined lists spliced in."""
    if not include:
        return ["kept = []"]
    lines = []
    for position, (index, splice) in enumerate(include):
        if position == 0:
            # An inlined `_rule`'s list is ours to extend (as lark does).
            lines.append(f"kept = c{index}" if splice else f"kept = [c{index}]")
        else:
            lines.append(f"kept += c{index}" if splice else f"kept.append(c{index})")
    return lines


def _build(method: str, args: tuple[tuple[str, bool, tuple[tuple[int, bool], ...]], ...]) -> list[str]:
    # The node's info tuple is also what the builder's method gets for lark's Meta.
    keywords = []
    for param, many, parts in args:
        if not many:
            keywords.append(f"{param}=c{parts[0][0]}")
        elif len(parts) == 1 and parts[0][1]:
            keywords.append(f"{param}=c{parts[0][0]}")  # the inlined rule's list, ours to keep
        else:
            keywords.append(f"{param}=[{', '.join(('*' if splice else '') + f'c{i}' for i, splice in parts)}]")
    return [
        "if depth >= MAX_DEPTH:",
        "    raise TooDeep(start.start_pos if start is not None else 0)",
        "info = (start, end, depth + 1)",
        f"value = handlers[{method!r}](info{''.join(', ' + k for k in keywords)})",
    ]
