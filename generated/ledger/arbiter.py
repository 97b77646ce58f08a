"""Unit `arbiter` (arbiter.allium): deterministic evaluation of one operation.

Given a request and a snapshot of the accounts it names, the Arbiter produces a
verdict, a rejection reason and the signed balance deltas. It reads nothing
else: no clock, no storage, no randomness, no configuration that could differ
between replicas (settled decision "What does the Arbiter read besides its
arguments?"). That determinism is what makes the Clerk's digest comparison
meaningful.

Layout:

* ``decide_open`` .. ``decide_close``: one pure function per operation kind over
  plain integers (contract DeterministicEvaluation @guidance).
* ``evaluate``: the contract operation ``DeterministicEvaluation.evaluate``; a
  Decision for every well-formed input, and ``EvaluationFault`` (never a
  rejection reason) for an unexpected internal condition (Totality).
* ``Evaluation``: one replica's evaluation of one attempt at one request; the
  ``evaluate_*`` rule functions decide it (pending -> decided), and
  ``record_evaluation_fault`` marks it faulted when evaluation failed
  (pending -> faulted). ``decide_evaluation`` is the replica's host: it runs
  the matching rule and records a fault instead of a Decision.
* ``check_*``: the invariants, callable from tests. A broken invariant raises
  InvariantViolation whose message starts with the invariant's name, or with the
  qualified field (``Evaluation.fault``) for a field present against its ``when``.
* Refusals (``Rejected``) name the rule and the clause: N for the rule's Nth
  requires, 0 for one that is not a requires (``Evaluation.status`` for an
  undeclared transition, ``Evaluation.created`` for a kind no rule handles).
* ``EvaluationBoundary``: the in-process surface fulfilling the contract.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from allium.verify import implements

from ledger.core import (
    AccountStatus,
    Config as CoreConfig,
    Envelope,
    InvariantViolation,
    OperationKind,
    Rejected,
    RejectReason,
    Request,
    TransitionRejected,
    Verdict,
)

__all__ = [
    "AccountSnapshot",
    "Decision",
    "DeterministicEvaluation",
    "EvaluationStatus",
    "Evaluation",
    "EvaluationFault",
    "EvaluationFaulted",
    "record_evaluation_fault",
    "Config",
    "EVALUATION_TRANSITIONS",
    "check_evaluation_transition",
    "decide_open",
    "decide_deposit",
    "decide_withdrawal",
    "decide_transfer",
    "decide_close",
    "evaluate",
    "Arbiter",
    "evaluate_open",
    "evaluate_deposit",
    "evaluate_withdrawal",
    "evaluate_transfer",
    "evaluate_close",
    "decide_evaluation",
    "replay",
    "check_snapshot_versions_match_presence",
    "check_decided_rejections_move_nothing",
    "check_decided_acceptances_keep_balances_legal",
    "check_evaluation",
    "check_honest_replicas_agree",
    "EvaluationBoundary",
]


# Config ------------------------------------------------------------------------

_CORE_DEFAULTS = CoreConfig()


@dataclass(frozen=True)
class Config:
    """config block of arbiter.allium: the bounds are core's, pinned per replica.

    ConfigIsPinned: these two values are the only tunables evaluate reads, and
    they are part of the replica's identity.
    """

    max_amount_minor: int = _CORE_DEFAULTS.max_amount_minor
    max_balance_minor: int = _CORE_DEFAULTS.max_balance_minor


DEFAULT_CONFIG = Config()


# Values --------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class AccountSnapshot:
    """value AccountSnapshot: one account as the Registrar read it for a round."""

    present: bool
    status: AccountStatus | None = None
    balance_minor: int = 0
    version: int = 0

    @classmethod
    def absent(cls) -> AccountSnapshot:
        """The snapshot of an account that does not exist (version 0)."""
        return cls(present=False, status=None, balance_minor=0, version=0)


@dataclass(frozen=True, kw_only=True)
class Decision:
    """value Decision: verdict, reason and the two signed balance deltas."""

    verdict: Verdict
    reason: RejectReason | None
    account_delta_minor: int
    counterparty_delta_minor: int

    @property
    def accepted(self) -> bool:
        """True when the verdict is accepted."""
        return self.verdict == Verdict.accepted


def _reject(reason: RejectReason) -> Decision:
    """A rejection moves nothing (Evaluation.DecidedRejectionsMoveNothing)."""
    return Decision(
        verdict=Verdict.rejected, reason=reason, account_delta_minor=0, counterparty_delta_minor=0
    )


def _accept(account_delta: int, counterparty_delta: int) -> Decision:
    """An acceptance carries no reason."""
    return Decision(
        verdict=Verdict.accepted,
        reason=None,
        account_delta_minor=account_delta,
        counterparty_delta_minor=counterparty_delta,
    )


# Contract ------------------------------------------------------------------------


@runtime_checkable
class DeterministicEvaluation(Protocol):
    """contract DeterministicEvaluation.

    Determinism, Purity, Totality and ConfigIsPinned: for identical inputs the
    same Decision, no I/O or hidden state, a Decision for every well-formed
    input (an unexpected internal condition raises EvaluationFault, never a
    rejection reason), and only the two config bounds are read.
    """

    def evaluate(
        self, envelope: Envelope, primary: AccountSnapshot, counterparty: AccountSnapshot
    ) -> Decision:
        """DeterministicEvaluation.evaluate."""
        ...


# Pure per-kind decision functions ---------------------------------------------------
#
# Reasons are tested in RejectReason declaration order, exactly as the Evaluate
# rules list them; the first that applies wins (settled decision on precedence).
# Python integers are unbounded, so every comparison below is exact on every
# platform: no wrap-around can make replicas disagree (settled decision on
# overflow). Sums are only formed after the amount has been bounded.


def _is_int(value: object) -> bool:
    """A well-formed integer amount (bool is an int subclass but never an amount)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _amount_invalid(amount: object, config: Config) -> bool:
    """amount <= 0 or amount > config.max_amount_minor (malformed counts as invalid)."""
    return not _is_int(amount) or amount <= 0 or amount > config.max_amount_minor  # type: ignore[operator]


