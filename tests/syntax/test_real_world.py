"""What third-party authors write and JUXT's parser accepts: grammar gaps and tolerated looseness.

Each row is a spec reduced to the construct, the tree it must give (as an
S-expression, see sexpr.py) and, for rules, the obligation ids `allium plan`
derives.  Looseness parses too, with one warning that names the canonical
form.  The engine/lark parity test (test_engine.py) runs every source here.
"""

from __future__ import annotations

import textwrap

import pytest

from allium import ast
from allium.plan import derive_obligations
from allium.syntax import parse_text

from .conftest import errors, src
from .sexpr import show


def parse(text: str):
    result = parse_text(src(text), "t.allium")
    assert result.module is not None and not errors(result), [d.message for d in result.diagnostics]
    return result


def rule_body(module: ast.Module) -> list[str]:
    """The one rule's clauses, each as `keyword: tree`."""
    [rule] = [d for d in module.decls if isinstance(d, ast.RuleDecl)]
    out = []
    for clause in rule.clauses:
        if isinstance(clause, ast.RequiresClause):
            out.append("requires: " + "; ".join(show(c) for c in clause.conditions))
        elif isinstance(clause, ast.EnsuresClause):
            out.append("ensures: " + "; ".join(show(s) for s in clause.body))
        elif isinstance(clause, ast.LetClause):
            out.append(f"let {clause.name} = {show(clause.value)}")
    return out


def plan_ids(module: ast.Module) -> list[str]:
    return [o.id for o in derive_obligations(module, "")]


ENTITY_X = """
entity X {
    n: Integer
    m: Integer
    flag: Boolean
    other: String?
    status: a | b
}
"""

# (id, rule body, clauses as trees, plan ids of the rule)
RULE_CASES = [
    (
        "A_for_block_after_ensures",
        """
        ensures: for s in xs:
            s.status = b
        """,
        ["ensures: (for s in xs: (= s.status b))"],
        ["rule-success.R"],
    ),
    (
        "A_if_block_after_ensures",
        """
        ensures: if x.flag:
            x.n = 1
        """,
        ["ensures: (if [x.flag: (= x.n 1)])"],
        ["rule-success.R", "rule-branch.R.1"],
    ),
    (
        "A_block_if_in_requires",
        """
        requires:
            if x.flag:
                x.other != null
        ensures: x.n = 0
        """,
        ["requires: (if [x.flag (!= x.other null)])", "ensures: (= x.n 0)"],
        ["rule-success.R", "rule-failure.R.1"],
    ),
    (
        "A_block_if_right_after_requires",
        """
        requires: if x.flag:
            x.other != null
        ensures: x.n = 0
        """,
        ["requires: (if [x.flag (!= x.other null)])", "ensures: (= x.n 0)"],
        ["rule-success.R", "rule-failure.R.1"],
    ),
    (
        "A_block_for_in_requires",
        """
        requires:
            x.flag
            for s in xs:
                s.n > 0
        ensures: x.n = 0
        """,
        ["requires: x.flag; (for s in xs: (> s.n 0))", "ensures: (= x.n 0)"],
        ["rule-success.R", "rule-failure.R.1"],
    ),
    (
        "A_block_if_assigned",
        """
        ensures: x.n =
            if x.n = 0:
                1
            else:
                2
        """,
        ["ensures: (= x.n (if [(= x.n 0) 1] else 2))"],
        ["rule-success.R"],
    ),
    (
        "A_block_if_assigned_in_ensures_block",
        """
        ensures:
            x.flag = false
            x.n =
                if x.flag:
                    1
                else if x.m > 0:
                    2
                else:
                    3
            x.m = 0
        """,
        ["ensures: (= x.flag false); (= x.n (if [x.flag 1] [(> x.m 0) 2] else 3)); (= x.m 0)"],
        ["rule-success.R"],
    ),
    (
        "C_trailing_guard",
        """
        ensures: x.status = b when x.n > 0
        """,
        ["ensures: (if [(> x.n 0): (= x.status b)])"],
        ["rule-success.R", "rule-branch.R.1"],
    ),
    (
        "C_trailing_guard_in_block",
        """
        ensures:
            x.status = b when x.n > 0
            x.m = 1
        """,
        ["ensures: (if [(> x.n 0): (= x.status b)]); (= x.m 1)"],
        ["rule-success.R", "rule-branch.R.1"],
    ),
    (
        "D_comparison_assigned",
        """
        ensures: x.flag = x.n > 0
        """,
        ["ensures: (= x.flag (> x.n 0))"],
        ["rule-success.R"],
    ),
    (
        "D_call_comparison_assigned",
        """
        ensures: x.flag = f() != null
        """,
        ["ensures: (= x.flag (!= f() null))"],
        ["rule-success.R"],
    ),
    (
        "E_inline_else_after_block_if",
        """
        ensures:
            if x.n > 0:
                x.status = b
            else: x.status = a
        """,
        ["ensures: (if [(> x.n 0): (= x.status b)] [else: (= x.status a)])"],
        ["rule-success.R", "rule-branch.R.1", "rule-branch.R.2"],
    ),
    (
        "F_let_in_requires",
        """
        requires:
            let m = x.n
            m > 0
        ensures: x.n = 0
        """,
        ["let m = x.n", "requires: (> m 0)", "ensures: (= x.n 0)"],
        ["rule-success.R", "rule-failure.R.1"],
    ),
    (
        "G_config_as_named_argument",
        """
        ensures: X.created(n: 1, config: x)
        """,
        ["ensures: X.created(n: 1, config: x)"],
        ["rule-success.R", "rule-entity-creation.R.1"],
    ),
    (
        "N_block_bodied_implies",
        """
        ensures:
            x.flag implies
                x.n = 1
                x.m = 2
        """,
        ["ensures: (implies x.flag (and (= x.n 1) (= x.m 2)))"],
        ["rule-success.R"],
    ),
    (
        "N_let_of_a_block_implies",
        """
        let ok = x.flag implies
            x.n > 0
        ensures: x.m = 1
        """,
        ["let ok = (implies x.flag (> x.n 0))", "ensures: (= x.m 1)"],
        ["rule-success.R"],
    ),
    (
        "N_block_bodied_implies_one_line",
        """
        requires:
            x.flag implies
                x.n > 1
        ensures: x.m = 2
        """,
        ["requires: (implies x.flag (> x.n 1))", "ensures: (= x.m 2)"],
        ["rule-success.R", "rule-failure.R.1"],
    ),
]


