"""Safety of the Ledger's commit against an independent model of the accounts (holes 1 and 6).

The generated package under test is found through ALLIUM_GENERATED (set by
`allium fix` when it rebuilds a previous tree in a scratch folder), else the
repository's generated/. Everything the checks compare against is computed
here, from the accounts' true state, without the generated code's help:
`TrueBooks` knows what a correct evaluation may commit, and the property test
drives the real Arbiter with read sets whose versions are right but whose
balances may be wrong (a cache bug), then holds the Ledger to the model.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.environ.get("ALLIUM_GENERATED") or str(Path(__file__).resolve().parents[2] / "generated"))

from ledger.arbiter import AccountSnapshot, evaluate  # noqa: E402
from ledger.core import (  # noqa: E402
    AccountStatus,
    Channel,
    Envelope,
    OperationKind,
    Verdict,
    check_all_invariants,
    new_request,
)
import ledger.ledger as ledger_unit  # noqa: E402
from ledger.ledger import (  # noqa: E402
    EpochClaim,
    GroupCommitter,
    LedgerStore,
    Proposal,
    ProposalStatus,
    commit_batch,
    create_epoch_claim,
    submit_proposal,
)

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
MAX_BALANCE = 1_000_000_000_000_00  # core's config.max_balance_minor


class Clock:
    def __init__(self) -> None:
        self.ticks = 0

    def __call__(self) -> datetime:
        self.ticks += 1
        return T0 + timedelta(seconds=self.ticks)


# Signed votes (hole 2): where the Ledger verifies them, the replicas of these
# tests sign with keys provisioned into the store. The signature is computed
# here, from the spec's definition (HMAC-SHA256 of vote_statement under the
# replica's key), not with the generated code's own signing helper.
SIGNED = hasattr(ledger_unit, "Endorsement")
KEYS = {f"r{i}": f"key-of-r{i}" for i in range(3)}


def new_store() -> LedgerStore:
    store = LedgerStore(clock=Clock())
    create_epoch_claim(store, EpochClaim(node_id="n1", expected_epoch=0))
    if SIGNED:
        for replica_id, key in KEYS.items():
            ledger_unit.create_replica_key(store, ledger_unit.ReplicaKey(replica_id=replica_id, key=key))
    return store


def sign(key: str, statement: bytes) -> str:
    return hmac.new(key.encode("utf-8"), statement, hashlib.sha256).hexdigest()


def endorse(store: LedgerStore, proposal: Proposal, primary: AccountSnapshot, counter: AccountSnapshot,
            signers: tuple[str, ...] = ("r0", "r1"), keys: dict[str, str] | None = None) -> None:
    """The replicas that evaluated `primary`/`counter` sign their vote for `proposal`."""
    if not SIGNED:
        return
    read = ledger_unit.read_set_digest(
        primary.present, primary.status, primary.balance_minor, primary.version,
        counter.present, counter.status, counter.balance_minor, counter.version)
    req = proposal.request
    statement = ledger_unit.vote_statement(
        req.client_id, req.request_id, proposal.attempt, read, proposal.verdict, proposal.reason,
        proposal.account_delta_minor, proposal.counterparty_delta_minor)
    for replica_id in signers:
        signature = sign((keys or KEYS)[replica_id], statement)
        ledger_unit.create_endorsement(store, ledger_unit.Endorsement(
            request=req, attempt=proposal.attempt, replica_id=replica_id, read_set_digest=read,
            signature=signature))


def request(rid: str, kind: OperationKind, account: str, amount: int = 0, counter: str | None = None,
            channel: Channel = Channel.rest, offset: int | None = None):
    envelope = Envelope(request_id=rid, client_id="c1", kind=kind, account_id=account,
                        counterparty_id=counter, owner=None, amount_minor=amount)
    return new_request(envelope, channel=channel, received_at=T0,
                       partition=0 if channel is Channel.log else None, offset=offset)


def snapshot(store: LedgerStore, account_id: str | None, balance_error: int = 0) -> AccountSnapshot:
    """What the Registrar serves: the true version, and a balance off by `balance_error`."""
    account = store.account(account_id)
    if account is None:
        return AccountSnapshot.absent()
    return AccountSnapshot(present=True, status=account.status,
                           balance_minor=account.balance_minor + balance_error, version=account.version)


def proposal_for(store: LedgerStore, req, balance_error: int = 0) -> Proposal:
    """The proposal f + 1 honest replicas agree on when they all get the same (wrong) read set."""
    primary = snapshot(store, req.account_id, balance_error)
    counter = snapshot(store, req.counterparty_id)
    decision = evaluate(Envelope(request_id=req.request_id, client_id=req.client_id, kind=req.kind,
                                 account_id=req.account_id, counterparty_id=req.counterparty_id,
                                 owner=None, amount_minor=req.amount_minor), primary, counter)
    proposal = Proposal(request=req, attempt=1, epoch=store.journal.epoch, digest=f"vote:{req.request_id}",
                        verdict=decision.verdict, reason=decision.reason,
                        account_delta_minor=decision.account_delta_minor,
                        counterparty_delta_minor=decision.counterparty_delta_minor,
                        expected_primary_version=primary.version, expected_counter_version=counter.version)
    endorse(store, proposal, primary, counter)
    return proposal


# The independent model -------------------------------------------------------


@dataclass
class TrueAccount:
    active: bool
    balance: int


class TrueBooks:
    """The accounts as a correct system would hold them, and what it may commit."""

    def __init__(self) -> None:
        self.accounts: dict[str, TrueAccount] = {}

    def legal(self, kind: OperationKind, account: str, counter: str | None, amount: int,
              delta: int, counter_delta: int) -> bool:
        """May an accepted decision with these deltas commit against the true state?"""
        a = self.accounts.get(account)
        c = self.accounts.get(counter) if counter else None
        if kind is OperationKind.open:
            return a is None and delta == 0 and counter_delta == 0
        if a is None or not a.active:
            return False
        if kind is OperationKind.deposit:
            return delta == amount > 0 and counter_delta == 0 and a.balance + amount <= MAX_BALANCE
        if kind is OperationKind.withdraw:
            return delta == -amount < 0 and counter_delta == 0 and a.balance >= amount
        if kind is OperationKind.transfer:
            return (c is not None and c.active and counter != account and delta == -amount < 0
                    and counter_delta == amount and a.balance >= amount
                    and c.balance + amount <= MAX_BALANCE)
        return kind is OperationKind.close and a.balance == 0 and delta == 0 and counter_delta == 0

    def apply(self, kind: OperationKind, account: str, counter: str | None, delta: int, counter_delta: int) -> None:
        if kind is OperationKind.open:
            self.accounts[account] = TrueAccount(True, 0)
        elif kind is OperationKind.close:
            self.accounts[account].active = False
        else:
            self.accounts[account].balance += delta
            if counter:
                self.accounts[counter].balance += counter_delta


def assert_matches(store: LedgerStore, model: TrueBooks) -> None:
    for account_id, truth in model.accounts.items():
        held = store.account(account_id)
        assert held is not None, f"{account_id} missing from the Ledger"
        assert held.balance_minor == truth.balance, f"{account_id}: Ledger {held.balance_minor}, true {truth.balance}"
        assert (held.status is AccountStatus.active) == truth.active
    check_all_invariants(store.core)


ACCOUNTS = ("a", "b", "c")
operation = st.tuples(
    st.sampled_from([OperationKind.open, OperationKind.deposit, OperationKind.withdraw,
                     OperationKind.transfer, OperationKind.close]),
    st.sampled_from(ACCOUNTS), st.sampled_from(ACCOUNTS),
    st.integers(min_value=1, max_value=500),
    # The cache's balance error: mostly none, sometimes a wrong balance at the right version.
    st.one_of(st.just(0), st.just(0), st.integers(min_value=-600, max_value=600)),
)


@settings(max_examples=150, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(operation, min_size=1, max_size=25))
def test_no_wrong_balance_whatever_the_cache_serves(ops) -> None:
    """Hole 1: a right version with a wrong balance must cost a retry, never a wrong balance."""
    store, model = new_store(), TrueBooks()
    for i, (kind, account, counter, amount, error) in enumerate(ops):
        counter_id = counter if kind is OperationKind.transfer else None
        amount = 0 if kind in (OperationKind.open, OperationKind.close) else amount
        req = request(f"r{i}", kind, account, amount, counter_id)
        proposal = submit_proposal(store, proposal_for(store, req, error))
        assert proposal.status in (ProposalStatus.committed, ProposalStatus.conflicted)
        if proposal.status is ProposalStatus.committed and proposal.verdict is Verdict.accepted:
            assert model.legal(kind, account, counter_id, amount, proposal.account_delta_minor,
                               proposal.counterparty_delta_minor), f"committed an illegal {kind.value}: {proposal}"
            model.apply(kind, account, counter_id, proposal.account_delta_minor, proposal.counterparty_delta_minor)
        if proposal.status is ProposalStatus.conflicted:
            assert error != 0, "a correct read set was refused"
        assert_matches(store, model)


def open_funded(store: LedgerStore, account: str, balance: int) -> None:
    submit_proposal(store, proposal_for(store, request(f"open-{account}", OperationKind.open, account)))
    if balance:
        submit_proposal(store, proposal_for(store, request(f"fund-{account}", OperationKind.deposit, account, balance)))


def test_overdraft_through_a_wrong_cached_balance_is_refused() -> None:
    """Hole 1, the review's example: balance 100, cache says 1,000 at the right version."""
    store = new_store()
    open_funded(store, "a", 100)
    proposal = submit_proposal(store, proposal_for(store, request("w", OperationKind.withdraw, "a", 500), 900))
    assert proposal.verdict is Verdict.accepted  # the replicas agreed on the wrong read set
    assert proposal.status is not ProposalStatus.committed
    assert store.account("a").balance_minor == 100
    check_all_invariants(store.core)