def _balance(snapshot: AccountSnapshot) -> int:
    """The snapshot's balance, checked to be a signed 64-bit integer (@guidance: checked
    64-bit arithmetic).

    A balance outside that type is a snapshot that breaks its own types: it raises
    (so evaluate signals EvaluationFault), rather than being compared and answered
    with a rejection reason the input did not earn (Totality). Amounts are bounded
    by max_amount_minor before any sum is formed, so every sum stays far inside
    the range (settled decision on overflow).
    """
    value = snapshot.balance_minor
    # The signed 64-bit range, -2**63 .. 2**63 - 1, both ends included.
    if not _is_int(value) or not -(1 << 63) <= value < (1 << 63):
        raise TypeError(f"balance_minor {value!r} is not a signed 64-bit integer")
    return value


def _is_closed(snapshot: AccountSnapshot) -> bool:
    return snapshot.status == AccountStatus.closed


def decide_open(amount_minor: int, primary: AccountSnapshot) -> Decision:
    """Decision of rule EvaluateOpen: invalid_amount, account_exists, else accepted."""
    if not _is_int(amount_minor) or amount_minor != 0:
        return _reject(RejectReason.invalid_amount)
    if primary.present:
        return _reject(RejectReason.account_exists)
    return _accept(0, 0)


def decide_deposit(
    amount_minor: int, primary: AccountSnapshot, config: Config = DEFAULT_CONFIG
) -> Decision:
    """Decision of rule EvaluateDeposit."""
    if _amount_invalid(amount_minor, config):
        return _reject(RejectReason.invalid_amount)
    if not primary.present:
        return _reject(RejectReason.account_missing)
    if _is_closed(primary):
        return _reject(RejectReason.account_closed)
    if _balance(primary) + amount_minor > config.max_balance_minor:
        return _reject(RejectReason.balance_limit)
    return _accept(amount_minor, 0)


def decide_withdrawal(
    amount_minor: int, primary: AccountSnapshot, config: Config = DEFAULT_CONFIG
) -> Decision:
    """Decision of rule EvaluateWithdrawal."""
    if _amount_invalid(amount_minor, config):
        return _reject(RejectReason.invalid_amount)
    if not primary.present:
        return _reject(RejectReason.account_missing)
    if _is_closed(primary):
        return _reject(RejectReason.account_closed)
    if _balance(primary) < amount_minor:
        return _reject(RejectReason.insufficient_funds)
    return _accept(0 - amount_minor, 0)


