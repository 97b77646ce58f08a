"""Unit `api` (api.allium): the REST boundary.

Admission of REST submissions, the bounded wait for their answer, the
mapping of every outcome to a definite HTTP response, and the read-only
surfaces (request status, account query, health, metrics).

This module is the library the HTTP server calls; it never performs I/O.
REST submissions enter the same pipeline as log events (Warden, Registrar,
Clerk, Ledger); the pipeline is injected as a callable and reports back
through the ``on_*`` event handlers of :class:`ApiService`.

HTTP mapping (api.allium header):

    POST /v1/requests        SubmitRequest  200 answered, 202 deferred,
                                            409 conflicted, 503 refused
    GET  /v1/requests/{id}   RequestStatus
    GET  /v1/accounts/{id}   AccountQuery
    GET  /healthz, /v1/nodes ServiceHealth, NodeHealth
    GET  /metrics            ServiceMetrics (Prometheus text format)
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from allium.verify import implements

from ledger.core import (
    AccessDenied,
    ApiClient,
    Channel,
    Envelope,
    InvariantViolation,
    OperationKind,
    Operator,
    Rejected,
    Request,
    TransitionRejected,
    fingerprint,
)

if TYPE_CHECKING:  # annotations only: keeps coupling to dependency units to types
    from ledger.clerk import Round
    from ledger.cluster import Node
    from ledger.core import Account, Outcome
    from ledger.ledger import EpochGrant, Proposal

__all__ = [
    "RefusalCause",
    "SubmissionStatus",
    "Gateway",
    "Submission",
    "Metrics",
    "Config",
    "SubmitRequest",
    "SubmissionRefused",
    "HttpResponse",
    "TERMINAL_SUBMISSION_STATUSES",
    "ApiService",
    "RequestDirectory",
    "fingerprint_of",
    "require_api_caller",
    "require_monitor",
    "submit_operations",
    "request_status",
    "account_query",
    "service_health",
    "node_health",
    "service_metrics",
    "healthz",
    "render_metrics",
    "refusal_response",
    "response_for",
    "parse_submission",
    "status_location",
    "outcome_body",
    "get_request_status",
    "get_account",
    "check_answer_is_for_this_request",
    "check_submissions_belong_to_caller",
]


def _name(value: Any) -> Any:
    """The spec name of an enum member (or the value itself), for status comparisons.

    Dependency units model inline status enums with their own Enum classes;
    comparing by the spec's value keeps this unit independent of those names.
    """
    return getattr(value, "value", value)


# Enumerations ---------------------------------------------------------------


class RefusalCause(str, enum.Enum):
    """enum RefusalCause { unavailable | malformed | suspended }."""

    unavailable = "unavailable"
    malformed = "malformed"
    suspended = "suspended"


class SubmissionStatus(str, enum.Enum):
    """Submission.status: waiting | answered | deferred | conflicted (inline enum)."""

    waiting = "waiting"
    answered = "answered"
    deferred = "deferred"
    conflicted = "conflicted"


# transitions status { waiting -> answered | deferred | conflicted; terminal: ... }
_SUBMISSION_EDGES: Mapping[SubmissionStatus, frozenset[SubmissionStatus]] = {
    SubmissionStatus.waiting: frozenset(
        {SubmissionStatus.answered, SubmissionStatus.deferred, SubmissionStatus.conflicted}
    ),
    SubmissionStatus.answered: frozenset(),
    SubmissionStatus.deferred: frozenset(),
    SubmissionStatus.conflicted: frozenset(),
}
TERMINAL_SUBMISSION_STATUSES = frozenset(
    s for s, targets in _SUBMISSION_EDGES.items() if not targets
)


# Config ---------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """config block of api.allium."""

    # Longest request id a client may choose.
    max_request_id_length: int = 128
    # How long a submission waits for its outcome before a 202.
    response_wait: timedelta = timedelta(seconds=2)


# Entities -------------------------------------------------------------------


@dataclass(eq=False)
class Gateway:
    """entity Gateway: whether this deployment currently admits REST submissions."""

    accepting: bool
    changed_at: datetime


@dataclass(eq=False)
class Submission:
    """entity Submission: one REST submission and the response it is owed.

    ``outcome`` and ``answered_at`` are present exactly when status = answered.
    """

    client: ApiClient
    request: Request
    submitted_at: datetime
    deadline: datetime
    status: SubmissionStatus = SubmissionStatus.waiting
    outcome: Outcome | None = None
    answered_at: datetime | None = None

    def can_transition_to(self, target: SubmissionStatus) -> bool:
        """Whether `transitions status` declares the edge status -> target."""
        return target in _SUBMISSION_EDGES[self.status]

    def transition_to(self, target: SubmissionStatus) -> None:
        """Move along a declared edge; undeclared edges and terminal exits raise.

        Only for deferred and conflicted: entering answered must set the
        when-fields in the same step, so it goes through :meth:`answer`.
        """
        self._check_edge(target)
        if target is SubmissionStatus.answered:
            raise TransitionRejected(
                "Submission.status", 0, "answered needs outcome and answered_at: use answer()"
            )
        self.status = target

    def answer(self, outcome: Outcome, at: datetime) -> None:
        """waiting -> answered, setting outcome and answered_at together."""
        self._check_edge(SubmissionStatus.answered)
        self.status = SubmissionStatus.answered
        self.outcome = outcome
        self.answered_at = at

    @property
    def is_settled(self) -> bool:
        """True once the HTTP exchange has its final status (any terminal state)."""
        return self.status in TERMINAL_SUBMISSION_STATUSES

    def _check_edge(self, target: SubmissionStatus) -> None:
        if not self.can_transition_to(target):
            raise TransitionRejected(
                "Submission.status", 0, f"undeclared transition {self.status.value} -> {target.value}"
            )


@dataclass(eq=False)
class Metrics:
    """entity Metrics: per-process, monotonic counters of the REST boundary."""

    submitted: int = 0
    accepted: int = 0
    rejected: int = 0
    replayed: int = 0
    deferred: int = 0
    refused: int = 0
    stalls: int = 0
    last_refusal: RefusalCause | None = None

    def snapshot(self) -> dict[str, Any]:
        """The exposed fields as a plain mapping (ServiceMetrics order)."""
        return {
            "submitted": self.submitted,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "replayed": self.replayed,
            "deferred": self.deferred,
            "refused": self.refused,
            "stalls": self.stalls,
            "last_refusal": self.last_refusal,
        }


# Triggers and events ----------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class SubmitRequest:
    """External trigger SubmitRequest(caller, request_id, kind, account_id,
    counterparty_id?, owner?, amount_minor), provided by SubmitOperations."""

    caller: ApiClient
    request_id: str
    kind: OperationKind
    account_id: str
    counterparty_id: str | None = None
    owner: str | None = None
    amount_minor: int


@dataclass(frozen=True)
class SubmissionRefused:
    """Event SubmissionRefused(caller, request_id, cause): no Request was created."""

    caller: ApiClient
    request_id: str
    cause: RefusalCause


@dataclass(frozen=True)
class HttpResponse:
    """What the REST layer sends: status code, headers and a JSON-ready body."""

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: Any = None


# Canonical encoding -----------------------------------------------------------


def fingerprint_of(
    client_id: str,
    request_id: str,
    kind: OperationKind,
    account_id: str,
    counterparty_id: str | None,
    owner: str | None,
    amount_minor: int,
) -> str:
    """`fingerprint_of(...)` from AcceptSubmission: the fingerprint of the Envelope."""
    envelope = Envelope(
        request_id=request_id, client_id=client_id, kind=kind, account_id=account_id,
        counterparty_id=counterparty_id, owner=owner, amount_minor=amount_minor,
    )
    # core's CanonicalEncoding.fingerprint: the Usher uses the same function, so
    # REST and log arrivals of one key fingerprint identically (no channel input).
    return fingerprint(envelope)


# Actors -----------------------------------------------------------------------


def require_api_caller(actor: object) -> ApiClient:
    """actor ApiCaller: identified_by core/ApiClient where status != revoked."""
    if not isinstance(actor, ApiClient):
        raise AccessDenied("ApiCaller", 0, "caller is not an ApiClient")
    if _name(actor.status) == "revoked":
        raise AccessDenied("ApiCaller", 0, f"client {actor.client_id} is revoked")
    return actor


def require_monitor(actor: object) -> Operator:
    """actor Monitor: identified_by core/Operator where role in {observer, responder}."""
    if not isinstance(actor, Operator):
        raise AccessDenied("Monitor", 0, "monitor is not an Operator")
    if _name(actor.role) not in {"observer", "responder"}:
        raise AccessDenied("Monitor", 0, f"operator {actor.name} has no monitoring role")
    return actor


# Pipeline hooks ---------------------------------------------------------------

Clock = Callable[[], datetime]
Pipeline = Callable[[Request], None]
# Looks up core/Outcome{client_id, request_id} in the Ledger.
OutcomeLookup = Callable[[str, str], "Outcome | None"]
Listener = Callable[[Submission], None]


class RequestDirectory(Protocol):
    """Where RequestStatus reads from: the Ledger (decided) or the pipeline (undecided)."""

    def find_request(self, client_id: str, request_id: str) -> Request | None:
        """The Request for the key, if this deployment knows it."""
        ...

    def find_outcome(self, client_id: str, request_id: str) -> Outcome | None:
        """The committed Outcome for the key, read from the Ledger."""
        ...


# The service: given { gateway, metrics } plus the rules --------------------------


class ApiService:
    """The REST boundary's state (`given { gateway, metrics }`) and its rules.

    The REST layer calls :meth:`submit_request` (or :meth:`post_request`);
    the pipeline reports back through the ``on_*`` handlers; the server's
    timer calls :meth:`expire_due`. Every rule method raises
    :class:`ledger.core.Rejected` when a `requires` clause fails and then has
    changed nothing; every ``on_*`` handler swallows that and returns None,
    because an event that does not concern a REST submission is routine.
    """

    def __init__(
        self,
        *,
        clock: Clock,
        config: Config | None = None,
        gateway: Gateway | None = None,
        metrics: Metrics | None = None,
        pipeline: Pipeline | None = None,
        outcome_lookup: OutcomeLookup | None = None,
    ) -> None:
        self.config = config or Config()
        self._clock = clock
        # A deployment starts closed: OpenGateway opens it once a primary is ready.
        self.gateway = gateway or Gateway(accepting=False, changed_at=clock())
        self.metrics = metrics or Metrics()
        self._pipeline = pipeline
        self._outcome_lookup = outcome_lookup
        self.submissions: list[Submission] = []
        # Submission{request: r}: a Request is an entity, so lookup is by identity.
        self._by_request: dict[int, Submission] = {}
        self._listeners: list[Listener] = []

    # -- helpers ------------------------------------------------------------

    def now(self) -> datetime:
        """The injected clock's current time (`now`)."""
        return self._clock()

    def submission_for(self, request: Request) -> Submission | None:
        """`Submission{request: request}`: the submission created with this Request."""
        found = self._by_request.get(id(request))
        if found is not None and found.request is request:
            return found
        return None

    def add_listener(self, listener: Listener) -> None:
        """Call `listener(submission)` whenever a submission leaves waiting."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling a listener added with :meth:`add_listener`."""
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _settled(self, submission: Submission) -> None:
        for listener in list(self._listeners):
            listener(submission)

    def _waiting_submission(self, rule: str, request: Request) -> Submission:
        """Shared requires of the answering rules: REST channel, exists, waiting."""
        if _name(request.channel) != Channel.rest.value:
            raise Rejected(rule, 1, "request.channel != rest")
        submission = self.submission_for(request)
        if submission is None:
            raise Rejected(rule, 2, "no Submission for this request")
        if submission.status is not SubmissionStatus.waiting:
            raise Rejected(rule, 3, f"submission.status = {submission.status.value}")
        return submission

    # -- admission ------------------------------------------------------------

    @implements("AcceptSubmission")
    def accept_submission(self, call: SubmitRequest) -> Submission:
        """rule AcceptSubmission: create the Request and its waiting Submission."""
        caller = call.caller
        if _name(caller.status) != "active":
            raise Rejected("AcceptSubmission", 1, "caller.status != active")
        if not self.gateway.accepting:
            raise Rejected("AcceptSubmission", 2, "gateway is not accepting")
        if len(call.request_id) > self.config.max_request_id_length:
            raise Rejected("AcceptSubmission", 3, "request_id longer than max_request_id_length")
        now = self.now()
        request = Request(
            request_id=call.request_id,
            client_id=caller.client_id,
            kind=call.kind,
            account_id=call.account_id,
            counterparty_id=call.counterparty_id,
            owner=call.owner,
            amount_minor=call.amount_minor,
            channel=Channel.rest,
            fingerprint=fingerprint_of(
                caller.client_id, call.request_id, call.kind, call.account_id,
                call.counterparty_id, call.owner, call.amount_minor,
            ),
            received_at=now,
        )
        submission = Submission(
            client=caller,
            request=request,
            submitted_at=now,
            deadline=now + self.config.response_wait,
            status=SubmissionStatus.waiting,
        )
        self.submissions.append(submission)
        self._by_request[id(request)] = submission
        self.metrics.submitted += 1
        return submission

    def _refuse(self, call: SubmitRequest, cause: RefusalCause) -> SubmissionRefused:
        self.metrics.refused += 1
        self.metrics.last_refusal = cause
        return SubmissionRefused(caller=call.caller, request_id=call.request_id, cause=cause)

    @implements("RefuseWhenUnavailable")
    def refuse_when_unavailable(self, call: SubmitRequest) -> SubmissionRefused:
        """rule RefuseWhenUnavailable: no ready primary; nothing is recorded."""
        if _name(call.caller.status) != "active":
            raise Rejected("RefuseWhenUnavailable", 1, "caller.status != active")
        if self.gateway.accepting:
            raise Rejected("RefuseWhenUnavailable", 2, "gateway is accepting")
        return self._refuse(call, RefusalCause.unavailable)

    @implements("RefuseMalformedSubmission")
    def refuse_malformed_submission(self, call: SubmitRequest) -> SubmissionRefused:
        """rule RefuseMalformedSubmission: request id too long; nothing is recorded."""
        if _name(call.caller.status) != "active":
            raise Rejected("RefuseMalformedSubmission", 1, "caller.status != active")
        if not self.gateway.accepting:
            raise Rejected("RefuseMalformedSubmission", 2, "gateway is not accepting")
        if len(call.request_id) <= self.config.max_request_id_length:
            raise Rejected("RefuseMalformedSubmission", 3, "request_id is within max_request_id_length")
        return self._refuse(call, RefusalCause.malformed)

    @implements("RefuseSuspendedClient")
    def refuse_suspended_client(self, call: SubmitRequest) -> SubmissionRefused:
        """rule RefuseSuspendedClient: a caller that is not active may not submit."""
        if _name(call.caller.status) == "active":
            raise Rejected("RefuseSuspendedClient", 1, "caller.status = active")
        return self._refuse(call, RefusalCause.suspended)

    def submit_request(self, call: SubmitRequest) -> Submission | SubmissionRefused:
        """surface SubmitOperations / SubmitRequest: exactly one admission rule fires.

        The four admission rules' preconditions partition every call; an
        accepted Request is then handed to the pipeline (after the Submission
        is registered, so a synchronous answer from the Warden finds it).
        """
        require_api_caller(call.caller)
        if _name(call.caller.status) != "active":
            return self.refuse_suspended_client(call)
        if not self.gateway.accepting:
            return self.refuse_when_unavailable(call)
        if len(call.request_id) > self.config.max_request_id_length:
            return self.refuse_malformed_submission(call)
        submission = self.accept_submission(call)
        if self._pipeline is not None:
            # The Request now exists and is owed an answer; a pipeline failure
            # propagates to the server, and the deadline still yields a 202.
            self._pipeline(submission.request)
        return submission

    # -- answering -------------------------------------------------------------

    @implements("AnswerSubmission")
    def answer_submission(self, outcome: Outcome) -> Submission:
        """rule AnswerSubmission: the committed outcome of this request answers it."""
        submission = self._waiting_submission("AnswerSubmission", outcome.request)
        submission.answer(outcome, self.now())
        if _name(outcome.verdict) == "accepted":
            self.metrics.accepted += 1
        else:
            self.metrics.rejected += 1
        self._settled(submission)
        return submission

    @implements("AnswerWithPriorOutcome")
    def answer_with_prior_outcome(self, proposal: Proposal) -> Submission:
        """rule AnswerWithPriorOutcome: a duplicate proposal is answered with the prior outcome."""
        rule = "AnswerWithPriorOutcome"
        request = proposal.request
        if _name(proposal.status) != "duplicate":
            # Trigger guard: the rule fires when Proposal.status becomes duplicate.
            raise Rejected(rule, 0, "proposal.status is not duplicate")
        if _name(request.channel) != Channel.rest.value:
            raise Rejected(rule, 1, "request.channel != rest")
        submission = self.submission_for(request)
        if submission is None:
            raise Rejected(rule, 2, "no Submission for this request")
        prior = self._lookup_outcome(request.client_id, request.request_id)
        if prior is None:
            raise Rejected(rule, 3, "no prior Outcome for this key")
        if submission.status is not SubmissionStatus.waiting:
            raise Rejected(rule, 4, f"submission.status = {submission.status.value}")
        submission.answer(prior, self.now())
        self.metrics.replayed += 1
        self._settled(submission)
        return submission

    def _lookup_outcome(self, client_id: str, request_id: str) -> Outcome | None:
        """`core/Outcome{client_id, request_id}`, read from the Ledger."""
        if self._outcome_lookup is None:
            return None
        return self._outcome_lookup(client_id, request_id)

    @implements("AnswerReplayedSubmission")
    def answer_replayed_submission(self, request: Request, outcome: Outcome) -> Submission:
        """rule AnswerReplayedSubmission: the Warden replayed the stored answer."""
        submission = self._waiting_submission("AnswerReplayedSubmission", request)
        submission.answer(outcome, self.now())
        self.metrics.replayed += 1
        self._settled(submission)
        return submission

    @implements("DeferDuplicateSubmission")
    def defer_duplicate_submission(self, request: Request, original: Request) -> Submission:
        """rule DeferDuplicateSubmission: the original is in flight; answer 202."""
        submission = self._waiting_submission("DeferDuplicateSubmission", request)
        submission.transition_to(SubmissionStatus.deferred)
        self.metrics.deferred += 1
        self._settled(submission)
        return submission

    @implements("RejectConflictingSubmission")
    def reject_conflicting_submission(self, request: Request, original: Request) -> Submission:
        """rule RejectConflictingSubmission: one request id, two bodies; answer 409."""
        submission = self._waiting_submission("RejectConflictingSubmission", request)
        submission.transition_to(SubmissionStatus.conflicted)
        self._settled(submission)
        return submission

    @implements("DeferSlowSubmission")
    def defer_slow_submission(self, submission: Submission) -> Submission:
        """rule DeferSlowSubmission: at the deadline a waiting submission gets a 202."""
        if submission.deadline > self.now():
            # Temporal trigger: Submission.deadline <= now has not happened yet.
            raise Rejected("DeferSlowSubmission", 0, "deadline not reached")
        if submission.status is not SubmissionStatus.waiting:
            raise Rejected("DeferSlowSubmission", 1, f"submission.status = {submission.status.value}")
        submission.transition_to(SubmissionStatus.deferred)
        self.metrics.deferred += 1
        self._settled(submission)
        return submission

    def expire_due(self) -> list[Submission]:
        """Fire DeferSlowSubmission for every waiting submission whose deadline passed."""
        now = self.now()
        due = [s for s in self.submissions
               if s.status is SubmissionStatus.waiting and s.deadline <= now]
        return [self.defer_slow_submission(s) for s in due]

    # -- gateway and stalls -----------------------------------------------------

    @implements("OpenGateway")
    def open_gateway(self, node: Node) -> Gateway:
        """rule OpenGateway: a node became primary; start admitting submissions."""
        if _name(node.status) != "primary":
            raise Rejected("OpenGateway", 0, "node.status is not primary")
        if self.gateway.accepting:
            raise Rejected("OpenGateway", 1, "gateway is already accepting")
        self.gateway.accepting = True
        self.gateway.changed_at = self.now()
        return self.gateway

    @implements("CloseGatewayOnEpochChange")
    def close_gateway_on_epoch_change(self, grant: EpochGrant) -> Gateway:
        """rule CloseGatewayOnEpochChange: a new epoch was granted; stop admitting."""
        if not self.gateway.accepting:
            raise Rejected("CloseGatewayOnEpochChange", 1, "gateway is not accepting")
        self.gateway.accepting = False
        self.gateway.changed_at = self.now()
        return self.gateway

    @implements("CountStall")
    def count_stall(self, round: Round) -> Metrics:  # noqa: A002 - spec's binding name
        """rule CountStall: a Clerk round became stalled."""
        if not round.stalled:
            raise Rejected("CountStall", 0, "round.stalled is not true")
        self.metrics.stalls += 1
        return self.metrics

    # -- event handlers (pipeline -> api); never raise on inapplicable events -----

    def on_outcome_created(self, outcome: Outcome) -> Submission | None:
        """Trigger `core/Outcome.created` -> AnswerSubmission."""
        return self._quietly(self.answer_submission, outcome)

    def on_proposal_duplicate(self, proposal: Proposal) -> Submission | None:
        """Trigger `ledger/Proposal.status becomes duplicate` -> AnswerWithPriorOutcome."""
        return self._quietly(self.answer_with_prior_outcome, proposal)

    def on_answer_replayed(self, request: Request, outcome: Outcome) -> Submission | None:
        """Trigger `warden/AnswerReplayed(request, outcome)` -> AnswerReplayedSubmission."""
        return self._quietly(self.answer_replayed_submission, request, outcome)

    def on_duplicate_in_flight(self, request: Request, original: Request) -> Submission | None:
        """Trigger `warden/DuplicateInFlight(request, original)` -> DeferDuplicateSubmission."""
        return self._quietly(self.defer_duplicate_submission, request, original)

    def on_request_id_conflict(self, request: Request, original: Request) -> Submission | None:
        """Trigger `warden/RequestIdConflict(request, original)` -> RejectConflictingSubmission."""
        return self._quietly(self.reject_conflicting_submission, request, original)

    def on_node_primary(self, node: Node) -> Gateway | None:
        """Trigger `cluster/Node.status becomes primary` -> OpenGateway."""
        return self._quietly(self.open_gateway, node)

    def on_epoch_granted(self, grant: EpochGrant) -> Gateway | None:
        """Trigger `ledger/EpochGrant.created` -> CloseGatewayOnEpochChange."""
        return self._quietly(self.close_gateway_on_epoch_change, grant)

    def on_round_stalled(self, round: Round) -> Metrics | None:  # noqa: A002
        """Trigger `clerk/Round.stalled becomes true` -> CountStall."""
        return self._quietly(self.count_stall, round)

    def on_warden_event(self, event: object) -> Submission | None:
        """Route a warden event object (AnswerReplayed, DuplicateInFlight,
        RequestIdConflict) by its spec name; other events are ignored.

        Matching by name and fields keeps this unit independent of how the
        warden unit spells its event classes beyond the spec's names.
        """
        kind = type(event).__name__
        request = getattr(event, "request", None)
        if kind == "AnswerReplayed":
            return self.on_answer_replayed(request, getattr(event, "outcome"))  # type: ignore[arg-type]
        if kind == "DuplicateInFlight":
            return self.on_duplicate_in_flight(request, getattr(event, "original"))  # type: ignore[arg-type]
        if kind == "RequestIdConflict":
            return self.on_request_id_conflict(request, getattr(event, "original"))  # type: ignore[arg-type]
        return None

    @staticmethod
    def _quietly(rule: Callable[..., Any], *args: Any) -> Any:
        try:
            return rule(*args)
        except Rejected:
            return None

    # -- the synchronous HTTP exchange ---------------------------------------------

    async def await_response(self, submission: Submission) -> HttpResponse:
        """The bounded wait (settled decision): 200/409/202 once the submission settles.

        Waits on the event loop (never blocking it) until the submission leaves
        waiting or its deadline passes by the injected clock, in which case
        DeferSlowSubmission fires and the answer is 202.
        """
        loop = asyncio.get_running_loop()
        while not submission.is_settled:
            remaining = (submission.deadline - self.now()).total_seconds()
            if remaining <= 0:
                self.defer_slow_submission(submission)
                break
            settled: asyncio.Future[None] = loop.create_future()

            def wake(s: Submission, fut: asyncio.Future[None] = settled) -> None:
                if s is submission and not fut.done():
                    fut.set_result(None)

            self.add_listener(wake)
            try:
                await asyncio.wait({settled}, timeout=remaining)
            finally:
                self.remove_listener(wake)
        response = response_for(submission)
        assert response is not None  # settled submissions always map to a response
        return response

    async def post_request(self, caller: object, body: Mapping[str, Any]) -> HttpResponse:
        """POST /v1/requests: admission, then the bounded wait for a definite answer."""
        try:
            client = require_api_caller(caller)
        except AccessDenied:
            return HttpResponse(403, {}, {"error": "forbidden"})
        call = parse_submission(client, body)
        if call is None:
            # ASSUMPTION: a body that cannot be decoded into SubmitRequest's
            # parameters is not a SubmitRequest call at all, so no admission
            # rule fires and nothing is counted; it is answered 400.
            return HttpResponse(400, {}, {"error": "bad_request"})
        admitted = self.submit_request(call)
        if isinstance(admitted, SubmissionRefused):
            return refusal_response(admitted)
        return await self.await_response(admitted)

    # -- invariants -------------------------------------------------------------------

    def check_invariants(self) -> None:
        """Raise InvariantViolation if AnswerIsForThisRequest or SubmissionsBelongToCaller fails."""
        problems = (check_answer_is_for_this_request(self.submissions)
                    + check_submissions_belong_to_caller(self.submissions))
        if problems:
            raise InvariantViolation("; ".join(problems))


