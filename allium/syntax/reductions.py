"""Each LALR reduction of the grammar as a straight-line Python function.

A reduction pops its children off the engine's stacks, works out the span
they cover (first and last token) and their depth, keeps the children the
grammar keeps, splices inlined `_rule`s, and pushes a value: the child
itself (`?rule` of one child), the kept list (`_rule`), or what the AST
builder's method for the rule returns.  Interpreted from a table entry that
is a loop over the children and another over the kept ones, a few dozen
statements each time, and the corpus makes ~0.85 reductions per token.
Written out per rule (the size and the kept positions are known), it is a
handful, so :func:`compile_reducers` writes one function per distinct
reduction; tables_from() compiles them with the engine's tables, and
parser.py caches the code.

Every generated function takes the engine's stacks (values, states, infos:
(first token, last token, depth) per value) and the per-parse handlers (rule
name -> builder method) and returns nothing; the engine then pushes the goto
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

# How a rule reduces: WRAP for an inlined `_rule` of one kept child, else
# (kept children or None for all, expand single child, inlined `_rule`,
# builder method name).  Unit rules (a `?rule` of one child, passed through)
# have none: the engine handles them without a call.  A rule whose one
# child is a token, kept (`name`, `number`...), is (TOKEN_RULE, method name).
WRAP = True  # a singleton, so `is` still works on tables read back from disk
TOKEN_RULE = "token"
TOKEN_SUFFIX = "/token"  # the handlers' key for such a rule's method: `name/token`
Reducer = Callable[[list, list, list, Any], None]


class TooDeep(Exception):
    """The spec nests deeper than the engine's limit."""

    def __init__(self, offset: int) -> None:
        super().__init__(offset)
        self.offset = offset


def compile_reducers(reductions: list[tuple[int, Any]]) -> CodeType:
    """One code object defining a function per (size, how) reduction, listed in REDUCERS.

    A code object, so that parser.py can keep it in its marshal cache:
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
    if how is WRAP:  # `_rule: one_thing`: a list for the parent to splice
        return f"{head}\n    del states[-1]\n    values[-1] = [values[-1]]"
    if how[0] == TOKEN_RULE:
        # A third of all reductions: the builder gets the token alone.  A
        # shifted token's info is (token, token, 0), so the node's is (token, token, 1).
        return "\n    ".join([
            head, "token = values[-1]", "del states[-1]",
            f"values[-1] = handlers[{how[1] + TOKEN_SUFFIX!r}](token)", "infos[-1] = (token, token, 1)",
        ])
    include, expand1, inline, name = how
    body = _pop(size)
    body += _kept(size, include)
    build = ["value = kept", "info = (start, end, depth)"] if inline else _build(name)
    if expand1:  # `?rule`: a single kept child stands for the rule
        body += ["if len(kept) == 1:", "    value = kept[0]"]
        # lark gives a lone token its own position
        body += ["    if type(value) is Token:", "        start = end = value"]
        body += ["    info = (start, end, depth)", "else:"]
        body += ["    " + line for line in build]
    else:
        body += build
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


def _kept(size: int, include: tuple[tuple[int, bool], ...] | None) -> list[str]:
    """The kept children, with inlined `_rule`s' lists spliced in."""
    if include is None:
        return [f"kept = [{', '.join(f'c{i}' for i in range(size))}]"]
    if not include:
        return ["kept = []"]
    lines = []
    for position, (index, expand) in enumerate(include):
        if position == 0:
            # An inlined `_rule`'s list is ours to extend (as lark does).
            lines.append(f"kept = c{index}" if expand else f"kept = [c{index}]")
        else:
            lines.append(f"kept += c{index}" if expand else f"kept.append(c{index})")
    return lines


def _build(name: str) -> list[str]:
    # The node's info tuple is also what the builder's method gets for lark's Meta.
    return [
        "if depth >= MAX_DEPTH:",
        "    raise TooDeep(start.start_pos if start is not None else 0)",
        "info = (start, end, depth + 1)",
        f"value = handlers[{name!r}](info, kept)",
    ]