def decide_transfer(
    amount_minor: int,
    account_id: str,
    counterparty_id: str | None,
    primary: AccountSnapshot,
    counterparty: AccountSnapshot,
    config: Config = DEFAULT_CONFIG,
) -> Decision:
    """Decision of rule EvaluateTransfer.

    same_account is checked before any snapshot field so that a self-transfer
    is rejected identically whether or not the account exists (@guidance).
    """
    if _amount_invalid(amount_minor, config):
        return _reject(RejectReason.invalid_amount)
    if counterparty_id == account_id:
        return _reject(RejectReason.same_account)
    if not primary.present:
        return _reject(RejectReason.account_missing)
    if _is_closed(primary):
        return _reject(RejectReason.account_closed)
    if counterparty_id is None or not counterparty.present:
        return _reject(RejectReason.counterparty_missing)
    if _is_closed(counterparty):
        return _reject(RejectReason.counterparty_closed)
    if _balance(primary) < amount_minor:
        return _reject(RejectReason.insufficient_funds)
    if _balance(counterparty) + amount_minor > config.max_balance_minor:
        return _reject(RejectReason.balance_limit)
    return _accept(0 - amount_minor, amount_minor)


def decide_close(amount_minor: int, primary: AccountSnapshot) -> Decision:
    """Decision of rule EvaluateClose."""
    if not _is_int(amount_minor) or amount_minor != 0:
        return _reject(RejectReason.invalid_amount)
    if not primary.present:
        return _reject(RejectReason.account_missing)
    if _is_closed(primary):
        return _reject(RejectReason.account_closed)
    if _balance(primary) != 0:
        return _reject(RejectReason.balance_not_zero)
    return _accept(0, 0)


def _kind_of(kind: object) -> OperationKind | None:
    """The OperationKind of a (possibly string-valued) kind, or None if unknown."""
    if isinstance(kind, OperationKind):
        return kind
    try:
        return OperationKind(kind)
    except (ValueError, TypeError):
        return None


def _decide(
    kind: object,
    amount_minor: int,
    account_id: str,
    counterparty_id: str | None,
    primary: AccountSnapshot,
    counterparty: AccountSnapshot,
    config: Config,
) -> Decision:
    """Dispatch to the per-kind decision function."""
    op = _kind_of(kind)
    if op is OperationKind.open:
        return decide_open(amount_minor, primary)
    if op is OperationKind.deposit:
        return decide_deposit(amount_minor, primary, config)
    if op is OperationKind.withdraw:
        return decide_withdrawal(amount_minor, primary, config)
    if op is OperationKind.transfer:
        return decide_transfer(amount_minor, account_id, counterparty_id, primary, counterparty, config)
    if op is OperationKind.close:
        return decide_close(amount_minor, primary)
    # An unknown kind cannot come from a decoded Envelope (kind is typed
    # OperationKind). For an Evaluation, decide_evaluation refuses such a kind
    # before evaluate runs (a caller's mistake, never recorded as faulted).
    # ASSUMPTION: the bare contract call has no refusal channel besides its
    # Decision, and inventing a rejection reason is what Totality forbids, so
    # here it stays an EvaluationFault, as the generation before this one did.
    raise EvaluationFault(f"no decision rule for operation kind {kind!r}")


def _fault_cause(error: BaseException) -> str:
    """One line naming an unexpected internal condition, for the fault record."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _guarded(decide: Callable[[], Decision]) -> Decision:
    """Run decision code, turning any unexpected exception into EvaluationFault.

    Contract Totality: a bug (an exception inside the decision code, a snapshot
    that breaks its own types) is surfaced as a fault with a one-line cause,
    never answered as a rejection reason the input did not earn.
    """
    try:
        return decide()
    except EvaluationFault:
        raise
    except Exception as error:  # noqa: BLE001 - every unexpected condition becomes a fault
        raise EvaluationFault(_fault_cause(error)) from error


def evaluate(
    envelope: Envelope,
    primary: AccountSnapshot,
    counterparty: AccountSnapshot,
    config: Config = DEFAULT_CONFIG,
) -> Decision:
    """DeterministicEvaluation.evaluate: the pure decision for one envelope.

    Returns a Decision for every well-formed input (malformed amounts and
    missing accounts are ordinary rejections). An unexpected internal
    condition (an exception inside the decision code, a snapshot that breaks
    its own types) raises EvaluationFault: settled decision "What does a
    replica answer when evaluation itself fails?". Every honest replica runs
    this code, so answering a bug with a rejection reason would make them all
    agree on an answer the input did not earn. No logging here (@guidance).
    """
    return _guarded(
        lambda: _decide(
            envelope.kind,
            envelope.amount_minor,
            envelope.account_id,
            envelope.counterparty_id,
            primary,
            counterparty,
            config,
        )
    )


@dataclass(frozen=True)
class Arbiter:
    """An implementation of contract DeterministicEvaluation with pinned config."""

    config: Config = DEFAULT_CONFIG

    def evaluate(
        self, envelope: Envelope, primary: AccountSnapshot, counterparty: AccountSnapshot
    ) -> Decision:
        """DeterministicEvaluation.evaluate with this replica's pinned bounds."""
        return evaluate(envelope, primary, counterparty, self.config)


