"""Unit `ledger` (ledger.allium): durable, linearizable persistence.

The Ledger commits agreed outcomes together with the log positions they
consume, keeps the epoch register (the Journal) that fences deposed
primaries, the per-partition Checkpoint the Usher resumes from, and the
dead-letter store for quarantined events.

Shape of the module:

* entities, enums and ``Config`` named exactly as in the spec;
* ``LedgerStore``: the state the rules act on (``given journal`` plus every
  Ledger entity and core's Outcomes, Accounts and Books, which live in the
  same store because they are written by the same transaction);
* one function per rule (``grant_epoch``, ``commit_proposal``, ...), each
  decorated with ``@implements``; a failing ``requires`` raises
  ``core.Rejected`` and changes nothing;
* creation entry points (``create_epoch_claim``, ``submit_proposal``,
  ``create_position``, ``create_dead_letter``...) that model
  ``X.created`` and run the rules it triggers inside one transaction;
* signed votes: ``ReplicaKey`` (provisioned keys), ``Endorsement`` (a
  replica's signed vote, relayed by the Clerk), ``read_set_digest``,
  ``vote_statement``, ``vote_signature`` and ``endorsed(store, proposal)``:
  a decision commits only with f + 1 valid signatures from distinct replicas
  over this decision and the read set the store holds now
  (RefuseUnendorsedProposal), so a faulty coordinator can only relay;
* ``sound_effect(store, proposal)``: would the decided effect, applied to
  the stored accounts now, keep every money invariant of core? The commit
  checks it itself, so a read set with the right versions but a wrong
  balance (a cache bug) is refused as conflicted, never committed;
* ``outcome_seal(proposal)``: the digest a committed Outcome carries (core's
  ``outcome_digest`` over the decided fields the Outcome gets from the
  proposal), never the Clerk's vote digest;
* invariant checks (``check_invariants`` and one function per invariant);
* the actor ``LedgerResponder`` and surfaces ``DeadLetterQueue`` /
  ``DeadLetterHistory``.

Every rule runs inside a ``LedgerStore.transaction()``: all effects of a
rule and of the rules its entity creations trigger (core's Apply rules,
AdvanceCheckpoint) become visible together or are undone together. Listeners
hear about changes only after the outermost transaction has committed
("the client hears nothing before it commits"). Within a group commit each
proposal settles under its own savepoint: one that fails to settle is rolled
back to it and refused as conflicted, and its batch-mates commit regardless.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from allium.verify import implements

from ledger.core import (
    AccessDenied,
    Account,
    AccountStatus,
    Books,
    Channel,
    CoreState,
    InvariantViolation,
    OperationKind,
    Operator,
    OperatorRole,
    Outcome,
    Rejected,
    RejectReason,
    Request,
    TransitionRejected,
    Verdict,
    outcome_digest,
)

__all__ = [
    "Disposition",
    "EpochClaimStatus",
    "ProposalStatus",
    "DeadLetterStatus",
    "Config",
    "Journal",
    "EpochClaim",
    "EpochGrant",
    "Proposal",
    "Position",
    "Checkpoint",
    "DeadLetter",
    "ReplicaKey",
    "Endorsement",
    "LedgerStore",
    "LedgerEvent",
    "EpochGranted",
    "EpochRefused",
    "ProposalSettled",
    "OutcomeCommitted",
    "PositionRecorded",
    "CheckpointAdvanced",
    "DeadLetterRecorded",
    "DeadLetterAcknowledged",
    "GroupCommitter",
    "grant_epoch",
    "refuse_epoch",
    "fence_stale_proposal",
    "detect_duplicate_proposal",
    "detect_stale_snapshot",
    "commit_proposal",
    "advance_checkpoint",
    "record_dead_letter_position",
    "acknowledge_dead_letter",
    "create_epoch_claim",
    "submit_proposal",
    "commit_batch",
    "create_position",
    "create_checkpoint",
    "create_dead_letter",
    "first_unrecorded_offset",
    "outcome_seal",
    "sound_effect",
    "refuse_unendorsed_proposal",
    "create_replica_key",
    "create_endorsement",
    "read_set_digest",
    "stored_read_set_digest",
    "vote_statement",
    "vote_signature",
    "endorsed",
    "check_endorsement_quorum",
    "INVARIANTS",
    "check_invariants",
    "LedgerResponder",
    "DeadLetterQueue",
    "DeadLetterHistory",
    "Rejected",
    "TransitionRejected",
    "AccessDenied",
    "InvariantViolation",
]

Clock = Callable[[], datetime]

# Enumerations --------------------------------------------------------------


class Disposition(str, enum.Enum):
    """enum Disposition { committed | duplicate | quarantined }: how an offset was handled."""

    committed = "committed"
    duplicate = "duplicate"
    quarantined = "quarantined"


class EpochClaimStatus(str, enum.Enum):
    """EpochClaim.status (inline enum): pending | granted | refused."""

    pending = "pending"
    granted = "granted"
    refused = "refused"


class ProposalStatus(str, enum.Enum):
    """Proposal.status (inline enum): pending | committed | duplicate | conflicted | fenced."""

    pending = "pending"
    committed = "committed"
    duplicate = "duplicate"
    conflicted = "conflicted"
    fenced = "fenced"


class DeadLetterStatus(str, enum.Enum):
    """DeadLetter.status (inline enum): held | acknowledged."""

    held = "held"
    acknowledged = "acknowledged"


# Declared lifecycles: status -> statuses it may move to. Terminal states map
# to the empty set, so "terminal has no outbound transition" is a lookup.
EPOCH_CLAIM_TRANSITIONS: dict[EpochClaimStatus, frozenset[EpochClaimStatus]] = {
    EpochClaimStatus.pending: frozenset({EpochClaimStatus.granted, EpochClaimStatus.refused}),
    EpochClaimStatus.granted: frozenset(),
    EpochClaimStatus.refused: frozenset(),
}

PROPOSAL_TRANSITIONS: dict[ProposalStatus, frozenset[ProposalStatus]] = {
    ProposalStatus.pending: frozenset(
        {ProposalStatus.committed, ProposalStatus.duplicate, ProposalStatus.conflicted, ProposalStatus.fenced}
    ),
    ProposalStatus.committed: frozenset(),
    ProposalStatus.duplicate: frozenset(),
    ProposalStatus.conflicted: frozenset(),
    ProposalStatus.fenced: frozenset(),
}

DEAD_LETTER_TRANSITIONS: dict[DeadLetterStatus, frozenset[DeadLetterStatus]] = {
    DeadLetterStatus.held: frozenset({DeadLetterStatus.acknowledged}),
    DeadLetterStatus.acknowledged: frozenset(),
}


# Each status is checked once, where it is written (resolved question "How does
# a refusal or a broken invariant say what failed?"): a rule's requires #1
# already refuses a source status other than pending/held, and every target
# it writes is declared from there, so the rules write the status directly; a
# second table check after that requires could never fail. transition_to is
# the check for any other writer.
def _check_transition(entity: str, table: dict[Any, frozenset[Any]], old: Any, new: Any) -> None:
    """Refuse any status change the entity's `transitions` block does not declare."""
    if new not in table.get(old, frozenset()):
        kind = "terminal" if not table.get(old) else "undeclared"
        raise TransitionRejected(f"{entity}.status", 0, f"{kind} transition {old.value} -> {new.value}")


