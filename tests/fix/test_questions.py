"""allium fix questions: settled decisions that name no rule or invariant implementing them."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from allium.cli import main
from allium.fix.questions import render, settled_decisions
from allium.syntax import parse_text

SPEC = """-- allium: 3
entity Account {
    balance: Integer

    invariant NonNegative {
        balance >= 0
    }
}

rule Withdraw {
    when: Withdraw(account, amount)
    requires: account.balance >= amount
    ensures: account.balance = account.balance - amount
}

resolved question "Can a balance go negative?" {
    answer: "No: Withdraw requires the funds, and NonNegative holds throughout."
    rationale: "An overdraft would need a credit policy we do not have."
}

resolved question "Do withdrawals on one account queue?" {
    answer: "Yes, in a per-account FIFO."
    rationale: "Conflicts on a hot account would otherwise degrade into retries."
}
"""


def parse(text: str):
    result = parse_text(text, "bank.allium")
    assert result.module is not None, result.diagnostics
    return result.module


def test_a_decision_is_tested_when_it_names_a_rule_or_an_entity_invariant() -> None:
    decisions = settled_decisions({"bank.allium": parse(SPEC)})
    assert [(d.question, d.implemented_by) for d in decisions] == [
        ("Can a balance go negative?", ("NonNegative", "Withdraw")),
        ("Do withdrawals on one account queue?", ()),
    ]
    text = render(decisions)
    assert "untested bank.allium:" in text and "Do withdrawals on one account queue?" in text
    assert "Can a balance go negative?" not in text  # only with show_all
    assert "Withdraw" in render(decisions, show_all=True)
    assert text.endswith("1 of 2 settled decisions name the rule or invariant that implements them; 1 name none")


def test_the_command_exits_1_while_a_decision_names_nothing(tmp_path: Path) -> None:
    (tmp_path / "bank.allium").write_text(SPEC)
    result = CliRunner().invoke(main, ["fix", "questions", str(tmp_path)])
    assert result.exit_code == 1 and "per-account" not in result.output
    assert "Do withdrawals on one account queue?" in result.output
    fixed = SPEC.replace('"Yes, in a per-account FIFO."', '"Yes, in a per-account FIFO (Withdraw)."')
    (tmp_path / "bank.allium").write_text(fixed)
    result = CliRunner().invoke(main, ["fix", "questions", str(tmp_path)])
    assert result.exit_code == 0, result.output