# Entity Evaluation ------------------------------------------------------------------


class EvaluationStatus(str, enum.Enum):
    """Evaluation.status: pending | decided | faulted."""

    pending = "pending"
    decided = "decided"
    faulted = "faulted"


#: transitions status { pending -> decided; pending -> faulted; terminal: decided, faulted }.
EVALUATION_TRANSITIONS: Mapping[EvaluationStatus, frozenset[EvaluationStatus]] = {
    EvaluationStatus.pending: frozenset({EvaluationStatus.decided, EvaluationStatus.faulted}),
    EvaluationStatus.decided: frozenset(),
    EvaluationStatus.faulted: frozenset(),
}

#: Terminal states of Evaluation.status.
EVALUATION_TERMINAL: frozenset[EvaluationStatus] = frozenset(
    {EvaluationStatus.decided, EvaluationStatus.faulted}
)


class EvaluationFault(Exception):
    """evaluate could not decide: an unexpected internal condition (contract Totality).

    Not a ``Rejected``: it is a fault of the replica's code or inputs, never a
    client-facing answer. ``cause`` is one line naming what went wrong.
    """

    def __init__(self, cause: str) -> None:
        super().__init__(cause)
        self.cause = cause


@dataclass(frozen=True)
class EvaluationFaulted:
    """trigger EvaluationFaulted(evaluation, cause), provided by EvaluationBoundary."""

    evaluation: Evaluation
    cause: str


def check_evaluation_transition(current: EvaluationStatus, target: EvaluationStatus) -> None:
    """Reject any Evaluation.status change the transition table does not declare."""
    current, target = EvaluationStatus(current), EvaluationStatus(target)
    if target not in EVALUATION_TRANSITIONS[current]:
        raise TransitionRejected(
            "Evaluation.status", 0, f"undeclared transition {current.value} -> {target.value}"
        )


#: The fields present exactly when status = decided.
DECIDED_FIELDS: tuple[str, ...] = (
    "verdict",
    "reason",
    "account_delta_minor",
    "counterparty_delta_minor",
)


