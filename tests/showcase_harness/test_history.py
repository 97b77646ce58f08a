"""The history checker must catch every violation class it claims to catch.

Each test starts from a correct history (a sequential service simulated with
the reference model) and breaks exactly one thing; a checker that missed the
class, or flagged the clean history, fails here.
"""

from __future__ import annotations

import copy

import pytest

from benchmarks.showcase.history import Attempt, Final, Op, check
from benchmarks.showcase.model import Envelope, Ledger


def env(n: int, kind: str, acct: str, amount: int = 0, to: str | None = None) -> Envelope:
    return Envelope("c1", f"r{n}", kind, acct, to, "alice" if kind == "open" else None, amount)


SCRIPT = [
    env(1, "open", "A"), env(2, "open", "B"), env(3, "deposit", "A", 500),
    env(4, "transfer", "A", 200, "B"), env(5, "withdraw", "B", 50),
    env(6, "withdraw", "A", 10_000), env(7, "open", "C"), env(8, "close", "C"),
    env(9, "deposit", "C", 5), env(10, "transfer", "B", 1, "B"),
]


def clean(script: list[Envelope] = SCRIPT, channel: str = "rest") -> tuple[list[Op], Final]:
    """A service that commits each request in order and answers at once."""
    ledger, ops, outcomes = Ledger(), [], []
    for seq, e in enumerate(script, start=1):
        d = ledger.evaluate(e)
        ledger.apply(e, d, e.client_id)
        row = {"client_id": e.client_id, "request_id": e.request_id, "kind": e.kind,
               "account_id": e.account_id, "counterparty_id": e.counterparty_id,
               "verdict": d.verdict, "reason": d.reason, "account_delta_minor": d.account_delta_minor,
               "counterparty_delta_minor": d.counterparty_delta_minor, "sequence": seq,
               "epoch": 1, "replayed": False}
        outcomes.append(row)
        attempt = (Attempt(sent=seq, status=200, received=seq + 0.5, body=dict(row))
                   if channel == "rest" else Attempt(sent=seq, status="appended", received=seq + 0.1))
        ops.append(Op(e, channel, invoked=seq, attempts=[attempt],
                      position=(0, seq) if channel == "log" else None))
    accounts = {k: {"account_id": k, "owner": a.owner, "status": a.status,
                    "balance_minor": a.balance_minor, "version": a.version}
                for k, a in ledger.accounts.items()}
    return ops, Final(outcomes, accounts)


def violations(ops: list[Op], final: Final) -> dict[str, int]:
    return {k: v for k, v in check(ops, final).counts.items() if v}


def outcome(final: Final, request_id: str) -> dict:
    return next(o for o in final.outcomes if o["request_id"] == request_id)


@pytest.mark.parametrize("channel", ["rest", "log"])
def test_a_correct_history_passes(channel: str) -> None:
    ops, final = clean(channel=channel)
    report = check(ops, final)
    assert report.ok, report.as_dict()
    assert report.stats["outcomes"] == len(SCRIPT)


def test_model_follows_the_arbiters_precedence() -> None:
    ledger, _ = Ledger(), None
    assert ledger.evaluate(env(1, "transfer", "X", 5, "X")).reason == "same_account"
    assert ledger.evaluate(env(1, "transfer", "X", 0, "X")).reason == "invalid_amount"
    assert ledger.evaluate(env(1, "transfer", "X", 5, "Y")).reason == "account_missing"
    assert ledger.evaluate(env(1, "open", "X", 3)).reason == "invalid_amount"
    ops, final = clean()
    replay = Ledger()
    for e in SCRIPT:
        replay.apply(e, replay.evaluate(e), e.client_id)
    assert replay.evaluate(env(20, "transfer", "A", 1, "C")).reason == "counterparty_closed"
    assert replay.evaluate(env(20, "transfer", "A", 10**6, "B")).reason == "insufficient_funds"
    assert replay.evaluate(env(20, "close", "A")).reason == "balance_not_zero"
    assert replay.evaluate(env(20, "deposit", "C", 1)).reason == "account_closed"
    assert replay.evaluate(env(20, "deposit", "A", 10**17)).reason == "invalid_amount"
    assert replay.net_inflow_minor == 450 and replay.accounts["B"].version == 3


def test_lost_acknowledged_request() -> None:
    ops, final = clean()
    final.outcomes.remove(outcome(final, "r9"))  # r9 is a rejection: no effect on balances
    assert violations(ops, final) == {"lost": 1}


def test_duplicated_outcome_and_sequence() -> None:
    ops, final = clean()
    twice = dict(outcome(final, "r3"), sequence=99)
    final.outcomes.append(twice)
    assert violations(ops, final) == {"duplicated": 1}
    ops, final = clean()
    outcome(final, "r9")["sequence"] = outcome(final, "r10")["sequence"]
    assert violations(ops, final)["duplicated"] == 1


def test_phantom_outcome() -> None:
    ops, final = clean()
    ghost = dict(outcome(final, "r9"), request_id="never-sent", sequence=50)
    final.outcomes.append(ghost)
    assert violations(ops, final) == {"phantom": 1}


def test_outcome_changed_since_acknowledged() -> None:
    ops, final = clean()
    ops[5].attempts[0].body["reason"] = "account_closed"
    assert violations(ops, final) == {"changed": 1}


