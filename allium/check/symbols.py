"""The resolved symbol table every pass consults.

One :class:`ModuleSymbols` per module of the check set, holding what the
module declares (entities, enums, config, rules, surfaces ...), which triggers
its rules handle and emit, which its surfaces provide, and its `use` imports
resolved (relative to the importing file's directory) against the other
modules being checked. Qualified names `alias/Name` resolve through those
imports.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field

from allium import ast
from allium.check import queries

# Types every module may use without declaring them. Lenient on purpose:
# an unknown builtin flagged as undefined is a false positive on valid specs.
BUILTIN_TYPES = frozenset(
    {
        "String", "Integer", "Decimal", "Boolean", "Timestamp", "Duration", "Date", "Time",
        "List", "Set", "Sequence", "Map", "Any", "Void", "ByteArray", "Bytes",
    }
)

# Names a rule or invariant may use without binding them.
BUILTIN_NAMES = frozenset({"config", "now", "this", "within", "true", "false", "null", "_"})


@dataclass
class ModuleSymbols:
    module: ast.Module
    entities: dict[str, ast.EntityDecl] = field(default_factory=dict)
    enums: dict[str, ast.EnumDecl] = field(default_factory=dict)
    config: dict[str, ast.ConfigParam] = field(default_factory=dict)
    rules: dict[str, ast.RuleDecl] = field(default_factory=dict)
    surfaces: dict[str, ast.SurfaceDecl] = field(default_factory=dict)
    actors: dict[str, ast.ActorDecl] = field(default_factory=dict)
    contracts: dict[str, ast.ContractDecl] = field(default_factory=dict)
    defaults: dict[str, ast.DefaultDecl] = field(default_factory=dict)
    given: dict[str, ast.Binding] = field(default_factory=dict)
    invariants: dict[str, ast.InvariantDecl] = field(default_factory=dict)
    # alias -> resolved module path (None: the target is not in the check set)
    imports: dict[str, str | None] = field(default_factory=dict)
    # trigger name -> rules whose `when:` is a call of it
    handled: dict[str, list[ast.RuleDecl]] = field(default_factory=dict)
    emitted: set[str] = field(default_factory=set)
    provided: set[str] = field(default_factory=set)
    # every lowercase enum-like literal declared here (named/inline enums, graph states)
    literals: set[str] = field(default_factory=set)

    @property
    def path(self) -> str:
        return self.module.path

    def declares(self, name: str) -> bool:
        """Whether `name` is a type-like declaration of this module."""
        return (
            name in self.entities
            or name in self.enums
            or name in self.actors
            or name in self.contracts
            or name in self.surfaces
        )

    def declares_any(self, name: str) -> bool:
        """Whether `name` is anything this module declares or its rules handle or emit."""
        return (
            self.declares(name)
            or name in self.rules
            or name in self.handled
            or name in self.emitted
            or name in self.defaults
            or name in self.invariants
            or name == "config"
        )


@dataclass
class SymbolTable:
    modules: dict[str, ModuleSymbols]
    # id(decl) -> the module declaring it
    owners: dict[int, ModuleSymbols] = field(default_factory=dict)

    @classmethod
    def build(cls, modules: dict[str, ast.Module]) -> "SymbolTable":
        table = cls({path: _collect(module) for path, module in modules.items()})
        for syms in table.modules.values():
            table.owners.update((id(d), syms) for d in syms.module.decls)
        for syms in table.modules.values():
            for use in syms.module.uses:
                alias = use.name or _stem(use.path)
                syms.imports[alias] = table.resolve_path(syms.path, use.path)
        return table

    def resolve_path(self, importer: str, target: str) -> str | None:
        """The module a `use "target"` in `importer` names, if it is being checked."""
        base = os.path.dirname(os.path.abspath(importer))
        wanted = os.path.normpath(os.path.join(base, target))
        for candidate in (wanted, wanted + ".allium"):
            for path in self.modules:
                if os.path.normpath(os.path.abspath(path)) == candidate:
                    return path
        return None

    def of(self, module: ast.Module) -> ModuleSymbols:
        return self.modules[module.path]

    def imported(self, syms: ModuleSymbols, alias: str) -> ModuleSymbols | None:
        path = syms.imports.get(alias)
        return self.modules.get(path) if path else None

    def split(self, syms: ModuleSymbols, name: str) -> tuple[ModuleSymbols | None, str, bool]:
        """(module that should declare it, bare name, resolvable).

        `resolvable` is False when the qualifier names an import outside the check
        set: the name can then be neither confirmed nor refuted.
        """
        if "/" not in name:
            return syms, name, True
        alias, bare = name.split("/", 1)
        if alias not in syms.imports:
            return None, bare, True
        target = self.imported(syms, alias)
        return target, bare, target is not None

    def entity(self, syms: ModuleSymbols, name: str) -> ast.EntityDecl | None:
        target, bare, _ = self.split(syms, name)
        if target is None:
            return None
        found = target.entities.get(bare)
        if found is None and "/" not in name:
            # Unqualified names may still come from an import (JUXT warns on
            # ambiguity rather than rejecting them), so look there second.
            for other in self.imports_of(syms):
                if bare in other.entities:
                    return other.entities[bare]
        return found

    def owner_of(self, decl: ast.Node) -> ModuleSymbols | None:
        return self.owners.get(id(decl))

    def imports_of(self, syms: ModuleSymbols) -> Iterator[ModuleSymbols]:
        for path in syms.imports.values():
            if path and path in self.modules:
                yield self.modules[path]

    def type_known(self, syms: ModuleSymbols, name: str) -> bool:
        """Whether a type name resolves (builtins, local, qualified through `use`)."""
        if name in BUILTIN_TYPES:
            return True
        target, bare, resolvable = self.split(syms, name)
        if target is None:
            return False  # the alias is not imported at all
        if not resolvable:
            return True  # imported from outside the check set: cannot tell
        if target.declares(bare):
            return True
        if "/" not in name:
            return any(other.declares(bare) for other in self.imports_of(syms))
        return False


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def _collect(module: ast.Module) -> ModuleSymbols:
    syms = ModuleSymbols(module)
    for decl in module.decls:
        _add(syms, decl)
    for rule in syms.rules.values():
        trigger = queries.trigger_call_name(rule)
        if trigger is not None:
            syms.handled.setdefault(trigger, []).append(rule)
        for clause in rule.ensures:
            syms.emitted.update(queries.emitted_triggers(clause.body))
    for surface in syms.surfaces.values():
        for item in queries.surface_items(surface, "provides"):
            name = queries.call_name(item.expr)
            if name is not None:
                syms.provided.add(name)
    return syms


def _add(syms: ModuleSymbols, decl: ast.Decl) -> None:
    if isinstance(decl, ast.EntityDecl):
        syms.entities[decl.name] = decl
        for f in decl.fields:
            if f.kind == "enum":
                syms.literals.update(queries.pipe_names(f.value))
        for graph in decl.transitions:
            syms.literals.update(queries.graph_states(graph))
    elif isinstance(decl, ast.EnumDecl):
        syms.enums[decl.name] = decl
        syms.literals.update(decl.values)
    elif isinstance(decl, ast.ConfigDecl) and decl.name == "config":
        for param in decl.params:
            syms.config.setdefault(param.name, param)
    elif isinstance(decl, ast.RuleDecl):
        syms.rules[decl.name] = decl
    elif isinstance(decl, ast.SurfaceDecl):
        syms.surfaces[decl.name] = decl
    elif isinstance(decl, ast.ActorDecl):
        syms.actors[decl.name] = decl
    elif isinstance(decl, ast.ContractDecl):
        syms.contracts[decl.name] = decl
    elif isinstance(decl, ast.DefaultDecl):
        syms.defaults[decl.name] = decl
    elif isinstance(decl, ast.GivenDecl):
        for binding in decl.bindings:
            syms.given.setdefault(binding.name, binding)
    elif isinstance(decl, ast.InvariantDecl):
        syms.invariants[decl.name] = decl
