"""Tests of unit `node` (node.allium): the regeneration after two spec edits.

1. ClientApi: the OpenAPI document states every constraint the server enforces, so a
   body valid by the document is never refused with 422 (schemathesis found ST202), and
   POST /v1/requests links to GET /v1/requests/{client_id}/{request_id}.
2. AgreeOnBatch: an item whose evaluation raises the Arbiter's EvaluationFault gets the
   digest "fault"; an item agreed as "fault" is never committed and is answered 503.

Only public names are used (the document through the ServiceDocument surface of
``ledger.node`` and ``openapi_document()``, the validator through ``envelope_from_json``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import msgspec
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from test_node import (
    FakeAccountRow,
    FakeLog,
    FakeStore,
    _Leader,
    body_of,
    env,
    keys,
    leader_pipeline,
    opened,
    process,
    run,
    store_port,
    with_pipeline,
)

from ledger.api import Config as ApiConfig
from ledger.arbiter import EvaluationFault
from ledger.core import AccountStatus, Channel, Envelope
from ledger.core import Config as CoreConfig
import ledger.node_pipeline as node_pipeline
from ledger.node import Config, NodeStatus, Pending, PendingStatus, ServiceDocument
from ledger.node_http_schema import (
    EnvelopeInvalid,
    envelope_from_json,
    openapi_document,
)
from ledger.node_log import PartitionConsumer
from ledger.node_ports import LogPort
from ledger.node_votes import LocalVoteService, ballot_is_signed, evaluate_items

jsonschema = pytest.importorskip("jsonschema")

MAX_REQUEST_ID = ApiConfig().max_request_id_length
MAX_ID = MAX_REQUEST_ID  # the bound the document states for every id (see node_http_schema)
MAX_AMOUNT = CoreConfig().max_amount_minor
FAULT_DIGEST = "fault"  # AgreeOnBatch's @guidance names this digest
_DOCUMENT = jsonschema.Draft202012Validator(openapi_document()["components"]["schemas"]["Envelope"])


def _server_accepts(body: Any) -> bool:
    try:
        envelope_from_json(body)
    except EnvelopeInvalid:
        return False
    return True


def _document_accepts(body: Any) -> bool:
    return _DOCUMENT.is_valid(body)


def _served_document(status: NodeStatus = NodeStatus.leader) -> tuple[ServiceDocument, dict[str, Any]]:
    """surface ServiceDocument: the document as a NodeProcess reader obtains it."""
    surface = ServiceDocument(process(status))
    return surface, surface.document()


_VALID = {"client_id": "c1", "request_id": "r1", "kind": "transfer", "account_id": "a", "counterparty_id": "b",
          "owner": None, "amount_minor": 5}

_BOUNDARIES: list[tuple[str, dict[str, Any]]] = [
    ("valid", {}),
    ("empty client_id", {"client_id": ""}), ("empty request_id", {"request_id": ""}),
    ("empty account_id", {"account_id": ""}), ("empty counterparty_id", {"counterparty_id": ""}),
    ("longest ids", {"client_id": "c" * MAX_ID, "request_id": "r" * MAX_REQUEST_ID, "account_id": "a" * MAX_ID}),
    ("client_id too long", {"client_id": "c" * (MAX_ID + 1)}),
    ("request_id too long", {"request_id": "r" * (MAX_REQUEST_ID + 1)}),
    ("account_id too long", {"account_id": "a" * (MAX_ID + 1)}),
    ("amount 0", {"amount_minor": 0}), ("amount max", {"amount_minor": MAX_AMOUNT}),
    ("amount -1", {"amount_minor": -1}), ("amount max + 1", {"amount_minor": MAX_AMOUNT + 1}),
    ("integral float amount", {"amount_minor": 223.0}), ("fractional amount", {"amount_minor": 2.5}),
    ("boolean amount", {"amount_minor": True}), ("string amount", {"amount_minor": "5"}),
    ("unknown kind", {"kind": "steal"}), ("unknown field", {"color": "red"}),
    ("counterparty on a deposit", {"kind": "deposit"}),
    ("owner on a transfer", {"owner": "o"}),
    ("open with owner", {"kind": "open", "counterparty_id": None, "owner": "o"}),
    ("open with empty owner", {"kind": "open", "counterparty_id": None, "owner": ""}),
    ("close without optionals", {"kind": "close", "counterparty_id": None}),
]


@pytest.mark.allium("surface-exposure.ServiceDocument", "surface-exposure.ClientApi")
@pytest.mark.parametrize("case, change", _BOUNDARIES, ids=[c for c, _ in _BOUNDARIES])
def test_openapi_envelope_schema_states_every_constraint_the_server_enforces(case: str,
                                                                             change: dict[str, Any]) -> None:
    """ClientApi: a body valid by the document ServiceDocument serves is never refused with 422,
    and a body the document rejects is refused by the server too."""
    surface, document = _served_document()
    assert surface.exposed() == {"status": NodeStatus.leader.value}
    served = jsonschema.Draft202012Validator(document["components"]["schemas"]["Envelope"])
    body = {**_VALID, **change}
    assert served.is_valid(body) == _server_accepts(body), case


def test_a_missing_field_is_invalid_for_both_and_optionals_may_be_left_out() -> None:
    for name in ("client_id", "request_id", "kind", "account_id", "amount_minor"):
        body = {k: v for k, v in _VALID.items() if k != name}
        assert not _document_accepts(body) and not _server_accepts(body), name
    lean = {k: v for k, v in _VALID.items() if k not in ("counterparty_id", "owner")} | {"kind": "deposit"}
    assert _document_accepts(lean) and _server_accepts(lean)


_ids = st.text(max_size=MAX_ID + 2)
_bodies = st.fixed_dictionaries(
    {"client_id": _ids, "request_id": _ids, "kind": st.sampled_from(["open", "deposit", "withdraw", "transfer",
                                                                     "close", "steal"]),
     "account_id": _ids,
     "amount_minor": st.one_of(st.integers(-3, 3), st.integers(MAX_AMOUNT - 2, MAX_AMOUNT + 2),
                               st.floats(allow_nan=False, allow_infinity=False, min_value=-5, max_value=5))},
    optional={"counterparty_id": st.one_of(st.none(), _ids), "owner": st.one_of(st.none(), _ids)})


@hsettings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(_bodies)
def test_document_and_validator_agree_on_generated_bodies(body: dict[str, Any]) -> None:
    """Differential check of ClientApi's JsonShapes: the document's verdict is the server's."""
    assert _document_accepts(body) == _server_accepts(body), body