@dataclass(eq=False, kw_only=True)
class Evaluation:
    """entity Evaluation: one replica's evaluation of one attempt at one request.

    The snapshot fields are the read set the Registrar produced, copied in so
    that nothing a replica writes is shared with another replica. The decided
    fields (verdict, reason, deltas) are None unless decided
    (``when status = decided``); ``fault`` is set exactly when faulted.
    Status only moves pending -> decided or pending -> faulted.
    """

    request: Request
    attempt: int
    replica_id: str
    primary_present: bool = False
    primary_status: AccountStatus | None = None
    primary_balance_minor: int = 0
    primary_version: int = 0
    counter_present: bool = False
    counter_status: AccountStatus | None = None
    counter_balance_minor: int = 0
    counter_version: int = 0
    status: EvaluationStatus = EvaluationStatus.pending
    verdict: Verdict | None = None
    reason: RejectReason | None = None
    account_delta_minor: int | None = None
    counterparty_delta_minor: int | None = None
    fault: str | None = None

    def __setattr__(self, name: str, value: Any) -> None:
        # Guard the status lifecycle on every assignment after construction:
        # re-assigning the same state is a no-op, anything undeclared raises.
        if name == "status":
            value = EvaluationStatus(value)
            current = self.__dict__.get("status")
            if current is not None and current != value:
                check_evaluation_transition(current, value)
        object.__setattr__(self, name, value)

    # Snapshots --------------------------------------------------------------

    @property
    def primary(self) -> AccountSnapshot:
        """The primary account's snapshot, as an AccountSnapshot value."""
        return AccountSnapshot(
            present=self.primary_present,
            status=self.primary_status,
            balance_minor=self.primary_balance_minor,
            version=self.primary_version,
        )

    @property
    def counterparty(self) -> AccountSnapshot:
        """The counterparty's snapshot, as an AccountSnapshot value."""
        return AccountSnapshot(
            present=self.counter_present,
            status=self.counter_status,
            balance_minor=self.counter_balance_minor,
            version=self.counter_version,
        )

    @property
    def envelope(self) -> Envelope:
        """The Envelope of the evaluated request (the decision's only request input)."""
        r = self.request
        return Envelope(
            request_id=r.request_id,
            client_id=r.client_id,
            kind=r.kind,
            account_id=r.account_id,
            counterparty_id=r.counterparty_id,
            owner=r.owner,
            amount_minor=r.amount_minor,
        )

    @property
    def is_decided(self) -> bool:
        """status = decided."""
        return self.status == EvaluationStatus.decided

    @property
    def is_faulted(self) -> bool:
        """status = faulted."""
        return self.status == EvaluationStatus.faulted

    @property
    def decision(self) -> Decision | None:
        """The Decision once decided, else None."""
        if not self.is_decided:
            return None
        assert self.verdict is not None
        assert self.account_delta_minor is not None
        assert self.counterparty_delta_minor is not None
        return Decision(
            verdict=self.verdict,
            reason=self.reason,
            account_delta_minor=self.account_delta_minor,
            counterparty_delta_minor=self.counterparty_delta_minor,
        )

    @classmethod
    def of(
        cls,
        request: Request,
        attempt: int,
        replica_id: str,
        primary: AccountSnapshot,
        counterparty: AccountSnapshot | None = None,
    ) -> Evaluation:
        """``Evaluation.created`` from two snapshot values (status pending)."""
        counter = counterparty if counterparty is not None else AccountSnapshot.absent()
        return cls(
            request=request,
            attempt=attempt,
            replica_id=replica_id,
            primary_present=primary.present,
            primary_status=primary.status,
            primary_balance_minor=primary.balance_minor,
            primary_version=primary.version,
            counter_present=counter.present,
            counter_status=counter.status,
            counter_balance_minor=counter.balance_minor,
            counter_version=counter.version,
        )


# Rules -------------------------------------------------------------------------------
#
# A refusal names the rule and the clause, as core does: clause N is the rule's
# Nth `requires` (the N of rule-failure.Rule.N), clause 0 a refusal that is not
# a requires (an undeclared Evaluation.status change, or an Evaluation no
# Evaluate rule handles, named "Evaluation.created"). A refused rule changes
# nothing.


def _require_pending_kind(evaluation: Evaluation, rule: str, kind: OperationKind) -> None:
    """The two requires clauses shared by every Evaluate rule (#1 pending, #2 kind)."""
    if evaluation.status != EvaluationStatus.pending:
        raise Rejected(rule, 1, f"evaluation is {EvaluationStatus(evaluation.status).value}, not pending")
    if _kind_of(evaluation.request.kind) is not kind:
        raise Rejected(rule, 2, f"request kind is {evaluation.request.kind}, not {kind.value}")


def _settle(evaluation: Evaluation, decide: Callable[[], Decision]) -> Decision:
    """Apply an Evaluate rule's ensures together: the decided fields, then status = decided.

    The Decision is computed before anything is written, so a fault in the
    decision code (EvaluationFault) leaves the evaluation untouched and pending
    for the host to record (RecordEvaluationFault). Requires #1 has already
    held, so pending -> decided is a declared transition and the final status
    assignment cannot be refused after the fields are written. Fields go before
    the status so that an observer of ``status becomes decided`` (the Clerk's
    CastVote) sees them all.
    """
    decision = _guarded(decide)
    evaluation.verdict = decision.verdict
    evaluation.reason = decision.reason
    evaluation.account_delta_minor = decision.account_delta_minor
    evaluation.counterparty_delta_minor = decision.counterparty_delta_minor
    evaluation.status = EvaluationStatus.decided
    return decision


@implements("EvaluateOpen")
def evaluate_open(evaluation: Evaluation, config: Config = DEFAULT_CONFIG) -> Decision:
    """rule EvaluateOpen: when Evaluation.created, kind = open."""
    _require_pending_kind(evaluation, "EvaluateOpen", OperationKind.open)
    return _settle(evaluation, lambda: decide_open(evaluation.request.amount_minor, evaluation.primary))