def test_an_unsound_transfer_cannot_create_money() -> None:
    """Hole 1: the commit enforces net-zero transfers itself, whatever the agreed deltas."""
    store = new_store()
    open_funded(store, "a", 100)
    open_funded(store, "b", 0)
    req = request("t", OperationKind.transfer, "a", 50, "b")
    good = proposal_for(store, req)
    forged = Proposal(request=req, attempt=1, epoch=good.epoch, digest=good.digest, verdict=Verdict.accepted,
                      reason=None, account_delta_minor=-50, counterparty_delta_minor=5_000,
                      expected_primary_version=good.expected_primary_version,
                      expected_counter_version=good.expected_counter_version)
    # Even signed by a quorum (two faulty replicas, beyond f): the money check still holds.
    endorse(store, forged, snapshot(store, "a"), snapshot(store, "b"))
    assert submit_proposal(store, forged).status is not ProposalStatus.committed
    assert store.account("b").balance_minor == 0
    check_all_invariants(store.core)


def _poisoned_batch(store: LedgerStore) -> list[Proposal]:
    open_funded(store, "a", 100)
    first = proposal_for(store, request("d1", OperationKind.deposit, "a", 10))
    # A transfer to an account that does not exist, agreed on a read set that
    # saw no counterparty (version 0 matches): no Apply rule accepts it.
    poison = Proposal(request=request("p", OperationKind.transfer, "a", 10, "ghost"), attempt=1,
                      epoch=store.journal.epoch, digest="vote:p", verdict=Verdict.accepted, reason=None,
                      account_delta_minor=-10, counterparty_delta_minor=10,
                      # `first` commits before it and moves a's version on by one.
                      expected_primary_version=store.account("a").version + 1, expected_counter_version=0)
    after_first = snapshot(store, "a")
    after_first = AccountSnapshot(present=True, status=after_first.status,
                                  balance_minor=after_first.balance_minor + 10, version=after_first.version + 1)
    endorse(store, poison, after_first, AccountSnapshot.absent())
    last = proposal_for(store, request("d2", OperationKind.deposit, "b", 10))  # b is absent: rejected, fine
    return [first, poison, last]


