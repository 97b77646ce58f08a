"""A history checker for the ledger service, in the manner of Jepsen's checkers.

Input: every request a client sent with every answer it saw (`Op`), and the
final state read back from the service (`Final`: the committed outcomes with
their sequence numbers, and the account rows). The checker replays the
committed outcomes in sequence order through the independent reference model
(model.py) and reports each violation class separately:

- money_not_conserved, negative_balance, impossible_state: the ledger's own
  invariants (core.allium), on the replay and on the final rows;
- model_mismatch: a committed outcome differs from the reference model's
  decision at that point of the commit order;
- lost, duplicated, phantom: acknowledged without an outcome, more than one
  outcome (or sequence) per request, an outcome no client asked for;
- changed: an acknowledged answer differs from the committed outcome;
- unanswered, refused_but_applied, conflict: a request with no definite
  answer, an explicit 503 (which promises no effect) whose request committed,
  a 409 for a request id that was never reused;
- realtime, log_order: the commit order contradicts real time on one account
  (A answered before B was sent, yet B committed first), or the log order of
  one account's records. Together with model_mismatch and changed this is
  linearizability per account, with the commit order as the witness.
"""

from __future__ import annotations

from collections import defaultdict
from itertools import pairwise
from dataclasses import dataclass, field

from benchmarks.showcase.model import MAX_BALANCE_MINOR, Decision, Envelope, Ledger

CLASSES = (
    "money_not_conserved", "negative_balance", "impossible_state", "model_mismatch",
    "lost", "duplicated", "phantom", "changed", "unanswered", "refused_but_applied",
    "conflict", "realtime", "log_order",
)
# The fields of an answered request that must never change once acknowledged.
OUTCOME_FIELDS = (
    "kind", "verdict", "reason", "account_id", "counterparty_id",
    "account_delta_minor", "counterparty_delta_minor", "sequence", "epoch",
)
DEFINITE = {200, 400, 404, 409, 413, 415, 422, 503, "appended", "append_failed"}


@dataclass
class Attempt:
    """One try at a request: a POST (or a status poll), or a log append."""

    sent: float
    status: int | str  # HTTP status, "timeout", "conn_error", "appended", "append_failed"
    received: float | None = None
    body: dict | None = None
    poll: bool = False


@dataclass
class Op:
    env: Envelope
    channel: str  # rest | log
    invoked: float  # the scheduled send time of the first attempt
    attempts: list[Attempt] = field(default_factory=list)
    position: tuple[int, int] | None = None  # (partition, offset) of a log append

    def first_ok(self) -> Attempt | None:
        return next((a for a in self.attempts if a.status == 200), None)

    @property
    def acknowledged(self) -> bool:
        return any(a.status in (200, "appended") for a in self.attempts)

    @property
    def answered(self) -> bool:
        if self.acknowledged:
            return True
        posts = [a for a in self.attempts if not a.poll]
        return bool(posts) and posts[-1].status in DEFINITE

    @property
    def only_refused(self) -> bool:
        """Every try got an explicit 503, so no try can have taken effect."""
        posts = [a for a in self.attempts if not a.poll]
        return bool(posts) and all(a.status == 503 for a in posts)


@dataclass
class Final:
    outcomes: list[dict]  # committed outcomes (the 200 body shape), each with a sequence
    accounts: dict[str, dict]  # account_id -> {owner, status, balance_minor, version}


@dataclass
class Report:
    counts: dict[str, int] = field(default_factory=lambda: {c: 0 for c in CLASSES})
    examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    stats: dict[str, int] = field(default_factory=dict)

    def add(self, cls: str, detail: str) -> None:
        self.counts[cls] += 1
        if len(self.examples[cls]) < 5:
            self.examples[cls].append(detail)

    @property
    def ok(self) -> bool:
        return not any(self.counts.values())

    @property
    def safe(self) -> bool:
        """No safety violation: everything but unanswered requests, which a
        client timeout under overload produces without any state being wrong."""
        return not any(n for cls, n in self.counts.items() if cls != "unanswered")

    def as_dict(self) -> dict:
        return {"ok": self.ok, "safe": self.safe, "violations": dict(self.counts),
                "examples": {k: v for k, v in self.examples.items() if v}, "stats": self.stats}