# Config --------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """config block of ledger.allium: group-commit tuning and the signed-vote quorum.

    ``endorsement_quorum`` defaults to the spec's expression
    ``fault_budget + 1`` (2 with the default f = 1).
    """

    # At most this many proposals per storage transaction.
    commit_batch_max: int = 256
    # How long the first proposal of a batch may wait for company (microseconds).
    commit_linger_micros: int = 2_000
    # f: faulty replicas tolerated; a decision needs f + 1 signed votes.
    fault_budget: int = 1
    endorsement_quorum: int = None  # type: ignore[assignment]  # derived below

    def __post_init__(self) -> None:
        if self.endorsement_quorum is None:
            object.__setattr__(self, "endorsement_quorum", self.fault_budget + 1)


# Entities ------------------------------------------------------------------


@dataclass
class Journal:
    """entity Journal: the single row ordering everything (epoch, holder, next sequence).

    ASSUMPTION: the spec gives no initial values; a fresh deployment starts at
    epoch 0 with no primary and sequence numbers starting at 1.
    """

    epoch: int = 0
    primary_node_id: str | None = None
    next_sequence: int = 1


@dataclass(eq=False)
class EpochClaim:
    """entity EpochClaim: a node's compare-and-set request on journal.epoch.

    granted_epoch is present exactly when status = granted.
    """

    node_id: str
    expected_epoch: int
    status: EpochClaimStatus = EpochClaimStatus.pending
    granted_epoch: int | None = None

    def __post_init__(self) -> None:
        self.status = EpochClaimStatus(self.status)
        _require_when_fields(self)

    def when_fields_consistent(self) -> bool:
        """`granted_epoch: Integer when status = granted`."""
        return (self.granted_epoch is not None) == (self.status is EpochClaimStatus.granted)

    def transition_to(self, status: EpochClaimStatus) -> None:
        """Validate a move along `transitions status` (pending -> granted | refused)."""
        _check_transition("EpochClaim", EPOCH_CLAIM_TRANSITIONS, self.status, EpochClaimStatus(status))


@dataclass(eq=False)
class EpochGrant:
    """entity EpochGrant: the durable record that one epoch was granted to one node."""

    epoch: int
    node_id: str
    granted_at: datetime


@dataclass(eq=False)
class Proposal:
    """entity Proposal: an agreed decision submitted by the Clerk for commit.

    ``digest`` is the Clerk's vote digest: it also binds the attempt, so it
    is not what the committed Outcome carries (see ``outcome_seal``).
    expected_*_version are the versions the decision was evaluated against;
    0 means the account did not exist (or no counterparty is involved).
    sequence and committed_at are present exactly when status = committed.
    """

    request: Request
    attempt: int
    epoch: int
    digest: str
    verdict: Verdict
    reason: RejectReason | None
    account_delta_minor: int
    counterparty_delta_minor: int
    expected_primary_version: int
    expected_counter_version: int
    status: ProposalStatus = ProposalStatus.pending
    sequence: int | None = None
    committed_at: datetime | None = None

    def __post_init__(self) -> None:
        self.status = ProposalStatus(self.status)
        _require_when_fields(self)

    @property
    def is_quarantine(self) -> bool:
        """Derived Proposal.is_quarantine: reason = quarantined."""
        return self.reason is RejectReason.quarantined

    @property
    def is_refused(self) -> bool:
        """Derived Proposal.is_refused: status in {duplicate, conflicted, fenced}."""
        return self.status in (ProposalStatus.duplicate, ProposalStatus.conflicted, ProposalStatus.fenced)

    def when_fields_consistent(self) -> bool:
        """`sequence` and `committed_at` are set `when status = committed`."""
        committed = self.status is ProposalStatus.committed
        return (self.sequence is not None) == committed and (self.committed_at is not None) == committed

    def transition_to(self, status: ProposalStatus) -> None:
        """Validate a move along `transitions status` (pending -> one terminal state)."""
        _check_transition("Proposal", PROPOSAL_TRANSITIONS, self.status, ProposalStatus(status))


@dataclass(eq=False)
class Position:
    """entity Position: one log offset that has been fully handled."""

    partition: int
    offset: int
    disposition: Disposition
    recorded_at: datetime


@dataclass(eq=False)
class Checkpoint:
    """entity Checkpoint: the Usher's resume point; every offset below next_offset has a Position."""

    partition: int
    next_offset: int
    advanced_at: datetime


@dataclass(eq=False)
class DeadLetter:
    """entity DeadLetter: an event the Usher gave up on, held until a responder acknowledges it.

    acknowledged_by and acknowledged_at are present exactly when status = acknowledged.
    """

    partition: int
    offset: int
    payload_digest: str
    cause: str
    attempts: int
    quarantined_at: datetime
    status: DeadLetterStatus = DeadLetterStatus.held
    acknowledged_by: Operator | None = None
    acknowledged_at: datetime | None = None

    def __post_init__(self) -> None:
        self.status = DeadLetterStatus(self.status)
        _require_when_fields(self)

    def when_fields_consistent(self) -> bool:
        """`acknowledged_by` / `acknowledged_at` are set `when status = acknowledged`."""
        acked = self.status is DeadLetterStatus.acknowledged
        return (self.acknowledged_by is not None) == acked and (self.acknowledged_at is not None) == acked

    def transition_to(self, status: DeadLetterStatus) -> None:
        """Validate a move along `transitions status` (held -> acknowledged)."""
        _check_transition("DeadLetter", DEAD_LETTER_TRANSITIONS, self.status, DeadLetterStatus(status))


def _require_when_fields(entity: EpochClaim | Proposal | DeadLetter) -> None:
    """Refuse to construct an entity whose `when`-qualified fields contradict its status."""
    if not entity.when_fields_consistent():
        raise ValueError(f"{type(entity).__name__}: when-qualified fields do not match status {entity.status.value}")


@dataclass(frozen=True)
class ReplicaKey:
    """entity ReplicaKey: a replica's signing key, provisioned into this store and the
    replica's own node only; the coordinator never holds one."""

    replica_id: str
    key: str


@dataclass(frozen=True)
class Endorsement:
    """entity Endorsement: one replica's signed vote for an agreed decision, relayed by
    the Clerk with its proposal. ``signature`` is the replica's HMAC-SHA256 of
    ``vote_statement`` over ``read_set_digest`` and the decided fields."""

    request: Request
    attempt: int
    replica_id: str
    read_set_digest: str
    signature: str


# Events (heard by listeners after the transaction commits) -----------------


@dataclass(frozen=True)
class EpochGranted:
    """`EpochGrant.created` (GrantEpoch fired for `claim`)."""

    grant: EpochGrant
    claim: EpochClaim


@dataclass(frozen=True)
class EpochRefused:
    """`EpochClaim.status becomes refused` (RefuseEpoch fired)."""

    claim: EpochClaim


@dataclass(frozen=True)
class ProposalSettled:
    """`Proposal.status becomes committed | duplicate | conflicted | fenced`.

    `outcome` is the created Outcome for a commit, the prior Outcome for a
    duplicate, and None otherwise.
    """

    proposal: Proposal
    outcome: Outcome | None


@dataclass(frozen=True)
class OutcomeCommitted:
    """`core/Outcome.created` (by CommitProposal)."""

    outcome: Outcome


@dataclass(frozen=True)
class PositionRecorded:
    """`Position.created`."""

    position: Position


@dataclass(frozen=True)
class CheckpointAdvanced:
    """`Checkpoint.next_offset` moved (AdvanceCheckpoint fired)."""

    checkpoint: Checkpoint


@dataclass(frozen=True)
class DeadLetterRecorded:
    """`DeadLetter.created`."""

    letter: DeadLetter


@dataclass(frozen=True)
class DeadLetterAcknowledged:
    """`DeadLetter.status becomes acknowledged`."""

    letter: DeadLetter


LedgerEvent = (
    EpochGranted
    | EpochRefused
    | ProposalSettled
    | OutcomeCommitted
    | PositionRecorded
    | CheckpointAdvanced
    | DeadLetterRecorded
    | DeadLetterAcknowledged
)
Listener = Callable[[Any], None]


# Transactions ----------------------------------------------------------------


_MISSING = object()