@pytest.mark.allium("surface-exposure.ServiceDocument")
def test_openapi_links_a_submission_to_its_status() -> None:
    """ServiceDocument exposes the link from POST /v1/requests to its status route."""
    surface, doc = _served_document(NodeStatus.backup)
    assert surface.exposed() == {"status": NodeStatus.backup.value}
    post = doc["paths"]["/v1/requests"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Envelope"}
    (link,) = post["responses"]["200"]["links"].values()
    target = doc["paths"]["/v1/requests/{client_id}/{request_id}"]["get"]
    assert link["operationId"] == target["operationId"]
    assert set(link["parameters"]) == {p["name"] for p in target["parameters"]}
    assert link["parameters"] == {"client_id": "$request.body#/client_id", "request_id": "$request.body#/request_id"}
    for param in target["parameters"]:
        assert param["schema"]["minLength"] == 1


def test_a_document_valid_body_is_answered_not_refused_over_http() -> None:
    """The boundary bodies schemathesis found (ST202) reach the pipeline; empty ids are 422."""
    store = FakeStore()

    async def scenario() -> list[httpx.Response]:
        async with _Leader(store) as (_runtime, c):
            opening = {"client_id": "c1", "request_id": "o1", "kind": "open", "account_id": "a" * MAX_ID,
                       "counterparty_id": None, "owner": "c1", "amount_minor": 0}
            deposit = {"client_id": "c" * MAX_ID, "request_id": "r" * MAX_REQUEST_ID, "kind": "deposit",
                       "account_id": "a" * MAX_ID, "amount_minor": 223.0}
            empty = {**deposit, "client_id": "", "request_id": "x"}
            return [await c.post("/v1/requests", json=opening), await c.post("/v1/requests", json=deposit),
                    await c.post("/v1/requests", json=empty)]

    opening, deposit, empty = run(scenario())
    assert opening.status_code == 200 and opening.json()["verdict"] == "accepted"
    assert deposit.status_code == 200 and deposit.json()["account_delta_minor"] == 223
    assert empty.status_code == 422 and "client_id" in empty.json()["detail"]


# An evaluation fault is voted "fault" and never committed ----------------------------------------


def _faulting_evaluate(monkeypatch: pytest.MonkeyPatch, bad_account: str) -> None:
    """Make the Arbiter raise EvaluationFault (as an internal bug would) for one account."""
    import ledger.node_votes as votes

    honest = votes.evaluate

    def evaluate(envelope: Envelope, primary: Any, counter: Any) -> Any:
        if envelope.account_id == bad_account:
            raise EvaluationFault(f"injected bug for {bad_account}")
        return honest(envelope, primary, counter)

    monkeypatch.setattr(votes, "evaluate", evaluate)


@pytest.mark.allium("contract-signature.VoteService.vote", "rule-success.CastBallot")
def test_a_faulted_item_gets_the_fault_digest_and_the_rest_is_still_signed(monkeypatch: pytest.MonkeyPatch) -> None:
    reads = [FakeAccountRow(account_id="acc-1", owner="c1", status=AccountStatus.active, balance_minor=10,
                            version=1)]
    good, bug, later = env("r1", amount=5), env("r2", account="acc-bug"), env("r3", "withdraw", amount=15)
    honest = [d.digest for d in evaluate_items([good, later], reads)]
    _faulting_evaluate(monkeypatch, "acc-bug")
    ks = keys()
    ballot = run(LocalVoteService("n2", ks["n2"]).vote("b1", 1, [good, bug, later], reads))
    assert ballot.digests == (honest[0], FAULT_DIGEST, honest[1])  # the fault changed no running read
    assert ballot_is_signed(ballot, ks)


@pytest.mark.allium("rule-success.AgreeOnBatch", "rule-success.RefusePending", "transition-edge.Pending.voting.refused")
def test_an_item_agreed_as_fault_is_answered_503_and_never_committed(monkeypatch: pytest.MonkeyPatch) -> None:
    store = FakeStore()
    opened(store, ("acc-1", 10), ("acc-bug", 10))
    _faulting_evaluate(monkeypatch, "acc-bug")
    refusals = _watch_refuse_pending(monkeypatch)
    pipe = leader_pipeline(store)

    async def scenario() -> list[Any]:
        return list(await asyncio.gather(pipe.submit(env("r1", amount=5), Channel.rest),
                                         pipe.submit(env("r2", account="acc-bug"), Channel.rest),
                                         pipe.submit(env("r3", "withdraw", amount=10), Channel.rest)))

    good, bug, later = run(with_pipeline(pipe, scenario()))
    assert good.status == 200 and good.body["verdict"] == "accepted"
    assert later.status == 200 and later.body["verdict"] == "accepted"
    assert bug.status == 503 and bug.headers["Retry-After"] == "1" and bug.body["error"] == "evaluation_fault"
    committed = [item.envelope.request_id for batch in store.commits for item in batch]
    assert "r2" not in committed and sorted(committed) == ["r1", "r3"]
    assert ("c1", "r2") not in store.outcomes and store.accounts_by_id["acc-bug"].balance_minor == 10
    # RefusePending took the faulted item's Pending along voting -> refused; nothing else was refused.
    assert refusals == [("r2", PendingStatus.voting, PendingStatus.refused)]


def _watch_refuse_pending(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, PendingStatus, PendingStatus]]:
    """Record (request_id, status before, status after) of every Pending the pipeline refuses."""
    seen: list[tuple[str, PendingStatus, PendingStatus]] = []
    honest = node_pipeline.refuse_pending

    def refuse_pending(pending: Pending) -> Any:
        before = pending.status
        refused = honest(pending)
        seen.append((pending.envelope.request_id, before, pending.status))
        return refused

    monkeypatch.setattr(node_pipeline, "refuse_pending", refuse_pending)
    return seen