def check(ops: list[Op], final: Final) -> Report:
    report = Report()
    by_key = {op.env.key: op for op in ops}
    committed = _index_outcomes(final.outcomes, by_key, report)
    _check_answers(ops, committed, report)
    replay = _replay(committed, by_key, report)
    _check_accounts(replay, final.accounts, report)
    _check_realtime(ops, committed, report)
    _check_log_order(ops, committed, report)
    report.stats.update(
        requests=len(ops), outcomes=len(committed),
        acknowledged=sum(op.acknowledged for op in ops),
        refused=sum(op.only_refused for op in ops),
        accepted=sum(o.get("verdict") == "accepted" for o in committed.values()),
    )
    return report


def _index_outcomes(rows: list[dict], by_key: dict, report: Report) -> dict[tuple, dict]:
    committed: dict[tuple, dict] = {}
    seen_seq: dict[int, tuple] = {}
    for row in sorted(rows, key=lambda r: r["sequence"]):
        key = (row["client_id"], row["request_id"])
        if key in committed:
            report.add("duplicated", f"{key} has outcomes at sequences "
                       f"{committed[key]['sequence']} and {row['sequence']}")
            continue
        if row["sequence"] in seen_seq:
            report.add("duplicated", f"sequence {row['sequence']} used by {seen_seq[row['sequence']]} and {key}")
        seen_seq[row["sequence"]] = key
        if key not in by_key:
            report.add("phantom", f"outcome {key} at sequence {row['sequence']} for a request never sent")
        committed[key] = row
    return committed


def _check_answers(ops: list[Op], committed: dict, report: Report) -> None:
    for op in ops:
        key, outcome = op.env.key, committed.get(op.env.key)
        if not op.answered:
            report.add("unanswered", f"{key} via {op.channel}: last try {op.attempts[-1].status if op.attempts else 'never sent'}")
        if op.acknowledged and outcome is None:
            report.add("lost", f"{key} was acknowledged via {op.channel} but has no outcome")
        if op.only_refused and outcome is not None:
            report.add("refused_but_applied", f"{key} got only 503s but committed at sequence {outcome['sequence']}")
        if any(a.status == 409 for a in op.attempts):
            report.add("conflict", f"{key} got 409 though its request id was never reused")
        for a in op.attempts:
            if a.status != 200 or a.body is None:
                continue
            if outcome is None:
                continue  # reported as lost above
            diff = [f for f in OUTCOME_FIELDS if f in a.body and a.body.get(f) != outcome.get(f)]
            if diff:
                report.add("changed", f"{key}: answered {[(f, a.body.get(f)) for f in diff]}, "
                           f"committed {[(f, outcome.get(f)) for f in diff]}")


def _envelope_of(row: dict, op: Op | None) -> Envelope:
    if op is not None:
        return op.env
    amount = abs(row.get("account_delta_minor") or 0)
    return Envelope(row["client_id"], row["request_id"], row["kind"], row["account_id"],
                    row.get("counterparty_id"), None, amount)


def _shape_problems(row: dict, env: Envelope) -> list[str]:
    """core.allium's Outcome invariants and OutcomeMatchesItsRequest."""
    problems = []
    a, c = row.get("account_delta_minor", 0), row.get("counterparty_delta_minor", 0)
    if row["verdict"] == "rejected" and (a or c or not row.get("reason")):
        problems.append("rejection with an effect or without a reason")
    if row["verdict"] == "accepted" and row.get("reason"):
        problems.append("acceptance carrying a reason")
    if row["kind"] == "transfer" and a + c != 0:
        problems.append("transfer not net zero")
    if row["kind"] != "transfer" and c != 0:
        problems.append("non-transfer touching a counterparty")
    if (row["kind"], row["account_id"]) != (env.kind, env.account_id):
        problems.append(f"outcome names {row['kind']} {row['account_id']}, request was {env.kind} {env.account_id}")
    return problems