class _Transaction:
    """An undo log: every write records how to reverse it; rollback replays it backwards.

    Models one storage transaction of the backing store: effects are all
    visible after commit, or none are after rollback.
    """

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.events: list[Any] = []
        self._undo: list[Callable[[], None]] = []

    def set(self, obj: object, attr: str, value: Any) -> None:
        old = getattr(obj, attr)
        self._undo.append(lambda: setattr(obj, attr, old))
        setattr(obj, attr, value)

    def put(self, mapping: dict[Any, Any], key: Any, value: Any) -> None:
        old = mapping.get(key, _MISSING)

        def undo() -> None:
            if old is _MISSING:
                mapping.pop(key, None)
            else:
                mapping[key] = old

        self._undo.append(undo)
        mapping[key] = value

    def append(self, seq: list[Any], value: Any) -> None:
        seq.append(value)
        self._undo.append(lambda: seq.remove(value))

    def remember_key(self, mapping: dict[Any, Any], key: Any) -> None:
        """Remember a mapping slot that code outside this module may fill."""
        old = mapping.get(key, _MISSING)

        def undo() -> None:
            if old is _MISSING:
                mapping.pop(key, None)
            else:
                mapping[key] = old

        self._undo.append(undo)

    def remember_member(self, items: set[Any], item: Any) -> None:
        """Remember whether a set holds an item that code outside this module may add."""
        present = item in items
        self._undo.append(lambda: items.add(item) if present else items.discard(item))

    def remember_attr(self, obj: object, attr: str) -> None:
        """Remember one attribute that code outside this module may set."""
        old = getattr(obj, attr)
        self._undo.append(lambda: setattr(obj, attr, old))

    def snapshot(self, obj: object) -> None:
        """Remember all fields of an object that code outside this module may change."""
        saved = dict(vars(obj))

        def undo() -> None:
            vars(obj).clear()
            vars(obj).update(saved)

        self._undo.append(undo)

    def rollback(self) -> None:
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()
        self.events.clear()

    def savepoint(self) -> tuple[int, int]:
        """A point this transaction can roll back to without losing earlier writes."""
        return len(self._undo), len(self.events)

    def rollback_to(self, savepoint: tuple[int, int]) -> None:
        """Undo every write (and drop every event) made since `savepoint`."""
        writes, events = savepoint
        while len(self._undo) > writes:
            self._undo.pop()()
        del self.events[events:]


# The store -------------------------------------------------------------------


class LedgerStore:
    """The Ledger's backing store: `given journal` plus every entity the commit transaction writes.

    Core's Outcomes, Accounts and Books live here too because ledger.allium's
    commit writes them in the same transaction as Proposals and Positions.
    Outcomes are indexed by (client_id, request_id): the unique index that
    makes exactly-once hold forever (never pruned).
    """

    def __init__(
        self,
        *,
        clock: Clock,
        config: Config | None = None,
        journal: Journal | None = None,
        core: CoreState | None = None,
    ) -> None:
        self.clock = clock
        self.config = config or Config()
        self.journal = journal if journal is not None else Journal()
        # core's Accounts, Outcomes and Books: written by the commit transaction.
        self.core = core if core is not None else CoreState()
        self.claims: list[EpochClaim] = []
        self.grants: list[EpochGrant] = []
        self.proposals: list[Proposal] = []
        self.positions: dict[tuple[int, int], Position] = {}
        self.checkpoints: dict[int, Checkpoint] = {}
        self.dead_letters: list[DeadLetter] = []
        # Signed votes: provisioned keys, and the endorsements relayed per
        # (client_id, request_id, attempt).
        self.replica_keys: dict[str, ReplicaKey] = {}
        self.endorsements: dict[tuple[str, str, int], list[Endorsement]] = {}
        self._listeners: list[Listener] = []
        self._txn: _Transaction | None = None
        # The store refuses to start on a config whose signed-vote quorum a
        # lying replica could reach alone (EndorsementQuorumOutnumbersFaults).
        check_endorsement_quorum(self.config)

    # -- transactions and listeners ------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[_Transaction]:
        """One storage transaction; nested calls join the outer one.

        Events are delivered to listeners only after the outermost
        transaction commits; on any exception every write is undone.
        """
        if self._txn is not None:
            yield self._txn
            return
        txn = _Transaction(self.clock())
        self._txn = txn
        try:
            yield txn
        except BaseException:
            txn.rollback()
            raise
        finally:
            self._txn = None
        for event in txn.events:
            for listener in list(self._listeners):
                listener(event)

    def subscribe(self, listener: Listener) -> None:
        """Hear every committed LedgerEvent, in commit order."""
        self._listeners.append(listener)

    # -- core's collections, held in the same store ----------------------------

    @property
    def accounts(self) -> dict[str, Account]:
        """core Accounts by account_id."""
        return self.core.accounts

    @property
    def outcomes(self) -> dict[tuple[str, str], Outcome]:
        """core Outcomes under the unique (client_id, request_id) index; never pruned."""
        return self.core.outcomes

    @property
    def books(self) -> Books:
        """core's `given books`."""
        return self.core.books

    # -- lookups (the `Entity{...}` expressions of the spec) -------------------

    def outcome_for(self, client_id: str, request_id: str) -> Outcome | None:
        """`core/Outcome{client_id, request_id}`."""
        return self.outcomes.get((client_id, request_id))

    def account(self, account_id: str | None) -> Account | None:
        """`core/Account{account_id}`; an absent id (no counterparty) finds nothing."""
        return None if account_id is None else self.accounts.get(account_id)

    def position(self, partition: int | None, offset: int | None) -> Position | None:
        """`Position{partition, offset}`."""
        # Positions are keyed by integer pairs only, so a key with None finds nothing.
        return self.positions.get((partition, offset))  # type: ignore[arg-type]

    def checkpoint(self, partition: int) -> Checkpoint | None:
        """`Checkpoint{partition}`."""
        return self.checkpoints.get(partition)

    def grant_for(self, epoch: int) -> EpochGrant | None:
        """`EpochGrant{epoch}`."""
        return next((g for g in self.grants if g.epoch == epoch), None)

    def held_dead_letters(self) -> list[DeadLetter]:
        """`DeadLetters where status = held`."""
        return [d for d in self.dead_letters if d.status is DeadLetterStatus.held]

    def acknowledged_dead_letters(self) -> list[DeadLetter]:
        """`DeadLetters where status = acknowledged`."""
        return [d for d in self.dead_letters if d.status is DeadLetterStatus.acknowledged]

    # -- convenience wrappers over the module-level entry points ---------------

    def create_epoch_claim(self, claim: EpochClaim) -> EpochClaim:
        """`EpochClaim.created`: see module function create_epoch_claim."""
        return create_epoch_claim(self, claim)

    def submit_proposal(self, proposal: Proposal) -> Proposal:
        """`Proposal.created`: see module function submit_proposal."""
        return submit_proposal(self, proposal)

    def commit_batch(self, proposals: Sequence[Proposal]) -> list[Proposal]:
        """Group commit: see module function commit_batch."""
        return commit_batch(self, proposals)

    def create_position(self, position: Position) -> Position:
        """`Position.created`: see module function create_position."""
        return create_position(self, position)

    def create_checkpoint(self, checkpoint: Checkpoint) -> Checkpoint:
        """`Checkpoint.created`: see module function create_checkpoint."""
        return create_checkpoint(self, checkpoint)

    def create_dead_letter(self, letter: DeadLetter) -> DeadLetter:
        """`DeadLetter.created`: see module function create_dead_letter."""
        return create_dead_letter(self, letter)

    def acknowledge_dead_letter(self, operator: Operator, letter: DeadLetter) -> DeadLetter:
        """Rule AcknowledgeDeadLetter."""
        return acknowledge_dead_letter(self, operator, letter)

    def create_replica_key(self, key: ReplicaKey) -> ReplicaKey:
        """`ReplicaKey.created` (provisioning): see module function create_replica_key."""
        return create_replica_key(self, key)

    def create_endorsement(self, endorsement: Endorsement) -> Endorsement:
        """`Endorsement.created` (relayed by the Clerk): see module function create_endorsement."""
        return create_endorsement(self, endorsement)

    def endorsements_for(self, request: Request, attempt: int) -> list[Endorsement]:
        """`Endorsements where request = request and attempt = attempt`."""
        return list(self.endorsements.get((request.client_id, request.request_id, attempt), ()))

    def first_unrecorded_offset(self, partition: int, offset: int) -> int:
        """`first_unrecorded_offset(partition, offset)`."""
        return first_unrecorded_offset(self, partition, offset)

    def check_invariants(self) -> None:
        """Raise InvariantViolation naming every ledger invariant that does not hold."""
        check_invariants(self)