# Invariants ----------------------------------------------------------------------------


def check_answer_is_for_this_request(submissions: Iterable[Submission]) -> list[str]:
    """invariant AnswerIsForThisRequest: an answer carries the outcome of its own key."""
    problems = []
    for s in submissions:
        if s.status is not SubmissionStatus.answered:
            continue
        if s.outcome is None or s.answered_at is None:
            problems.append(f"answered submission {s.request.request_id} lacks outcome/answered_at")
        elif (s.outcome.client_id != s.request.client_id
              or s.outcome.request_id != s.request.request_id):
            problems.append(f"submission {s.request.request_id} answered with another key's outcome")
    return problems


def check_submissions_belong_to_caller(submissions: Iterable[Submission]) -> list[str]:
    """invariant SubmissionsBelongToCaller: s.request.client_id = s.client.client_id."""
    return [
        f"submission {s.request.request_id} of {s.request.client_id} held by {s.client.client_id}"
        for s in submissions
        if s.request.client_id != s.client.client_id
    ]


# Request body decoding --------------------------------------------------------------------


def parse_submission(caller: ApiClient, body: Mapping[str, Any]) -> SubmitRequest | None:
    """Decode a POST /v1/requests JSON body into SubmitRequest's parameters, or None."""
    try:
        request_id = body["request_id"]
        kind = OperationKind(body["kind"])
        account_id = body["account_id"]
        amount_minor = body["amount_minor"]
    except (KeyError, ValueError, TypeError):
        return None
    counterparty_id = body.get("counterparty_id")
    owner = body.get("owner")
    if not isinstance(request_id, str) or not request_id or not isinstance(account_id, str):
        return None
    if not isinstance(amount_minor, int) or isinstance(amount_minor, bool):
        return None
    if any(v is not None and not isinstance(v, str) for v in (counterparty_id, owner)):
        return None
    return SubmitRequest(
        caller=caller, request_id=request_id, kind=kind, account_id=account_id,
        counterparty_id=counterparty_id, owner=owner, amount_minor=amount_minor,
    )