def test_one_poison_proposal_leaves_no_batch_mate_pending() -> None:
    """Hole 6: every proposal of a group commit is settled, whatever one of them does."""
    store = new_store()
    batch = _poisoned_batch(store)
    try:
        commit_batch(store, batch)
    except Exception:  # noqa: BLE001 - the old code raised; the proof is in the statuses below
        pass
    assert [p.status is ProposalStatus.pending for p in batch] == [False, False, False]
    assert batch[0].status is ProposalStatus.committed
    assert batch[2].status is ProposalStatus.committed
    assert batch[1].status is not ProposalStatus.committed
    check_all_invariants(store.core)


def test_group_committer_settles_batch_mates_of_a_poison_proposal() -> None:
    """Hole 6 through the GroupCommitter: a failed flush must not drop its queue."""
    store = new_store()
    batch = _poisoned_batch(store)
    committer = GroupCommitter(store)
    for i, proposal in enumerate(batch):
        try:
            committer.offer(proposal, now_micros=i)
        except Exception:  # noqa: BLE001
            pass
    try:
        committer.flush()
    except Exception:  # noqa: BLE001
        pass
    assert all(p.status is not ProposalStatus.pending for p in batch)
    assert batch[0].status is ProposalStatus.committed and batch[2].status is ProposalStatus.committed