def rule_source(body: str) -> str:
    """The body inside `rule R` (after a `when:`), below the entity X."""
    inner = textwrap.indent(textwrap.dedent(body).strip("\n"), "    ")
    return ENTITY_X + "rule R {\n    when: Go(x, xs)\n" + inner + "\n}\n"


@pytest.mark.parametrize("body,tree,ids", [c[1:] for c in RULE_CASES], ids=[c[0] for c in RULE_CASES])
def test_rule_construct(body, tree, ids):
    result = parse(rule_source(body))
    assert result.diagnostics == ()
    assert rule_body(result.module) == tree
    rule_ids = [i for i in plan_ids(result.module) if i.startswith("rule")]
    assert rule_ids == ids


def test_A_parameterised_derived_value_on_the_next_line():
    result = parse(
        """
        entity T {
            x: Integer
        }
        entity A {
            status: a | b
            applies(t):
                status = a
                and t.x = 1
            level:
                if status = a:
                    1
                else:
                    2
            ready(t): if t.x > 0:
                true
            else:
                false
        }
        """
    )
    assert result.diagnostics == ()
    entity = result.module.decls[1]
    fields = {f.name: (f.kind, f.params, show(f.value)) for f in entity.fields}
    assert fields["applies"] == ("derived", ("t",), "(and (= status a) (= t.x 1))")
    assert fields["level"] == ("derived", (), "(if [(= status a) 1] else 2)")
    assert fields["ready"] == ("derived", ("t",), "(if [(> t.x 0) true] else false)")
    assert "derived.A.applies" in plan_ids(result.module)


def test_G_a_state_named_terminal():
    result = parse(
        """
        entity A {
            status: pending | terminal | done
            transitions status {
                pending -> terminal
                terminal -> done
                terminal: done
            }
        }
        """
    )
    assert result.diagnostics == ()
    [graph] = result.module.decls[0].transitions
    assert [(e.source, e.target) for e in graph.edges] == [("pending", "terminal"), ("terminal", "done")]
    assert graph.terminals == ("done",)
    assert "transition-edge.A.terminal.done" in plan_ids(result.module)