# Responses --------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """JSON-ready form of a field: enum -> its spec value, timestamp -> ISO 8601."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def status_location(request: Request) -> str:
    """The RequestStatus URL for a request (the 202's Location header)."""
    return f"/v1/requests/{request.request_id}"


def outcome_body(outcome: Outcome) -> dict[str, Any]:
    """The committed outcome as the 200 body (the stored answer, byte for byte in content)."""
    fields = ("request_id", "client_id", "kind", "verdict", "reason", "account_id",
              "counterparty_id", "account_delta_minor", "counterparty_delta_minor",
              "digest", "epoch", "sequence", "committed_at")
    return {name: _plain(getattr(outcome, name)) for name in fields}


def response_for(submission: Submission) -> HttpResponse | None:
    """@guarantee DefiniteAnswer: map a settled submission to 200, 202 or 409.

    None while the submission is still waiting (the exchange is not over).
    """
    status = submission.status
    if status is SubmissionStatus.answered:
        assert submission.outcome is not None
        return HttpResponse(200, {"Content-Type": "application/json"}, outcome_body(submission.outcome))
    if status is SubmissionStatus.deferred:
        # Final for the HTTP exchange: the request is in the pipeline; poll or retry.
        return HttpResponse(
            202,
            {"Content-Type": "application/json", "Location": status_location(submission.request)},
            {"request_id": submission.request.request_id, "status": "pending"},
        )
    if status is SubmissionStatus.conflicted:
        return HttpResponse(
            409,
            {"Content-Type": "application/json"},
            {"request_id": submission.request.request_id, "error": "request_id_reused"},
        )
    return None