@implements("EvaluateDeposit")
def evaluate_deposit(evaluation: Evaluation, config: Config = DEFAULT_CONFIG) -> Decision:
    """rule EvaluateDeposit: when Evaluation.created, kind = deposit."""
    _require_pending_kind(evaluation, "EvaluateDeposit", OperationKind.deposit)
    return _settle(
        evaluation, lambda: decide_deposit(evaluation.request.amount_minor, evaluation.primary, config)
    )


@implements("EvaluateWithdrawal")
def evaluate_withdrawal(evaluation: Evaluation, config: Config = DEFAULT_CONFIG) -> Decision:
    """rule EvaluateWithdrawal: when Evaluation.created, kind = withdraw."""
    _require_pending_kind(evaluation, "EvaluateWithdrawal", OperationKind.withdraw)
    return _settle(
        evaluation, lambda: decide_withdrawal(evaluation.request.amount_minor, evaluation.primary, config)
    )


@implements("EvaluateTransfer")
def evaluate_transfer(evaluation: Evaluation, config: Config = DEFAULT_CONFIG) -> Decision:
    """rule EvaluateTransfer: when Evaluation.created, kind = transfer."""
    _require_pending_kind(evaluation, "EvaluateTransfer", OperationKind.transfer)
    r = evaluation.request
    return _settle(
        evaluation,
        lambda: decide_transfer(
            r.amount_minor,
            r.account_id,
            r.counterparty_id,
            evaluation.primary,
            evaluation.counterparty,
            config,
        ),
    )


@implements("EvaluateClose")
def evaluate_close(evaluation: Evaluation, config: Config = DEFAULT_CONFIG) -> Decision:
    """rule EvaluateClose: when Evaluation.created, kind = close."""
    _require_pending_kind(evaluation, "EvaluateClose", OperationKind.close)
    return _settle(evaluation, lambda: decide_close(evaluation.request.amount_minor, evaluation.primary))


#: The Evaluate rule for each operation kind, with the rule's name.
_RULES: Mapping[OperationKind, tuple[str, Callable[[Evaluation, Config], Decision]]] = {
    OperationKind.open: ("EvaluateOpen", evaluate_open),
    OperationKind.deposit: ("EvaluateDeposit", evaluate_deposit),
    OperationKind.withdraw: ("EvaluateWithdrawal", evaluate_withdrawal),
    OperationKind.transfer: ("EvaluateTransfer", evaluate_transfer),
    OperationKind.close: ("EvaluateClose", evaluate_close),
}


@implements("RecordEvaluationFault")
def record_evaluation_fault(evaluation: Evaluation, cause: str) -> Evaluation:
    """rule RecordEvaluationFault: when EvaluationFaulted(evaluation, cause), a pending
    evaluation becomes faulted with its cause; it has no Decision (so no vote
    for a decision, only the Clerk's fault vote)."""
    if evaluation.status != EvaluationStatus.pending:
        raise Rejected(
            "RecordEvaluationFault", 1,
            f"evaluation is {EvaluationStatus(evaluation.status).value}, not pending",
        )
    # Field before status, as in _settle: an observer of `status becomes
    # faulted` (the Clerk's CastFaultVote) sees the cause.
    evaluation.fault = cause
    evaluation.status = EvaluationStatus.faulted
    return evaluation


def _rule_for(evaluation: Evaluation) -> Callable[[Evaluation, Config], Decision]:
    """The Evaluate rule whose kind is the request's, or the refusal when there is none.

    An Evaluation no Evaluate rule handles is the caller's mistake, not a fault
    of the decision code: it is refused (named "Evaluation.created", clause 0,
    quoting each rule's own refusal), stays pending and is never recorded as
    faulted (arbiter.allium, "How does a refusal or a broken invariant say what
    failed?").
    """
    op = _kind_of(evaluation.request.kind)
    if op in _RULES:
        return _RULES[op][1]
    refusals: list[str] = []
    for kind, (name, _rule) in _RULES.items():
        try:
            _require_pending_kind(evaluation, name, kind)
        except Rejected as refusal:
            refusals.append(str(refusal))
    raise Rejected(
        "Evaluation.created", 0,
        f"no Evaluate rule handles kind {evaluation.request.kind!r}: " + "; ".join(refusals),
    )