# Small helpers -----------------------------------------------------------------


def _fail(rule: str, clause: int, why: str) -> Rejected:
    return Rejected(rule, clause, why)


def _raise_if(rejection: Rejected | None) -> None:
    if rejection is not None:
        raise rejection


def _is_log(request: Request) -> bool:
    return Channel(request.channel) is Channel.log


def _prior_outcome(store: LedgerStore, proposal: Proposal) -> Outcome | None:
    return store.outcome_for(proposal.request.client_id, proposal.request.request_id)


def _version(account: Account | None) -> int:
    """`account?.version ?? 0`."""
    return 0 if account is None else account.version


def _snapshot_matches(store: LedgerStore, proposal: Proposal) -> bool:
    """The versions the decision was evaluated on are still the current ones."""
    primary = store.account(proposal.request.account_id)
    counter = store.account(proposal.request.counterparty_id)
    return (
        _version(primary) == proposal.expected_primary_version
        and _version(counter) == proposal.expected_counter_version
    )


def _active(account: Account | None) -> bool:
    return account is not None and AccountStatus(account.status) is AccountStatus.active


def _within(account: Account, delta: int, max_balance: int) -> bool:
    """0 <= balance + delta <= max_balance: NonNegativeBalance and BalanceWithinLimit after the effect."""
    return 0 <= account.balance_minor + delta <= max_balance


def _sound_acceptance(kind: OperationKind, amount: int, same_account: bool, primary: Account | None,
                      counter: Account | None, delta: int, counter_delta: int, max_balance: int) -> bool:
    """The per-kind conditions of sound_effect for an accepted decision."""
    if kind is OperationKind.open:
        return primary is None and delta == 0 and counter_delta == 0
    if not _active(primary):
        return False
    assert primary is not None
    if kind is OperationKind.deposit:
        return amount > 0 and delta == amount and counter_delta == 0 and _within(primary, delta, max_balance)
    if kind is OperationKind.withdraw:
        return amount > 0 and delta == -amount and counter_delta == 0 and _within(primary, delta, max_balance)
    if kind is OperationKind.transfer:
        return (not same_account and _active(counter) and amount > 0
                and delta == -amount and counter_delta == amount  # net zero: TransfersNetToZero
                and _within(primary, delta, max_balance)
                and _within(counter, counter_delta, max_balance))  # type: ignore[arg-type]
    if kind is OperationKind.close:
        return primary.balance_minor == 0 and delta == 0 and counter_delta == 0
    return False


def sound_effect(store: LedgerStore, proposal: Proposal) -> bool:
    """`sound_effect(proposal, primary, counter)`: the effect keeps every money invariant of core.

    Judged against the stored rows inside the commit transaction, never the
    read set: a rejection moves nothing; an accepted open names an absent
    account; a deposit or withdrawal moves +amount / -amount on one active
    account; a transfer moves -amount and +amount between two distinct
    active accounts; a close empties nothing and needs a zero balance; every
    resulting balance stays within 0..core config.max_balance_minor.
    """
    request = proposal.request
    delta, counter_delta = proposal.account_delta_minor, proposal.counterparty_delta_minor
    if Verdict(proposal.verdict) is Verdict.rejected:
        return delta == 0 and counter_delta == 0
    return _sound_acceptance(
        OperationKind(request.kind), request.amount_minor, request.counterparty_id == request.account_id,
        store.account(request.account_id), store.account(request.counterparty_id), delta, counter_delta,
        store.core.config.max_balance_minor,
    )


# Signed votes --------------------------------------------------------------------

_READ_SET_TAG = b"ledger.read-set.v1\x00"
_VOTE_TAG = b"ledger.vote.v1\x00"


def _enc_str(text: str) -> bytes:
    raw = text.encode("utf-8")
    return len(raw).to_bytes(4, "big") + raw


def _enc_int(number: int) -> bytes:
    return int(number).to_bytes(8, "big", signed=True)


def _enc_opt(value: Any) -> bytes:
    """A presence byte, then the value's spec string (enums by their value)."""
    if value is None:
        return b"\x00"
    return b"\x01" + _enc_str(value.value if isinstance(value, enum.Enum) else str(value))


def read_set_digest(
    primary_present: bool, primary_status: Any, primary_balance_minor: int, primary_version: int,
    counter_present: bool, counter_status: Any, counter_balance_minor: int, counter_version: int,
) -> str:
    """`read_set_digest`: SHA-256 over the canonical encoding of the two accounts as read.

    Replicas compute it over the snapshot they evaluated; the Ledger over its
    own rows (stored_read_set_digest). Equal digests mean equal read sets.
    """
    parts = [_READ_SET_TAG]
    for present, status, balance, version in (
        (primary_present, primary_status, primary_balance_minor, primary_version),
        (counter_present, counter_status, counter_balance_minor, counter_version),
    ):
        parts += [b"\x01" if present else b"\x00", _enc_opt(status), _enc_int(balance), _enc_int(version)]
    return hashlib.sha256(b"".join(parts)).hexdigest()


def _row(account: Account | None) -> tuple[bool, Any, int, int]:
    """An account row as a read set sees it; absent: not present, no status, 0, 0."""
    if account is None:
        return False, None, 0, 0
    return True, AccountStatus(account.status), account.balance_minor, account.version


def stored_read_set_digest(store: LedgerStore, request: Request) -> str:
    """read_set_digest of the rows this transaction reads for the request's accounts."""
    return read_set_digest(*_row(store.account(request.account_id)), *_row(store.account(request.counterparty_id)))


def vote_statement(
    client_id: str, request_id: str, attempt: int, read_digest: str, verdict: Any, reason: Any,
    account_delta_minor: int, counterparty_delta_minor: int,
) -> bytes:
    """`vote_statement`: the canonical bytes a replica signs for its vote."""
    return b"".join((
        _VOTE_TAG, _enc_str(client_id), _enc_str(request_id), _enc_int(attempt), _enc_str(read_digest),
        _enc_opt(verdict), _enc_opt(reason), _enc_int(account_delta_minor), _enc_int(counterparty_delta_minor),
    ))


def vote_signature(key: str, statement: bytes) -> str:
    """Lowercase hex HMAC-SHA256 of `statement` under a replica's key (UTF-8)."""
    return hmac.new(key.encode("utf-8"), statement, hashlib.sha256).hexdigest()


def endorsed(store: LedgerStore, proposal: Proposal) -> bool:
    """`endorsed(proposal, votes, keys)`: endorsement_quorum valid signed votes.

    Counts distinct replicas with a non-empty provisioned key whose
    endorsement was made over the read set this store holds now and whose
    signature verifies (constant-time) over the proposal's own decision.
    """
    request = proposal.request
    read_digest = stored_read_set_digest(store, request)
    statement = vote_statement(
        request.client_id, request.request_id, proposal.attempt, read_digest, proposal.verdict,
        proposal.reason, proposal.account_delta_minor, proposal.counterparty_delta_minor,
    )
    signers: set[str] = set()
    for endorsement in store.endorsements_for(request, proposal.attempt):
        key = store.replica_keys.get(endorsement.replica_id)
        if key is None or key.key == "" or endorsement.read_set_digest != read_digest:
            continue
        if hmac.compare_digest(endorsement.signature, vote_signature(key.key, statement)):
            signers.add(endorsement.replica_id)
    return len(signers) >= store.config.endorsement_quorum


def create_replica_key(store: LedgerStore, key: ReplicaKey) -> ReplicaKey:
    """`ReplicaKey.created`: provision a replica's key (one per replica; never replaced here)."""
    with store.transaction() as txn:
        if key.replica_id in store.replica_keys:
            raise _fail("ReplicaKey.created", 0, f"replica {key.replica_id} already has a key")
        txn.put(store.replica_keys, key.replica_id, key)
    return key