def refusal_response(refused: SubmissionRefused) -> HttpResponse:
    """Downstream of SubmissionRefused: 503, recorded nothing (DefiniteAnswer).

    The spec's HTTP mapping answers every refusal 503; only `unavailable`
    carries Retry-After: 1, since retrying helps only when no primary was ready.
    """
    headers = {"Content-Type": "application/json"}
    if refused.cause is RefusalCause.unavailable:
        headers["Retry-After"] = "1"
    return HttpResponse(
        503, headers, {"request_id": refused.request_id, "error": "refused", "cause": refused.cause.value}
    )


# Surfaces -----------------------------------------------------------------------------------


def submit_operations(caller: object) -> dict[str, Any]:
    """surface SubmitOperations: exposes caller.client_id, caller.status; provides
    SubmitRequest when caller.status = active."""
    client = require_api_caller(caller)
    provides = ("SubmitRequest",) if _name(client.status) == "active" else ()
    return {"client_id": client.client_id, "status": _plain(client.status), "provides": provides}


def request_status(caller: object, request: Request, outcome: Outcome | None = None) -> dict[str, Any]:
    """surface RequestStatus: context request where client_id = caller.client_id.

    ``outcome`` is the Ledger's committed outcome for the key (StatusIsDurable:
    a decided status is read from the Ledger); without it, the Request's own
    outcome link is used.
    """
    client = require_api_caller(caller)
    if request.client_id != client.client_id:
        raise AccessDenied("RequestStatus", 0, "request belongs to another client")
    decided = outcome if outcome is not None else getattr(request, "outcome", None)
    if decided is not None and (decided.client_id, decided.request_id) != (request.client_id, request.request_id):
        raise InvariantViolation("RequestStatus: outcome is for another key")
    view: dict[str, Any] = {
        "request_id": request.request_id,
        "kind": _plain(request.kind),
        "channel": _plain(request.channel),
        "received_at": _plain(request.received_at),
        "is_decided": decided is not None,
    }
    if decided is not None:
        view["verdict"] = _plain(decided.verdict)
        view["reason"] = _plain(decided.reason)
        view["committed_at"] = _plain(decided.committed_at)
    return view