def decide_evaluation(evaluation: Evaluation, config: Config = DEFAULT_CONFIG) -> Decision:
    """The replica's host on ``Evaluation.created``: run the Evaluate rule matching the kind.

    Raises Rejected (changing nothing) when the evaluation is not pending or
    its kind is unknown. If the decision code fails, the evaluation is
    recorded as faulted (EvaluationFaulted -> RecordEvaluationFault) and the
    EvaluationFault is raised to the caller: there is no Decision to return.
    """
    rule = _rule_for(evaluation)
    try:
        return rule(evaluation, config)
    except EvaluationFault as fault:
        # The rule wrote nothing (the Decision is computed before any field):
        # the evaluation is still pending, so the fault can be recorded.
        record_evaluation_fault(evaluation, fault.cause)
        raise


def replay(evaluation: Evaluation, config: Config = DEFAULT_CONFIG) -> Decision:
    """Re-run an Evaluation's inputs through evaluate (guarantee NoHiddenInputs).

    Used to test a fenced replica before it rejoins: the result must equal the
    Evaluation's recorded Decision.
    """
    return evaluate(evaluation.envelope, evaluation.primary, evaluation.counterparty, config)


# Invariants ------------------------------------------------------------------------
#
# A broken invariant raises InvariantViolation whose message starts with the
# invariant's bare name (SnapshotVersionsMatchPresence, ...), or, for a field
# present against its `when` clause, with the qualified field (Evaluation.fault).


def _violation(ok: bool, name: str, why: str) -> None:
    if not ok:
        raise InvariantViolation(f"{name}: {why}")


def check_snapshot_versions_match_presence(evaluation: Evaluation) -> None:
    """invariant Evaluation.SnapshotVersionsMatchPresence."""
    e = evaluation
    _violation(
        (not e.primary_present or e.primary_version >= 1)
        and (e.primary_present or e.primary_version == 0)
        and (e.counter_present or e.counter_version == 0),
        "SnapshotVersionsMatchPresence",
        f"primary present={e.primary_present} v{e.primary_version}, "
        f"counter present={e.counter_present} v{e.counter_version}",
    )


def _is_decided_as(evaluation: Evaluation, verdict: Verdict) -> bool:
    """status = decided and verdict = ``verdict``: the antecedent of the two value invariants."""
    return evaluation.status == EvaluationStatus.decided and evaluation.verdict == verdict


def check_decided_rejections_move_nothing(evaluation: Evaluation) -> None:
    """invariant Evaluation.DecidedRejectionsMoveNothing."""
    e = evaluation
    delta, counter_delta = e.account_delta_minor, e.counterparty_delta_minor
    # An absent delta is the `when` check's finding (Evaluation.account_delta_minor,
    # Evaluation.counterparty_delta_minor), not this invariant's: it is not judged here.
    if not _is_decided_as(e, Verdict.rejected) or delta is None or counter_delta is None:
        return
    _violation(
        delta == 0 and counter_delta == 0,
        "DecidedRejectionsMoveNothing",
        f"rejected with deltas {delta}/{counter_delta}",
    )


def check_decided_acceptances_keep_balances_legal(evaluation: Evaluation) -> None:
    """invariant Evaluation.DecidedAcceptancesKeepBalancesLegal."""
    e = evaluation
    delta, counter_delta = e.account_delta_minor, e.counterparty_delta_minor
    # As above: an absent delta is named by the `when` check, not by this invariant.
    if not _is_decided_as(e, Verdict.accepted) or delta is None or counter_delta is None:
        return
    _violation(
        e.primary_balance_minor + delta >= 0 and e.counter_balance_minor + counter_delta >= 0,
        "DecidedAcceptancesKeepBalancesLegal",
        f"accepted deltas {delta}/{counter_delta} "
        f"on balances {e.primary_balance_minor}/{e.counter_balance_minor}",
    )


#: Decided fields a decided evaluation may still leave null (`reason: RejectReason?`).
_OPTIONAL_WHEN_DECIDED: frozenset[str] = frozenset({"reason"})