def _replay(committed: dict, by_key: dict, report: Report) -> Ledger:
    """Apply the committed outcomes in commit order, judging each one against the
    reference model's decision at that point; the replay follows what the
    service committed so one wrong decision is reported once, not cascaded."""
    ledger = Ledger()
    for row in sorted(committed.values(), key=lambda r: r["sequence"]):
        key = (row["client_id"], row["request_id"])
        env = _envelope_of(row, by_key.get(key))
        for problem in _shape_problems(row, env):
            report.add("impossible_state", f"{key} at sequence {row['sequence']}: {problem}")
        if key in by_key:
            expected = ledger.evaluate(env)
            got = Decision(row["verdict"], row.get("reason"), row.get("account_delta_minor", 0),
                           row.get("counterparty_delta_minor", 0))
            if got != expected:
                report.add("model_mismatch", f"{key} at sequence {row['sequence']}: committed {got}, model says {expected}")
        got = Decision(row["verdict"], row.get("reason"), row.get("account_delta_minor", 0),
                       row.get("counterparty_delta_minor", 0))
        for problem in ledger.apply(env, got, env.client_id):
            report.add("impossible_state", f"{key} at sequence {row['sequence']}: {problem}")
        for acct_id in (env.account_id, env.counterparty_id):
            acct = ledger.accounts.get(acct_id or "")
            if acct is not None and acct.balance_minor < 0:
                report.add("negative_balance", f"{acct_id} at {acct.balance_minor} after sequence {row['sequence']}")
    return ledger


def _check_accounts(replay: Ledger, rows: dict[str, dict], report: Report) -> None:
    total = 0
    for acct_id, row in rows.items():
        total += row["balance_minor"]
        if row["balance_minor"] < 0:
            report.add("negative_balance", f"{acct_id} holds {row['balance_minor']}")
        if row["balance_minor"] > MAX_BALANCE_MINOR or row["version"] < 1:
            report.add("impossible_state", f"{acct_id} out of bounds: {row}")
        if row["status"] == "closed" and row["balance_minor"] != 0:
            report.add("impossible_state", f"{acct_id} is closed but holds {row['balance_minor']}")
        want = replay.accounts.get(acct_id)
        if want is None:
            report.add("impossible_state", f"{acct_id} exists but no committed open created it")
            continue
        got = (row["owner"], row["status"], row["balance_minor"], row["version"])
        if got != (want.owner, want.status, want.balance_minor, want.version):
            report.add("impossible_state", f"{acct_id} is {got}, the committed outcomes give "
                       f"{(want.owner, want.status, want.balance_minor, want.version)}")
    for acct_id in replay.accounts.keys() - rows.keys():
        report.add("impossible_state", f"{acct_id} was opened by a committed outcome but does not exist")
    if total != replay.net_inflow_minor:
        report.add("money_not_conserved", f"balances sum to {total}, accepted deposits minus "
                   f"withdrawals are {replay.net_inflow_minor}")


def _check_realtime(ops: list[Op], committed: dict, report: Report) -> None:
    """If A was answered before B was sent and both touch one account, A must
    precede B in the commit order. One sweep per account: O(n log n)."""
    acks: dict[str, list] = defaultdict(list)
    invokes: dict[str, list] = defaultdict(list)
    for op in ops:
        outcome = committed.get(op.env.key)
        if outcome is None:
            continue
        touched = {op.env.account_id, op.env.counterparty_id} - {None}
        ok = op.first_ok() if op.channel == "rest" else None
        for acct in touched:
            invokes[acct].append((op.invoked, outcome["sequence"], op.env.key))
            if ok is not None and ok.received is not None:
                acks[acct].append((ok.received, outcome["sequence"], op.env.key))
    for acct, calls in invokes.items():
        done = sorted(acks.get(acct, []))
        i, latest = 0, (-1, None)
        for invoked, seq, key in sorted(calls):
            while i < len(done) and done[i][0] < invoked:
                latest = max(latest, (done[i][1], done[i][2]))
                i += 1
            if latest[0] > seq:
                report.add("realtime", f"on {acct}: {latest[1]} (sequence {latest[0]}) was answered "
                           f"before {key} was sent, yet {key} committed first at sequence {seq}")


def _check_log_order(ops: list[Op], committed: dict, report: Report) -> None:
    """Records of one account on the log commit in offset order (eventlog.allium)."""
    per_account: dict[str, list] = defaultdict(list)
    for op in ops:
        outcome = committed.get(op.env.key)
        if op.channel == "log" and op.position is not None and outcome is not None:
            per_account[op.env.account_id].append((op.position, outcome["sequence"], op.env.key))
    for acct, records in per_account.items():
        records.sort()
        for (pos_a, seq_a, key_a), (pos_b, seq_b, key_b) in pairwise(records):
            if seq_a > seq_b:
                report.add("log_order", f"on {acct}: {key_a} at offset {pos_a} committed after "
                           f"{key_b} at offset {pos_b} ({seq_a} > {seq_b})")
