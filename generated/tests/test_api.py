"""Tests for unit `api` (api.allium): admission, answering, gateway, surfaces."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from ledger.api import (
    ApiService,
    Config,
    Gateway,
    HttpResponse,
    Metrics,
    RefusalCause,
    Submission,
    SubmissionRefused,
    SubmissionStatus,
    SubmitRequest,
    account_query,
    check_answer_is_for_this_request,
    check_submissions_belong_to_caller,
    fingerprint_of,
    get_account,
    get_request_status,
    healthz,
    node_health,
    refusal_response,
    render_metrics,
    request_status,
    response_for,
    service_health,
    service_metrics,
    submit_operations,
)
from ledger.clerk import Round
from ledger.cluster import Node, NodeStatus
from ledger.core import (
    AccessDenied,
    Account,
    AccountStatus,
    ApiClient,
    ApiClientStatus,
    Channel,
    InvariantViolation,
    OperationKind,
    Operator,
    OperatorRole,
    Outcome,
    RejectReason,
    Rejected,
    Request,
    TransitionRejected,
    Verdict,
    outcome_digest,
)
from ledger.ledger import EpochGrant, Proposal, ProposalStatus

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)


# Fixtures and builders -------------------------------------------------------


class FakeClock:
    """Injected clock: time moves only when a test says so."""

    def __init__(self, start: datetime = T0) -> None:
        self.current = start

    def __call__(self) -> datetime:
        return self.current

    def advance(self, **delta: float) -> datetime:
        self.current += timedelta(**delta)
        return self.current


class Outcomes:
    """A stand-in for the Ledger's outcome index: Outcome{client_id, request_id}."""

    def __init__(self) -> None:
        self.by_key: dict[tuple[str, str], Outcome] = {}

    def add(self, outcome: Outcome) -> Outcome:
        self.by_key[(outcome.client_id, outcome.request_id)] = outcome
        return outcome

    def __call__(self, client_id: str, request_id: str) -> Outcome | None:
        return self.by_key.get((client_id, request_id))


@dataclasses.dataclass
class World:
    api: ApiService
    clock: FakeClock
    outcomes: Outcomes
    piped: list[Request]


def make_world(accepting: bool = True) -> World:
    clock = FakeClock()
    outcomes = Outcomes()
    piped: list[Request] = []
    api = ApiService(
        clock=clock,
        gateway=Gateway(accepting=accepting, changed_at=T0),
        pipeline=piped.append,
        outcome_lookup=outcomes,
    )
    return World(api, clock, outcomes, piped)


@pytest.fixture
def world() -> World:
    return make_world()


def client(client_id: str = "c1", status: ApiClientStatus = ApiClientStatus.active) -> ApiClient:
    return ApiClient(client_id=client_id, status=status)


def call(caller: ApiClient, request_id: str = "r1", **over: Any) -> SubmitRequest:
    fields: dict[str, Any] = dict(kind=OperationKind.deposit, account_id="acc1", amount_minor=500)
    fields.update(over)
    return SubmitRequest(caller=caller, request_id=request_id, **fields)


def log_request(client_id: str = "c1", request_id: str = "r1") -> Request:
    return Request(
        request_id=request_id, client_id=client_id, kind=OperationKind.deposit, account_id="acc1",
        amount_minor=500, channel=Channel.log, partition=0, offset=7,
        fingerprint=fingerprint_of(client_id, request_id, OperationKind.deposit, "acc1", None, None, 500),
        received_at=T0,
    )


def rest_request_not_submitted(client_id: str = "c1", request_id: str = "r1") -> Request:
    req = log_request(client_id, request_id)
    req.channel = Channel.rest
    return req


def make_outcome(request: Request, verdict: Verdict = Verdict.accepted,
                 reason: RejectReason | None = None, sequence: int = 1) -> Outcome:
    delta = request.amount_minor if verdict is Verdict.accepted else 0
    outcome = Outcome(
        request=request, request_id=request.request_id, client_id=request.client_id,
        kind=request.kind, verdict=verdict, reason=reason, account_id=request.account_id,
        counterparty_id=request.counterparty_id, account_delta_minor=delta,
        counterparty_delta_minor=0, digest="", epoch=1, sequence=sequence,
        committed_at=T0 + timedelta(milliseconds=3), applied=True,
    )
    outcome.digest = outcome_digest(outcome)
    return outcome


def duplicate_proposal(request: Request) -> Proposal:
    return Proposal(
        request=request, attempt=1, epoch=1, digest="d", verdict=Verdict.accepted, reason=None,
        account_delta_minor=request.amount_minor, counterparty_delta_minor=0,
        expected_primary_version=1, expected_counter_version=0, status=ProposalStatus.duplicate,
    )


def make_node(status: NodeStatus = NodeStatus.primary) -> Node:
    return Node(node_id="n1", status=status, last_heartbeat_at=T0, restarts=2,
                serving_epoch=1 if status is NodeStatus.primary else None,
                promoted_at=T0 if status is NodeStatus.primary else None)


def make_round(request: Request, stalled: bool) -> Round:
    # read_set is the Registrar's ReadSet; the api never reads it.
    return Round(request=request, read_set=None, attempt=1, epoch=1, opened_at=T0,
                 deadline=T0 + timedelta(seconds=1), stalled=stalled)


def submit(world: World, caller: ApiClient | None = None, request_id: str = "r1", **over: Any) -> Submission:
    result = world.api.submit_request(call(caller or client(), request_id, **over))
    assert isinstance(result, Submission)
    return result


def observer() -> Operator:
    return Operator(name="olga", role=OperatorRole.observer)


# Enum, entities, config --------------------------------------------------------


@pytest.mark.allium("enum-comparable.RefusalCause", "entity-optional.Metrics.last_refusal")
def test_refusal_cause_is_comparable_and_last_refusal_is_optional() -> None:
    metrics = Metrics()
    assert metrics.last_refusal is None
    metrics.last_refusal = RefusalCause.malformed
    assert metrics.last_refusal == RefusalCause.malformed
    assert metrics.last_refusal != RefusalCause.unavailable
    assert RefusalCause("suspended") is RefusalCause.suspended
    assert {c.value for c in RefusalCause} == {"unavailable", "malformed", "suspended"}
    metrics.last_refusal = None
    assert metrics.last_refusal is None


@pytest.mark.allium("entity-fields.Gateway")
def test_gateway_fields() -> None:
    names = [f.name for f in dataclasses.fields(Gateway)]
    assert names == ["accepting", "changed_at"]
    gateway = Gateway(accepting=False, changed_at=T0)
    assert gateway.accepting is False and isinstance(gateway.changed_at, datetime)