def create_endorsement(store: LedgerStore, endorsement: Endorsement) -> Endorsement:
    """`Endorsement.created`: store a relayed signed vote; it is verified at commit, not here."""
    slot = (endorsement.request.client_id, endorsement.request.request_id, endorsement.attempt)
    with store.transaction() as txn:
        txn.put(store.endorsements, slot, [*store.endorsements.get(slot, ()), endorsement])
    return endorsement


# Rules: epochs -----------------------------------------------------------------


def _grant_epoch_failure(store: LedgerStore, claim: EpochClaim) -> Rejected | None:
    if claim.status is not EpochClaimStatus.pending:
        return _fail("GrantEpoch", 1, f"claim is {claim.status.value}, not pending")
    if claim.expected_epoch != store.journal.epoch:
        return _fail("GrantEpoch", 2, f"expected epoch {claim.expected_epoch} != journal epoch {store.journal.epoch}")
    return None


@implements("GrantEpoch")
def grant_epoch(store: LedgerStore, claim: EpochClaim) -> EpochGrant:
    """Rule GrantEpoch: compare-and-set journal.epoch from expected_epoch to expected_epoch + 1.

    The comparison and the writes happen in one transaction, so the check
    is the decision (the conditional UPDATE of the guidance), never a
    read-then-write across transactions.
    """
    with store.transaction() as txn:
        _raise_if(_grant_epoch_failure(store, claim))
        new_epoch = claim.expected_epoch + 1
        grant = EpochGrant(epoch=new_epoch, node_id=claim.node_id, granted_at=txn.now)
        txn.set(store.journal, "epoch", new_epoch)
        txn.set(store.journal, "primary_node_id", claim.node_id)
        txn.set(claim, "granted_epoch", new_epoch)
        txn.set(claim, "status", EpochClaimStatus.granted)
        txn.append(store.grants, grant)
        txn.events.append(EpochGranted(grant=grant, claim=claim))
        return grant


def _refuse_epoch_failure(store: LedgerStore, claim: EpochClaim) -> Rejected | None:
    if claim.status is not EpochClaimStatus.pending:
        return _fail("RefuseEpoch", 1, f"claim is {claim.status.value}, not pending")
    if claim.expected_epoch == store.journal.epoch:
        return _fail("RefuseEpoch", 2, f"expected epoch {claim.expected_epoch} is the journal epoch")
    return None


@implements("RefuseEpoch")
def refuse_epoch(store: LedgerStore, claim: EpochClaim) -> EpochClaim:
    """Rule RefuseEpoch: a claim on a stale expected_epoch is refused."""
    with store.transaction() as txn:
        _raise_if(_refuse_epoch_failure(store, claim))
        txn.set(claim, "status", EpochClaimStatus.refused)
        txn.events.append(EpochRefused(claim=claim))
        return claim


def create_epoch_claim(store: LedgerStore, claim: EpochClaim) -> EpochClaim:
    """`EpochClaim.created`: store the claim and settle it by GrantEpoch or RefuseEpoch.

    The two rules partition a pending claim on `expected_epoch = journal.epoch`.
    """
    with store.transaction() as txn:
        txn.append(store.claims, claim)
        if claim.status is EpochClaimStatus.pending:
            if _grant_epoch_failure(store, claim) is None:
                grant_epoch(store, claim)
            else:
                refuse_epoch(store, claim)
    return claim


# Rules: commit -----------------------------------------------------------------
# The four commit rules partition every pending proposal: fenced first, then
# duplicate, then conflicted, else committed.


def _fence_failure(store: LedgerStore, proposal: Proposal) -> Rejected | None:
    if proposal.status is not ProposalStatus.pending:
        return _fail("FenceStaleProposal", 1, f"proposal is {proposal.status.value}, not pending")
    if proposal.epoch == store.journal.epoch:
        return _fail("FenceStaleProposal", 2, f"proposal epoch {proposal.epoch} is the journal epoch")
    return None


@implements("FenceStaleProposal")
def fence_stale_proposal(store: LedgerStore, proposal: Proposal) -> Proposal:
    """Rule FenceStaleProposal: a proposal from another epoch is refused as fenced.

    The comparison is against the journal inside the commit transaction,
    never against a cached epoch (settled decision on fencing).
    """
    with store.transaction() as txn:
        _raise_if(_fence_failure(store, proposal))
        txn.set(proposal, "status", ProposalStatus.fenced)
        txn.events.append(ProposalSettled(proposal=proposal, outcome=None))
        return proposal


def _duplicate_failure(store: LedgerStore, proposal: Proposal) -> Rejected | None:
    if proposal.status is not ProposalStatus.pending:
        return _fail("DetectDuplicateProposal", 1, f"proposal is {proposal.status.value}, not pending")
    if proposal.epoch != store.journal.epoch:
        return _fail("DetectDuplicateProposal", 2, f"proposal epoch {proposal.epoch} != journal {store.journal.epoch}")
    if _prior_outcome(store, proposal) is None:
        return _fail("DetectDuplicateProposal", 3, "no prior outcome for this (client_id, request_id)")
    return None


@implements("DetectDuplicateProposal")
def detect_duplicate_proposal(store: LedgerStore, proposal: Proposal) -> Proposal:
    """Rule DetectDuplicateProposal: the key already has an outcome; record the offset as a duplicate.

    A log proposal whose offset has no Position yet records one, so the
    checkpoint is not stalled by the duplicate.
    """
    with store.transaction() as txn:
        _raise_if(_duplicate_failure(store, proposal))
        prior = _prior_outcome(store, proposal)
        txn.set(proposal, "status", ProposalStatus.duplicate)
        request = proposal.request
        if _is_log(request) and store.position(request.partition, request.offset) is None:
            _record_position(
                store,
                Position(partition=_int(request.partition), offset=_int(request.offset),
                         disposition=Disposition.duplicate, recorded_at=txn.now),
            )
        txn.events.append(ProposalSettled(proposal=proposal, outcome=prior))
        return proposal


def _unendorsed_failure(store: LedgerStore, proposal: Proposal) -> Rejected | None:
    if proposal.status is not ProposalStatus.pending:
        return _fail("RefuseUnendorsedProposal", 1, f"proposal is {proposal.status.value}, not pending")
    if proposal.epoch != store.journal.epoch:
        return _fail("RefuseUnendorsedProposal", 2, f"proposal epoch {proposal.epoch} != journal {store.journal.epoch}")
    if _prior_outcome(store, proposal) is not None:
        return _fail("RefuseUnendorsedProposal", 3, "an outcome already exists for this key")
    if proposal.is_quarantine:
        return _fail("RefuseUnendorsedProposal", 4, "quarantine rejections carry no signed votes")
    if endorsed(store, proposal):
        return _fail("RefuseUnendorsedProposal", 5, "endorsed by a quorum of signed votes")
    return None


@implements("RefuseUnendorsedProposal")
def refuse_unendorsed_proposal(store: LedgerStore, proposal: Proposal) -> Proposal:
    """Rule RefuseUnendorsedProposal: too few valid signed votes; refuse as conflicted.

    The commit checks the votes itself (settled decision "Who checks that a
    quorum of replicas voted for a decision?"): the coordinator's tally is
    not evidence. Conflicted makes the Registrar re-read and the Clerk re-run.
    """
    with store.transaction() as txn:
        _raise_if(_unendorsed_failure(store, proposal))
        txn.set(proposal, "status", ProposalStatus.conflicted)
        txn.events.append(ProposalSettled(proposal=proposal, outcome=None))
        return proposal


