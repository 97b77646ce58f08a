"""The generation plan: which unit generates what, and in which order.

A *unit* is one prompt to the model and the files its answer owns. By default
there is one unit per spec module (file): its name is the file's stem, it owns
every declaration in the file, and it depends on the units of the files it
imports with ``use``. A unit's output is ``<package>/<unit>.py`` plus
``tests/test_<unit>.py`` (relative to the output root, normally
``generated/``), and optionally helper modules ``<package>/<unit>_*.py`` and
``tests/test_<unit>_*.py`` when one file would be unwieldy. Ownership is
exact and disjoint: a helper name that starts with another unit's name (unit
``library`` and ``library_fines.py``) belongs to that unit, and
:func:`check_ownership` refuses a plan in which two units, or a unit and
allium itself, could write the same file.

``@guidance`` may one day refine unit boundaries (a guidance line such as
``unit: ledger_store`` moving a construct into its own unit). That is not
implemented: such lines are ignored here and reach the model as ordinary
implementation direction.

Units form a dependency graph; :func:`build_plan` orders it topologically and
refuses a cycle, naming it. :func:`spec_slice_hash` fingerprints exactly what a
unit's code depends on: the canonical text of its own declarations plus the
public interfaces it uses from other units, so an edit elsewhere leaves it alone.
"""

from __future__ import annotations

import hashlib
import importlib
import keyword
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from allium import ast
from allium.errors import AlliumError
from allium.prompt.canonical import canonical_decl
from allium.source import Span

# Qualified references look like `alias/Name`, possibly followed by `.member`.
_QUALIFIED = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)/([A-Za-z_][A-Za-z0-9_]*)")
# Nodes whose strings are prose or paths, never references.
_NO_REFERENCES = (Span, ast.Literal, ast.Annotation, ast.ResolvedQuestion, ast.OpenQuestion, ast.UseDecl)
# Declarations that make up a unit's public interface: the data shapes and
# contracts other units program against. Rules, surfaces and questions are
# behaviour, visible to others only through these.
INTERFACE_DECLS = (ast.EntityDecl, ast.EnumDecl, ast.ContractDecl, ast.ConfigDecl,
                   ast.GivenDecl, ast.DefaultDecl, ast.ActorDecl)
DEFAULT_PACKAGE = "app"
# The unit generated from `main.allium` is the package's command line: the
# toolchain writes `<package>/__main__.py` to call its `main()`, so
# `python -m <package>` runs it.
ENTRY_UNIT = "main"


class PlanError(AlliumError):
    """The spec set cannot be split into an ordered set of units."""


class Obligation(Protocol):
    """What the plan needs from ``allium.plan``'s obligations."""

    @property
    def id(self) -> str: ...
    @property
    def category(self) -> str: ...
    @property
    def description(self) -> str: ...


ObligationSource = Callable[[ast.Module], Sequence[Any]]


@dataclass(frozen=True)
class Unit:
    name: str
    package: str
    spec_files: tuple[str, ...]  # relative to the plan root, '/'-separated
    owns: tuple[str, ...]  # names of the declarations this unit implements
    depends_on_decls: tuple[tuple[str, str], ...]  # (unit, declaration name)
    depends_on_units: tuple[str, ...]
    obligations: tuple[str, ...]  # obligation ids the unit's tests must discharge
    files: tuple[str, ...]  # owned outputs, relative to the output root
    slice_hash: str = ""  # see spec_slice_hash; filled in by build_plan
    # Other units whose names start with this one's plus '_': their files and
    # helpers are theirs, not this unit's helpers.
    excludes: tuple[str, ...] = ()

    @property
    def module_path(self) -> str:
        return f"{self.package}/{self.name}.py"

    @property
    def test_path(self) -> str:
        return f"tests/test_{self.name}.py"

    @property
    def import_name(self) -> str:
        return f"{self.package}.{self.name}"

    def allows(self, path: str) -> bool:
        """May the model write ``path`` (normalised, relative to the output root) for this unit?"""
        p = PurePosixPath(path)
        if path in self.files:
            return True
        if len(p.parts) != 2 or p.suffix != ".py":
            return False
        folder, stem = p.parts[0], p.stem
        if folder == "tests" and folder != self.package and stem.startswith("test_"):
            stem = stem[len("test_"):]
        elif folder != self.package:
            return False
        return stem.startswith(f"{self.name}_") and not any(
            stem == other or stem.startswith(f"{other}_") for other in self.excludes)