@pytest.mark.allium("entity-fields.Submission")
def test_submission_fields(world: World) -> None:
    names = [f.name for f in dataclasses.fields(Submission)]
    assert names == ["client", "request", "submitted_at", "deadline", "status", "outcome", "answered_at"]
    submission = submit(world)
    assert isinstance(submission.client, ApiClient)
    assert isinstance(submission.request, Request)
    assert isinstance(submission.submitted_at, datetime) and isinstance(submission.deadline, datetime)
    assert isinstance(submission.status, SubmissionStatus)
    assert {s.value for s in SubmissionStatus} == {"waiting", "answered", "deferred", "conflicted"}


@pytest.mark.allium("entity-fields.Metrics")
def test_metrics_fields() -> None:
    names = [f.name for f in dataclasses.fields(Metrics)]
    assert names == ["submitted", "accepted", "rejected", "replayed", "deferred", "refused",
                     "stalls", "last_refusal"]
    metrics = Metrics()
    assert all(isinstance(getattr(metrics, n), int) and getattr(metrics, n) == 0 for n in names[:-1])


@pytest.mark.allium("config-default.max_request_id_length", "config-default.response_wait")
def test_config_defaults() -> None:
    config = Config()
    assert config.max_request_id_length == 128
    assert config.response_wait == timedelta(seconds=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.response_wait = timedelta(seconds=5)  # type: ignore[misc]


# Submission lifecycle -------------------------------------------------------------


@pytest.mark.allium("when-presence.Submission.outcome", "when-presence.Submission.answered_at")
def test_outcome_and_answered_at_present_exactly_when_answered(world: World) -> None:
    waiting = submit(world, request_id="w")
    assert waiting.status is SubmissionStatus.waiting
    assert waiting.outcome is None and waiting.answered_at is None

    answered = submit(world, request_id="a")
    world.api.answer_submission(make_outcome(answered.request))
    assert answered.status is SubmissionStatus.answered
    assert answered.outcome is not None and answered.answered_at is not None

    deferred = submit(world, request_id="d")
    world.api.defer_duplicate_submission(deferred.request, answered.request)
    assert deferred.status is SubmissionStatus.deferred
    assert deferred.outcome is None and deferred.answered_at is None

    conflicted = submit(world, request_id="x")
    world.api.reject_conflicting_submission(conflicted.request, answered.request)
    assert conflicted.status is SubmissionStatus.conflicted
    assert conflicted.outcome is None and conflicted.answered_at is None


@pytest.mark.allium("transition-edge.Submission.waiting.answered")
def test_edge_waiting_to_answered_via_answer_submission(world: World) -> None:
    submission = submit(world)
    assert submission.status is SubmissionStatus.waiting
    world.api.answer_submission(make_outcome(submission.request))
    assert submission.status is SubmissionStatus.answered


@pytest.mark.allium("transition-edge.Submission.waiting.deferred")
def test_edge_waiting_to_deferred_via_defer_slow_submission(world: World) -> None:
    submission = submit(world)
    world.clock.advance(seconds=2)
    world.api.defer_slow_submission(submission)
    assert submission.status is SubmissionStatus.deferred


@pytest.mark.allium("transition-edge.Submission.waiting.conflicted")
def test_edge_waiting_to_conflicted_via_reject_conflicting_submission(world: World) -> None:
    original = log_request()
    submission = submit(world, amount_minor=999)
    world.api.reject_conflicting_submission(submission.request, original)
    assert submission.status is SubmissionStatus.conflicted


@pytest.mark.allium("transition-rejected.Submission.status")
def test_undeclared_submission_transitions_are_rejected(world: World) -> None:
    submission = submit(world)
    with pytest.raises(TransitionRejected):
        submission.transition_to(SubmissionStatus.waiting)  # waiting -> waiting is not declared
    assert submission.status is SubmissionStatus.waiting
    submission.transition_to(SubmissionStatus.deferred)
    with pytest.raises(TransitionRejected):
        submission.answer(make_outcome(submission.request), T0)  # deferred -> answered
    assert submission.status is SubmissionStatus.deferred
    assert submission.outcome is None and submission.answered_at is None
    with pytest.raises(TransitionRejected):
        submission.transition_to(SubmissionStatus.conflicted)  # deferred -> conflicted
    assert submission.status is SubmissionStatus.deferred


@pytest.mark.allium("transition-terminal.Submission.status")
def test_terminal_submission_states_have_no_exits(world: World) -> None:
    answered = submit(world, request_id="a")
    world.api.answer_submission(make_outcome(answered.request))
    deferred = submit(world, request_id="d")
    deferred.transition_to(SubmissionStatus.deferred)
    conflicted = submit(world, request_id="c")
    conflicted.transition_to(SubmissionStatus.conflicted)
    for submission in (answered, deferred, conflicted):
        before = submission.status
        for target in SubmissionStatus:
            assert not submission.can_transition_to(target)
            with pytest.raises(TransitionRejected):
                if target is SubmissionStatus.answered:
                    submission.answer(make_outcome(submission.request), T0)
                else:
                    submission.transition_to(target)
        assert submission.status is before


# Admission ---------------------------------------------------------------------------


@pytest.mark.allium("rule-success.AcceptSubmission", "rule-entity-creation.AcceptSubmission.1")
def test_accept_submission_creates_request_and_waiting_submission(world: World) -> None:
    caller = client("c1")
    world.clock.advance(seconds=1)
    now = world.clock()
    submission = world.api.accept_submission(
        call(caller, "r-42", kind=OperationKind.transfer, account_id="a", counterparty_id="b",
             owner=None, amount_minor=250)
    )
    request = submission.request
    assert request.request_id == "r-42"
    assert request.client_id == caller.client_id
    assert request.kind is OperationKind.transfer
    assert request.account_id == "a" and request.counterparty_id == "b" and request.owner is None
    assert request.amount_minor == 250
    assert request.channel is Channel.rest
    assert request.fingerprint == fingerprint_of("c1", "r-42", OperationKind.transfer, "a", "b", None, 250)
    assert request.received_at == now
    assert submission.client is caller
    assert submission.submitted_at == now
    assert submission.deadline == now + Config().response_wait
    assert submission.status is SubmissionStatus.waiting
    assert world.api.metrics.submitted == 1
    assert world.api.submissions == [submission]
    assert world.api.submission_for(request) is submission


@pytest.mark.allium("rule-failure.AcceptSubmission.1")
def test_accept_submission_rejected_for_inactive_caller(world: World) -> None:
    with pytest.raises(Rejected) as info:
        world.api.accept_submission(call(client(status=ApiClientStatus.suspended)))
    assert info.value.clause == 1
    assert world.api.submissions == [] and world.api.metrics.submitted == 0


@pytest.mark.allium("rule-failure.AcceptSubmission.2")
def test_accept_submission_rejected_when_gateway_closed() -> None:
    world = make_world(accepting=False)
    with pytest.raises(Rejected) as info:
        world.api.accept_submission(call(client()))
    assert info.value.clause == 2
    assert not world.api.gateway.accepting
    assert world.api.submissions == [] and world.api.metrics.submitted == 0


@pytest.mark.allium("rule-failure.AcceptSubmission.3")
def test_accept_submission_rejected_for_overlong_request_id(world: World) -> None:
    too_long = "x" * (Config().max_request_id_length + 1)
    with pytest.raises(Rejected) as info:
        world.api.accept_submission(call(client(), too_long))
    assert info.value.clause == 3
    assert world.api.submissions == [] and world.api.metrics.submitted == 0
    # the boundary itself is accepted
    assert world.api.accept_submission(call(client(), "y" * 128)).status is SubmissionStatus.waiting


@pytest.mark.allium("rule-success.RefuseWhenUnavailable")
def test_refuse_when_unavailable() -> None:
    world = make_world(accepting=False)
    caller = client()
    refused = world.api.refuse_when_unavailable(call(caller, "r9"))
    assert refused == SubmissionRefused(caller=caller, request_id="r9", cause=RefusalCause.unavailable)
    assert world.api.metrics.refused == 1
    assert world.api.metrics.last_refusal is RefusalCause.unavailable
    assert world.api.submissions == [] and world.piped == []


@pytest.mark.allium("rule-failure.RefuseWhenUnavailable.1")
def test_refuse_when_unavailable_needs_active_caller() -> None:
    world = make_world(accepting=False)
    with pytest.raises(Rejected) as info:
        world.api.refuse_when_unavailable(call(client(status=ApiClientStatus.suspended)))
    assert info.value.clause == 1
    assert world.api.metrics.refused == 0 and world.api.metrics.last_refusal is None


@pytest.mark.allium("rule-failure.RefuseWhenUnavailable.2")
def test_refuse_when_unavailable_needs_closed_gateway(world: World) -> None:
    assert world.api.gateway.accepting
    with pytest.raises(Rejected) as info:
        world.api.refuse_when_unavailable(call(client()))
    assert info.value.clause == 2
    assert world.api.metrics.refused == 0 and world.api.metrics.last_refusal is None


@pytest.mark.allium("rule-chained.RefuseWhenUnavailable.SubmissionRefused")
def test_unavailable_refusal_is_a_503_with_retry_after_and_no_effect() -> None:
    world = make_world(accepting=False)
    caller = client()
    refused = world.api.submit_request(call(caller, "r1"))
    assert isinstance(refused, SubmissionRefused)
    assert refused.caller is caller and refused.request_id == "r1"
    assert refused.cause is RefusalCause.unavailable
    response = refusal_response(refused)
    assert response.status == 503
    assert response.headers["Retry-After"] == "1"
    assert response.body["cause"] == "unavailable" and response.body["request_id"] == "r1"
    # nothing was recorded, so the retry with the same request_id is a first submission
    world.api.open_gateway(make_node())
    retried = world.api.submit_request(call(caller, "r1"))
    assert isinstance(retried, Submission) and retried.status is SubmissionStatus.waiting
    assert world.api.metrics.submitted == 1 and len(world.piped) == 1


@pytest.mark.allium("rule-success.RefuseMalformedSubmission")
def test_refuse_malformed_submission(world: World) -> None:
    caller = client()
    long_id = "z" * 129
    refused = world.api.refuse_malformed_submission(call(caller, long_id))
    assert refused.cause is RefusalCause.malformed and refused.request_id == long_id
    assert world.api.metrics.refused == 1
    assert world.api.metrics.last_refusal is RefusalCause.malformed
    assert world.api.submissions == []


@pytest.mark.allium("rule-failure.RefuseMalformedSubmission.1")
def test_refuse_malformed_needs_active_caller(world: World) -> None:
    with pytest.raises(Rejected) as info:
        world.api.refuse_malformed_submission(call(client(status=ApiClientStatus.suspended), "z" * 129))
    assert info.value.clause == 1 and world.api.metrics.refused == 0


@pytest.mark.allium("rule-failure.RefuseMalformedSubmission.2")
def test_refuse_malformed_needs_accepting_gateway() -> None:
    world = make_world(accepting=False)
    with pytest.raises(Rejected) as info:
        world.api.refuse_malformed_submission(call(client(), "z" * 129))
    assert info.value.clause == 2 and world.api.metrics.refused == 0
    assert world.api.metrics.last_refusal is None


@pytest.mark.allium("rule-failure.RefuseMalformedSubmission.3")
def test_refuse_malformed_needs_overlong_request_id(world: World) -> None:
    with pytest.raises(Rejected) as info:
        world.api.refuse_malformed_submission(call(client(), "z" * 128))
    assert info.value.clause == 3 and world.api.metrics.refused == 0


@pytest.mark.allium("rule-chained.RefuseMalformedSubmission.SubmissionRefused")
def test_malformed_refusal_is_a_503_without_retry_after(world: World) -> None:
    caller = client()
    refused = world.api.submit_request(call(caller, "q" * 200))
    assert isinstance(refused, SubmissionRefused)
    assert refused.cause is RefusalCause.malformed and refused.caller is caller
    response = refusal_response(refused)
    assert response.status == 503 and "Retry-After" not in response.headers
    assert response.body["cause"] == "malformed"
    assert world.api.submissions == [] and world.piped == []


@pytest.mark.allium("rule-success.RefuseSuspendedClient")
def test_refuse_suspended_client(world: World) -> None:
    caller = client(status=ApiClientStatus.suspended)
    refused = world.api.refuse_suspended_client(call(caller))
    assert refused.cause is RefusalCause.suspended and refused.caller is caller
    assert world.api.metrics.refused == 1
    assert world.api.metrics.last_refusal is RefusalCause.suspended
    assert world.api.submissions == []


@pytest.mark.allium("rule-failure.RefuseSuspendedClient.1")
def test_refuse_suspended_client_needs_inactive_caller(world: World) -> None:
    with pytest.raises(Rejected) as info:
        world.api.refuse_suspended_client(call(client(status=ApiClientStatus.active)))
    assert info.value.clause == 1 and world.api.metrics.refused == 0


@pytest.mark.allium("rule-chained.RefuseSuspendedClient.SubmissionRefused")
def test_suspended_refusal_is_a_503_and_takes_precedence() -> None:
    world = make_world(accepting=False)  # gateway closed too: suspension still decides
    caller = client(status=ApiClientStatus.suspended)
    refused = world.api.submit_request(call(caller, "r1"))
    assert isinstance(refused, SubmissionRefused)
    assert refused.cause is RefusalCause.suspended and refused.request_id == "r1"
    response = refusal_response(refused)
    assert response.status == 503 and response.body["cause"] == "suspended"
    assert world.api.metrics.last_refusal is RefusalCause.suspended
    assert world.api.submissions == []


# Answering ------------------------------------------------------------------------------


@pytest.mark.allium("rule-success.AnswerSubmission", "rule-branch.AnswerSubmission.1",
                    "when-set.AnswerSubmission.Submission.outcome",
                    "when-set.AnswerSubmission.Submission.answered_at")
def test_answer_submission_with_accepted_outcome(world: World) -> None:
    submission = submit(world)
    world.clock.advance(milliseconds=5)
    outcome = make_outcome(submission.request, Verdict.accepted)
    assert world.api.on_outcome_created(outcome) is submission
    assert submission.status is SubmissionStatus.answered
    assert submission.outcome is outcome
    assert submission.answered_at == world.clock()
    assert world.api.metrics.accepted == 1 and world.api.metrics.rejected == 0
    response = response_for(submission)
    assert response is not None and response.status == 200
    assert response.body["verdict"] == "accepted" and response.body["request_id"] == "r1"


@pytest.mark.allium("rule-branch.AnswerSubmission.2")
def test_answer_submission_with_rejected_outcome(world: World) -> None:
    submission = submit(world, kind=OperationKind.withdraw)
    outcome = make_outcome(submission.request, Verdict.rejected, RejectReason.insufficient_funds)
    world.api.answer_submission(outcome)
    assert submission.status is SubmissionStatus.answered and submission.outcome is outcome
    assert world.api.metrics.rejected == 1 and world.api.metrics.accepted == 0
    response = response_for(submission)
    assert response is not None and response.status == 200
    assert response.body["reason"] == "insufficient_funds"


@pytest.mark.allium("rule-failure.AnswerSubmission.1")
def test_answer_submission_ignores_log_outcomes(world: World) -> None:
    submit(world)  # a REST submission with the same key is not this log request
    outcome = make_outcome(log_request())
    with pytest.raises(Rejected) as info:
        world.api.answer_submission(outcome)
    assert info.value.clause == 1
    assert world.api.on_outcome_created(outcome) is None
    assert world.api.metrics.accepted == 0
    assert world.api.submissions[0].status is SubmissionStatus.waiting


@pytest.mark.allium("rule-failure.AnswerSubmission.2")
def test_answer_submission_needs_a_submission(world: World) -> None:
    stray = rest_request_not_submitted()
    with pytest.raises(Rejected) as info:
        world.api.answer_submission(make_outcome(stray))
    assert info.value.clause == 2
    assert world.api.metrics.accepted == 0 and world.api.metrics.rejected == 0


@pytest.mark.allium("rule-failure.AnswerSubmission.3")
def test_answer_submission_needs_waiting_submission(world: World) -> None:
    submission = submit(world)
    world.clock.advance(seconds=3)
    world.api.expire_due()
    assert submission.status is SubmissionStatus.deferred
    with pytest.raises(Rejected) as info:
        world.api.answer_submission(make_outcome(submission.request))
    assert info.value.clause == 3
    assert submission.status is SubmissionStatus.deferred and submission.outcome is None
    assert world.api.metrics.accepted == 0


@pytest.mark.allium("rule-success.AnswerWithPriorOutcome",
                    "when-set.AnswerWithPriorOutcome.Submission.outcome",
                    "when-set.AnswerWithPriorOutcome.Submission.answered_at")
def test_answer_with_prior_outcome(world: World) -> None:
    # the original (from the log, long ago) committed; the REST retry reached the Ledger
    prior = world.outcomes.add(make_outcome(log_request()))
    submission = submit(world)
    world.clock.advance(milliseconds=9)
    proposal = duplicate_proposal(submission.request)
    assert world.api.on_proposal_duplicate(proposal) is submission
    assert submission.status is SubmissionStatus.answered
    assert submission.outcome is prior
    assert submission.answered_at == world.clock()
    assert world.api.metrics.replayed == 1 and world.api.metrics.accepted == 0
    world.api.check_invariants()


@pytest.mark.allium("rule-failure.AnswerWithPriorOutcome.1")
def test_answer_with_prior_outcome_needs_rest_channel(world: World) -> None:
    request = log_request()
    world.outcomes.add(make_outcome(request))
    with pytest.raises(Rejected) as info:
        world.api.answer_with_prior_outcome(duplicate_proposal(request))
    assert info.value.clause == 1 and world.api.metrics.replayed == 0


@pytest.mark.allium("rule-failure.AnswerWithPriorOutcome.2")
def test_answer_with_prior_outcome_needs_submission(world: World) -> None:
    stray = rest_request_not_submitted()
    world.outcomes.add(make_outcome(log_request()))
    with pytest.raises(Rejected) as info:
        world.api.answer_with_prior_outcome(duplicate_proposal(stray))
    assert info.value.clause == 2 and world.api.metrics.replayed == 0


@pytest.mark.allium("rule-failure.AnswerWithPriorOutcome.3")
def test_answer_with_prior_outcome_needs_prior(world: World) -> None:
    submission = submit(world)
    with pytest.raises(Rejected) as info:
        world.api.answer_with_prior_outcome(duplicate_proposal(submission.request))
    assert info.value.clause == 3
    assert submission.status is SubmissionStatus.waiting and submission.outcome is None
    assert world.api.metrics.replayed == 0


@pytest.mark.allium("rule-failure.AnswerWithPriorOutcome.4")
def test_answer_with_prior_outcome_needs_waiting(world: World) -> None:
    world.outcomes.add(make_outcome(log_request()))
    submission = submit(world)
    world.api.defer_duplicate_submission(submission.request, log_request())
    with pytest.raises(Rejected) as info:
        world.api.answer_with_prior_outcome(duplicate_proposal(submission.request))
    assert info.value.clause == 4
    assert submission.status is SubmissionStatus.deferred and world.api.metrics.replayed == 0


@pytest.mark.allium("rule-success.AnswerReplayedSubmission",
                    "when-set.AnswerReplayedSubmission.Submission.outcome",
                    "when-set.AnswerReplayedSubmission.Submission.answered_at")
def test_answer_replayed_submission(world: World) -> None:
    first = submit(world)
    stored = make_outcome(first.request)
    world.api.answer_submission(stored)
    retry = submit(world)  # same key and body: the Warden replays the stored answer
    world.clock.advance(milliseconds=1)
    assert world.api.on_answer_replayed(retry.request, stored) is retry
    assert retry.status is SubmissionStatus.answered
    assert retry.outcome is stored
    assert retry.answered_at == world.clock()
    assert world.api.metrics.replayed == 1 and world.api.metrics.accepted == 1
    first_response, retry_response = response_for(first), response_for(retry)
    assert first_response is not None and retry_response is not None
    assert retry_response.body == first_response.body  # same answer, not a new one


@pytest.mark.allium("rule-failure.AnswerReplayedSubmission.1")
def test_answer_replayed_needs_rest_channel(world: World) -> None:
    request = log_request()
    with pytest.raises(Rejected) as info:
        world.api.answer_replayed_submission(request, make_outcome(request))
    assert info.value.clause == 1 and world.api.metrics.replayed == 0


@pytest.mark.allium("rule-failure.AnswerReplayedSubmission.2")
def test_answer_replayed_needs_submission(world: World) -> None:
    stray = rest_request_not_submitted()
    with pytest.raises(Rejected) as info:
        world.api.answer_replayed_submission(stray, make_outcome(stray))
    assert info.value.clause == 2 and world.api.metrics.replayed == 0


@pytest.mark.allium("rule-failure.AnswerReplayedSubmission.3")
def test_answer_replayed_needs_waiting(world: World) -> None:
    submission = submit(world)
    world.api.reject_conflicting_submission(submission.request, log_request())
    with pytest.raises(Rejected) as info:
        world.api.answer_replayed_submission(submission.request, make_outcome(submission.request))
    assert info.value.clause == 3
    assert submission.status is SubmissionStatus.conflicted and submission.outcome is None
    assert world.api.metrics.replayed == 0


@pytest.mark.allium("rule-success.DeferDuplicateSubmission")
def test_defer_duplicate_submission(world: World) -> None:
    original = submit(world)
    duplicate = submit(world)
    assert world.api.on_duplicate_in_flight(duplicate.request, original.request) is duplicate
    assert duplicate.status is SubmissionStatus.deferred
    assert original.status is SubmissionStatus.waiting
    assert world.api.metrics.deferred == 1
    response = response_for(duplicate)
    assert response is not None and response.status == 202
    assert response.headers["Location"] == "/v1/requests/r1"


@pytest.mark.allium("rule-failure.DeferDuplicateSubmission.1")
def test_defer_duplicate_needs_rest_channel(world: World) -> None:
    with pytest.raises(Rejected) as info:
        world.api.defer_duplicate_submission(log_request(), log_request())
    assert info.value.clause == 1 and world.api.metrics.deferred == 0


@pytest.mark.allium("rule-failure.DeferDuplicateSubmission.2")
def test_defer_duplicate_needs_submission(world: World) -> None:
    with pytest.raises(Rejected) as info:
        world.api.defer_duplicate_submission(rest_request_not_submitted(), log_request())
    assert info.value.clause == 2 and world.api.metrics.deferred == 0


@pytest.mark.allium("rule-failure.DeferDuplicateSubmission.3")
def test_defer_duplicate_needs_waiting(world: World) -> None:
    submission = submit(world)
    world.api.answer_submission(make_outcome(submission.request))
    with pytest.raises(Rejected) as info:
        world.api.defer_duplicate_submission(submission.request, log_request())
    assert info.value.clause == 3
    assert submission.status is SubmissionStatus.answered and world.api.metrics.deferred == 0


@pytest.mark.allium("rule-success.RejectConflictingSubmission")
def test_reject_conflicting_submission(world: World) -> None:
    original = submit(world, amount_minor=100)
    conflicting = submit(world, amount_minor=200)
    assert original.request.fingerprint != conflicting.request.fingerprint
    assert world.api.on_request_id_conflict(conflicting.request, original.request) is conflicting
    assert conflicting.status is SubmissionStatus.conflicted
    assert original.status is SubmissionStatus.waiting
    response = response_for(conflicting)
    assert response is not None and response.status == 409


@pytest.mark.allium("rule-failure.RejectConflictingSubmission.1")
def test_reject_conflicting_needs_rest_channel(world: World) -> None:
    with pytest.raises(Rejected) as info:
        world.api.reject_conflicting_submission(log_request(), log_request())
    assert info.value.clause == 1
    assert world.api.on_request_id_conflict(log_request(), log_request()) is None


@pytest.mark.allium("rule-failure.RejectConflictingSubmission.2")
def test_reject_conflicting_needs_submission(world: World) -> None:
    with pytest.raises(Rejected) as info:
        world.api.reject_conflicting_submission(rest_request_not_submitted(), log_request())
    assert info.value.clause == 2 and world.api.submissions == []


@pytest.mark.allium("rule-failure.RejectConflictingSubmission.3")
def test_reject_conflicting_needs_waiting(world: World) -> None:
    submission = submit(world)
    world.api.defer_duplicate_submission(submission.request, log_request())
    with pytest.raises(Rejected) as info:
        world.api.reject_conflicting_submission(submission.request, log_request())
    assert info.value.clause == 3 and submission.status is SubmissionStatus.deferred


@pytest.mark.allium("rule-success.DeferSlowSubmission")
def test_defer_slow_submission(world: World) -> None:
    submission = submit(world)
    world.clock.advance(seconds=2)
    assert submission.deadline <= world.clock()
    world.api.defer_slow_submission(submission)
    assert submission.status is SubmissionStatus.deferred
    assert world.api.metrics.deferred == 1
    response = response_for(submission)
    assert response is not None and response.status == 202 and "Location" in response.headers


@pytest.mark.allium("temporal.DeferSlowSubmission")
def test_defer_slow_submission_fires_at_deadline_once(world: World) -> None:
    submission = submit(world)
    world.clock.advance(seconds=2, microseconds=-1)
    assert world.api.expire_due() == []  # not before the deadline
    with pytest.raises(Rejected):
        world.api.defer_slow_submission(submission)
    assert submission.status is SubmissionStatus.waiting
    world.clock.advance(microseconds=1)
    assert world.clock() == submission.deadline
    assert world.api.expire_due() == [submission]  # exactly at the deadline
    assert submission.status is SubmissionStatus.deferred
    world.clock.advance(seconds=10)
    assert world.api.expire_due() == []  # does not re-fire
    assert world.api.metrics.deferred == 1


@pytest.mark.allium("rule-failure.DeferSlowSubmission.1")
def test_defer_slow_submission_needs_waiting(world: World) -> None:
    submission = submit(world)
    world.api.answer_submission(make_outcome(submission.request))
    world.clock.advance(seconds=5)
    with pytest.raises(Rejected) as info:
        world.api.defer_slow_submission(submission)
    assert info.value.clause == 1
    assert world.api.expire_due() == []
    assert submission.status is SubmissionStatus.answered and world.api.metrics.deferred == 0


# Gateway and stalls ---------------------------------------------------------------------


@pytest.mark.allium("rule-success.OpenGateway")
def test_open_gateway_when_node_becomes_primary() -> None:
    world = make_world(accepting=False)
    world.clock.advance(seconds=30)
    node = make_node(NodeStatus.primary)
    assert world.api.on_node_primary(node) is world.api.gateway
    assert world.api.gateway.accepting is True
    assert world.api.gateway.changed_at == world.clock()
    assert healthz(world.api.gateway).status == 200


@pytest.mark.allium("rule-failure.OpenGateway.1")
def test_open_gateway_needs_closed_gateway(world: World) -> None:
    world.clock.advance(seconds=30)
    with pytest.raises(Rejected) as info:
        world.api.open_gateway(make_node(NodeStatus.primary))
    assert info.value.clause == 1
    assert world.api.gateway.accepting is True and world.api.gateway.changed_at == T0


@pytest.mark.allium("rule-success.CloseGatewayOnEpochChange")
def test_close_gateway_on_epoch_grant(world: World) -> None:
    world.clock.advance(seconds=12)
    grant = EpochGrant(epoch=2, node_id="n2", granted_at=world.clock())
    assert world.api.on_epoch_granted(grant) is world.api.gateway
    assert world.api.gateway.accepting is False
    assert world.api.gateway.changed_at == world.clock()
    assert healthz(world.api.gateway).status == 503
    refused = world.api.submit_request(call(client()))
    assert isinstance(refused, SubmissionRefused) and refused.cause is RefusalCause.unavailable


@pytest.mark.allium("rule-failure.CloseGatewayOnEpochChange.1")
def test_close_gateway_needs_accepting_gateway() -> None:
    world = make_world(accepting=False)
    world.clock.advance(seconds=12)
    grant = EpochGrant(epoch=2, node_id="n2", granted_at=world.clock())
    with pytest.raises(Rejected) as info:
        world.api.close_gateway_on_epoch_change(grant)
    assert info.value.clause == 1
    assert world.api.gateway.accepting is False and world.api.gateway.changed_at == T0


@pytest.mark.allium("rule-success.CountStall")
def test_count_stall(world: World) -> None:
    request = log_request()
    assert world.api.on_round_stalled(make_round(request, stalled=False)) is None
    assert world.api.metrics.stalls == 0
    stalled_round = make_round(request, stalled=True)
    world.api.count_stall(stalled_round)
    assert world.api.metrics.stalls == 1
    assert "ledger_api_stalls_total 1" in render_metrics(world.api.metrics)


# Invariants ---------------------------------------------------------------------------------


@pytest.mark.allium("invariant.AnswerIsForThisRequest", "invariant.SubmissionsBelongToCaller")
def test_invariants_hold_after_every_rule(world: World) -> None:
    api = world.api
    api.check_invariants()
    a = submit(world, client("c1"), "a")
    api.check_invariants()
    api.answer_submission(make_outcome(a.request))
    api.check_invariants()
    b = submit(world, client("c2"), "a")  # same request_id, another client
    api.answer_replayed_submission(b.request, make_outcome(b.request))
    api.check_invariants()
    world.outcomes.add(make_outcome(log_request("c3", "p")))
    c = submit(world, client("c3"), "p")
    api.answer_with_prior_outcome(duplicate_proposal(c.request))
    api.check_invariants()
    d = submit(world, client("c1"), "d")
    api.defer_duplicate_submission(d.request, log_request("c1", "d"))
    e = submit(world, client("c1"), "e")
    api.reject_conflicting_submission(e.request, log_request("c1", "e"))
    submit(world, client("c1"), "f")
    world.clock.advance(seconds=3)
    api.expire_due()
    api.check_invariants()
    assert check_answer_is_for_this_request(api.submissions) == []
    assert check_submissions_belong_to_caller(api.submissions) == []
    for s in api.submissions:
        assert s.request.client_id == s.client.client_id
        if s.status is SubmissionStatus.answered:
            assert s.outcome is not None
            assert (s.outcome.client_id, s.outcome.request_id) == (s.request.client_id, s.request.request_id)


@pytest.mark.allium("invariant.AnswerIsForThisRequest", "invariant.SubmissionsBelongToCaller")
def test_invariant_checks_detect_violations(world: World) -> None:
    submission = submit(world, client("c1"), "mine")
    submission.answer(make_outcome(log_request("c1", "someone-else")), T0)  # wrong key
    assert check_answer_is_for_this_request([submission]) != []
    stolen = submit(world, client("c1"), "x")
    stolen.client = client("c2")
    assert check_submissions_belong_to_caller([stolen]) != []
    with pytest.raises(InvariantViolation):
        world.api.check_invariants()


# Surfaces ---------------------------------------------------------------------------------


@pytest.mark.allium("surface-actor.SubmitOperations")
def test_submit_operations_faces_api_callers_only(world: World) -> None:
    assert submit_operations(client())["client_id"] == "c1"
    assert submit_operations(client(status=ApiClientStatus.suspended))["status"] == "suspended"
    with pytest.raises(AccessDenied):
        submit_operations(client(status=ApiClientStatus.revoked))
    with pytest.raises(AccessDenied):
        submit_operations(observer())
    with pytest.raises(AccessDenied):
        world.api.submit_request(call(client(status=ApiClientStatus.revoked)))
    assert world.api.metrics.refused == 0 and world.api.submissions == []
    revoked = asyncio.run(world.api.post_request(client(status=ApiClientStatus.revoked), {}))
    assert revoked.status == 403


@pytest.mark.allium("surface-exposure.SubmitOperations")
def test_submit_operations_exposes_client_id_and_status() -> None:
    view = submit_operations(client("acme"))
    assert view["client_id"] == "acme"
    assert view["status"] == ApiClientStatus.active.value


@pytest.mark.allium("surface-provides.SubmitOperations")
def test_submit_request_provided_only_while_active(world: World) -> None:
    assert submit_operations(client(status=ApiClientStatus.active))["provides"] == ("SubmitRequest",)
    assert submit_operations(client(status=ApiClientStatus.suspended))["provides"] == ()
    # hidden means not admitted: a suspended caller's SubmitRequest is refused, not accepted
    refused = world.api.submit_request(call(client(status=ApiClientStatus.suspended)))
    assert isinstance(refused, SubmissionRefused)
    assert world.api.metrics.submitted == 0


@pytest.mark.allium("surface-actor.RequestStatus")
def test_request_status_faces_the_owning_caller(world: World) -> None:
    submission = submit(world, client("c1"))
    assert request_status(client("c1"), submission.request)["request_id"] == "r1"
    # a suspended client can still query
    assert request_status(client("c1", ApiClientStatus.suspended), submission.request)["is_decided"] is False
    with pytest.raises(AccessDenied):
        request_status(client("c2"), submission.request)
    with pytest.raises(AccessDenied):
        request_status(client("c1", ApiClientStatus.revoked), submission.request)
    with pytest.raises(AccessDenied):
        request_status(observer(), submission.request)


class Directory:
    def __init__(self, request: Request, outcome: Outcome | None) -> None:
        self.request, self.outcome = request, outcome

    def find_request(self, client_id: str, request_id: str) -> Request | None:
        r = self.request
        return r if (r.client_id, r.request_id) == (client_id, request_id) else None

    def find_outcome(self, client_id: str, request_id: str) -> Outcome | None:
        o = self.outcome
        return o if o is not None and (o.client_id, o.request_id) == (client_id, request_id) else None


@pytest.mark.allium("surface-exposure.RequestStatus")
def test_request_status_exposes_decision_only_when_decided(world: World) -> None:
    submission = submit(world)
    request = submission.request
    undecided = request_status(client(), request)
    assert undecided == {
        "request_id": "r1", "kind": "deposit", "channel": "rest",
        "received_at": request.received_at.isoformat(), "is_decided": False,
    }
    outcome = make_outcome(request, Verdict.rejected, RejectReason.account_missing)
    decided = request_status(client(), request, outcome)
    assert decided["is_decided"] is True
    assert decided["verdict"] == "rejected"
    assert decided["reason"] == "account_missing"
    assert decided["committed_at"] == outcome.committed_at.isoformat()
    # the REST handler reads the decision from the Ledger (StatusIsDurable)
    response = get_request_status(client(), "r1", Directory(request, outcome))
    assert response.status == 200 and response.body == decided
    assert get_request_status(client(), "nope", Directory(request, outcome)).status == 404
    assert get_request_status(client("c2"), "r1", Directory(request, outcome)).status == 404


@pytest.mark.allium("surface-actor.AccountQuery")
def test_account_query_faces_the_owner() -> None:
    account = Account(account_id="acc1", owner="c1", opened_at=T0)
    assert account_query(client("c1"), account)["account_id"] == "acc1"
    with pytest.raises(AccessDenied):
        account_query(client("c2"), account)
    with pytest.raises(AccessDenied):
        account_query(client("c1", ApiClientStatus.revoked), account)
    with pytest.raises(AccessDenied):
        account_query(observer(), account)
    assert get_account(client("c2"), account).status == 404  # ids cannot be probed
    assert get_account(client("c1"), None).status == 404


@pytest.mark.allium("surface-exposure.AccountQuery")
def test_account_query_exposes_closed_at_only_when_closed() -> None:
    account = Account(account_id="acc1", owner="c1", balance_minor=1200, version=3, opened_at=T0)
    view = account_query(client("c1"), account)
    assert view == {"account_id": "acc1", "status": "active", "balance_minor": 1200,
                    "version": 3, "opened_at": T0.isoformat()}
    closed_at = T0 + timedelta(days=1)
    account.status, account.balance_minor, account.closed_at = AccountStatus.closed, 0, closed_at
    view = account_query(client("c1"), account)
    assert view["status"] == "closed" and view["closed_at"] == closed_at.isoformat()
    response = get_account(client("c1"), account)
    assert response.status == 200 and response.body == view


@pytest.mark.allium("surface-actor.ServiceHealth")
def test_service_health_faces_monitors() -> None:
    gate = Gateway(accepting=True, changed_at=T0)
    assert service_health(observer(), gate)["accepting"] is True
    assert service_health(Operator(name="rita", role=OperatorRole.responder), gate)["accepting"] is True
    with pytest.raises(AccessDenied):
        service_health(client(), gate)


@pytest.mark.allium("surface-exposure.ServiceHealth")
def test_service_health_exposes_gateway_state() -> None:
    gate = Gateway(accepting=False, changed_at=T0)
    assert service_health(observer(), gate) == {"accepting": False, "changed_at": T0.isoformat()}
    assert healthz(gate).status == 503  # ReadyMeansCommitting
    gate.accepting = True
    assert service_health(observer(), gate)["accepting"] is True
    assert healthz(gate).status == 200


@pytest.mark.allium("surface-actor.NodeHealth")
def test_node_health_faces_monitors() -> None:
    node = make_node(NodeStatus.backup)
    assert node_health(observer(), node)["node_id"] == "n1"
    with pytest.raises(AccessDenied):
        node_health(client(), node)


@pytest.mark.allium("surface-exposure.NodeHealth")
def test_node_health_exposes_node_fields() -> None:
    node = make_node(NodeStatus.primary)
    assert node_health(observer(), node) == {
        "node_id": "n1", "status": "primary", "last_heartbeat_at": T0.isoformat(), "restarts": 2,
    }


@pytest.mark.allium("surface-actor.ServiceMetrics")
def test_service_metrics_faces_monitors() -> None:
    metrics = Metrics(submitted=3)
    assert service_metrics(observer(), metrics)["submitted"] == 3
    with pytest.raises(AccessDenied):
        service_metrics(client(), metrics)


@pytest.mark.allium("surface-exposure.ServiceMetrics")
def test_service_metrics_exposes_every_counter() -> None:
    m = Metrics(submitted=7, accepted=4, rejected=1, replayed=1, deferred=1, refused=2, stalls=1,
                last_refusal=RefusalCause.unavailable)
    assert service_metrics(observer(), m) == {
        "submitted": 7, "accepted": 4, "rejected": 1, "replayed": 1, "deferred": 1,
        "refused": 2, "stalls": 1, "last_refusal": "unavailable",
    }
    text = render_metrics(m)
    assert "ledger_api_submitted_total 7" in text
    assert "ledger_api_refused_total 2" in text
    assert 'ledger_api_last_refusal{cause="unavailable"} 1' in text
    assert 'ledger_api_last_refusal{cause="malformed"} 0' in text


# The synchronous exchange (DefiniteAnswer, RetrySafe) ------------------------------------------


BODY = {"request_id": "r1", "kind": "deposit", "account_id": "acc1", "amount_minor": 500}


@pytest.mark.allium("rule-success.AnswerSubmission", "rule-success.AcceptSubmission")
def test_post_request_waits_for_the_committed_outcome(world: World) -> None:
    async def scenario() -> HttpResponse:
        loop = asyncio.get_running_loop()

        def commit() -> None:
            world.api.on_outcome_created(make_outcome(world.piped[-1]))

        loop.call_soon(commit)
        return await world.api.post_request(client(), BODY)

    response = asyncio.run(scenario())
    assert response.status == 200 and response.body["verdict"] == "accepted"
    assert world.api.submissions[0].status is SubmissionStatus.answered
    assert world.api.metrics.submitted == 1 and world.api.metrics.accepted == 1


@pytest.mark.allium("rule-success.DeferSlowSubmission")
def test_post_request_answers_202_after_the_response_wait(world: World) -> None:
    def slow_pipeline(request: Request) -> None:
        world.clock.advance(seconds=2)  # the round stalls past the response wait

    world.api._pipeline = slow_pipeline
    response = asyncio.run(world.api.post_request(client(), BODY))
    assert response.status == 202 and response.headers["Location"] == "/v1/requests/r1"
    assert world.api.submissions[0].status is SubmissionStatus.deferred
    assert world.api.metrics.deferred == 1


@pytest.mark.allium("rule-success.RefuseWhenUnavailable")
def test_post_request_refused_with_503_before_anything_is_recorded() -> None:
    world = make_world(accepting=False)
    response = asyncio.run(world.api.post_request(client(), BODY))
    assert response.status == 503 and response.headers["Retry-After"] == "1"
    assert world.api.submissions == [] and world.piped == []
    assert world.api.metrics.refused == 1 and world.api.metrics.last_refusal is RefusalCause.unavailable
    bad = asyncio.run(world.api.post_request(client(), {"kind": "deposit"}))
    assert bad.status == 400 and world.api.metrics.refused == 1


@pytest.mark.allium("rule-success.AnswerReplayedSubmission")
def test_retry_of_answered_request_is_answered_with_the_same_outcome(world: World) -> None:
    """RetrySafe: a tiny Warden stand-in replays the stored answer for a repeated key."""
    stored: dict[tuple[str, str], Outcome] = {}

    def pipeline(request: Request) -> None:
        key = (request.client_id, request.request_id)
        if key in stored:
            world.api.on_answer_replayed(request, stored[key])
        else:
            stored[key] = make_outcome(request)
            world.api.on_outcome_created(stored[key])

    world.api._pipeline = pipeline
    first = asyncio.run(world.api.post_request(client(), BODY))
    second = asyncio.run(world.api.post_request(client(), BODY))
    assert first.status == second.status == 200
    assert first.body == second.body
    assert len(stored) == 1  # one effect
    assert world.api.metrics.accepted == 1 and world.api.metrics.replayed == 1


@dataclasses.dataclass(frozen=True)
class DuplicateInFlight:
    """Shape of warden/DuplicateInFlight(request, original), as the warden emits it."""

    request: Request
    original: Request


@dataclasses.dataclass(frozen=True)
class RequestIdConflict:
    """Shape of warden/RequestIdConflict(request, original)."""

    request: Request
    original: Request


@dataclasses.dataclass(frozen=True)
class AnswerReplayed:
    """Shape of warden/AnswerReplayed(request, outcome)."""

    request: Request
    outcome: Outcome


@pytest.mark.allium("rule-success.DeferDuplicateSubmission", "rule-success.RejectConflictingSubmission",
                    "rule-success.AnswerReplayedSubmission")
def test_warden_events_are_routed_by_name(world: World) -> None:
    original = submit(world, request_id="o")
    dup = submit(world, request_id="o")
    clash = submit(world, request_id="o", amount_minor=1)
    replay = submit(world, request_id="o")
    stored = make_outcome(original.request)
    assert world.api.on_warden_event(DuplicateInFlight(dup.request, original.request)) is dup
    assert world.api.on_warden_event(RequestIdConflict(clash.request, original.request)) is clash
    assert world.api.on_warden_event(AnswerReplayed(replay.request, stored)) is replay
    assert world.api.on_warden_event(object()) is None
    assert dup.status is SubmissionStatus.deferred and world.api.metrics.deferred == 1
    assert clash.status is SubmissionStatus.conflicted
    assert replay.status is SubmissionStatus.answered and replay.outcome is stored
    assert world.api.metrics.replayed == 1


@pytest.mark.allium("rule-success.AnswerReplayedSubmission", "rule-success.DeferDuplicateSubmission",
                    "rule-success.RejectConflictingSubmission")
def test_definite_answers_through_the_real_warden(world: World) -> None:
    """DefiniteAnswer and RetrySafe with the Warden unit in the pipeline: one key,
    five POSTs, one effect."""
    from ledger.ledger import Journal
    from ledger.warden import Warden

    warden = Warden(Journal(), world.clock)
    warden.subscribe(world.api.on_warden_event)
    world.api._pipeline = warden.on_request_created
    effects: list[Outcome] = []

    async def post(body: dict[str, Any]) -> HttpResponse:
        return await world.api.post_request(client(), body)

    async def scenario() -> list[HttpResponse]:
        loop = asyncio.get_running_loop()
        first = asyncio.ensure_future(post(BODY))
        await asyncio.sleep(0)  # the first POST is admitted and waits
        in_flight_dup = await post(BODY)  # same key while in flight: 202
        outcome = make_outcome(world.api.submissions[0].request)
        effects.append(outcome)

        def commit() -> None:
            warden.record_answer(outcome)
            world.api.on_outcome_created(outcome)

        loop.call_soon(commit)
        answered = await first
        replayed = await post(BODY)  # retry after the answer: the same 200
        conflict = await post({**BODY, "amount_minor": 1})  # same id, other body: 409
        return [answered, in_flight_dup, replayed, conflict]

    answered, in_flight_dup, replayed, conflict = asyncio.run(scenario())
    assert answered.status == 200 and replayed.status == 200
    assert replayed.body == answered.body
    assert in_flight_dup.status == 202 and in_flight_dup.headers["Location"] == "/v1/requests/r1"
    assert conflict.status == 409
    assert len(effects) == 1 and warden.count == 1
    statuses = [s.status for s in world.api.submissions]
    assert statuses == [SubmissionStatus.answered, SubmissionStatus.deferred,
                        SubmissionStatus.answered, SubmissionStatus.conflicted]
    assert world.api.metrics.accepted == 1 and world.api.metrics.replayed == 1
    assert world.api.metrics.deferred == 1 and world.api.metrics.submitted == 4
    world.api.check_invariants()