def _stale_failure(store: LedgerStore, proposal: Proposal) -> Rejected | None:
    if proposal.status is not ProposalStatus.pending:
        return _fail("DetectStaleSnapshot", 1, f"proposal is {proposal.status.value}, not pending")
    if proposal.epoch != store.journal.epoch:
        return _fail("DetectStaleSnapshot", 2, f"proposal epoch {proposal.epoch} != journal {store.journal.epoch}")
    if _prior_outcome(store, proposal) is not None:
        return _fail("DetectStaleSnapshot", 3, "an outcome already exists for this key")
    if proposal.is_quarantine:
        return _fail("DetectStaleSnapshot", 4, "quarantine rejections depend on no account state")
    if _snapshot_matches(store, proposal) and sound_effect(store, proposal):
        return _fail("DetectStaleSnapshot", 5, "versions match the snapshot and the effect is sound")
    return None


@implements("DetectStaleSnapshot")
def detect_stale_snapshot(store: LedgerStore, proposal: Proposal) -> Proposal:
    """Rule DetectStaleSnapshot: refuse as conflicted a proposal evaluated on a wrong snapshot.

    Either an account version moved since evaluation, or the decided effect
    would break a money invariant on the stored accounts (the read set had
    the right versions but a wrong balance or status: a cache bug). The
    Registrar re-reads from storage and the Clerk re-runs the round.
    """
    with store.transaction() as txn:
        _raise_if(_stale_failure(store, proposal))
        txn.set(proposal, "status", ProposalStatus.conflicted)
        txn.events.append(ProposalSettled(proposal=proposal, outcome=None))
        return proposal


# Placeholder for the Outcome fields the seal does not cover (the Ledger
# assigns them at commit); any value gives the same seal.
_UNSEALED_TIME = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _decided_outcome(
    proposal: Proposal, *, digest: str, sequence: int, committed_at: datetime
) -> Outcome:
    """The Outcome CommitProposal creates from `proposal`, field for field as the spec lists them.

    One constructor serves both the commit and ``outcome_seal``, so the seal
    is computed over exactly the fields the stored Outcome is created with.
    """
    request = proposal.request
    return Outcome(
        request=request, request_id=request.request_id, client_id=request.client_id,
        kind=request.kind, verdict=proposal.verdict, reason=proposal.reason,
        account_id=request.account_id, counterparty_id=request.counterparty_id,
        account_delta_minor=proposal.account_delta_minor,
        counterparty_delta_minor=proposal.counterparty_delta_minor,
        digest=digest, epoch=proposal.epoch, sequence=sequence,
        committed_at=committed_at, applied=False,
    )


def outcome_seal(proposal: Proposal) -> str:
    """`outcome_seal(proposal)`: core's outcome_digest over the decided fields the Outcome gets.

    Settled decision "Which digest does a committed Outcome carry?": the
    Outcome carries this seal, never the Clerk's vote digest (proposal.digest),
    which also binds the attempt and so could never satisfy core's
    DigestSealsContent. core.outcome_digest reads only the decided content
    (request and client ids, kind, verdict, reason, account ids, deltas), so
    the placeholder digest, sequence and time below do not affect the value,
    and the seal equals outcome_digest(outcome) of the stored Outcome.
    """
    return outcome_digest(_decided_outcome(proposal, digest="", sequence=0, committed_at=_UNSEALED_TIME))


def _commit_failure(store: LedgerStore, proposal: Proposal) -> Rejected | None:
    if proposal.status is not ProposalStatus.pending:
        return _fail("CommitProposal", 1, f"proposal is {proposal.status.value}, not pending")
    if proposal.epoch != store.journal.epoch:
        return _fail("CommitProposal", 2, f"proposal epoch {proposal.epoch} != journal {store.journal.epoch}")
    if _prior_outcome(store, proposal) is not None:
        return _fail("CommitProposal", 3, "an outcome already exists for this key")
    if not (proposal.is_quarantine or (_snapshot_matches(store, proposal) and sound_effect(store, proposal)
                                       and endorsed(store, proposal))):
        return _fail("CommitProposal", 4,
                     "stale account versions, an effect that breaks a money invariant, or too few signed votes")
    return None


@implements("CommitProposal")
def commit_proposal(store: LedgerStore, proposal: Proposal) -> Outcome:
    """Rule CommitProposal: take the next sequence, create the Outcome, apply it, record the position.

    Outcome insert, core's Apply effects, Books, Position and checkpoint
    advance happen in one transaction (settled decision on the boundary).
    The Outcome's digest is ``outcome_seal(proposal)``, not the vote digest,
    so core's DigestSealsContent holds for every committed Outcome.
    """
    with store.transaction() as txn:
        _raise_if(_commit_failure(store, proposal))
        request = proposal.request
        sequence = store.journal.next_sequence
        txn.set(store.journal, "next_sequence", sequence + 1)
        txn.set(proposal, "sequence", sequence)
        txn.set(proposal, "committed_at", txn.now)
        txn.set(proposal, "status", ProposalStatus.committed)
        outcome = _decided_outcome(
            proposal, digest=outcome_seal(proposal), sequence=sequence, committed_at=txn.now
        )
        _create_outcome(store, outcome)
        if _is_log(request):
            _record_position(
                store,
                Position(partition=_int(request.partition), offset=_int(request.offset),
                         disposition=Disposition.committed, recorded_at=txn.now),
            )
        txn.events.append(ProposalSettled(proposal=proposal, outcome=outcome))
        return outcome


def _int(value: int | None) -> int:
    """A log request always carries partition and offset; refuse one that does not."""
    if value is None:
        raise ValueError("a log-channel request must carry partition and offset")
    return value


def _create_outcome(store: LedgerStore, outcome: Outcome) -> None:
    """`core/Outcome.created` inside the commit transaction, with core's Apply rules.

    core.CoreState.record_outcome inserts under the unique (client_id,
    request_id) index and fires the Apply rule; the undo log remembers every
    row it may touch so a failing batch leaves core's state untouched too.
    """
    txn = _current(store)
    core = store.core
    txn.snapshot(core.books)
    for account_id in {outcome.account_id, outcome.counterparty_id}:
        if account_id is None:
            continue
        account = core.account(account_id)
        if account is not None:
            txn.snapshot(account)
        txn.remember_key(core.accounts, account_id)
    txn.remember_key(core.outcomes, (outcome.client_id, outcome.request_id))
    txn.remember_member(core.sequences, outcome.sequence)
    # outcome.applied needs no undo: after a rollback the Outcome is unreachable
    # (not indexed, not linked from its request, carried by no event).
    txn.remember_attr(outcome.request, "outcome")
    core.record_outcome(outcome)
    txn.events.append(OutcomeCommitted(outcome=outcome))


def _current(store: LedgerStore) -> _Transaction:
    if store._txn is None:  # pragma: no cover - internal misuse
        raise RuntimeError("entity creation outside a ledger transaction")
    return store._txn


def _settle_failure(store: LedgerStore, proposal: Proposal) -> None:
    """Raise the reason a proposal cannot be settled at all (it is not pending)."""
    if proposal.status is not ProposalStatus.pending:
        raise _fail("Proposal.created", 0, f"proposal is {proposal.status.value}, not pending")


def _settle(store: LedgerStore, proposal: Proposal) -> None:
    """Run exactly one of the commit rules (they partition a pending proposal)."""
    if _fence_failure(store, proposal) is None:
        fence_stale_proposal(store, proposal)
    elif _duplicate_failure(store, proposal) is None:
        detect_duplicate_proposal(store, proposal)
    elif _unendorsed_failure(store, proposal) is None:
        refuse_unendorsed_proposal(store, proposal)
    elif _stale_failure(store, proposal) is None:
        detect_stale_snapshot(store, proposal)
    else:
        commit_proposal(store, proposal)


def _settle_isolated(store: LedgerStore, txn: _Transaction, proposal: Proposal) -> None:
    """Settle one proposal under its own savepoint (settled decision on group commit).

    If settling fails (an Apply rule refuses the outcome, a malformed request,
    a storage error on its rows), everything it wrote is rolled back to the
    savepoint and it alone is refused as conflicted; the batch goes on.
    """
    txn.append(store.proposals, proposal)
    savepoint = txn.savepoint()
    try:
        _settle(store, proposal)
    except Exception:  # noqa: BLE001 - one proposal's failure must not sink its batch-mates
        txn.rollback_to(savepoint)
        # The rollback restored status pending (checked by _settle_failure
        # before the batch began), and pending -> conflicted is declared.
        txn.set(proposal, "status", ProposalStatus.conflicted)
        txn.events.append(ProposalSettled(proposal=proposal, outcome=None))