def account_query(caller: object, account: Account) -> dict[str, Any]:
    """surface AccountQuery: context account where owner = caller.client_id.

    Serve it committed state only (the Ledger, or a current-epoch Registrar
    entry), never an in-flight read set.
    """
    client = require_api_caller(caller)
    if account.owner != client.client_id:
        raise AccessDenied("AccountQuery", 0, "account is owned by another client")
    view: dict[str, Any] = {
        "account_id": account.account_id,
        "status": _plain(account.status),
        "balance_minor": account.balance_minor,
        "version": account.version,
        "opened_at": _plain(account.opened_at),
    }
    if _name(account.status) == "closed":
        view["closed_at"] = _plain(account.closed_at)
    return view


def service_health(monitor: object, gate: Gateway) -> dict[str, Any]:
    """surface ServiceHealth: exposes gate.accepting and gate.changed_at."""
    require_monitor(monitor)
    return {"accepting": gate.accepting, "changed_at": _plain(gate.changed_at)}


def healthz(gate: Gateway) -> HttpResponse:
    """GET /healthz (@guarantee ReadyMeansCommitting): ready only while accepting."""
    if gate.accepting:
        return HttpResponse(200, {"Content-Type": "application/json"},
                            {"status": "ready", "changed_at": _plain(gate.changed_at)})
    return HttpResponse(503, {"Content-Type": "application/json", "Retry-After": "1"},
                        {"status": "unavailable", "changed_at": _plain(gate.changed_at)})


