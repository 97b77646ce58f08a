"""Render a generation unit's request from the Jinja2 templates.

A request is two parts:

* the **prefix** (``templates/system.j2``): the generator's instructions and
  the whole spec set in canonical form. It depends on the plan only, so it is
  byte-identical for every unit and the provider can cache it;
* the **unit part** (``templates/unit.j2``): what to implement now, the
  obligations to cover, dependency interfaces, ``@guidance`` attached to the
  construct it annotates, resolved questions as settled decisions and open
  questions as things not to decide silently.

Templates are found, in order: the ``templates`` argument; the installed
package data ``importlib.resources.files("allium") / "templates"``; the
top-level ``templates/`` folder next to the ``allium`` package (a checkout).
The Environment uses StrictUndefined, so a template that mentions a variable
the builder did not supply fails loudly instead of rendering an empty string.

This is the only module in allium that imports jinja2.
"""

from __future__ import annotations

import importlib.resources
import re
from collections.abc import Mapping
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import jinja2

import allium
from allium import ast
from allium.errors import AlliumError
from allium.generate.units import ENTRY_UNIT, Plan, Unit, interface_decls
from allium.prompt.canonical import canonical_decl, canonical_module
from allium.prompt.pyapi import python_interface
from allium.providers.base import Request

PYTHON_VERSION = "3.11"
MARKER = "allium"
SYSTEM_TEMPLATE = "system.j2"
UNIT_TEMPLATE = "unit.j2"


class TemplateError(AlliumError):
    """The templates are missing or do not render."""


# ---------------------------------------------------------------- environment


def template_root(explicit: str | Path | Traversable | None = None) -> Traversable:
    """The first folder holding the templates (see the module docstring)."""
    candidates: list[Traversable] = []
    if explicit is not None:
        candidates.append(Path(explicit) if isinstance(explicit, str) else explicit)
    try:
        candidates.append(importlib.resources.files("allium") / "templates")
    except (ModuleNotFoundError, TypeError):  # pragma: no cover - allium is importable here
        pass
    candidates.append(Path(allium.__file__).resolve().parent.parent / "templates")
    for root in candidates:
        if (root / SYSTEM_TEMPLATE).is_file():
            return root
    raise TemplateError("cannot find the prompt templates; looked in "
                        + ", ".join(str(c) for c in candidates))