def allium_files(package: str) -> tuple[str, ...]:
    """Files allium writes itself, never a unit: package marker, entry point, tests' conftest, lockfile."""
    return (f"{package}/__init__.py", f"{package}/__main__.py", "tests/conftest.py", "allium.lock")


def check_ownership(units: Sequence[Unit]) -> None:
    """PlanError unless no two units (nor a unit and allium) could write the same file."""
    for unit in units:
        for path in unit.files:
            if path in allium_files(unit.package):
                raise PlanError(f"unit {unit.name!r} cannot own {path}: {path} belongs to allium")
            for other in units:
                if other is not unit and other.allows(path):
                    raise PlanError(f"units {unit.name!r} and {other.name!r} both own {path}")
        for path in allium_files(unit.package):
            if unit.allows(path):
                raise PlanError(f"unit {unit.name!r} cannot own {path}: {path} belongs to allium")


def check_name(name: str, what: str) -> None:
    """PlanError unless ``name`` can be a Python module or package of its own."""
    if not name.isidentifier():
        raise PlanError(f"{what} is not a Python identifier")
    if keyword.iskeyword(name):
        raise PlanError(f"{what} is a Python keyword; it could not be imported")
    if name.startswith("__") and name.endswith("__"):
        raise PlanError(f"{what} is reserved (a dunder name such as __init__ or __main__ means "
                        "something to Python)")


@dataclass(frozen=True)
class Plan:
    package: str
    root: Path  # folder the spec paths are relative to
    units: tuple[Unit, ...]  # in dependency order
    modules: Mapping[str, ast.Module]  # unit name -> module
    # unit name -> its obligations, in derivation order (ids are unique per
    # module, not necessarily across modules, hence per unit).
    obligations: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    obligations_available: bool = True

    def unit(self, name: str) -> Unit:
        for unit in self.units:
            if unit.name == name:
                return unit
        known = ", ".join(u.name for u in self.units)
        raise PlanError(f"no unit named {name!r}; the plan has: {known}")

    def module(self, unit: Unit | str) -> ast.Module:
        return self.modules[unit if isinstance(unit, str) else unit.name]


# ---------------------------------------------------------------- building


def build_plan(modules: Mapping[str, ast.Module], *, package: str = DEFAULT_PACKAGE,
               root: str | Path | None = None,
               obligations: ObligationSource | None = None) -> Plan:
    """The plan for a parsed spec set, keyed by file path. Raises PlanError on a cycle.

    ``obligations`` maps a module to its obligations; by default
    ``allium.plan.derive_obligations``. If that package is not installed the
    plan is built without obligations and ``obligations_available`` is False.
    """
    check_name(package, f"package name {package!r}")
    if package == "tests":
        raise PlanError("package name 'tests' is reserved: the generated tests live in tests/")
    paths = {str(Path(p).resolve()): m for p, m in modules.items()}
    base = Path(root).resolve() if root is not None else _common_root(paths)
    names = _unit_names(paths)
    available = True
    if obligations is None:
        obligations, available = _default_obligations()
    units: dict[str, Unit] = {}
    by_unit_obligations: dict[str, tuple[Any, ...]] = {}
    for path, module in paths.items():
        found = tuple(obligations(module))
        by_unit_obligations[names[path]] = found
        units[names[path]] = _unit(names[path], path, module, base, package, names,
                                   tuple(dict.fromkeys(o.id for o in found)))
    check_ownership(tuple(units.values()))
    ordered = topological_order(units)
    by_unit = {names[p]: m for p, m in paths.items()}
    plan = Plan(package, base, tuple(units[n] for n in ordered), by_unit, by_unit_obligations,
                available)
    hashed = tuple(replace(u, slice_hash=_slice_hash(plan, u)) for u in plan.units)
    return replace(plan, units=hashed)


def load_plan(paths: Iterable[str | Path], *, package: str = DEFAULT_PACKAGE,
              obligations: ObligationSource | None = None,
              parsed: Mapping[str, ast.Module] | None = None) -> Plan:
    """Parse ``paths`` and every file they import, then plan them.

    ``parsed`` holds modules already parsed (by ``allium check``, say), keyed by
    path; those files are not parsed again."""
    modules = load_spec_set(paths, parsed)
    return build_plan(modules, package=package, obligations=obligations)