def test_a_batch_of_only_faulted_items_fails_and_commits_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    store = FakeStore()
    opened(store, ("acc-bug", 10))
    _faulting_evaluate(monkeypatch, "acc-bug")
    pipe = leader_pipeline(store)
    answer = run(with_pipeline(pipe, pipe.submit(env("r1", account="acc-bug"), Channel.rest)))
    assert answer.status == 503 and answer.body["error"] == "evaluation_fault"
    assert store.commits == [] and store.outcomes == {}


@pytest.mark.allium("rule-success.ConsumeLog")
def test_a_log_record_that_keeps_faulting_is_dead_lettered_not_committed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The partition moves on past a persistent evaluation fault; nothing of it is committed."""
    store, flog = FakeStore(), FakeLog(partitions=1)
    opened(store, ("acc-1", 0), ("acc-bug", 0))
    _faulting_evaluate(monkeypatch, "acc-bug")
    pipe = leader_pipeline(store)
    for e in (env("l1", account="acc-bug"), env("l2", amount=7)):
        run(flog.append(0, msgspec.json.encode(body_of(e)).decode()))
    consumer = PartitionConsumer(pipe.process, 0, store_port(store), LogPort(flog), pipe.submit, Config())

    async def scenario() -> int:
        windows = 0
        while await store.next_offset(0) <= 2 and windows < 10:
            await consumer.window()
            windows += 1
        return windows

    windows = run(with_pipeline(pipe, scenario()))
    assert windows < 10  # a few retries, then the checkpoint passes the record
    assert store.dead[(0, 1)].startswith("evaluation_fault")
    assert ("c1", "l1") not in store.outcomes and ("c1", "l2") in store.outcomes
    assert store.accounts_by_id["acc-bug"].balance_minor == 0 and store.accounts_by_id["acc-1"].balance_minor == 7
