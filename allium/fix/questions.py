"""Settled decisions that nothing tests: resolved questions no rule or invariant implements.

A resolved question derives no obligation of its own: its answer is prose. It
is tested exactly when the constructs that implement it are, so it should name
them. This check reads each resolved question's answer and rationale for the
names of the spec set's rules and invariants (entity invariants included) and
flags the questions that name none: a settled decision with nothing behind it
that a test could fail on (registrar's per-account FIFO was one).

Why a check and not an obligation per question: an answer such as "Yes,
ahead of the Registrar: ... waits in a per-account FIFO" does not say which
behaviour a test should exercise; a generated test tagged with it could only
restate the prose. Naming the rule that implements the decision puts the
decision under that rule's obligations, which do say what to exercise.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from allium import ast

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class SettledDecision:
    file: str
    line: int
    question: str
    implemented_by: tuple[str, ...]  # rule and invariant names the answer or rationale mentions

    @property
    def implemented(self) -> bool:
        return bool(self.implemented_by)


def behaviour_names(modules: Iterable[ast.Module]) -> set[str]:
    """Every rule and invariant name of the spec set, entity invariants included."""
    names: set[str] = set()
    for module in modules:
        for decl in module.decls:
            if isinstance(decl, (ast.RuleDecl, ast.InvariantDecl)):
                names.add(decl.name)
            elif isinstance(decl, ast.EntityDecl):
                names.update(inv.name for inv in decl.invariants)
    return names


def settled_decisions(modules: Mapping[str, ast.Module]) -> list[SettledDecision]:
    """Each resolved question of the spec set, with the rules and invariants it names."""
    known = behaviour_names(modules.values())
    found = []
    for path, module in sorted(modules.items()):
        for decl in module.decls:
            if isinstance(decl, ast.ResolvedQuestion):
                words = set(_WORD.findall(f"{decl.answer}\n{decl.rationale}"))
                found.append(SettledDecision(path, decl.span.line, decl.name, tuple(sorted(words & known))))
    return found


def render(decisions: Iterable[SettledDecision], root: str = "", show_all: bool = False) -> str:
    """The untested decisions (all of them with `show_all`), then a one-line count."""
    decisions = list(decisions)
    lines = []
    for d in decisions:
        where = d.file[len(root):].lstrip("/") if root and d.file.startswith(root) else d.file
        if not d.implemented:
            lines.append(f"  untested {where}:{d.line}: {d.question} (names no rule or invariant)")
        elif show_all:
            lines.append(f"  tested   {where}:{d.line}: {d.question} -> {', '.join(d.implemented_by)}")
    untested = sum(not d.implemented for d in decisions)
    lines.append(f"{len(decisions) - untested} of {len(decisions)} settled decisions name the rule or "
                 f"invariant that implements them; {untested} name none")
    return "\n".join(lines)