def test_double_application_is_caught_by_the_account_rows() -> None:
    ops, final = clean()
    final.accounts["A"]["balance_minor"] += 500
    final.accounts["A"]["version"] += 1
    v = violations(ops, final)
    assert v == {"impossible_state": 1, "money_not_conserved": 1}


def test_committed_decision_that_breaks_precedence() -> None:
    ops, final = clean()
    outcome(final, "r10")["reason"] = "insufficient_funds"
    for a in ops[9].attempts:
        a.body["reason"] = "insufficient_funds"
    assert violations(ops, final) == {"model_mismatch": 1}


def test_negative_balance_from_an_accepted_overdraft() -> None:
    ops, final = clean()
    row = outcome(final, "r6")  # withdraw 10,000 from A holding 300: rejected
    row.update(verdict="accepted", reason=None, account_delta_minor=-10_000)
    ops[5].attempts[0].body.update(verdict="accepted", reason=None, account_delta_minor=-10_000)
    final.accounts["A"].update(balance_minor=-9_700, version=final.accounts["A"]["version"] + 1)
    v = violations(ops, final)
    assert v["negative_balance"] == 2 and v["model_mismatch"] == 1
    assert "money_not_conserved" not in v  # the books moved with the balance


def test_impossible_account_states() -> None:
    ops, final = clean()
    final.accounts["C"]["balance_minor"] = 7
    final.accounts["Z"] = {"account_id": "Z", "owner": "x", "status": "active", "balance_minor": 0, "version": 1}
    v = violations(ops, final)
    assert v["impossible_state"] == 3  # closed with money, C differs from replay, Z never opened
    assert v["money_not_conserved"] == 1


def test_rejection_with_an_effect_is_impossible() -> None:
    ops, final = clean()
    outcome(final, "r9")["account_delta_minor"] = 5
    ops[8].attempts[0].body["account_delta_minor"] = 5
    assert violations(ops, final)["impossible_state"] >= 1


def test_unanswered_request() -> None:
    ops, final = clean()
    ops.append(Op(env(11, "deposit", "A", 1), "rest", invoked=20,
                  attempts=[Attempt(sent=20, status="timeout")]))
    assert violations(ops, final) == {"unanswered": 1}


def test_a_retried_request_that_got_an_answer_is_answered() -> None:
    ops, final = clean()
    ops[8].attempts.insert(0, Attempt(sent=8, status="conn_error"))
    ops[8].attempts.insert(1, Attempt(sent=8.1, status=503, received=8.2))
    assert check(ops, final).ok


def test_refused_request_that_took_effect() -> None:
    ops, final = clean()
    ops[8].attempts = [Attempt(sent=9, status=503, received=9.1)]
    assert violations(ops, final) == {"refused_but_applied": 1}
    final.outcomes.remove(outcome(final, "r9"))
    assert check(ops, final).ok  # refused and absent: correct


def test_conflict_for_a_unique_request_id() -> None:
    ops, final = clean()
    ops[8].attempts.append(Attempt(sent=9.6, status=409, received=9.7))
    assert violations(ops, final) == {"conflict": 1}


def test_realtime_order_violation() -> None:
    ops, final = clean()
    # r3 (deposit A) answered at 3.5; r5 touches B only; make r4 (transfer A->B,
    # sent at 4) commit before r3 by swapping their sequences and decisions' order.
    a, b = outcome(final, "r3"), outcome(final, "r4")
    a["sequence"], b["sequence"] = b["sequence"], a["sequence"]
    ops[2].attempts[0].body["sequence"] = a["sequence"]
    ops[3].attempts[0].body["sequence"] = b["sequence"]
    v = violations(ops, final)
    assert v["realtime"] >= 1
    # the transfer then ran against an empty account: the model disagrees too
    assert v["model_mismatch"] >= 1


def test_concurrent_requests_may_commit_in_either_order() -> None:
    ops, final = clean(script=[env(1, "open", "A"), env(2, "deposit", "A", 5), env(3, "deposit", "A", 7)])
    ops[2].invoked = ops[1].invoked  # r3 sent before r2 was answered
    a, b = outcome(final, "r2"), outcome(final, "r3")
    a["sequence"], b["sequence"] = b["sequence"], a["sequence"]
    ops[1].attempts[0].body["sequence"], ops[2].attempts[0].body["sequence"] = a["sequence"], b["sequence"]
    assert check(ops, final).ok


def test_log_records_of_one_account_commit_in_offset_order() -> None:
    script = [env(1, "open", "A"), env(2, "deposit", "A", 5), env(3, "deposit", "A", 7)]
    ops, final = clean(script=script, channel="log")
    ops[1].position, ops[2].position = (0, 3), (0, 2)
    assert violations(ops, final) == {"log_order": 1}
    # an appended record with no outcome is lost
    ops, final = clean(script=script, channel="log")
    final.outcomes.remove(outcome(final, "r3"))
    final.accounts["A"].update(balance_minor=5, version=2)
    assert violations(ops, final) == {"lost": 1}


def test_report_is_json_ready() -> None:
    ops, final = clean()
    bad = copy.deepcopy(final)
    bad.outcomes.remove(outcome(bad, "r9"))
    data = check(ops, bad).as_dict()
    assert data["ok"] is False and data["violations"]["lost"] == 1 and data["examples"]["lost"]
