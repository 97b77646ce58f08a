"""What an obligation is *about*: the spec names a test must touch to discharge it.

A test tagged ``rule-success.EntryExpires`` that never mentions an entry, its
status, ``expired`` or the rule itself cannot be establishing the rule, however
green it is. This module derives those subject terms from the spec AST, and the
word-level normalisation both sides are matched with (``EntryExpires`` ~
``entry_expires`` ~ ``"EntryExpires"`` ~ ``make_entry_expires``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from allium import ast

_WORD = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")
# Spec words too generic to prove anything when a test mentions them.
_TOO_GENERIC = frozenset({"this", "now", "config", "created", "id"})


def words(text: str) -> tuple[str, ...]:
    """`EntryExpires` / `entry_expires` / "entry expires" -> ("entry", "expires")."""
    return tuple(w.lower() for w in _WORD.findall(text))


def key(text: str) -> str:
    """The normalised form a spec term is matched by."""
    return "".join(words(text))


def phrase_keys(token: str, longest: int = 6) -> Iterator[str]:
    """Every contiguous run of words in a test token, normalised.

    So the spec term `Entry` matches the test identifier `new_entry`, and
    `expires_at` matches `entry.expires_at` and `"expires at"`.
    """
    ws = words(token)
    for i in range(len(ws)):
        for j in range(i + 1, min(len(ws), i + longest) + 1):
            yield "".join(ws[i:j])


@dataclass
class Vocabulary:
    """The spec's named things, so binding variables (`e`, `request`) are not mistaken for terms."""

    entities: set[str] = field(default_factory=set)
    fields: set[str] = field(default_factory=set)
    enum_values: set[str] = field(default_factory=set)
    triggers: set[str] = field(default_factory=set)
    rules: dict[str, ast.RuleDecl] = field(default_factory=dict)

    def knows(self, name: str) -> bool:
        return (name in self.entities or name in self.fields
                or name in self.enum_values or name in self.triggers)


def vocabulary(modules: Iterable[ast.Module]) -> Vocabulary:
    vocab = Vocabulary()
    for module in modules:
        for decl in module.decls:
            if isinstance(decl, ast.EntityDecl):
                vocab.entities.add(decl.name)
                for f in decl.fields:
                    vocab.fields.add(f.name)
                    if f.kind == "enum":
                        vocab.enum_values.update(_names(f.value))
            elif isinstance(decl, ast.EnumDecl):
                vocab.enum_values.update(decl.values)
            elif isinstance(decl, ast.RuleDecl):
                vocab.rules.setdefault(decl.name, decl)
                trigger = trigger_name(decl)
                if trigger:
                    vocab.triggers.add(trigger)
    return vocab


def trigger_name(rule: ast.RuleDecl) -> str | None:
    """`when: StoreRequested(k, v)` -> StoreRequested; `when: e: Entry.status becomes x` -> None."""
    when = rule.when
    if when is None or not isinstance(when.trigger, ast.Call):
        return None
    func = when.trigger.func
    return _unqualified(func.name) if isinstance(func, ast.Name) else None


def subject_terms(obligation_id: str, vocab: Vocabulary) -> frozenset[str]:
    """Spec names (as written) the obligation is about; empty when unknown."""
    category, _, rest = obligation_id.partition(".")
    parts = [p for p in rest.split(".") if p and not p.isdigit()]
    if not parts:
        return frozenset()
    if parts[0] in vocab.rules and (category.startswith("rule") or category == "temporal"):
        # rule-success/-failure/-branch/-entity-creation/-chained, temporal:
        # about the rule; a chained trigger (`rule-chained.R.Trigger`) also about the trigger
        return frozenset(rule_terms(vocab.rules[parts[0]], vocab) | {_unqualified(p) for p in parts[1:]})
    # transitions (entity + states), entity/field/when/config/invariant obligations:
    # the names in the id are the subject.
    return frozenset(_unqualified(p) for p in parts)


def rule_terms(rule: ast.RuleDecl, vocab: Vocabulary) -> set[str]:
    terms = {rule.name}
    trigger = trigger_name(rule)
    if trigger:
        terms.add(trigger)
    for clause in rule.all_clauses():
        if isinstance(clause, (ast.WhenClause, ast.RequiresClause, ast.EnsuresClause)):
            terms.update(n for n in _names(clause) if vocab.knows(n))
    return {t for t in terms if t.lower() not in _TOO_GENERIC}


def _names(node: ast.Node | None) -> Iterator[str]:
    """Every identifier, member name and call/keyword name under a node."""
    if node is None:
        return
    for sub in node.walk():
        if isinstance(sub, ast.Name):
            yield _unqualified(sub.name)
        elif isinstance(sub, ast.Member):
            yield sub.name
        elif isinstance(sub, ast.Arg) and sub.name:
            yield sub.name
        elif isinstance(sub, ast.GenericType):
            yield _unqualified(sub.name)


def _unqualified(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def term_keys(terms: Iterable[str]) -> Mapping[str, str]:
    """normalised key -> the term as the spec spells it (for messages)."""
    return {key(t): t for t in terms if key(t)}