def node_health(monitor: object, node: Node) -> dict[str, Any]:
    """surface NodeHealth: exposes node_id, status, last_heartbeat_at, restarts."""
    require_monitor(monitor)
    return {
        "node_id": node.node_id,
        "status": _plain(node.status),
        "last_heartbeat_at": _plain(node.last_heartbeat_at),
        "restarts": node.restarts,
    }


def service_metrics(monitor: object, m: Metrics) -> dict[str, Any]:
    """surface ServiceMetrics: exposes every Metrics counter and last_refusal."""
    require_monitor(monitor)
    return {name: _plain(value) for name, value in m.snapshot().items()}


_COUNTER_HELP = {
    "submitted": "REST submissions accepted into the pipeline",
    "accepted": "REST submissions answered with an accepted outcome",
    "rejected": "REST submissions answered with a rejected outcome",
    "replayed": "REST submissions answered with a prior outcome",
    "deferred": "REST submissions answered 202 (deferred)",
    "refused": "REST submissions refused before anything was recorded",
    "stalls": "Clerk rounds that stalled",
}


def render_metrics(m: Metrics) -> str:
    """GET /metrics: ServiceMetrics in the Prometheus text exposition format.

    Counters are per process and monotonic; aggregation belongs to the
    metrics system. last_refusal is exported as a one-hot gauge per cause.
    """
    lines: list[str] = []
    values = m.snapshot()
    for name, help_text in _COUNTER_HELP.items():
        metric = f"ledger_api_{name}_total"
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} counter", f"{metric} {values[name]}"]
    lines += ["# HELP ledger_api_last_refusal Cause of the most recent refusal (1 = that cause)",
              "# TYPE ledger_api_last_refusal gauge"]
    for cause in RefusalCause:
        flag = 1 if m.last_refusal is cause else 0
        lines.append(f'ledger_api_last_refusal{{cause="{cause.value}"}} {flag}')
    return "\n".join(lines) + "\n"


