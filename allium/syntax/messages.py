"""Lark's parse errors, said the way a person would say them.

`Expected LBRACE` becomes `expected '{' after entity name 'Order', found end
of line`.  The wording follows JUXT's parser (`expected X, found Y`) so the
two tools read alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from lark import Token

_PUNCTUATION = {
    "LBRACE": "'{'", "RBRACE": "'}'", "LPAR": "'('", "RPAR": "')'", "LSQB": "'['",
    "RSQB": "']'", "COLON": "':'", "COMMA": "','", "DOT": "'.'", "EQUAL": "'='",
    "VBAR": "'|'", "QMARK": "'?'", "MORETHAN": "'>'", "SLASH": "'/'",
}
_NAMED = {
    "NAME": "a name", "QNAME": "a qualified name", "STRING": "a string",
    "NUMBER": "a number", "BACKTICK": "a backtick literal", "PROSE": "an indented comment",
    "_NL": "end of line", "_INDENT": "an indented block", "_DEDENT": "end of the indented block",
    "$END": "end of file", "COMPARE_OP": "a comparison operator", "ADD_OP": "'+' or '-'",
    "MUL_OP": "'*' or '/'", "GENERIC_OPEN": "a generic type", "LAMBDA_ARROW": "'=>'",
    "INVARIANT_AT": "'@invariant'", "WILDCARD": "'*'",
}
# Terminals that can start an expression: when most of them are expected,
# "an expression" says it better than listing them.
_EXPRESSION_STARTS = {"NAME", "QNAME", "NUMBER", "STRING", "LPAR", "LBRACE", "LSQB", "NOT", "EXISTS", "IF"}
_EXPRESSION_EXTRAS = {"BACKTICK", "CONFIG", "FOR", "GENERIC_OPEN", "MINUS"}
# Terminals the postlexer consumes itself; never worth naming to a person.
_INTERNAL = {"_NL_CONT", "_NL_ELSE"}
_DECLARATION_KEYWORDS = {
    "entity", "external", "value", "variant", "enum", "rule", "invariant", "contract",
    "surface", "actor", "config", "given", "default", "deferred", "use", "open",
    "resolved", "module",
}


def describe_terminal(name: str, patterns: dict[str, str] | None = None) -> str:
    if patterns and name.startswith("__ANON") and name in patterns:
        return f"'{patterns[name]}'"
    if name in _PUNCTUATION:
        return _PUNCTUATION[name]
    if name in _NAMED:
        return _NAMED[name]
    if name.startswith("__ANON") or not name.isupper():
        return name
    return "'" + name.lower().replace("_at", "") + "'" if name != "TRANSITIONS_TO" else "'transitions_to'"


def describe_token(token: Token) -> str:
    kind = token.type
    if kind in ("_NL", "_DEDENT", "_INDENT", "$END"):
        return describe_terminal(kind)
    if kind == "NAME":
        return f"name '{token.value}'"
    if kind == "STRING":
        return f"string {token.value}"
    if kind == "NUMBER":
        return f"number {token.value}"
    return f"'{token.value}'"


def expected_phrase(expected: Iterable[str], patterns: dict[str, str] | None = None) -> str:
    names = set(expected) - _INTERNAL
    if len(names & _EXPRESSION_STARTS) >= 5:
        names = (names - _EXPRESSION_STARTS - _EXPRESSION_EXTRAS) | {"<expr>"}
    ordered = sorted(names, key=_priority)
    words = ["an expression" if n == "<expr>" else describe_terminal(n, patterns) for n in ordered]
    if len(words) > 5:
        words = words[:5] + ["..."]
    if len(words) == 1:
        return words[0]
    return ", ".join(words[:-1]) + " or " + words[-1]


def _priority(name: str) -> tuple[int, str]:
    order = ["LBRACE", "RBRACE", "COLON", "<expr>", "NAME", "_NL", "RPAR", "RSQB"]
    return (order.index(name) if name in order else len(order), name)


def context_phrase(recent: Sequence[Token]) -> str:
    """`after entity name 'Order'`, from the tokens just before the error."""
    if len(recent) >= 2 and recent[-1].type in ("NAME", "QNAME"):
        keyword = recent[-2].value
        if keyword in _DECLARATION_KEYWORDS:
            return f" after {keyword} name '{recent[-1].value}'"
    if recent and recent[-1].type not in ("_NL", "_INDENT", "_DEDENT"):
        return f" after '{recent[-1].value}'"
    return ""


def misplaced_keyword(token: Token, recent: Sequence[Token]) -> Token | None:
    """A declaration keyword read as a name because it may not appear here.

    `contract C { entity Sneaky { ... } }` fails at `Sneaky`; the real problem
    is the `entity` before it, so that is what we point at.
    """
    if recent and recent[-1].type == "NAME" and recent[-1].value in _DECLARATION_KEYWORDS:
        if token.type in ("NAME", "QNAME", "LBRACE"):
            return recent[-1]
    return None


def unexpected_token_message(
    token: Token, expected: Iterable[str], recent: Sequence[Token], patterns: dict[str, str] | None = None
) -> str:
    keyword = misplaced_keyword(token, recent)
    if keyword is not None:
        article = "an" if keyword.value[0] in "aeiou" else "a"
        return f"{article} {keyword.value} declaration is not allowed here, found '{keyword.value}'"
    return (
        f"expected {expected_phrase(expected, patterns)}{context_phrase(recent)}, "
        f"found {describe_token(token)}"
    )