def submit_proposal(store: LedgerStore, proposal: Proposal) -> Proposal:
    """`Proposal.created`: store the proposal and settle it in one commit transaction (a batch of one)."""
    _settle_failure(store, proposal)
    with store.transaction() as txn:
        _settle_isolated(store, txn, proposal)
    return proposal


def commit_batch(store: LedgerStore, proposals: Sequence[Proposal]) -> list[Proposal]:
    """Group commit: up to config.commit_batch_max proposals per storage transaction.

    Within a batch proposals settle in arrival order, each against the
    state the previous one left, exactly as if committed one by one. Each
    settles under its own savepoint, so a proposal that fails is refused as
    conflicted on its own and never leaves a batch-mate pending.
    """
    for proposal in proposals:
        _settle_failure(store, proposal)
    size = max(1, store.config.commit_batch_max)
    for start in range(0, len(proposals), size):
        with store.transaction() as txn:
            for proposal in proposals[start:start + size]:
                _settle_isolated(store, txn, proposal)
    return list(proposals)


class GroupCommitter:
    """Collects proposals into batches: flush when full or when the first has lingered long enough.

    Time is injected as integer microseconds (the spec's
    commit_linger_micros has no sub-second Duration).
    """

    def __init__(self, store: LedgerStore) -> None:
        self.store = store
        self.pending: list[Proposal] = []
        self._first_at: int | None = None

    def offer(self, proposal: Proposal, now_micros: int) -> list[Proposal]:
        """Queue a proposal; returns the settled batch if this one filled it, else []."""
        if not self.pending:
            self._first_at = now_micros
        self.pending.append(proposal)
        if len(self.pending) >= self.store.config.commit_batch_max:
            return self.flush()
        return []

    def poll(self, now_micros: int) -> list[Proposal]:
        """Flush if the oldest queued proposal has waited commit_linger_micros."""
        if self._first_at is not None and now_micros - self._first_at >= self.store.config.commit_linger_micros:
            return self.flush()
        return []

    def flush(self) -> list[Proposal]:
        """Commit everything queued as one batch.

        If the storage transaction itself fails, every proposal it took goes
        back on the queue, ahead of any newer ones: a flush never drops work.
        """
        batch, first_at = self.pending, self._first_at
        self.pending, self._first_at = [], None
        # An empty batch opens no transaction: commit_batch has nothing to settle.
        try:
            return commit_batch(self.store, batch)
        except BaseException:
            self.pending = batch + self.pending
            self._first_at = first_at
            raise


# Rules: positions and checkpoints ----------------------------------------------


def first_unrecorded_offset(store: LedgerStore, partition: int, offset: int) -> int:
    """`first_unrecorded_offset(partition, offset)`: the first offset >= `offset` without a Position.

    Positions are indexed by (partition, offset), so the walk costs one
    lookup per recorded offset in the contiguous run it crosses.
    """
    while (partition, offset) in store.positions:
        offset += 1
    return offset


def _advance_failure(store: LedgerStore, position: Position) -> Rejected | None:
    checkpoint = store.checkpoint(position.partition)
    if checkpoint is None:
        return _fail("AdvanceCheckpoint", 1, f"no checkpoint for partition {position.partition}")
    if position.offset != checkpoint.next_offset:
        return _fail("AdvanceCheckpoint", 2, f"offset {position.offset} is not next_offset {checkpoint.next_offset}")
    return None


@implements("AdvanceCheckpoint")
def advance_checkpoint(store: LedgerStore, position: Position) -> Checkpoint:
    """Rule AdvanceCheckpoint: move next_offset over the contiguous run of recorded positions.

    Only the position at next_offset moves the checkpoint, so it can never
    pass an offset whose outcome is not durable.
    """
    with store.transaction() as txn:
        _raise_if(_advance_failure(store, position))
        checkpoint = store.checkpoints[position.partition]
        txn.set(checkpoint, "next_offset", first_unrecorded_offset(store, position.partition, position.offset))
        txn.set(checkpoint, "advanced_at", txn.now)
        txn.events.append(CheckpointAdvanced(checkpoint=checkpoint))
        return checkpoint


def _record_position(store: LedgerStore, position: Position) -> Position:
    """`Position.created` inside the current transaction, then AdvanceCheckpoint if it applies."""
    txn = _current(store)
    key = (position.partition, position.offset)
    if key in store.positions:  # unique (partition, offset): invariant OnePositionPerOffset
        raise InvariantViolation(f"OnePositionPerOffset: offset {key} already has a position")
    txn.put(store.positions, key, position)
    txn.events.append(PositionRecorded(position=position))
    if _advance_failure(store, position) is None:
        advance_checkpoint(store, position)
    return position


def create_position(store: LedgerStore, position: Position) -> Position:
    """`Position.created` by another unit (e.g. the Usher's CompleteWardenDuplicate)."""
    with store.transaction():
        return _record_position(store, position)


def create_checkpoint(store: LedgerStore, checkpoint: Checkpoint) -> Checkpoint:
    """`Checkpoint.created` (the Usher's AssignNewPartition); one checkpoint per partition."""
    with store.transaction() as txn:
        if checkpoint.partition in store.checkpoints:
            raise Rejected("Checkpoint.created", 0, f"partition {checkpoint.partition} already has a checkpoint")
        txn.put(store.checkpoints, checkpoint.partition, checkpoint)
        return checkpoint


def _dead_letter_position_failure(store: LedgerStore, letter: DeadLetter) -> Rejected | None:
    if store.position(letter.partition, letter.offset) is not None:
        return _fail("RecordDeadLetterPosition", 1, f"offset ({letter.partition}, {letter.offset}) already has a position")
    return None


@implements("RecordDeadLetterPosition")
def record_dead_letter_position(store: LedgerStore, letter: DeadLetter) -> Position:
    """Rule RecordDeadLetterPosition: the dead letter's offset is recorded as quarantined."""
    with store.transaction():
        _raise_if(_dead_letter_position_failure(store, letter))
        return _record_position(
            store,
            Position(partition=letter.partition, offset=letter.offset,
                     disposition=Disposition.quarantined, recorded_at=letter.quarantined_at),
        )


def create_dead_letter(store: LedgerStore, letter: DeadLetter) -> DeadLetter:
    """`DeadLetter.created` (by the Usher): hold it and record its position in the same transaction."""
    with store.transaction() as txn:
        txn.append(store.dead_letters, letter)
        txn.events.append(DeadLetterRecorded(letter=letter))
        if _dead_letter_position_failure(store, letter) is None:
            record_dead_letter_position(store, letter)
    return letter


def _acknowledge_failure(operator: Operator, letter: DeadLetter) -> Rejected | None:
    if letter.status is not DeadLetterStatus.held:
        return _fail("AcknowledgeDeadLetter", 1, f"dead letter is {letter.status.value}, not held")
    if OperatorRole(operator.role) is not OperatorRole.responder:
        return _fail("AcknowledgeDeadLetter", 2, f"{operator.name} is not a responder")
    return None


@implements("AcknowledgeDeadLetter")
def acknowledge_dead_letter(store: LedgerStore, operator: Operator, letter: DeadLetter) -> DeadLetter:
    """Rule AcknowledgeDeadLetter: a named responder acknowledges a held dead letter (who and when)."""
    with store.transaction() as txn:
        _raise_if(_acknowledge_failure(operator, letter))
        txn.set(letter, "acknowledged_by", operator)
        txn.set(letter, "acknowledged_at", txn.now)
        txn.set(letter, "status", DeadLetterStatus.acknowledged)
        txn.events.append(DeadLetterAcknowledged(letter=letter))
        return letter