def environment(templates: str | Path | Traversable | None = None) -> jinja2.Environment:
    root = template_root(templates)

    def load(name: str) -> str | None:
        # Traversable (not a filesystem path) so zipped package data works too.
        path = root / name
        return path.read_text(encoding="utf-8") if path.is_file() else None

    return jinja2.Environment(
        loader=jinja2.FunctionLoader(load),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # plain text prompts, not HTML
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render(env: jinja2.Environment, name: str, context: Mapping[str, Any]) -> str:
    try:
        return env.get_template(name).render(**context)
    except jinja2.UndefinedError as exc:
        raise TemplateError(f"template {name}: {exc.message}") from exc
    except jinja2.TemplateNotFound as exc:
        raise TemplateError(f"template {name} not found") from exc


# ---------------------------------------------------------------- requests


def render_prefix(plan: Plan, env: jinja2.Environment | None = None) -> str:
    return render(env or environment(), SYSTEM_TEMPLATE, prefix_context(plan))


def render_unit(plan: Plan, unit: Unit, env: jinja2.Environment | None = None,
                code_root: Path | None = None, current: Mapping[str, str] | None = None) -> str:
    return render(env or environment(), UNIT_TEMPLATE, unit_context(plan, unit, code_root, current))


def build_request(unit: Unit | str, plan: Plan, model: str | None = None,
                  max_tokens: int | None = None, *,
                  env: jinja2.Environment | None = None,
                  code_root: Path | None = None,
                  current: Mapping[str, str] | None = None) -> Request:
    """The request for one unit: the shared prefix (cached) and the unit part.

    ``code_root`` is the output folder (normally ``generated/``): the Python
    API of each dependency unit already generated there goes into the request,
    so code that wires units together calls them by their real names.
    ``current`` maps the unit's own files, as last generated, to their text:
    the model is asked to amend them rather than start again."""
    env = env or environment()
    unit = plan.unit(unit) if isinstance(unit, str) else unit
    return Request.simple(unit=unit.name, prefix=render_prefix(plan, env),
                          prompt=render_unit(plan, unit, env, code_root, current), model=model,
                          max_tokens=max_tokens)


# ---------------------------------------------------------------- contexts


def prefix_context(plan: Plan) -> dict[str, Any]:
    return {
        "python_version": PYTHON_VERSION,
        "package": plan.package,
        "marker": MARKER,
        "units": [_unit_summary(u) for u in plan.units],
        "entry": next((u.import_name for u in plan.units if u.name == ENTRY_UNIT), ""),
        # Sorted by path, not plan order, so reordering units never moves bytes.
        "specs": sorted(({"path": u.spec_files[0], "text": canonical_module(plan.module(u))}
                         for u in plan.units), key=lambda s: s["path"]),
    }


def unit_context(plan: Plan, unit: Unit, code_root: Path | None = None,
                 current: Mapping[str, str] | None = None) -> dict[str, Any]:
    module = plan.module(unit)
    return {
        "marker": MARKER,
        "unit": {**_unit_summary(unit), "owns": [_label(d) for d in _owned(module)]},
        "obligations": [_obligation(o) for o in plan.obligations.get(unit.name, ())],
        "dependencies": [_dependency(plan, unit, dep, code_root) for dep in unit.depends_on_units],
        "directions": guidance_notes(module),
        "settled": [_settled(q) for q in module.of_type(ast.ResolvedQuestion)],
        "open_questions": [q.name for q in module.of_type(ast.OpenQuestion)],
        "deferred": [{"name": d.name, "hint": d.hint} for d in module.of_type(ast.DeferredDecl)],
        "current": [{"path": path, "text": text, "fence": _fence(text), "lang": _lang(path)}
                    for path, text in sorted((current or {}).items())],
    }


def _fence(text: str) -> str:
    """A backtick fence longer than any run of backticks in ``text``."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    return "`" * max(4, longest + 1)


def _lang(path: str) -> str:
    return {".py": "python", ".json": "json", ".md": "markdown"}.get(Path(path).suffix, "")


def _unit_summary(unit: Unit) -> dict[str, Any]:
    return {
        "name": unit.name,
        "import_name": unit.import_name,
        "module_path": unit.module_path,
        "test_path": unit.test_path,
        "spec_files": list(unit.spec_files),
        "depends_on": [f"{unit.package}.{d}" for d in unit.depends_on_units],
    }


def _owned(module: ast.Module) -> list[ast.Decl]:
    skip = (ast.UseDecl, ast.ModuleDecl, ast.ResolvedQuestion, ast.OpenQuestion)
    return [d for d in module.decls if not isinstance(d, skip)]


def _obligation(ob: Any) -> dict[str, str]:
    return {"id": ob.id, "category": str(ob.category), "description": str(ob.description)}


def _dependency(plan: Plan, unit: Unit, dep: str, code_root: Path | None) -> dict[str, str]:
    decls = interface_decls(plan, unit, dep)
    return {
        "name": dep,
        "import_name": f"{unit.package}.{dep}",
        "declarations": "\n".join(canonical_decl(d) for d in decls).rstrip("\n"),
        "python_api": _python_api(code_root, plan.unit(dep)) if code_root else "",
    }


def _python_api(code_root: Path, dep: Unit) -> str:
    """The stub of ``dep``'s generated module, or "" before it is generated."""
    try:
        source = (code_root / dep.module_path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""
    return python_interface(source)


def _settled(q: ast.ResolvedQuestion) -> dict[str, Any]:
    return {"question": q.name, "answer": q.answer, "rationale": q.rationale,
            "extra": list(q.extra)}


_KIND_LABELS = {
    ast.RuleDecl: "rule", ast.ContractDecl: "contract", ast.ActorDecl: "actor",
    ast.SurfaceDecl: "surface", ast.EnumDecl: "enum", ast.InvariantDecl: "invariant",
    ast.GivenDecl: "given", ast.DefaultDecl: "default", ast.DeferredDecl: "deferred",
}


def _label(decl: ast.Decl) -> str:
    """`rule ApplyOpen`, `value Envelope`, `external entity Clock`, `config`."""
    if isinstance(decl, ast.EntityDecl):
        kind = "external entity" if decl.kind == "external" else decl.kind
        return f"{kind} {decl.name}"
    if isinstance(decl, (ast.ConfigDecl, ast.GivenDecl)):
        return decl.name  # `config`, `core/config` (an override), `given`
    return f"{_KIND_LABELS.get(type(decl), type(decl).__name__)} {decl.name}"


def guidance_notes(module: ast.Module) -> list[dict[str, Any]]:
    """Annotations grouped by the construct they annotate, in source order.

    ``@guidance`` is implementation direction; ``@invariant``/``@guarantee``
    prose states a property the implementation must uphold."""
    out: list[dict[str, Any]] = []
    for decl in module.decls:
        annotations = getattr(decl, "annotations", ())
        notes = [_note(a) for a in annotations if a.prose or a.name]
        if notes:
            out.append({"construct": _label(decl), "notes": notes})
    return out


def _note(a: ast.Annotation) -> dict[str, str]:
    if a.kind == "guidance":
        label = "Implementation direction (@guidance)"
    else:
        label = f"Property to uphold (@{a.kind} {a.name})"
    return {"label": label, "prose": a.prose or "(no prose)"}
