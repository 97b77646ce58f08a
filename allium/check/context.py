"""What every pass may consult: all modules of the check set and their symbols.

Walking the generic dataclass tree is the checker's main cost, so the flat
node list of each declaration is computed once here and shared by passes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from allium import ast
from allium.check.symbols import ModuleSymbols, SymbolTable


@dataclass(frozen=True)
class CheckContext:
    modules: dict[str, ast.Module]
    symbols: SymbolTable
    _nodes: dict[int, tuple[ast.Node, ...]] = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, modules: dict[str, ast.Module]) -> "CheckContext":
        return cls(dict(modules), SymbolTable.build(modules))

    def of(self, module: ast.Module) -> ModuleSymbols:
        return self.symbols.of(module)

    def nodes(self, decl: ast.Node) -> tuple[ast.Node, ...]:
        """`decl.walk()`, computed once per check."""
        cached = self._nodes.get(id(decl))
        if cached is None:
            cached = self._nodes[id(decl)] = tuple(decl.walk())
        return cached
