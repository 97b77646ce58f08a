"""What every pass may consult: all modules of the check set, by path."""

from __future__ import annotations

from dataclasses import dataclass

from allium import ast


@dataclass(frozen=True)
class CheckContext:
    modules: dict[str, ast.Module]

    @classmethod
    def build(cls, modules: dict[str, ast.Module]) -> "CheckContext":
        return cls(dict(modules))