# Invariants ------------------------------------------------------------------------


def one_grant_per_epoch(store: LedgerStore) -> bool:
    """invariant OneGrantPerEpoch: an epoch is granted at most once."""
    epochs = [g.epoch for g in store.grants]
    return len(epochs) == len(set(epochs))


def journal_holds_latest_epoch(store: LedgerStore) -> bool:
    """invariant JournalHoldsLatestEpoch: every grant's epoch <= journal.epoch."""
    return all(g.epoch <= store.journal.epoch for g in store.grants)


def commits_carry_granted_epochs(store: LedgerStore) -> bool:
    """invariant CommitsCarryGrantedEpochs: committed proposals carry epochs <= journal.epoch."""
    return all(
        p.epoch <= store.journal.epoch for p in store.proposals if p.status is ProposalStatus.committed
    )


def committed_outcomes_never_change(store: LedgerStore) -> bool:
    """invariant CommittedOutcomesNeverChange: a committed proposal's outcome carries outcome_seal(p).

    The seal is recomputed from the proposal (the decision the quorum agreed
    on), so the check fails if the stored Outcome's digest was replaced or if
    it is missing altogether.
    """
    return all(
        p.request.outcome is not None and p.request.outcome.digest == outcome_seal(p)
        for p in store.proposals
        if p.status is ProposalStatus.committed
    )


def committed_sequences_below_next(store: LedgerStore) -> bool:
    """invariant CommittedSequencesBelowNext: every committed sequence < journal.next_sequence."""
    return all(
        p.sequence is not None and p.sequence < store.journal.next_sequence
        for p in store.proposals
        if p.status is ProposalStatus.committed
    )


def one_position_per_offset(store: LedgerStore) -> bool:
    """invariant OnePositionPerOffset: no two Positions share (partition, offset)."""
    keys = [(p.partition, p.offset) for p in store.positions.values()]
    return len(keys) == len(set(keys))


def dead_letters_have_positions(store: LedgerStore) -> bool:
    """invariant DeadLettersHavePositions: every DeadLetter's offset has a Position."""
    return all(store.position(d.partition, d.offset) is not None for d in store.dead_letters)


def endorsement_quorum_outnumbers_faults(store: LedgerStore) -> bool:
    """invariant EndorsementQuorumOutnumbersFaults: f >= 0 and quorum >= f + 1."""
    config = store.config
    return config.fault_budget >= 0 and config.endorsement_quorum >= config.fault_budget + 1


def check_endorsement_quorum(config: Config) -> None:
    """Refuse a config whose signed-vote quorum f lying replicas could reach (start-up check)."""
    if not (config.fault_budget >= 0 and config.endorsement_quorum >= config.fault_budget + 1):
        raise InvariantViolation(
            f"EndorsementQuorumOutnumbersFaults: fault_budget={config.fault_budget}, "
            f"endorsement_quorum={config.endorsement_quorum} (need at least {config.fault_budget + 1})"
        )


INVARIANTS: dict[str, Callable[[LedgerStore], bool]] = {
    "OneGrantPerEpoch": one_grant_per_epoch,
    "JournalHoldsLatestEpoch": journal_holds_latest_epoch,
    "CommitsCarryGrantedEpochs": commits_carry_granted_epochs,
    "CommittedOutcomesNeverChange": committed_outcomes_never_change,
    "CommittedSequencesBelowNext": committed_sequences_below_next,
    "OnePositionPerOffset": one_position_per_offset,
    "DeadLettersHavePositions": dead_letters_have_positions,
    "EndorsementQuorumOutnumbersFaults": endorsement_quorum_outnumbers_faults,
}


def violated_invariants(store: LedgerStore) -> list[str]:
    """Names of the ledger invariants that do not hold."""
    return [name for name, holds in INVARIANTS.items() if not holds(store)]


def check_invariants(store: LedgerStore) -> None:
    """Raise InvariantViolation naming every ledger invariant that does not hold."""
    broken = violated_invariants(store)
    if broken:
        raise InvariantViolation("ledger invariants violated: " + ", ".join(broken))


# Actor and surfaces ------------------------------------------------------------------


class LedgerResponder:
    """actor LedgerResponder: identified_by core/Operator where role = responder."""

    @staticmethod
    def identifies(operator: Operator) -> bool:
        """Whether this operator acts as a LedgerResponder."""
        return OperatorRole(operator.role) is OperatorRole.responder

    @staticmethod
    def require(operator: Operator, surface: str) -> None:
        """Refuse a surface to anyone who is not a responder."""
        if not LedgerResponder.identifies(operator):
            raise AccessDenied(surface, 0, f"{operator.name} is not a LedgerResponder")


class DeadLetterQueue:
    """surface DeadLetterQueue: a responder's view of one held dead letter.

    @guarantee NothingSilentlyDiscarded: a letter leaves this surface only
    through AcknowledgeDeadLetter, which records who and when.
    """

    ACTIONS = ("AcknowledgeDeadLetter",)

    def __init__(self, store: LedgerStore, responder: Operator, letter: DeadLetter) -> None:
        LedgerResponder.require(responder, "DeadLetterQueue")
        if letter.status is not DeadLetterStatus.held:
            raise Rejected("DeadLetterQueue", 0, "context letter must be held")
        self.store = store
        self.responder = responder
        self.letter = letter

    @classmethod
    def open(cls, store: LedgerStore, responder: Operator) -> list[DeadLetterQueue]:
        """One surface instance per held dead letter (`context letter: DeadLetter where status = held`)."""
        LedgerResponder.require(responder, "DeadLetterQueue")
        return [cls(store, responder, letter) for letter in store.held_dead_letters()]

    def exposes(self) -> dict[str, Any]:
        """Exactly the exposed fields: partition, offset, payload_digest, cause, attempts, quarantined_at."""
        letter = self.letter
        return {
            "partition": letter.partition,
            "offset": letter.offset,
            "payload_digest": letter.payload_digest,
            "cause": letter.cause,
            "attempts": letter.attempts,
            "quarantined_at": letter.quarantined_at,
        }

    def provides(self) -> tuple[str, ...]:
        """`AcknowledgeDeadLetter(responder, letter) when letter.status = held`."""
        return self.ACTIONS if self.letter.status is DeadLetterStatus.held else ()

    def acknowledge(self) -> DeadLetter:
        """Invoke AcknowledgeDeadLetter as this surface's responder."""
        if "AcknowledgeDeadLetter" not in self.provides():
            raise Rejected("DeadLetterQueue", 0, "AcknowledgeDeadLetter is not offered for this letter")
        return acknowledge_dead_letter(self.store, self.responder, self.letter)


class DeadLetterHistory:
    """surface DeadLetterHistory: a responder's view of one acknowledged dead letter."""

    def __init__(self, store: LedgerStore, responder: Operator, letter: DeadLetter) -> None:
        LedgerResponder.require(responder, "DeadLetterHistory")
        if letter.status is not DeadLetterStatus.acknowledged:
            raise Rejected("DeadLetterHistory", 0, "context letter must be acknowledged")
        # The surface provides no operation, so it keeps only the letter it shows
        # (``store`` and ``responder`` are taken for symmetry with DeadLetterQueue).
        self.letter = letter

    @classmethod
    def open(cls, store: LedgerStore, responder: Operator) -> list[DeadLetterHistory]:
        """One surface instance per acknowledged dead letter."""
        LedgerResponder.require(responder, "DeadLetterHistory")
        return [cls(store, responder, letter) for letter in store.acknowledged_dead_letters()]

    def exposes(self) -> dict[str, Any]:
        """Exactly the exposed fields: offset, acknowledged_by.name, acknowledged_at."""
        letter = self.letter
        assert letter.acknowledged_by is not None  # when-presence: acknowledged
        return {
            "offset": letter.offset,
            "acknowledged_by.name": letter.acknowledged_by.name,
            "acknowledged_at": letter.acknowledged_at,
        }
