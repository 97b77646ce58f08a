"""An evaluation bug must surface as a fault, never as an agreed rejection (hole 7).

Every honest replica runs the same code, so a bug that raises inside evaluation
raises on all of them. If evaluation turns that into an ordinary rejection
reason, f + 1 replicas agree on it and the Ledger commits a wrongly reasoned
outcome for good. The generated package is found as in test_ledger_safety.py.
"""

from __future__ import annotations

import os
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.environ.get("ALLIUM_GENERATED") or str(Path(__file__).resolve().parents[2] / "generated"))

from ledger.arbiter import AccountSnapshot, Decision, evaluate  # noqa: E402
from ledger.core import AccountStatus, Envelope, OperationKind, Rejected  # noqa: E402

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def envelope(kind: OperationKind, amount: int = 100) -> Envelope:
    return Envelope(request_id="r1", client_id="c1", kind=kind, account_id="a",
                    counterparty_id="b" if kind is OperationKind.transfer else None, owner=None,
                    amount_minor=amount)


GOOD = AccountSnapshot(present=True, status=AccountStatus.active, balance_minor=1_000, version=3)
# A snapshot that breaks its own type: the kind of input only a bug upstream, or
# bad memory, produces. Reading its balance raises inside the decision code.
CORRUPT = AccountSnapshot(present=True, status=AccountStatus.active, balance_minor=None, version=3)  # type: ignore[arg-type]


def outcome_of(kind: OperationKind, primary: AccountSnapshot, counter: AccountSnapshot) -> Decision | Exception:
    try:
        return evaluate(envelope(kind), primary, counter)
    except Exception as fault:  # noqa: BLE001 - what the replica's host would see
        return fault


@pytest.mark.parametrize("kind", [OperationKind.deposit, OperationKind.withdraw, OperationKind.transfer])
def test_an_exception_inside_evaluation_is_not_a_rejection(kind: OperationKind) -> None:
    """Hole 7: the bug surfaces (evaluate signals a fault), it is not answered as invalid_amount."""
    result = outcome_of(kind, CORRUPT, GOOD)
    assert not isinstance(result, Decision), f"a bug was answered as {result}"
    assert not isinstance(result, Rejected)  # a fault, not a client-facing rejection


@settings(max_examples=150, derandomize=True, deadline=None)
@given(st.sampled_from([OperationKind.deposit, OperationKind.withdraw, OperationKind.transfer,
                        OperationKind.close]),
       st.sampled_from(["primary", "counter"]),
       st.sampled_from([None, "1000", object()]))
def test_no_corrupt_input_is_ever_answered_with_a_reason_it_did_not_earn(kind, which, bad) -> None:
    """Hole 7, generalised: whatever field is corrupt, evaluation either decides exactly as it
    would on a correct snapshot that never reaches that field, or signals a fault."""
    broken = AccountSnapshot(present=True, status=AccountStatus.active, balance_minor=bad, version=3)  # type: ignore[arg-type]
    primary, counter = (broken, GOOD) if which == "primary" else (GOOD, broken)
    result = outcome_of(kind, primary, counter)
    if isinstance(result, Decision):
        # It decided without reading the corrupt balance: then any balance gives the same answer.
        for balance in (0, 1, 10**6):
            fine = AccountSnapshot(present=True, status=AccountStatus.active, balance_minor=balance, version=3)
            again = evaluate(envelope(kind), *((fine, GOOD) if which == "primary" else (GOOD, fine)))
            assert again == result, f"{kind.value}: answered {result} on a corrupt {which} balance"
    else:
        assert not isinstance(result, Rejected)