def load_spec_set(paths: Iterable[str | Path],
                  parsed: Mapping[str, ast.Module] | None = None) -> dict[str, ast.Module]:
    """Parse the given spec files and, transitively, the files they ``use``."""
    from allium.syntax import parse_file  # deferred: only planning needs the parser

    known = {str(Path(p).resolve()): m for p, m in (parsed or {}).items()}
    todo: list[tuple[Path, str]] = [(Path(p).resolve(), "") for p in paths]
    modules: dict[str, ast.Module] = {}
    while todo:
        path, imported_by = todo.pop()
        if str(path) in modules:
            continue
        module = known.get(str(path)) or _parse_for_plan(path, imported_by, parse_file)
        modules[str(path)] = module
        todo.extend((_use_target(path, use), str(path)) for use in module.uses)
    return dict(sorted(modules.items()))


def _parse_for_plan(path: Path, imported_by: str, parse_file: Callable[[str], Any]) -> ast.Module:
    if not path.is_file():
        where = f" (imported by {imported_by})" if imported_by else ""
        raise PlanError(f"spec file {path} does not exist{where}")
    result = parse_file(str(path))
    if result.module is None:
        first = next((d for d in result.diagnostics), None)
        raise PlanError(f"{path}: cannot plan a spec with syntax errors"
                        + (f" ({first.message})" if first else ""))
    return result.module


def _default_obligations() -> tuple[ObligationSource, bool]:
    try:
        plan_pkg = importlib.import_module("allium.plan")
        return plan_pkg.derive_obligations, True
    except (ImportError, AttributeError):
        return (lambda module: ()), False


def _common_root(paths: Mapping[str, ast.Module]) -> Path:
    parents = [Path(p).parent for p in paths]
    if not parents:
        return Path.cwd()
    root = parents[0]
    while not all(p == root or root in p.parents for p in parents):
        root = root.parent
    return root


def _unit_names(paths: Mapping[str, ast.Module]) -> dict[str, str]:
    names: dict[str, str] = {}
    seen: dict[str, str] = {}
    for path in paths:
        name = re.sub(r"\W", "_", Path(path).stem).lower()
        if name[:1].isdigit():
            name = f"_{name}"
        if name in seen:
            raise PlanError(f"two spec files would both generate unit {name!r}: "
                            f"{seen[name]} and {path}")
        check_name(name, f"unit {name!r} (from {path})")
        seen[name] = path
        names[path] = name
    return names


def _use_target(path: Path, use: ast.UseDecl) -> Path:
    return (path.parent / use.path).resolve()


def _unit(name: str, path: str, module: ast.Module, root: Path, package: str,
          names: Mapping[str, str], obligation_ids: tuple[str, ...]) -> Unit:
    aliases: dict[str, str] = {}
    dep_units: list[str] = []
    for use in module.uses:
        target = str(_use_target(Path(path), use))
        if target not in names:
            raise PlanError(f"{path}: `use {use.path!r}` names a file outside the spec set")
        dep_units.append(names[target])
        if use.name:
            aliases[use.name] = names[target]
    refs = sorted({(aliases[a], n) for a, n in qualified_references(module) if a in aliases})
    return Unit(
        name=name,
        package=package,
        spec_files=(_relative(path, root),),
        owns=tuple(owned_names(module)),
        depends_on_decls=tuple(refs),
        depends_on_units=tuple(dict.fromkeys(dep_units)),
        obligations=obligation_ids,
        files=(f"{package}/{name}.py", f"tests/test_{name}.py"),
        excludes=tuple(sorted(n for n in names.values() if n.startswith(f"{name}_"))),
    )


def _relative(path: str, root: Path) -> str:
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return Path(path).as_posix()


def owned_names(module: ast.Module) -> list[str]:
    return [d.name for d in module.decls if not isinstance(d, (ast.UseDecl, ast.ModuleDecl))]


def qualified_references(module: ast.Module) -> set[tuple[str, str]]:
    """Every ``alias/Name`` the module mentions, as (alias, Name)."""
    found: set[tuple[str, str]] = set()
    for decl in module.decls:
        _collect_refs(decl, found)
    return found


