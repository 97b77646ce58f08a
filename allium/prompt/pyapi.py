"""The public Python API of a generated module, as stub text for a prompt.

A unit's request carries its dependencies' *spec* interfaces, but code that
wires several units together (a service hosting the domain components) also
needs their *Python* names: which function decides an operation, what a
constructor takes. A real model cannot see the generated files, so the
request shows it a stub of each dependency module that exists already: public
classes with their bases, fields and method signatures, public functions and
annotated constants, each with the first line of its docstring. Bodies,
private names and comments are left out, so the stub changes only when the
interface does.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator

_DOC_WIDTH = 100


def python_interface(source: str) -> str:
    """Stub text for ``source``; empty when it does not parse or has no public names."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return ""
    lines: list[str] = []
    for node in tree.body:
        lines.extend(_top_level(node))
    return "\n".join(lines).strip("\n")


def _public(name: str) -> bool:
    return not name.startswith("_")


def _top_level(node: ast.stmt) -> Iterator[str]:
    if isinstance(node, ast.ClassDef) and _public(node.name):
        yield ""
        yield from _class(node)
    elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _public(node.name):
        yield ""
        yield from _function(node, "")
    elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) \
            and _public(node.target.id):
        yield f"{node.target.id}: {ast.unparse(node.annotation)}"
    elif isinstance(node, ast.Assign) and len(node.targets) == 1 \
            and isinstance(node.targets[0], ast.Name) and node.targets[0].id.isupper():
        yield f"{node.targets[0].id} = {_short(ast.unparse(node.value))}"


def _class(node: ast.ClassDef) -> Iterator[str]:
    for decorator in node.decorator_list:
        yield f"@{ast.unparse(decorator)}"
    bases = ", ".join(ast.unparse(b) for b in [*node.bases, *node.keywords])
    yield f"class {node.name}({bases}):" if bases else f"class {node.name}:"
    doc = _doc(node)
    if doc:
        yield f'    """{doc}"""'
    body = list(_class_body(node))
    yield from body or ["    ..."]


def _class_body(node: ast.ClassDef) -> Iterator[str]:
    for item in node.body:
        if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name) \
                and _public(item.target.id):
            default = f" = {_short(ast.unparse(item.value))}" if item.value is not None else ""
            yield f"    {item.target.id}: {ast.unparse(item.annotation)}{default}"
        elif isinstance(item, ast.Assign) and len(item.targets) == 1 \
                and isinstance(item.targets[0], ast.Name) and _public(item.targets[0].id):
            yield f"    {item.targets[0].id} = {_short(ast.unparse(item.value))}"
        elif isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) \
                and (_public(item.name) or item.name in ("__init__", "__call__")):
            yield from _function(item, "    ")


def _function(node: ast.FunctionDef | ast.AsyncFunctionDef, indent: str) -> Iterator[str]:
    for decorator in node.decorator_list:
        text = ast.unparse(decorator)
        if not text.startswith("implements("):  # the rule marker is not an interface
            yield f"{indent}@{text}"
    prefix = "async def" if isinstance(node, ast.AsyncFunctionDef) else "def"
    returns = f" -> {ast.unparse(node.returns)}" if node.returns is not None else ""
    yield f"{indent}{prefix} {node.name}({ast.unparse(node.args)}){returns}: ..."
    doc = _doc(node)
    if doc:
        yield f'{indent}    """{doc}"""'


def _doc(node: ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    doc = ast.get_docstring(node)
    if not doc:
        return ""
    return _short(doc.strip().splitlines()[0])


def _short(text: str) -> str:
    return text if len(text) <= _DOC_WIDTH else text[: _DOC_WIDTH - 3] + "..."
