"""The checks ``demo`` runs over what it saw (rule RunDemo guidance).

Pure functions over plain records, so they are tested without any server:
money conserved over the accounts the demo created, no negative balance,
every acknowledged request has exactly one outcome, and the outcome each
client saw is the stored one.  Outcome and account bodies are the JSON shapes
of node.allium's ClientApi (GET /v1/requests/..., GET /v1/accounts/...).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ledger.core import Envelope, OperationKind

# Fields of the 200 body that must be identical between what a client was
# told and what the store holds (replayed is transport metadata, not content).
COMPARED_FIELDS = ("request_id", "client_id", "kind", "verdict", "reason", "account_id",
                   "counterparty_id", "account_delta_minor", "counterparty_delta_minor", "sequence")


@dataclass
class OpRecord:
    """One request the demo sent and everything it learned about it."""

    envelope: Envelope
    channel: str  # "rest" | "log"
    acknowledged: bool = False  # REST: a 200 (possibly after 202); log: the append returned
    seen: dict[str, object] | None = None  # the 200 body the REST client received
    stored: dict[str, object] | None = None  # GET /v1/requests/{client}/{id} afterwards
    latency_ms: float | None = None
    refusals: int = 0
    anomalies: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.envelope.client_id}/{self.envelope.request_id}"

    @property
    def definite(self) -> bool:
        """Did the client get a definite answer (rule RunDemo: else it is dropped)?"""
        if self.channel == "log":
            return self.acknowledged and self.stored is not None
        return self.acknowledged


def outcome_problems(record: OpRecord) -> list[str]:
    """Violations about one request's outcome."""
    problems = [f"{record.key}: {a}" for a in record.anomalies]
    stored = record.stored
    if record.acknowledged and stored is None:
        problems.append(f"{record.key}: acknowledged but has no stored outcome")
    if stored is None:
        return problems
    env = record.envelope
    expected = {"request_id": env.request_id, "client_id": env.client_id,
                "kind": env.kind.value, "account_id": env.account_id}
    for name, value in expected.items():
        if stored.get(name) != value:
            problems.append(f"{record.key}: stored outcome has {name}={stored.get(name)!r}, expected {value!r}")
    if record.seen is not None:
        for name in COMPARED_FIELDS:
            if name in record.seen and name in stored and record.seen[name] != stored[name]:
                problems.append(f"{record.key}: client saw {name}={record.seen[name]!r} "
                                f"but the store has {stored[name]!r}")
    delta = _int(stored.get("account_delta_minor"))
    counter = _int(stored.get("counterparty_delta_minor"))
    if stored.get("verdict") == "rejected" and (delta or counter):
        problems.append(f"{record.key}: rejected outcome moves money")
    if stored.get("kind") == OperationKind.transfer.value and delta + counter != 0:
        problems.append(f"{record.key}: transfer does not net to zero")
    return problems


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def unique_sequences(records: Iterable[OpRecord]) -> list[str]:
    """Exactly one outcome per request: no two requests share a commit sequence."""
    counts = Counter(r.stored.get("sequence") for r in records if r.stored is not None)
    return [f"sequence {seq} is shared by {n} requests" for seq, n in counts.items()
            if seq is not None and n > 1]


def account_problems(records: Iterable[OpRecord], accounts: Mapping[str, Mapping[str, object] | None]
                     ) -> list[str]:
    """No negative balance; balances equal the stored outcomes; money conserved.

    ``accounts`` maps every account the demo created to its GET body (None: 404).
    Conservation: the sum of balances equals accepted deposits minus accepted
    withdrawals (core MoneyIsConserved, restricted to the demo's own accounts).
    """
    problems: list[str] = []
    expected = {account_id: 0 for account_id in accounts}
    inflow = 0
    for record in records:
        stored = record.stored
        if stored is None or stored.get("verdict") != "accepted":
            continue
        delta = _int(stored.get("account_delta_minor"))
        if stored.get("kind") in (OperationKind.deposit.value, OperationKind.withdraw.value):
            inflow += delta
        for account_id, change in ((stored.get("account_id"), delta),
                                   (stored.get("counterparty_id"), _int(stored.get("counterparty_delta_minor")))):
            if isinstance(account_id, str) and account_id in expected:
                expected[account_id] += change
    total = 0
    for account_id, body in accounts.items():
        if body is None:
            problems.append(f"account {account_id} does not exist")
            continue
        balance = _int(body.get("balance_minor"))
        total += balance
        if balance < 0:
            problems.append(f"account {account_id} has a negative balance {balance}")
        if balance != expected[account_id]:
            problems.append(f"account {account_id} holds {balance}, its outcomes add up to {expected[account_id]}")
    if total != inflow:
        problems.append(f"money not conserved: balances sum to {total}, accepted deposits "
                        f"minus withdrawals are {inflow}")
    return problems


def check_invariants(records: list[OpRecord], accounts: Mapping[str, Mapping[str, object] | None]
                     ) -> list[str]:
    """Every violation found; an empty list means invariants_ok."""
    problems: list[str] = []
    for record in records:
        problems.extend(outcome_problems(record))
    problems.extend(unique_sequences(records))
    problems.extend(account_problems(records, accounts))
    return problems