def _collect_refs(node: Any, found: set[tuple[str, str]]) -> None:
    if isinstance(node, _NO_REFERENCES):
        return
    if isinstance(node, tuple):
        for item in node:
            _collect_refs(item, found)
        return
    if not is_dataclass(node):
        if isinstance(node, str):
            match = _QUALIFIED.match(node)
            if match:
                found.add((match.group(1), match.group(2)))
        return
    for f in fields(node):
        if f.name != "span":
            _collect_refs(getattr(node, f.name), found)


# ---------------------------------------------------------------- ordering


def topological_order(units: Mapping[str, Unit]) -> list[str]:
    """Unit names, dependencies first, ties broken by name; PlanError naming any cycle."""
    order: list[str] = []
    state: dict[str, str] = {}  # name -> "visiting" | "done"

    def visit(name: str, trail: list[str]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            cycle = trail[trail.index(name):] + [name]
            raise PlanError("unit dependency cycle: " + " -> ".join(cycle))
        state[name] = "visiting"
        for dep in sorted(units[name].depends_on_units):
            if dep not in units:
                raise PlanError(f"unit {name!r} depends on unknown unit {dep!r}")
            visit(dep, trail + [name])
        state[name] = "done"
        order.append(name)

    for name in sorted(units):
        visit(name, [])
    return order


# ---------------------------------------------------------------- interfaces and hashing


def interface_decls(plan: Plan, unit: Unit, dependency: str) -> list[ast.Decl]:
    """The declarations of ``dependency`` that ``unit`` programs against.

    Those it names (``alias/Name``); when it names none (a ``use`` without an
    alias, say) the whole public interface of the dependency.
    """
    module = plan.module(dependency)
    wanted = {n for d, n in unit.depends_on_decls if d == dependency}
    public: list[ast.Decl] = [d for d in module.decls if isinstance(d, INTERFACE_DECLS)]
    if not wanted:
        return public
    # Close over the dependency's own types that the named ones mention
    # (Product's `price: Money` needs Money), so the interface is complete.
    by_name = {d.name: d for d in public}
    todo = [n for n in wanted if n in by_name]
    while todo:
        for name in _local_names(by_name[todo.pop()]):
            if name in by_name and name not in wanted:
                wanted.add(name)
                todo.append(name)
    return [d for d in module.decls if d.name in wanted]


def _local_names(node: Any) -> set[str]:
    """Unqualified names mentioned by a declaration (types, entities, enums)."""
    found: set[str] = set()
    for child in node.walk():
        if isinstance(child, ast.Name) and "/" not in child.name:
            found.add(child.name.split(".")[0])
        elif isinstance(child, ast.GenericType):
            found.add(child.name)
    return found


def spec_slice_text(plan: Plan, unit: Unit) -> str:
    """The canonical text a unit's code depends on: its own declarations, then the
    interfaces it uses, each under a header naming where it comes from."""
    module = plan.module(unit)
    parts = [f"== unit {unit.name}\n"]
    parts.extend(canonical_decl(d) for d in module.decls if d.name in unit.owns
                 and not isinstance(d, (ast.UseDecl, ast.ModuleDecl)))
    for dep in unit.depends_on_units:
        parts.append(f"== interface {dep}\n")
        parts.extend(canonical_decl(d) for d in interface_decls(plan, unit, dep))
    return "".join(parts)


def spec_slice_hash(unit: Unit) -> str:
    """sha256 of :func:`spec_slice_text`, computed once when the plan is built."""
    if not unit.slice_hash:
        raise PlanError(f"unit {unit.name!r} was not built by build_plan: no slice hash")
    return unit.slice_hash


def _slice_hash(plan: Plan, unit: Unit) -> str:
    return hashlib.sha256(spec_slice_text(plan, unit).encode("utf-8")).hexdigest()


def describe_plan(plan: Plan) -> str:
    """A plain-text plan, for ``allium generate --dry-run``."""
    lines = [f"package {plan.package}: {len(plan.units)} units, in order"]
    for unit in plan.units:
        deps = ", ".join(unit.depends_on_units) or "-"
        lines.append(f"  {unit.name:<12} {', '.join(unit.spec_files)}  depends on: {deps}")
        lines.append(f"  {'':<12} {len(unit.owns)} declarations, "
                     f"{len(unit.obligations)} obligations -> {', '.join(unit.files)}")
    if not plan.obligations_available:
        lines.append("  (allium.plan is not available: no obligations were derived)")
    return "\n".join(lines)