# REST read handlers ---------------------------------------------------------------------------


def get_request_status(caller: object, request_id: str, directory: RequestDirectory) -> HttpResponse:
    """GET /v1/requests/{id}: 200 with the RequestStatus view, 404 if unknown to this caller."""
    try:
        client = require_api_caller(caller)
    except AccessDenied:
        return HttpResponse(403, {}, {"error": "forbidden"})
    request = directory.find_request(client.client_id, request_id)
    if request is None:
        return HttpResponse(404, {}, {"error": "not_found"})
    outcome = directory.find_outcome(client.client_id, request_id)
    return HttpResponse(200, {"Content-Type": "application/json"}, request_status(client, request, outcome))


def get_account(caller: object, account: Account | None) -> HttpResponse:
    """GET /v1/accounts/{id}: 200 with the AccountQuery view; 404 if absent or not the caller's.

    Another client's account answers 404, not 403, so ids cannot be probed.
    """
    try:
        client = require_api_caller(caller)
    except AccessDenied:
        return HttpResponse(403, {}, {"error": "forbidden"})
    if account is None:
        return HttpResponse(404, {}, {"error": "not_found"})
    try:
        view = account_query(client, account)
    except AccessDenied:
        return HttpResponse(404, {}, {"error": "not_found"})
    return HttpResponse(200, {"Content-Type": "application/json"}, view)