def test_log_proposals_of_a_poisoned_batch_still_record_their_positions() -> None:
    """Hole 6: the checkpoint must not stall behind a poison proposal's batch-mates."""
    store = new_store()
    open_funded(store, "a", 100)
    from ledger.ledger import Checkpoint, create_checkpoint

    create_checkpoint(store, Checkpoint(partition=0, next_offset=0, advanced_at=T0))
    good = proposal_for(store, request("l0", OperationKind.deposit, "a", 5, channel=Channel.log, offset=0))
    poison = Proposal(request=request("l1", OperationKind.transfer, "a", 10, "ghost", channel=Channel.log, offset=1),
                      attempt=1, epoch=store.journal.epoch, digest="vote:l1", verdict=Verdict.accepted,
                      reason=None, account_delta_minor=-10, counterparty_delta_minor=10,
                      expected_primary_version=store.account("a").version + 1, expected_counter_version=0)
    current = snapshot(store, "a")
    endorse(store, poison, AccountSnapshot(present=True, status=current.status, balance_minor=current.balance_minor + 5,
                                           version=current.version + 1), AccountSnapshot.absent())
    try:
        commit_batch(store, [good, poison])
    except Exception:  # noqa: BLE001
        pass
    assert good.status is ProposalStatus.committed
    assert store.position(0, 0) is not None


# Hole 2: a faulty coordinator -------------------------------------------------


def coordinator_forgery(store: LedgerStore, amount: int = 1_000) -> Proposal:
    """What a faulty primary's coordinator sends on its own: a deposit no replica voted for."""
    req = request("forged", OperationKind.deposit, "a", amount)
    account = store.account("a")
    return Proposal(request=req, attempt=1, epoch=store.journal.epoch, digest="vote:forged",
                    verdict=Verdict.accepted, reason=None, account_delta_minor=amount, counterparty_delta_minor=0,
                    expected_primary_version=account.version, expected_counter_version=0)


def test_a_coordinator_cannot_commit_a_decision_no_replica_signed() -> None:
    """Hole 2: the coordinator's tally is not evidence; the commit checks signed votes itself."""
    store = new_store()
    open_funded(store, "a", 100)
    forged = submit_proposal(store, coordinator_forgery(store))
    assert forged.status is not ProposalStatus.committed
    assert store.account("a").balance_minor == 100 and store.books.net_inflow_minor == 100


forgery = st.fixed_dictionaries({
    "signers": st.lists(st.sampled_from(["r0", "r1", "r2", "stranger"]), max_size=4),
    "bad_key": st.booleans(),            # signed with a key the Ledger does not hold
    "tamper_delta": st.integers(0, 3),   # the coordinator changes the decided delta after signing
    "stale_read": st.booleans(),         # signed over a read set that is not the stored one
})


@settings(max_examples=150, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(forgery)
def test_only_f_plus_one_valid_signatures_over_the_stored_read_set_commit(plan) -> None:
    """Hole 2, generalised: a decision commits iff at least f + 1 = 2 distinct provisioned
    replicas signed exactly this decision over the read set the Ledger holds."""
    store = new_store()
    open_funded(store, "a", 100)
    proposal = coordinator_forgery(store, 40)
    held = snapshot(store, "a")
    read = held if not plan["stale_read"] else AccountSnapshot(
        present=True, status=held.status, balance_minor=held.balance_minor + 7, version=held.version)
    keys = {**KEYS, "stranger": "k"} if not plan["bad_key"] else {r: "wrong" for r in (*KEYS, "stranger")}
    endorse(store, proposal, read, AccountSnapshot.absent(), tuple(plan["signers"]), keys)
    proposal.account_delta_minor += plan["tamper_delta"]
    proposal.request.amount_minor += plan["tamper_delta"]
    submit_proposal(store, proposal)
    valid = (len(set(plan["signers"]) & set(KEYS)) >= 2 and not plan["bad_key"]
             and plan["tamper_delta"] == 0 and not plan["stale_read"])
    assert (proposal.status is ProposalStatus.committed) == valid
    assert store.account("a").balance_minor == (140 if valid else 100)


@settings(max_examples=150, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(operation, min_size=1, max_size=25))
def test_no_wrong_answer_whatever_the_cache_serves(ops) -> None:
    """Hole 2 closes what hole 1 left: with signed read-set digests, a decision evaluated on a
    wrong read set never commits, a wrongly reasoned rejection (insufficient_funds against a
    balance too low) included. A cache bug costs a retry, never a wrong answer."""
    store, model = new_store(), TrueBooks()
    for i, (kind, account, counter, amount, error) in enumerate(ops):
        counter_id = counter if kind is OperationKind.transfer else None
        amount = 0 if kind in (OperationKind.open, OperationKind.close) else amount
        req = request(f"r{i}", kind, account, amount, counter_id)
        wrong_read = error != 0 and store.account(account) is not None  # the cache serves a present account
        proposal = submit_proposal(store, proposal_for(store, req, error))
        if proposal.status is ProposalStatus.committed:
            assert not wrong_read, f"committed {proposal.verdict.value} {proposal.reason} on a wrong read set"
            if proposal.verdict is Verdict.accepted:
                model.apply(kind, account, counter_id, proposal.account_delta_minor, proposal.counterparty_delta_minor)
        assert_matches(store, model)