def test_H_trailing_comma_in_a_contract_signature():
    result = parse(
        """
        value V {
            x: Integer
        }
        contract C {
            run: (
                a: V,
                b: V,
            ) -> V
        }
        """
    )
    assert result.diagnostics == ()
    [signature] = result.module.decls[1].signatures
    assert [p.name for p in signature.params] == ["a", "b"]
    assert show(signature.returns) == "V"


# ---------------------------------------------------------------- looseness: accepted with a warning


LOOSE_CASES = [
    (
        "O_named_arguments_without_commas",
        """
        entity A {
            n: Integer
            m: Integer
        }
        rule R {
            when: Go(x)
            ensures: A.created(
                n: 1
                m: 2
            )
        }
        """,
        "allium.syntax.missingComma",
        (10, 9),
        "missing ','",
    ),
    (
        "comment_only_provides",
        """
        entity A {
            n: Integer
        }
        surface S {
            facing viewer: A
            exposes:
                viewer.n
            provides:
                -- TODO
        }
        """,
        "allium.syntax.emptyClause",
        (9, 5),
        "'provides:' has no body",
    ),
    (
        "comment_only_ensures",
        """
        rule R {
            when: Go(x)
            requires: x.ok
            ensures:
                -- TODO
        }
        """,
        "allium.syntax.emptyClause",
        (5, 5),
        "'ensures:' has no body",
    ),
    (
        "facing_without_binding",
        """
        entity User {
            n: Integer
        }
        surface S {
            facing: User
            exposes:
                User.n
        }
        """,
        "allium.syntax.facingWithoutBinding",
        (6, 5),
        "write 'facing user: ...'",
    ),
    (
        "space_separated_enum",
        """
        enum E { a b }
        """,
        "allium.syntax.enumSeparator",
        (2, 12),
        "`a | b`",
    ),
]


@pytest.mark.parametrize(
    "text,code,where,words", [c[1:] for c in LOOSE_CASES], ids=[c[0] for c in LOOSE_CASES]
)
def test_looseness_parses_with_a_warning_naming_the_canonical_form(text, code, where, words):
    result = parse(text)
    [diag] = result.diagnostics
    assert (diag.code, diag.severity.value) == (code, "warning")
    assert (diag.span.start.line, diag.span.start.column) == where
    assert words in diag.message


def test_looseness_builds_the_canonical_tree():
    module = parse(LOOSE_CASES[0][1]).module
    assert rule_body(module) == ["ensures: A.created(n: 1, m: 2)"]
    surface = parse(LOOSE_CASES[1][1]).module.decls[1]
    assert [m.kind for m in surface.members if isinstance(m, ast.SurfaceBlock)] == ["exposes"]
    rule = parse(LOOSE_CASES[2][1]).module
    assert rule_body(rule) == ["requires: x.ok"]
    assert [o.id for o in derive_obligations(rule, "")] == ["rule-success.R", "rule-failure.R.1"]
    facing = parse(LOOSE_CASES[3][1]).module.decls[1].members[0]
    assert (facing.binding, show(facing.type)) == (None, "User")
    [enum] = parse(LOOSE_CASES[4][1]).module.decls
    assert enum.values == ("a", "b")


def test_only_an_assignment_takes_a_comparison_on_its_right():
    # Accepting `x.flag = x.n > 0` must not make `0 < n < 10` a silent `0 < (n < 10)`.
    text = rule_source("""
        requires: 0 < x.n < 10
        requires: x.flag != (x.n > 0)
        ensures: x.flag = x.n >= 1
        """)
    result = parse_text(src(text), "t.allium")
    assert result.module is not None
    assert [(d.code, d.severity.value, d.span.start.line) for d in result.diagnostics] == [
        ("allium.syntax.chainedComparison", "error", 11)
    ]
    assert "`a < b and b < c`" in result.diagnostics[0].message


def test_a_missing_comma_after_a_positional_argument_still_fails_at_the_next_clause():
    result = parse_text(src("rule R {\n    when: X(a, b\n    ensures: Y()\n}\n"), "t.allium")
    assert result.module is None
    assert "found 'ensures'" in errors(result)[0].message


SOURCES = [rule_source(c[1]) for c in RULE_CASES] + [src(c[1]) for c in LOOSE_CASES] + [
    rule_source("requires: 0 < x.n < 10\nensures: x.flag = (x.n > 0) = true\n")
]