def check_decided_fields_presence(evaluation: Evaluation) -> None:
    """The ``when status = decided`` presence of verdict and the two deltas.

    Also the absence of every decided field (``reason`` included) unless
    decided, and ``fault: String when status = faulted``. A breach is named by
    the qualified field, such as ``Evaluation.verdict`` or ``Evaluation.fault``.
    ``reason`` is optional even when decided (null on acceptance), so only its
    absence while not decided is checked.
    """
    e = evaluation
    state = EvaluationStatus(e.status)
    decided = state == EvaluationStatus.decided
    for name in DECIDED_FIELDS:
        present = getattr(e, name) is not None
        if decided:
            _violation(
                present or name in _OPTIONAL_WHEN_DECIDED,
                f"Evaluation.{name}",
                "decided evaluation lacks it",
            )
        else:
            _violation(not present, f"Evaluation.{name}", f"{state.value} evaluation carries it")
    _violation(
        (e.fault is not None) == (state == EvaluationStatus.faulted),
        "Evaluation.fault",
        f"fault={e.fault!r} on a {state.value} evaluation",
    )


def check_evaluation(evaluation: Evaluation) -> None:
    """All entity-level invariants of Evaluation.

    Runs every one of them: SnapshotVersionsMatchPresence, the `when` presence
    of each field, DecidedRejectionsMoveNothing and
    DecidedAcceptancesKeepBalancesLegal; the first broken one is named.
    """
    check_snapshot_versions_match_presence(evaluation)
    check_decided_fields_presence(evaluation)
    check_decided_rejections_move_nothing(evaluation)
    check_decided_acceptances_keep_balances_legal(evaluation)


def _trust_all(_replica_id: str) -> bool:
    return True


def check_honest_replicas_agree(
    evaluations: Iterable[Evaluation],
    is_trusted: Callable[[str], bool] = _trust_all,
) -> None:
    """invariant HonestReplicasAgree.

    Two decided evaluations of the same (request, attempt) by trusted replicas
    must carry the same verdict, reason and deltas. ``is_trusted`` is injected
    (the spec leaves it abstract; the Clerk knows which replicas are fenced).
    """
    first: dict[tuple[str, str, int], tuple[Evaluation, Decision]] = {}
    for e in evaluations:
        if e.status != EvaluationStatus.decided or not is_trusted(e.replica_id):
            continue
        decision = e.decision
        assert decision is not None
        # A Request is identified by its idempotency key (client_id, request_id).
        slot = (e.request.client_id, e.request.request_id, e.attempt)
        seen = first.get(slot)
        if seen is None:
            first[slot] = (e, decision)
            continue
        other, other_decision = seen
        _violation(
            decision == other_decision,
            "HonestReplicasAgree",
            f"replicas {other.replica_id} and {e.replica_id} disagree on attempt "
            f"{e.attempt}: {other_decision} vs {decision}",
        )


# Surface ---------------------------------------------------------------------------


@dataclass(frozen=True)
class EvaluationBoundary:
    """surface EvaluationBoundary: exposes AccountSnapshot and Decision; fulfils
    DeterministicEvaluation.

    The surface declares no facing actor: it is an in-process library boundary
    run on each replica (@guidance), callable by the replica's own code only.
    Guarantee NoHiddenInputs: a Decision depends only on the Envelope and the
    two snapshots, so ``evaluate`` here equals ``replay`` of an Evaluation.
    Provides EvaluationFaulted: the replica's host reports a failed evaluation
    through ``fault``.
    """

    config: Config = DEFAULT_CONFIG
    #: No ``facing`` clause: no remote actor; in-process callers only.
    facing: None = field(default=None, init=False)
    exposes: tuple[type, ...] = field(default=(AccountSnapshot, Decision), init=False)
    fulfils: tuple[type, ...] = field(default=(DeterministicEvaluation,), init=False)

    def evaluate(
        self, envelope: Envelope, primary: AccountSnapshot, counterparty: AccountSnapshot
    ) -> Decision:
        """DeterministicEvaluation.evaluate, as fulfilled by this surface."""
        return evaluate(envelope, primary, counterparty, self.config)

    #: provides: EvaluationFaulted(evaluation, cause).
    provides: tuple[str, ...] = field(default=("EvaluationFaulted",), init=False)

    def fault(self, evaluation: Evaluation, cause: str) -> EvaluationFaulted:
        """EvaluationFaulted(evaluation, cause): record the failed evaluation (RecordEvaluationFault)."""
        record_evaluation_fault(evaluation, cause)
        return EvaluationFaulted(evaluation=evaluation, cause=cause)
