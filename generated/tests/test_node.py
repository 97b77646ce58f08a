"""Tests of unit `node` (node.allium).

The store and event-log units are programmed against their contracts only, so
these tests use in-test fakes of those two contracts (FakeStore, FakeLog
below); tests/test_node_e2e.py runs against the real units when they exist.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import socket
import sys
import time
import typing
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

import httpx
import msgspec
import pytest

from ledger.api import RefusalCause, SubmissionRefused
from ledger.core import (
    AccessDenied, AccountStatus, ApiClient, ApiClientStatus, Channel, Envelope, OperationKind, Rejected,
    TransitionRejected, Verdict,
)
from ledger.ledger import Disposition
from ledger.node import (
    Ballot, Batch, BatchStatus, ClientApi, Config, Fault, NodeProcess, NodeStatus, Pending, PendingStatus,
    PeerVotes, ServiceDocument, VoteService, admit_request, agree_on_batch, answer_pending, cast_ballot,
    claim_primary, commit_batch, consume_log, fail_batch, form_batch, forward_to_primary, inject_fault,
    join_as_backup, node_main, node_stopped, refuse_pending, refuse_when_not_serving, start_node, step_down,
    stop_node,
)
from ledger.node_config import ConfigError, NodeSettings, node_key, parse_settings
from ledger.node_http import NodeApp
from ledger.node_http_schema import openapi_document
from ledger.node_log import PartitionConsumer, payload_digest
from ledger.node_pipeline import Answer, Pipeline
from ledger.node_ports import LeaseView, LogPort, PortUnavailable, StorePort
from ledger.node_runtime import NodeRuntime, bind, make_server, serve
from ledger.node_wire import WireClient, WireError
from ledger.node_votes import (
    LocalVoteService, PeerVoteClient, Tally, ballot_is_signed, body_signature, evaluate_items, sign_ballot,
    vote_request_body,
)

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
KEY = b"test-cluster-key-0123456789abcdef"


# Fakes of the store and event-log contracts ---------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class FakeAccountRow:
    """Fake of ledger.store.AccountRow."""

    account_id: str
    owner: str
    status: AccountStatus
    balance_minor: int
    version: int


@dataclass(frozen=True, kw_only=True)
class FakeCommitItem:
    """Fake of ledger.store.CommitItem (same fields)."""

    envelope: Envelope
    fingerprint: str
    channel: Channel
    partition: int | None
    offset: int | None
    verdict: Verdict
    reason: Any
    account_delta_minor: int
    counterparty_delta_minor: int
    digest: str
    expected_primary_version: int
    expected_counter_version: int


@dataclass(frozen=True)
class FakeCommitResult:
    """Fake of ledger.store.CommitResult."""

    disposition: Disposition | None
    refusal: str | None
    sequence: int | None


class FakeStore:
    """An in-memory fake of contract DurableStore (no lease reader, like the contract)."""

    def __init__(self) -> None:
        self.epoch, self.holder, self.expires = 0, None, 0.0
        self.accounts_by_id: dict[str, FakeAccountRow] = {}
        self.outcomes: dict[tuple[str, str], Any] = {}
        self.positions: dict[tuple[int, int], str] = {}
        self.dead: dict[tuple[int, int], str] = {}
        self.sequence = 0
        self.commits: list[list[FakeCommitItem]] = []
        self.forced: list[str] = []  # refusals to hand out, one per commit call
        self.broken = False
        self.closed = False
        self.lookups: list[tuple[str, str]] = []  # find_outcome calls
        self.dead_attempts: list[tuple[int, int]] = []  # dead_letter calls
        self.ordered = False  # refuse a log item beyond its partition's checkpoint (out_of_order)

    async def open(self) -> None: ...
    async def migrate(self) -> bool: return True
    async def close(self) -> None: self.closed = True

    def _check(self) -> None:
        if self.broken:
            raise ConnectionError("fake store is down")

    async def claim_epoch(self, node_id: str, expected_epoch: int, lease_micros: int) -> int | None:
        self._check()
        if expected_epoch != self.epoch or (self.holder is not None and self.expires > time.monotonic()):
            return None
        self.epoch, self.holder, self.expires = self.epoch + 1, node_id, time.monotonic() + lease_micros / 1e6
        return self.epoch

    async def renew_lease(self, node_id: str, epoch: int, lease_micros: int) -> bool:
        self._check()
        if self.holder != node_id or self.epoch != epoch:
            return False
        self.expires = time.monotonic() + lease_micros / 1e6
        return True

    async def accounts(self, account_ids: set[str]) -> list[FakeAccountRow]:
        self._check()
        return [self.accounts_by_id[a] for a in sorted(account_ids) if a in self.accounts_by_id]

    async def find_outcome(self, client_id: str, request_id: str) -> Any | None:
        self._check()
        self.lookups.append((client_id, request_id))
        return self.outcomes.get((client_id, request_id))

    async def next_offset(self, partition: int) -> int:
        self._check()
        n = 1
        while (partition, n) in self.positions:
            n += 1
        return n

    async def dead_letter(self, partition: int, offset: int, payload_digest: str, cause: str) -> bool:
        self.dead_attempts.append((partition, offset))
        if self.ordered and offset != await self.next_offset(partition):
            return False
        if (partition, offset) in self.positions:
            return False
        self.positions[(partition, offset)] = "quarantined"
        self.dead[(partition, offset)] = cause
        return True

    async def commit(self, epoch: int, items: list[FakeCommitItem]) -> list[FakeCommitResult]:
        self._check()
        self.commits.append(list(items))
        forced = self.forced.pop(0) if self.forced else None
        results = []
        for item in items:
            if self.ordered and item.partition is not None and item.offset != await self.next_offset(item.partition):
                results.append(FakeCommitResult(None, "out_of_order", None))
                continue
            results.append(self._commit_one(epoch, item, forced))
        return results

    def _commit_one(self, epoch: int, item: FakeCommitItem, forced: str | None) -> FakeCommitResult:
        e = item.envelope
        if epoch != self.epoch:
            return FakeCommitResult(None, "stale_epoch", None)
        if forced:
            return FakeCommitResult(None, forced, None)
        prior = self.outcomes.get((e.client_id, e.request_id))
        if prior is not None:
            if prior.request.fingerprint != item.fingerprint:
                return FakeCommitResult(None, "fingerprint_mismatch", None)
            self._position(item, "duplicate")
            return FakeCommitResult(Disposition.duplicate, None, None)
        primary = self.accounts_by_id.get(e.account_id)
        counter = self.accounts_by_id.get(e.counterparty_id) if e.counterparty_id else None
        if (primary.version if primary else 0) != item.expected_primary_version:
            return FakeCommitResult(None, "version_conflict", None)
        if item.verdict is Verdict.accepted:
            self._apply(e, item, primary, counter)
        self.sequence += 1
        self.outcomes[(e.client_id, e.request_id)] = SimpleNamespace(
            request_id=e.request_id, client_id=e.client_id, kind=e.kind, verdict=item.verdict, reason=item.reason,
            account_id=e.account_id, counterparty_id=e.counterparty_id,
            account_delta_minor=item.account_delta_minor, counterparty_delta_minor=item.counterparty_delta_minor,
            sequence=self.sequence, epoch=epoch, request=SimpleNamespace(fingerprint=item.fingerprint))
        self._position(item, "committed")
        return FakeCommitResult(Disposition.committed, None, self.sequence)

    def _position(self, item: FakeCommitItem, how: str) -> None:
        if item.partition is not None and item.offset is not None:
            self.positions[(item.partition, item.offset)] = how

    def _apply(self, e: Envelope, item: FakeCommitItem, primary: Any, counter: Any) -> None:
        rows = self.accounts_by_id
        if e.kind is OperationKind.open:
            rows[e.account_id] = FakeAccountRow(account_id=e.account_id, owner=e.owner or e.client_id,
                                                status=AccountStatus.active, balance_minor=0, version=1)
            return
        status = AccountStatus.closed if e.kind is OperationKind.close else primary.status
        rows[e.account_id] = dataclasses.replace(primary, status=status, version=primary.version + 1,
                                                 balance_minor=primary.balance_minor + item.account_delta_minor)
        if counter is not None:
            rows[counter.account_id] = dataclasses.replace(
                counter, version=counter.version + 1,
                balance_minor=counter.balance_minor + item.counterparty_delta_minor)


class FakeStoreWithLease(FakeStore):
    """A fake store that also offers a lease reader (the adapter's optional path)."""

    async def current_lease(self) -> dict[str, Any]:
        left = self.expires - time.monotonic()
        return {"epoch": self.epoch, "holder": self.holder,
                "expires_at": datetime.now(timezone.utc) + timedelta(seconds=left)}


class FakeLog:
    """An in-memory fake of contract EventLog."""

    def __init__(self, partitions: int = 2) -> None:
        self.partitions = partitions
        self.records: dict[int, list[str]] = {p: [] for p in range(partitions)}

    async def open(self) -> None: ...
    async def close(self) -> None: ...

    async def append(self, partition: int, payload: str) -> int:
        self.records[partition].append(payload)
        return len(self.records[partition])

    async def read(self, partition: int, from_offset: int, max_count: int) -> list[Any]:
        rows = self.records[partition][from_offset - 1:from_offset - 1 + max_count]
        return [SimpleNamespace(partition=partition, offset=from_offset + i, payload=p) for i, p in enumerate(rows)]

    async def end_offset(self, partition: int) -> int:
        return len(self.records[partition])

    def partition_of(self, account_id: str) -> int:
        return int.from_bytes(hashlib.sha256(account_id.encode()).digest()[:8], "big") % self.partitions


def store_port(store: FakeStore) -> StorePort:
    return StorePort(store, commit_item_type=FakeCommitItem, account_row_type=FakeAccountRow)


# Helpers --------------------------------------------------------------------------------------


def env(request_id: str, kind: str = "deposit", account: str = "acc-1", amount: int = 100,
        counterparty: str | None = None, owner: str | None = None, client: str = "c1") -> Envelope:
    return Envelope(request_id=request_id, client_id=client, kind=OperationKind(kind), account_id=account,
                    counterparty_id=counterparty, owner=owner, amount_minor=amount)


def body_of(e: Envelope) -> dict[str, Any]:
    return {"client_id": e.client_id, "request_id": e.request_id, "kind": e.kind.value, "account_id": e.account_id,
            "counterparty_id": e.counterparty_id, "owner": e.owner, "amount_minor": e.amount_minor}


def process(status: NodeStatus = NodeStatus.backup, node_id: str = "n1", ordinal: int = 1,
            epoch: int = 0) -> NodeProcess:
    return NodeProcess(node_id=node_id, ordinal=ordinal, status=status, epoch=epoch, started_at=T0)


def settings(node_id: str = "n1", nodes: int = 3, base_port: int = 7400, fault: Fault = Fault.none,
             **config: int) -> NodeSettings:
    cfg = Config(heartbeat_micros=50_000, vote_timeout_micros=500_000, batch_linger_micros=1000, **config)
    return NodeSettings(node_id=node_id, ordinal=int(node_id[1:]), nodes=nodes, host="127.0.0.1",
                        base_port=base_port, store_url="fake://", log_url="fake://", cluster_key=KEY,
                        fault=fault, config=cfg, slow_vote_seconds=2.0, lease_micros=300_000)


def keys(n: int = 3) -> dict[str, bytes]:
    return {f"n{i}": node_key(KEY, f"n{i}") for i in range(1, n + 1)}


def leader_pipeline(store: FakeStore, faults: dict[str, Fault] | None = None, nodes: int = 3,
                    vote_timeout_micros: int = 500_000, stale: list[int] | None = None) -> Pipeline:
    faults = faults or {}
    ks = keys(nodes)
    store.epoch, store.holder, store.expires = 1, "n1", time.monotonic() + 60
    voters = {n: LocalVoteService(n, ks[n], faults.get(n, Fault.none), slow_seconds=2.0) for n in ks}
    cfg = Config(batch_linger_micros=500, vote_timeout_micros=vote_timeout_micros)
    marks = stale if stale is not None else []
    pipe = Pipeline(process(NodeStatus.leader, epoch=1), cfg, store_port(store), voters, ks,
                    lambda: T0, lambda: marks.append(1))
    return pipe


async def with_pipeline(pipe: Pipeline, coro: Any) -> Any:
    pipe.start()
    try:
        return await coro
    finally:
        await pipe.close("test over")


def opened(store: FakeStore, *accounts: tuple[str, int]) -> None:
    for account_id, balance in accounts:
        store.accounts_by_id[account_id] = FakeAccountRow(account_id=account_id, owner="c1",
                                                          status=AccountStatus.active,
                                                          balance_minor=balance, version=1)


def run(coro: Any, timeout: float = 20) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


# Values, contract, enum -----------------------------------------------------------------------


@pytest.mark.allium("value-equality.Ballot")
def test_ballot_has_structural_equality() -> None:
    a = Ballot(node_id="n1", batch_id="b", epoch=1, digests=["x", "y"], signature="s")
    b = Ballot(node_id="n1", batch_id="b", epoch=1, digests=("x", "y"), signature="s")
    assert a == b and hash(a) == hash(b)
    assert a != dataclasses.replace(a, epoch=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.epoch = 3  # type: ignore[misc]


@pytest.mark.allium("entity-fields.Ballot")
def test_ballot_fields() -> None:
    hints = typing.get_type_hints(Ballot)
    assert [f.name for f in dataclasses.fields(Ballot)] == ["node_id", "batch_id", "epoch", "digests", "signature"]
    assert hints["node_id"] is str and hints["epoch"] is int and hints["digests"] == tuple[str, ...]
    ballot = sign_ballot(b"k", "n2", "b1", 4, ["d1"])
    assert isinstance(ballot.signature, str) and ballot.signature == ballot.signature.lower()


@pytest.mark.allium("contract-signature.VoteService.vote")
def test_vote_services_satisfy_the_contract() -> None:
    ks = keys()
    local = LocalVoteService("n2", ks["n2"])
    assert isinstance(local, VoteService)
    assert isinstance(PeerVoteClient("n1", ks["n1"], "n2", "http://127.0.0.1:1", WireClient("127.0.0.1", 1)),
                      VoteService)
    reads = [FakeAccountRow(account_id="a", owner="c1", status=AccountStatus.active, balance_minor=50, version=3)]
    ballot = run(local.vote("b1", 7, [env("r1", account="a", amount=20)], reads))
    assert (ballot.node_id, ballot.batch_id, ballot.epoch, len(ballot.digests)) == ("n2", "b1", 7, 1)
    assert ballot_is_signed(ballot, ks)  # SignedBallots
    assert not ballot_is_signed(dataclasses.replace(ballot, epoch=8), ks)
    assert not ballot_is_signed(ballot, {"n2": node_key(b"another-cluster-key", "n2")})


@pytest.mark.allium("enum-comparable.Fault")
def test_fault_values_compare() -> None:
    p = process()
    inject_fault(p, Fault("slow_votes"))
    assert p.fault == Fault.slow_votes and p.fault != Fault.none
    assert Fault("none") is Fault.none and [f.value for f in Fault] == [
        "none", "corrupt_outcomes", "lie_about_digests", "slow_votes"]


# NodeProcess ----------------------------------------------------------------------------------


@pytest.mark.allium("entity-fields.NodeProcess", "derived.NodeProcess.is_serving")
def test_node_process_fields_and_is_serving() -> None:
    hints = typing.get_type_hints(NodeProcess)
    assert {f.name for f in dataclasses.fields(NodeProcess)} == {
        "node_id", "ordinal", "status", "epoch", "fault", "started_at", "stopped_at"}
    assert hints["status"] is NodeStatus and hints["fault"] is Fault and hints["stopped_at"] == datetime | None
    serving = {s for s in NodeStatus if process(s).is_serving}
    assert serving == {NodeStatus.backup, NodeStatus.leader}


@pytest.mark.allium("when-presence.NodeProcess.stopped_at", "rule-success.NodeStopped",
                    "transition-edge.NodeProcess.stopping.stopped")
def test_stopped_at_is_present_exactly_when_stopped() -> None:
    p = process(NodeStatus.backup)
    p.check_stopped_at()
    assert p.stopped_at is None
    stop_node(p)
    p.check_stopped_at()
    node_stopped(p, T0 + timedelta(seconds=5))
    assert p.status is NodeStatus.stopped and p.stopped_at == T0 + timedelta(seconds=5)
    p.check_stopped_at()
    p.stopped_at = None
    with pytest.raises(AssertionError):
        p.check_stopped_at()


@pytest.mark.allium("rule-success.StartNode", "rule-entity-creation.StartNode.1")
def test_start_node_creates_a_starting_process() -> None:
    p = start_node({}, "n2", 2, Fault.slow_votes, T0)
    assert (p.node_id, p.ordinal, p.status, p.epoch, p.fault, p.started_at, p.stopped_at) == (
        "n2", 2, NodeStatus.starting, 0, Fault.slow_votes, T0, None)


@pytest.mark.allium("rule-failure.StartNode.1")
def test_start_node_refuses_an_ordinal_outside_the_cluster() -> None:
    for bad in (0, 4):
        with pytest.raises(Rejected) as info:
            start_node({}, "n4", bad, Fault.none, T0)
        assert info.value.clause == 1


@pytest.mark.allium("rule-failure.StartNode.2")
def test_start_node_refuses_a_duplicate_node() -> None:
    with pytest.raises(Rejected) as info:
        start_node({"n1": process()}, "n1", 1, Fault.none, T0)
    assert info.value.clause == 2


@pytest.mark.allium("rule-success.JoinAsBackup", "transition-edge.NodeProcess.starting.backup")
def test_join_as_backup() -> None:
    p = process(NodeStatus.starting)
    join_as_backup(p)
    assert p.status is NodeStatus.backup


@pytest.mark.allium("rule-failure.JoinAsBackup.1")
def test_join_as_backup_requires_starting() -> None:
    p = process(NodeStatus.leader)
    with pytest.raises(Rejected):
        join_as_backup(p)
    assert p.status is NodeStatus.leader


@pytest.mark.allium("rule-success.ClaimPrimary", "transition-edge.NodeProcess.backup.leader")
def test_claim_primary_takes_the_next_epoch() -> None:
    p = process(NodeStatus.backup)
    claim_primary(p, LeaseView(4, "n3", T0), T0 + timedelta(seconds=1))
    assert p.status is NodeStatus.leader and p.epoch == 5


@pytest.mark.allium("rule-failure.ClaimPrimary.1")
def test_claim_primary_requires_a_backup() -> None:
    p = process(NodeStatus.starting)
    with pytest.raises(Rejected) as info:
        claim_primary(p, LeaseView(1, None, T0), T0)
    assert info.value.clause == 1 and p.epoch == 0


@pytest.mark.allium("rule-failure.ClaimPrimary.2")
def test_claim_primary_requires_an_expired_lease() -> None:
    p = process(NodeStatus.backup)
    with pytest.raises(Rejected) as info:
        claim_primary(p, LeaseView(1, "n2", T0 + timedelta(seconds=1)), T0)
    assert info.value.clause == 2 and p.status is NodeStatus.backup and p.epoch == 0


@pytest.mark.allium("rule-success.StepDown", "transition-edge.NodeProcess.leader.backup")
def test_step_down() -> None:
    p = process(NodeStatus.leader, epoch=3)
    step_down(p)
    assert p.status is NodeStatus.backup


@pytest.mark.allium("rule-failure.StepDown.1")
def test_step_down_requires_leader() -> None:
    with pytest.raises(Rejected):
        step_down(process(NodeStatus.backup))


@pytest.mark.allium("rule-success.StopNode", "transition-edge.NodeProcess.starting.stopping",
                    "transition-edge.NodeProcess.backup.stopping", "transition-edge.NodeProcess.leader.stopping")
def test_stop_node_from_every_live_status() -> None:
    for status in (NodeStatus.starting, NodeStatus.backup, NodeStatus.leader):
        p = process(status)
        stop_node(p)
        assert p.status is NodeStatus.stopping


@pytest.mark.allium("rule-failure.StopNode.1")
def test_stop_node_twice_is_rejected() -> None:
    for status in (NodeStatus.stopping, NodeStatus.stopped):
        with pytest.raises(Rejected):
            stop_node(process(status))


@pytest.mark.allium("transition-rejected.NodeProcess.status")
def test_undeclared_node_transitions_are_rejected() -> None:
    for current, target in [(NodeStatus.starting, NodeStatus.leader), (NodeStatus.backup, NodeStatus.starting),
                            (NodeStatus.leader, NodeStatus.stopped), (NodeStatus.stopping, NodeStatus.backup)]:
        p = process(current)
        with pytest.raises(TransitionRejected):
            p.transition_to(target)
        assert p.status is current


@pytest.mark.allium("transition-terminal.NodeProcess.status")
def test_stopped_is_terminal() -> None:
    for target in NodeStatus:
        with pytest.raises(TransitionRejected):
            process(NodeStatus.stopped).transition_to(target)


# Pending and Batch ----------------------------------------------------------------------------


def pending(status: PendingStatus = PendingStatus.queued, request_id: str = "r1") -> Pending:
    return Pending(envelope=env(request_id), channel=Channel.rest, received_at=T0, status=status)


@pytest.mark.allium("entity-fields.Pending", "entity-optional.Pending.partition", "entity-optional.Pending.offset")
def test_pending_fields_and_optionals() -> None:
    hints = typing.get_type_hints(Pending)
    assert {f.name for f in dataclasses.fields(Pending)} == {
        "envelope", "channel", "partition", "offset", "received_at", "status"}
    assert hints["partition"] == int | None and hints["offset"] == int | None and hints["envelope"] is Envelope
    rest = admit_request(process(NodeStatus.leader), env("r1"), Channel.rest, T0)
    logged = admit_request(process(NodeStatus.leader), env("r2"), Channel.log, T0, partition=3, offset=17)
    assert (rest.partition, rest.offset) == (None, None)
    assert (logged.partition, logged.offset, logged.channel) == (3, 17, Channel.log)


@pytest.mark.allium("rule-success.AdmitRequest", "rule-entity-creation.AdmitRequest.1")
def test_admit_request_queues_a_pending() -> None:
    e = env("r1", amount=0)
    p = admit_request(process(NodeStatus.leader), e, Channel.rest, T0 + timedelta(seconds=2))
    assert (p.envelope, p.channel, p.received_at, p.status) == (e, Channel.rest, T0 + timedelta(seconds=2),
                                                                PendingStatus.queued)


@pytest.mark.allium("rule-failure.AdmitRequest.1")
def test_admit_request_requires_leader() -> None:
    with pytest.raises(Rejected) as info:
        admit_request(process(NodeStatus.backup), env("r1"), Channel.rest, T0)
    assert info.value.clause == 1


@pytest.mark.allium("rule-failure.AdmitRequest.2")
def test_admit_request_requires_an_amount_in_bounds() -> None:
    for amount in (-1, 100000000001):
        with pytest.raises(Rejected) as info:
            admit_request(process(NodeStatus.leader), env("r1", amount=amount), Channel.rest, T0)
        assert info.value.clause == 2


@pytest.mark.allium("rule-success.ForwardToPrimary")
def test_forward_to_primary_keeps_a_backup() -> None:
    p = process(NodeStatus.backup)
    assert forward_to_primary(p, env("r1")) is p and p.status is NodeStatus.backup


@pytest.mark.allium("rule-failure.ForwardToPrimary.1")
def test_forward_to_primary_requires_backup() -> None:
    with pytest.raises(Rejected):
        forward_to_primary(process(NodeStatus.leader), env("r1"))


@pytest.mark.allium("rule-success.RefuseWhenNotServing")
def test_refuse_when_not_serving() -> None:
    refused = refuse_when_not_serving(process(NodeStatus.stopping), env("r9"))
    assert isinstance(refused, SubmissionRefused)
    assert (refused.request_id, refused.cause) == ("r9", RefusalCause.unavailable)


@pytest.mark.allium("rule-failure.RefuseWhenNotServing.1")
def test_refuse_when_not_serving_requires_not_serving() -> None:
    with pytest.raises(Rejected):
        refuse_when_not_serving(process(NodeStatus.backup), env("r9"))


@pytest.mark.allium("rule-success.FormBatch", "rule-entity-creation.FormBatch.1",
                    "transition-edge.Pending.queued.voting")
def test_form_batch() -> None:
    queued = [pending(request_id=f"r{i}") for i in range(3)]
    batch = form_batch(process(NodeStatus.leader, epoch=4), "b-1", queued)
    assert (batch.batch_id, batch.epoch, batch.size, batch.matching, batch.status) == (
        "b-1", 4, 3, 0, BatchStatus.collecting)
    assert all(p.status is PendingStatus.voting for p in queued)


@pytest.mark.allium("rule-failure.FormBatch.1")
def test_form_batch_requires_leader() -> None:
    queued = [pending()]
    with pytest.raises(Rejected) as info:
        form_batch(process(NodeStatus.backup), "b", queued)
    assert info.value.clause == 1 and queued[0].status is PendingStatus.queued


@pytest.mark.allium("rule-failure.FormBatch.2")
def test_form_batch_requires_one_to_batch_max() -> None:
    with pytest.raises(Rejected) as info:
        form_batch(process(NodeStatus.leader), "b", [])
    assert info.value.clause == 2
    queued = [pending(request_id=f"r{i}") for i in range(3)]
    with pytest.raises(Rejected):
        form_batch(process(NodeStatus.leader), "b", queued, Config(batch_max=2))
    assert all(p.status is PendingStatus.queued for p in queued)


def ballots(n: int) -> list[Ballot]:
    return [sign_ballot(b"k", f"n{i}", "b", 1, ["d"]) for i in range(1, n + 1)]


@pytest.mark.allium("rule-success.AgreeOnBatch", "transition-edge.Batch.collecting.agreed")
def test_agree_on_batch() -> None:
    batch = Batch(batch_id="b", epoch=1, size=1)
    agree_on_batch(batch, ballots(2))
    assert (batch.status, batch.matching) == (BatchStatus.agreed, 2)


@pytest.mark.allium("rule-failure.AgreeOnBatch.1")
def test_agree_on_batch_requires_collecting() -> None:
    batch = Batch(batch_id="b", epoch=1, size=1, status=BatchStatus.failed)
    with pytest.raises(Rejected) as info:
        agree_on_batch(batch, ballots(3))
    assert info.value.clause == 1


@pytest.mark.allium("rule-failure.AgreeOnBatch.2")
def test_agree_on_batch_requires_f_plus_one_ballots() -> None:
    batch = Batch(batch_id="b", epoch=1, size=1)
    with pytest.raises(Rejected) as info:
        agree_on_batch(batch, ballots(1))
    assert info.value.clause == 2 and batch.status is BatchStatus.collecting and batch.matching == 0


@pytest.mark.allium("rule-success.CommitBatch", "transition-edge.Batch.agreed.committed")
def test_commit_batch() -> None:
    batch = Batch(batch_id="b", epoch=1, size=1, status=BatchStatus.agreed)
    assert commit_batch(batch).status is BatchStatus.committed


@pytest.mark.allium("rule-success.FailBatch", "transition-edge.Batch.collecting.failed",
                    "transition-edge.Batch.agreed.failed")
def test_fail_batch() -> None:
    for status in (BatchStatus.collecting, BatchStatus.agreed):
        assert fail_batch(Batch(batch_id="b", epoch=1, size=1, status=status)).status is BatchStatus.failed


@pytest.mark.allium("rule-failure.FailBatch.1", "transition-terminal.Batch.status", "transition-rejected.Batch.status")
def test_batch_terminals_and_undeclared_edges() -> None:
    for terminal in (BatchStatus.committed, BatchStatus.failed):
        with pytest.raises(Rejected):
            fail_batch(Batch(batch_id="b", epoch=1, size=1, status=terminal))
        for target in BatchStatus:
            with pytest.raises(TransitionRejected):
                Batch(batch_id="b", epoch=1, size=1, status=terminal).transition_to(target)
    with pytest.raises(TransitionRejected):
        Batch(batch_id="b", epoch=1, size=1).transition_to(BatchStatus.committed)


@pytest.mark.allium("entity-fields.Batch")
def test_batch_fields() -> None:
    hints = typing.get_type_hints(Batch)
    assert [f.name for f in dataclasses.fields(Batch)] == ["batch_id", "epoch", "size", "matching", "status"]
    assert hints["size"] is int and hints["status"] is BatchStatus


@pytest.mark.allium("rule-success.AnswerPending", "transition-edge.Pending.voting.answered")
def test_answer_pending() -> None:
    p = pending(PendingStatus.voting, "r5")
    answer_pending(p, SimpleNamespace(request_id="r5"))
    assert p.status is PendingStatus.answered


@pytest.mark.allium("rule-failure.AnswerPending.1")
def test_answer_pending_requires_voting() -> None:
    p = pending(PendingStatus.queued, "r5")
    with pytest.raises(Rejected) as info:
        answer_pending(p, SimpleNamespace(request_id="r5"))
    assert info.value.clause == 1


@pytest.mark.allium("rule-failure.AnswerPending.2")
def test_answer_pending_requires_its_own_outcome() -> None:
    p = pending(PendingStatus.voting, "r5")
    with pytest.raises(Rejected) as info:
        answer_pending(p, SimpleNamespace(request_id="other"))
    assert info.value.clause == 2 and p.status is PendingStatus.voting


@pytest.mark.allium("rule-success.RefusePending", "transition-edge.Pending.queued.refused",
                    "transition-edge.Pending.voting.refused")
def test_refuse_pending() -> None:
    for status in (PendingStatus.queued, PendingStatus.voting):
        p = pending(status, "r6")
        refused = refuse_pending(p)
        assert p.status is PendingStatus.refused
        assert (refused.request_id, refused.cause) == ("r6", RefusalCause.unavailable)


@pytest.mark.allium("rule-failure.RefusePending.1", "transition-terminal.Pending.status",
                    "transition-rejected.Pending.status")
def test_pending_terminals() -> None:
    for terminal in (PendingStatus.answered, PendingStatus.refused):
        with pytest.raises(Rejected):
            refuse_pending(pending(terminal))
        for target in PendingStatus:
            with pytest.raises(TransitionRejected):
                pending(terminal).transition_to(target)
    with pytest.raises(TransitionRejected):
        pending(PendingStatus.queued).transition_to(PendingStatus.answered)


@pytest.mark.allium("rule-success.ConsumeLog")
def test_consume_log_keeps_a_leader() -> None:
    p = process(NodeStatus.leader)
    assert consume_log(p, 2) is p and p.status is NodeStatus.leader


@pytest.mark.allium("rule-failure.ConsumeLog.1")
def test_consume_log_requires_leader() -> None:
    with pytest.raises(Rejected):
        consume_log(process(NodeStatus.backup), 0)


@pytest.mark.allium("rule-success.CastBallot", "rule-failure.CastBallot.1")
def test_cast_ballot_only_while_serving() -> None:
    p = process(NodeStatus.backup)
    assert cast_ballot(p).status is NodeStatus.backup
    with pytest.raises(Rejected):
        cast_ballot(process(NodeStatus.stopping))


@pytest.mark.allium("rule-success.InjectFault", "rule-failure.InjectFault.1")
def test_inject_fault() -> None:
    p = process(NodeStatus.leader)
    inject_fault(p, Fault.corrupt_outcomes)
    assert p.fault is Fault.corrupt_outcomes
    q = process(NodeStatus.starting)
    with pytest.raises(Rejected):
        inject_fault(q, Fault.slow_votes)
    assert q.fault is Fault.none


@pytest.mark.allium("config-default.faults_tolerated", "config-default.base_port", "config-default.heartbeat_micros",
                    "config-default.batch_max", "config-default.batch_linger_micros",
                    "config-default.vote_timeout_micros", "config-default.sync_wait_micros",
                    "config-default.max_body_bytes", "config-default.log_batch_max",
                    "config-default.stepdown_failed_rounds")
def test_config_defaults() -> None:
    c = Config()
    assert c.stepdown_failed_rounds == 3
    assert (c.faults_tolerated, c.base_port, c.heartbeat_micros, c.batch_max, c.batch_linger_micros) == (
        1, 7400, 300000, 256, 2000)
    assert (c.vote_timeout_micros, c.sync_wait_micros, c.max_body_bytes, c.log_batch_max) == (
        1000000, 2000000, 16384, 256)
    # The defaults are what a node started without options runs with.
    s = parse_settings(["--id", "n1", "--ordinal", "1", "--nodes", "3", "--store", "s", "--log", "l"],
                       {"LEDGER_CLUSTER_KEY": KEY.decode()})
    assert s.port == 7401 and s.config.max_body_bytes == 16384 and s.config.faults_tolerated == 1


# Surfaces -------------------------------------------------------------------------------------


@pytest.mark.allium("surface-actor.PeerVotes", "surface-exposure.PeerVotes", "surface-provides.PeerVotes")
def test_peer_votes_surface() -> None:
    peer = process(NodeStatus.backup, node_id="n2", epoch=3)
    surface = PeerVotes(peer, frozenset({"n1", "n2", "n3"}))
    assert surface.exposed() == {"node_id": "n2", "epoch": 3}
    assert surface.available_operations() == ("CastBallot",)
    assert surface.cast_ballot() is peer
    peer.status = NodeStatus.stopping
    assert surface.available_operations() == ()
    with pytest.raises(AccessDenied):
        PeerVotes(process(node_id="n9"), frozenset({"n1", "n2", "n3"}))
    with pytest.raises(AccessDenied):
        PeerVotes(ApiClient(client_id="c1"))  # type: ignore[arg-type]


@pytest.mark.allium("surface-actor.ClientApi", "surface-exposure.ClientApi")
def test_client_api_surface() -> None:
    assert ClientApi(ApiClient(client_id="c7")).exposed() == {"client_id": "c7"}
    with pytest.raises(AccessDenied):
        ClientApi(ApiClient(client_id="c8", status=ApiClientStatus.revoked))
    with pytest.raises(AccessDenied):
        ClientApi(process())  # type: ignore[arg-type]


@pytest.mark.allium("surface-actor.ServiceDocument", "surface-exposure.ServiceDocument")
def test_service_document_surface() -> None:
    doc = ServiceDocument(process(NodeStatus.leader))
    assert doc.exposed() == {"status": "leader"}
    assert doc.document()["openapi"] == "3.1.0"
    with pytest.raises(AccessDenied):
        ServiceDocument(ApiClient(client_id="c1"))  # type: ignore[arg-type]


# Replica evaluation and tally -------------------------------------------------------------------


def test_replicas_evaluate_in_order_against_running_reads() -> None:
    """SameInputsSameBallot: the second withdrawal sees the first one's effect."""
    reads = [FakeAccountRow(account_id="a", owner="c1", status=AccountStatus.active, balance_minor=100, version=2)]
    items = [env("w1", "withdraw", "a", 70), env("w2", "withdraw", "a", 70), env("d1", "deposit", "a", 5)]
    decided = evaluate_items(items, reads)
    assert [d.decision.verdict for d in decided] == [Verdict.accepted, Verdict.rejected, Verdict.accepted]
    assert [d.expected_primary_version for d in decided] == [2, 3, 3]
    assert decided == evaluate_items(items, list(reads))  # same inputs, same digests
    ks = keys()
    honest = run(LocalVoteService("n2", ks["n2"]).vote("b", 1, items, reads))
    corrupt = run(LocalVoteService("n3", ks["n3"], Fault.corrupt_outcomes).vote("b", 1, items, reads))
    liar = run(LocalVoteService("n3", ks["n3"], Fault.lie_about_digests).vote("b", 1, items, reads))
    assert [h == c for h, c in zip(honest.digests, corrupt.digests)] == [False, True, False]
    assert not set(liar.digests) & set(honest.digests)


def test_tally_discards_bad_ballots_and_finds_f_plus_one() -> None:
    ks = keys()
    t = Tally.open("b", 2, 2, 1, ks)
    good = sign_ballot(ks["n1"], "n1", "b", 2, ["x", "y"])
    assert t.add("n1", good)
    assert not t.add("n2", dataclasses.replace(sign_ballot(ks["n2"], "n2", "b", 2, ["x", "y"]), signature="00"))
    assert not t.add("n3", sign_ballot(ks["n3"], "n3", "b", 1, ["x", "y"]))  # wrong epoch
    assert t.faulty == {"n2", "n3"} and t.agreed() == [None, None]
    t2 = Tally.open("b", 2, 2, 1, ks)
    t2.add("n1", good)
    assert not t2.add("n2", sign_ballot(ks["n2"], "n2", "b", 2, ["x"]))  # wrong digest count
    t2.add("n3", sign_ballot(ks["n3"], "n3", "b", 2, ["x", "z"]))
    assert t2.agreed() == ["x", None] and not t2.complete()


# Pipeline with the fake store ---------------------------------------------------------------------


def test_pipeline_commits_replays_and_conflicts() -> None:
    store = FakeStore()
    opened(store, ("acc-1", 0))
    pipe = leader_pipeline(store)

    async def scenario() -> list[Any]:
        first = await pipe.submit(env("r1", amount=250), Channel.rest)
        again = await pipe.submit(env("r1", amount=250), Channel.rest)
        clash = await pipe.submit(env("r1", amount=999), Channel.rest)
        both = await asyncio.gather(pipe.submit(env("r2", amount=1), Channel.rest),
                                    pipe.submit(env("r2", amount=1), Channel.rest))
        return [first, again, clash, *both]

    first, again, clash, twin_a, twin_b = run(with_pipeline(pipe, scenario()))
    assert first.status == 200 and first.body["verdict"] == "accepted" and first.body["replayed"] is False
    assert first.body["account_delta_minor"] == 250 and first.body["epoch"] == 1 and first.body["sequence"] == 1
    assert again.status == 200 and again.body["replayed"] is True and again.body["sequence"] == 1
    assert clash.status == 409 and clash.body["error"] == "fingerprint_mismatch"
    assert twin_a == twin_b and twin_a.status == 200
    assert store.accounts_by_id["acc-1"].balance_minor == 251
    # AdmitRequest: no store lookup before queueing; the commit transaction found the
    # replay and the reused id, and the one read was the replay's outcome read back.
    assert [len(c) for c in store.commits] == [1, 1, 1, 1]  # r1, r1 again, r1 reused, r2 once
    assert store.lookups == [("c1", "r1")]
    assert store.outcomes[("c1", "r1")].account_delta_minor == 250


@pytest.mark.parametrize("fault", [Fault.lie_about_digests, Fault.corrupt_outcomes])
def test_one_faulty_replica_is_masked(fault: Fault) -> None:
    store = FakeStore()
    opened(store, ("acc-1", 10))
    pipe = leader_pipeline(store, {"n3": fault})
    answer = run(with_pipeline(pipe, pipe.submit(env("r1", "withdraw", amount=4), Channel.rest)))
    assert answer.status == 200 and answer.body["verdict"] == "accepted"
    assert store.accounts_by_id["acc-1"].balance_minor == 6


def test_slow_replica_is_masked_within_the_vote_timeout() -> None:
    store = FakeStore()
    opened(store, ("acc-1", 10))
    pipe = leader_pipeline(store, {"n2": Fault.slow_votes})
    started = time.monotonic()
    answer = run(with_pipeline(pipe, pipe.submit(env("r1"), Channel.rest)))
    assert answer.status == 200 and time.monotonic() - started < 1.5


def test_no_agreement_fails_the_batch_and_commits_nothing() -> None:
    store = FakeStore()
    opened(store, ("acc-1", 10))
    pipe = leader_pipeline(store, {"n2": Fault.lie_about_digests, "n3": Fault.slow_votes},
                           vote_timeout_micros=200_000)
    answer = run(with_pipeline(pipe, pipe.submit(env("r1"), Channel.rest)))
    assert answer.status == 503 and answer.headers["Retry-After"] == "1"
    assert answer.body["error"] == "no_agreement" and store.commits == [] and store.outcomes == {}


def test_version_conflict_is_retried_once_then_refused() -> None:
    store = FakeStore()
    opened(store, ("acc-1", 10))
    pipe = leader_pipeline(store)
    store.forced = ["version_conflict"]
    ok = run(with_pipeline(pipe, pipe.submit(env("r1"), Channel.rest)))
    assert ok.status == 200 and len(store.commits) == 2
    store2 = FakeStore()
    opened(store2, ("acc-1", 10))
    pipe2 = leader_pipeline(store2)
    store2.forced = ["version_conflict", "version_conflict"]
    refused = run(with_pipeline(pipe2, pipe2.submit(env("r1"), Channel.rest)))
    assert refused.status == 503 and refused.body["error"] == "version_conflict"


def test_stale_epoch_refuses_and_steps_down() -> None:
    store = FakeStore()
    opened(store, ("acc-1", 10))
    marks: list[int] = []
    pipe = leader_pipeline(store, stale=marks)
    store.epoch = 2  # another node claimed meanwhile
    answer = run(with_pipeline(pipe, pipe.submit(env("r1"), Channel.rest)))
    assert answer.status == 503 and answer.body["error"] == "stale_epoch" and marks == [1]


def test_store_failure_answers_503() -> None:
    store = FakeStore()
    opened(store, ("acc-1", 10))
    pipe = leader_pipeline(store)

    async def scenario() -> Any:
        pipe.start()
        await asyncio.sleep(0)
        task = asyncio.ensure_future(pipe.submit(env("r1"), Channel.log, 0, 1))
        await asyncio.sleep(0)
        store.broken = True
        try:
            return await task
        finally:
            await pipe.close("over")

    answer = run(scenario())
    assert answer.status == 503 and store.outcomes == {}


# Log consumption ------------------------------------------------------------------------------


def test_consumer_admits_in_order_and_dead_letters_garbage() -> None:
    store, flog = FakeStore(), FakeLog(partitions=1)
    opened(store, ("acc-1", 0))
    pipe = leader_pipeline(store)
    payloads = [msgspec.json.encode(body_of(env("l1", amount=5))).decode(), "{not json",
                msgspec.json.encode({**body_of(env("l2")), "extra": 1}).decode(),
                msgspec.json.encode(body_of(env("l3", "withdraw", amount=3))).decode(),
                msgspec.json.encode(body_of(env("l1", amount=6))).decode()]  # id reused, other body
    for p in payloads:
        run(flog.append(0, p))
    consumer = PartitionConsumer(pipe.process, 0, store_port(store), LogPort(flog), pipe.submit,
                                 Config(log_batch_max=2))

    async def scenario() -> None:
        while await store.next_offset(0) <= len(payloads):
            await consumer.window()

    run(with_pipeline(pipe, scenario()))
    assert set(store.dead) == {(0, 2), (0, 3), (0, 5)}
    assert store.dead[(0, 5)] == "fingerprint_mismatch" and store.dead[(0, 2)].startswith("invalid_envelope")
    assert store.accounts_by_id["acc-1"].balance_minor == 2 and run(store.next_offset(0)) == 6
    assert payload_digest("x") == hashlib.sha256(b"x").hexdigest()


# HTTP API over the fake store (ASGI in process) -------------------------------------------------


class _Leader:
    """A NodeRuntime made leader directly (no lease timing), serving through ASGI."""

    def __init__(self, store: FakeStore, nodes: int = 1) -> None:
        self.store = store
        self.runtime = NodeRuntime(settings("n1", nodes=nodes, base_port=1, faults_tolerated=(nodes - 1) // 2),
                                   store_port(store),
                                   LogPort(FakeLog()))

    async def __aenter__(self) -> tuple[NodeRuntime, httpx.AsyncClient]:
        join_as_backup(self.runtime.process)
        granted = await self.store.claim_epoch("n1", 0, 60_000_000)
        await self.runtime.become_leader(0, granted)
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.runtime.app), base_url="http://n1")
        return self.runtime, self.client

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()
        await self.runtime.stop()


def test_client_api_json_shapes() -> None:
    store = FakeStore()

    async def scenario() -> dict[str, Any]:
        async with _Leader(store) as (runtime, c):
            out: dict[str, Any] = {}
            out["open"] = await c.post("/v1/requests", json=body_of(env("o1", "open", "acc-9", 0, owner="c1")))
            out["dep"] = await c.post("/v1/requests", json=body_of(env("d1", "deposit", "acc-9", 40)))
            out["415"] = await c.post("/v1/requests", content=b"{}", headers={"Content-Type": "text/plain"})
            out["413"] = await c.post("/v1/requests", content=b"{" + b" " * 20000 + b"}",
                                      headers={"Content-Type": "application/json"})
            out["400"] = await c.post("/v1/requests", content=b"{nope", headers={"Content-Type": "application/json"})
            out["422u"] = await c.post("/v1/requests", json={**body_of(env("x")), "color": "red"})
            out["422t"] = await c.post("/v1/requests", json={**body_of(env("x")), "amount_minor": "5"})
            missing = body_of(env("x"))
            del missing["account_id"]
            out["422m"] = await c.post("/v1/requests", json=missing)
            out["422k"] = await c.post("/v1/requests", json={**body_of(env("x")), "kind": "steal"})
            out["422c"] = await c.post("/v1/requests", json={**body_of(env("x")), "counterparty_id": "b"})
            out["422a"] = await c.post("/v1/requests", json=body_of(env("x", amount=-5)))
            out["get"] = await c.get("/v1/requests/c1/d1")
            out["get404"] = await c.get("/v1/requests/c1/nothing")
            out["acct"] = await c.get("/v1/accounts/acc-9")
            out["acct404"] = await c.get("/v1/accounts/none")
            out["health"] = await c.get("/healthz")
            out["nodes"] = await c.get("/v1/nodes")
            out["metrics"] = await c.get("/metrics")
            out["405"] = await c.delete("/v1/requests")
            out["404"] = await c.get("/nowhere")
            return out

    r = run(scenario())
    assert r["open"].status_code == 200 and r["dep"].status_code == 200
    dep = r["dep"].json()
    assert set(dep) == {"request_id", "client_id", "kind", "verdict", "reason", "account_id", "counterparty_id",
                        "account_delta_minor", "counterparty_delta_minor", "sequence", "epoch", "replayed"}
    assert dep["verdict"] == "accepted" and dep["reason"] is None and dep["account_delta_minor"] == 40
    for code in ("415", "413", "400"):
        assert r[code].status_code == int(code) and "error" in r[code].json()
    for name in ("422u", "422t", "422m", "422k", "422c", "422a"):
        assert r[name].status_code == 422, name
    got = r["get"].json()
    assert r["get"].status_code == 200 and {k: v for k, v in got.items() if k != "replayed"} == {
        k: v for k, v in dep.items() if k != "replayed"}
    assert r["get404"].status_code == 404 and r["get404"].json()["error"] == "unknown_request"
    assert r["acct"].json() == {"account_id": "acc-9", "owner": "c1", "status": "active", "balance_minor": 40,
                                "version": 2}
    assert r["acct404"].status_code == 404
    assert r["health"].json() == {"node_id": "n1", "status": "leader", "epoch": 1, "leader": "n1"}
    assert r["nodes"].json() == [r["health"].json()]
    assert 'ledger_requests_total{outcome="accepted"} 2' in r["metrics"].text
    assert 'ledger_requests_total{outcome="invalid"} 9' in r["metrics"].text
    assert r["405"].status_code == 405 and r["404"].status_code == 404


def test_openapi_lists_the_routes_and_codes() -> None:
    doc = openapi_document()
    assert doc["openapi"].startswith("3.1")
    assert set(doc["paths"]) == {"/v1/requests", "/v1/requests/{client_id}/{request_id}", "/v1/accounts/{account_id}",
                                 "/v1/nodes", "/healthz", "/metrics", "/openapi.json", "/internal/votes"}
    codes = set(doc["paths"]["/v1/requests"]["post"]["responses"])
    assert codes == {"200", "202", "400", "409", "413", "415", "422", "503"}
    assert doc["components"]["schemas"]["Envelope"]["additionalProperties"] is False


def test_internal_votes_require_authenticated_peers() -> None:
    store = FakeStore()
    opened(store, ("a", 9))
    ks = keys(3)

    async def scenario() -> list[httpx.Response]:
        async with _Leader(store, nodes=3) as (runtime, c):
            body = vote_request_body("b1", 1, [env("r1", account="a", amount=1)], await store.accounts({"a"}))
            sig = body_signature(ks["n2"], body)
            h = {"Content-Type": "application/json"}
            return [await c.post("/internal/votes", content=body, headers=h),
                    await c.post("/internal/votes", content=body, headers={**h, "X-Ledger-Node": "n2",
                                                                          "X-Ledger-Signature": "00" * 32}),
                    await c.post("/internal/votes", content=body, headers={**h, "X-Ledger-Node": "n7",
                                                                          "X-Ledger-Signature": sig}),
                    await c.post("/internal/votes", content=body + b" ", headers={**h, "X-Ledger-Node": "n2",
                                                                                 "X-Ledger-Signature": sig}),
                    await c.post("/internal/votes", content=body, headers={**h, "X-Ledger-Node": "n2",
                                                                          "X-Ledger-Signature": sig})]

    *refused, ok = run(scenario())
    assert [r.status_code for r in refused] == [401, 401, 401, 401]
    ballot = ok.json()
    assert ok.status_code == 200 and ballot["node_id"] == "n1" and len(ballot["digests"]) == 1
    assert ballot_is_signed(Ballot(**{**ballot, "digests": tuple(ballot["digests"])}), ks)


def test_a_bug_is_answered_503_not_500() -> None:
    class Broken:
        config = Config()
        keys: dict[str, bytes] = {}

        def health(self) -> Any:
            raise RuntimeError("boom")

    async def scenario() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=NodeApp(Broken())),  # type: ignore[arg-type]
                                     base_url="http://x") as c:
            return await c.get("/healthz")

    r = run(scenario())
    assert r.status_code == 503 and r.json()["error"] == "internal_error" and r.headers["retry-after"] == "1"


class GatedVoter:
    """A VoteService that answers only once the test opens its gate."""

    def __init__(self, inner: LocalVoteService, gate: asyncio.Event) -> None:
        self.inner, self.gate = inner, gate

    async def vote(self, batch_id: str, epoch: int, items: Any, reads: Any) -> Ballot:
        await self.gate.wait()
        return await self.inner.vote(batch_id, epoch, items, reads)


def test_closing_refuses_queued_and_finishes_the_in_flight_batch() -> None:
    """StopNode / StepDown @guidance: queued requests get 503, an in-flight commit completes."""
    store = FakeStore()
    opened(store, ("acc-1", 1))

    async def scenario() -> tuple[Any, Any, bool]:
        gate = asyncio.Event()
        pipe = leader_pipeline(store, vote_timeout_micros=5_000_000)
        pipe.voters = {n: GatedVoter(v, gate) for n, v in pipe.voters.items()}  # type: ignore[misc]
        pipe.start()
        in_flight = asyncio.ensure_future(pipe.submit(env("r1"), Channel.rest))
        await asyncio.sleep(0.05)
        queued = asyncio.ensure_future(pipe.submit(env("r2"), Channel.rest))
        await asyncio.sleep(0.05)
        closing = asyncio.ensure_future(pipe.close("node stopping"))
        await asyncio.sleep(0.05)
        waited_for_commit = not closing.done()
        queued_answer = await queued
        gate.set()
        await closing
        return await in_flight, queued_answer, waited_for_commit

    first, second, waited = run(scenario())
    assert waited and first.status == 200 and second.status == 503 and second.body["error"] == "unavailable"
    assert [i.envelope.request_id for c in store.commits for i in c] == ["r1"]


@pytest.mark.allium("transition-edge.NodeProcess.leader.backup", "rule-success.StepDown")
def test_a_leader_whose_lease_renewal_fails_steps_down() -> None:
    store = FakeStore()

    async def scenario() -> tuple[NodeStatus, int, Any]:
        async with _Leader(store) as (runtime, c):
            store.holder = "n2"  # another node took the lease
            await runtime.tick()
            status = runtime.process.status
            answer = await runtime.submit_rest(env("r1"), forwarded=True)
            return status, len(runtime.consumers), answer

    status, consumers, answer = run(scenario())
    assert status is NodeStatus.backup and consumers == 0 and answer.status == 503


def test_runtime_stop_is_graceful() -> None:
    store = FakeStore()

    async def scenario() -> NodeRuntime:
        leader = _Leader(store)
        runtime, c = await leader.__aenter__()
        await c.aclose()
        await runtime.stop()
        return runtime

    runtime = run(scenario())
    assert runtime.process.status is NodeStatus.stopped and runtime.process.stopped_at is not None
    assert store.closed and runtime.pipeline is None


# Configuration and process entry ------------------------------------------------------------------


def test_settings_refuse_unsafe_configuration(tmp_path: Any) -> None:
    base = ["--id", "n1", "--ordinal", "1", "--nodes", "3", "--store", "s", "--log", "l"]
    with pytest.raises(ConfigError):
        parse_settings(base, {})  # no key
    key_file = tmp_path / "key"
    key_file.write_text("k" * 32)
    os.chmod(key_file, 0o644)
    with pytest.raises(ConfigError, match="0600"):
        parse_settings([*base, "--key-file", str(key_file)], {})
    os.chmod(key_file, 0o600)
    s = parse_settings([*base, "--key-file", str(key_file), "--fault", "slow_votes"], {})
    assert s.fault is Fault.slow_votes and s.cluster_key == b"k" * 32 and "k" * 32 not in repr(s)
    assert parse_settings(base, {"LEDGER_CLUSTER_KEY": "x" * 32, "LEDGER_FAULT": "lie_about_digests"}).fault \
        is Fault.lie_about_digests
    wrong_ordinal = ["--id", "n4", "--ordinal", "4", "--nodes", "3", "--store", "s", "--log", "l"]
    wrong_id = ["--id", "n2", "--ordinal", "1", "--nodes", "3", "--store", "s", "--log", "l"]
    for args in (wrong_ordinal, wrong_id, [*base, "--fault", "explode"], ["--ordinal", "x"]):
        with pytest.raises(ConfigError):
            parse_settings(args, {"LEDGER_CLUSTER_KEY": "x" * 32})


def test_node_main_refuses_a_taken_port_and_a_bad_store(monkeypatch: Any, capsys: Any, tmp_path: Any) -> None:
    monkeypatch.setenv("LEDGER_CLUSTER_KEY", "y" * 32)
    not_a_dir = tmp_path / "plain-file"
    not_a_dir.write_text("x")  # a database "inside" a file cannot be created, even by mkdir -p
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    try:
        args = ["--id", "n1", "--ordinal", "1", "--nodes", "3", "--base-port", str(port - 1),
                "--store", f"sqlite:///{not_a_dir}/x.db", "--log", f"sqlite:///{not_a_dir}/l.db"]
        assert node_main(args) == 2
        assert "port" in capsys.readouterr().err
    finally:
        holder.close()
    assert node_main(args) == 2  # now the store (or the store unit) is not there
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 1 and "store" in err[-1]


# Three in-process nodes over loopback HTTP -----------------------------------------------------------


def free_base_port(count: int) -> int:
    for _ in range(50):
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        base = probe.getsockname()[1] - 1
        probe.close()
        if base + count >= 65535:
            continue
        try:
            for i in range(1, count + 1):
                s = socket.socket()
                s.bind(("127.0.0.1", base + i))
                s.close()
            return base
        except OSError:
            continue
    raise RuntimeError("no free port range")


@pytest.mark.allium("transition-edge.NodeProcess.backup.leader", "transition-edge.NodeProcess.leader.stopping",
                    "rule-success.ForwardToPrimary")
def test_three_nodes_elect_forward_and_fail_over() -> None:
    store, flog = FakeStoreWithLease(), FakeLog(partitions=2)
    base = free_base_port(3)

    async def scenario() -> dict[str, Any]:
        runtimes, stops, tasks = {}, {}, {}
        for n in ("n1", "n2", "n3"):
            runtimes[n] = NodeRuntime(settings(n, base_port=base), store_port(store), LogPort(flog))
            stops[n] = asyncio.Event()
            tasks[n] = asyncio.ensure_future(serve(runtimes[n], bind("127.0.0.1", base + int(n[1:])), stops[n]))
        out: dict[str, Any] = {}
        try:
            async with httpx.AsyncClient(timeout=5) as c:
                out["leader1"] = await wait_for_leader(c, base, {"n1", "n2", "n3"})
                await c.post(f"http://127.0.0.1:{base + 2}/v1/requests",
                             json=body_of(env("o1", "open", "acc-x", 0)))
                out["forwarded"] = await c.post(f"http://127.0.0.1:{base + 3}/v1/requests",
                                                json=body_of(env("d1", "deposit", "acc-x", 70)))
                await flog.append(flog.partition_of("acc-x"),
                                  msgspec.json.encode(body_of(env("l1", "deposit", "acc-x", 5))).decode())
                out["logged"] = await poll_status(c, base + 1, "c1", "l1")
                stops[out["leader1"]].set()
                await tasks[out["leader1"]]
                out["stopped"] = runtimes[out["leader1"]].process.status
                rest = {"n1", "n2", "n3"} - {out["leader1"]}
                out["leader2"] = await wait_for_leader(c, base, rest)
                out["epoch2"] = runtimes[out["leader2"]].process.epoch
                other = (rest - {out["leader2"]}).pop()
                for _ in range(60):  # a 503 (Retry-After) means retry with the same id
                    out["after"] = await c.post(f"http://127.0.0.1:{base + int(other[1:])}/v1/requests",
                                                json=body_of(env("d2", "deposit", "acc-x", 1)))
                    if out["after"].status_code != 503:
                        break
                    await asyncio.sleep(0.05)
        finally:
            for n in stops:
                stops[n].set()
            await asyncio.gather(*tasks.values(), return_exceptions=True)
        return out

    out = run(scenario(), timeout=40)
    assert out["leader1"] == "n1"  # the lowest ordinal claims first
    assert out["forwarded"].status_code == 200 and out["forwarded"].json()["account_delta_minor"] == 70
    assert out["logged"]["verdict"] == "accepted"
    assert out["stopped"] is NodeStatus.stopped
    assert out["leader2"] in {"n2", "n3"} and out["epoch2"] == 2
    assert out["after"].status_code == 200, out["after"].text
    assert out["after"].json()["epoch"] == 2
    assert store.accounts_by_id["acc-x"].balance_minor == 76


async def wait_for_leader(c: httpx.AsyncClient, base: int, candidates: set[str], timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for n in sorted(candidates):
            try:
                r = await c.get(f"http://127.0.0.1:{base + int(n[1:])}/healthz", timeout=0.5)
                if r.json().get("status") == "leader":
                    return n
            except httpx.HTTPError:
                pass
        await asyncio.sleep(0.05)
    raise AssertionError("no leader elected")


async def poll_status(c: httpx.AsyncClient, port: int, client: str, request_id: str, timeout: float = 10) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = await c.get(f"http://127.0.0.1:{port}/v1/requests/{client}/{request_id}")
        if r.status_code == 200:
            return r.json()
        await asyncio.sleep(0.05)
    raise AssertionError(f"{request_id} never decided")


def test_backups_elect_through_gossip_when_the_store_has_no_lease_reader() -> None:
    store, flog = FakeStore(), FakeLog(partitions=1)
    store.epoch = 5  # a previous cluster's epoch, expired: found by probing upward
    base = free_base_port(3)

    async def scenario() -> tuple[str, int, Any]:
        stops = {n: asyncio.Event() for n in ("n1", "n2", "n3")}
        runtimes = {n: NodeRuntime(settings(n, base_port=base), store_port(store), LogPort(flog)) for n in stops}
        tasks = [asyncio.ensure_future(serve(runtimes[n], bind("127.0.0.1", base + int(n[1:])), stops[n]))
                 for n in stops]
        try:
            async with httpx.AsyncClient(timeout=5) as c:
                leader = await wait_for_leader(c, base, set(stops))
                await asyncio.sleep(0.3)
                answer = await c.post(f"http://127.0.0.1:{base + 3}/v1/requests",
                                      json=body_of(env("o1", "open", "acc-y", 0)))
                return leader, runtimes[leader].process.epoch, answer
        finally:
            for e in stops.values():
                e.set()
            await asyncio.gather(*tasks, return_exceptions=True)

    leader, epoch, answer = run(scenario(), timeout=30)
    assert leader == "n1" and epoch == 6 and answer.status_code == 200


def test_a_slow_submission_is_deferred_with_202_and_later_readable() -> None:
    """JsonShapes: 202 {request_id, status: pending, location}; the Location then serves the outcome."""
    store = FakeStore()
    opened(store, ("acc/1", 3))

    async def scenario() -> tuple[httpx.Response, httpx.Response]:
        async with _Leader(store) as (runtime, c):
            gate = asyncio.Event()
            assert runtime.pipeline is not None
            runtime.pipeline.voters = {n: GatedVoter(v, gate)  # type: ignore[misc]
                                       for n, v in runtime.pipeline.voters.items()}
            runtime.response_wait = 0.1
            deferred = await c.post("/v1/requests", json=body_of(env("r/1", account="acc/1", amount=2)))
            gate.set()
            for _ in range(100):
                later = await c.get(deferred.headers["location"])
                if later.status_code == 200:
                    break
                await asyncio.sleep(0.02)
            return deferred, later

    deferred, later = run(scenario())
    assert deferred.status_code == 202
    assert deferred.json() == {"request_id": "r/1", "status": "pending", "location": "/v1/requests/c1/r%2F1"}
    assert later.status_code == 200 and later.json()["request_id"] == "r/1" and later.json()["account_delta_minor"] == 2


# Amended guidance: ordered log consumption, stepping down when cut off, prompt forwards ---------


def log_payload(e: Envelope) -> str:
    return msgspec.json.encode(body_of(e)).decode()


@pytest.mark.allium("rule-success.CommitBatch")
def test_a_log_item_beyond_the_checkpoint_is_refused_out_of_order_with_503() -> None:
    store = FakeStore()
    store.ordered = True
    opened(store, ("acc-1", 0))
    pipe = leader_pipeline(store)
    answer = run(with_pipeline(pipe, pipe.submit(env("l2"), Channel.log, 0, 2)))  # offset 1 is undecided
    assert answer.status == 503 and answer.body["error"] == "out_of_order" and answer.headers["Retry-After"] == "1"
    assert store.outcomes == {} and store.accounts_by_id["acc-1"].balance_minor == 0


@pytest.mark.allium("rule-success.ConsumeLog")
def test_a_503_in_a_window_makes_the_consumer_rewind_to_next_offset() -> None:
    store, flog = FakeStore(), FakeLog(partitions=1)
    store.ordered = True
    opened(store, ("acc-1", 0))
    pipe = leader_pipeline(store)
    for e in (env("l1", amount=1), env("l2", amount=2), env("l1", amount=7), env("l4", amount=4)):
        run(flog.append(0, log_payload(e)))  # offset 3 reuses l1's id with another body
    answers: dict[int, list[int]] = {}
    refused_once: set[int] = set()

    def admit(e: Envelope, channel: Channel, partition: int, offset: int) -> Any:
        """Pipeline.admit (queues at once), except that the first try of offset 2 fails (503)."""
        if offset == 2 and offset not in refused_once:
            refused_once.add(offset)
            answers.setdefault(offset, []).append(503)
            return Answer(503, {"error": "no_agreement", "detail": "x"}, {"Retry-After": "1"})
        waiter = pipe.admit(e, channel, partition, offset)
        waiter.add_done_callback(lambda f: answers.setdefault(offset, []).append(f.result().status))
        return waiter

    consumer = PartitionConsumer(pipe.process, 0, store_port(store), LogPort(flog), admit, Config())

    async def scenario() -> list[bool]:
        return [await consumer.window(), await consumer.window(), await consumer.window()]

    windows = run(with_pipeline(pipe, scenario()))
    # Window 1: offset 1 decided, offset 2 refused, the rest dropped (the store refuses
    # offset 4 out_of_order, and the reused id at offset 3 is not dead-lettered yet).
    # Window 2 reads again from next_offset = 2: offset 2 commits, offset 3 is a reused
    # id (409, dead-lettered in order) and offset 4 was still behind it (out_of_order).
    # Window 3 reads again from next_offset = 4 and decides it.
    assert windows == [False, False, True] and consumer.rewinds == 2
    assert answers[2] == [503, 200] and answers[3] == [503, 409] and answers[4] == [503, 503, 200]
    assert store.dead_attempts == [(0, 3)] and store.dead == {(0, 3): "fingerprint_mismatch"}
    assert [store.outcomes[("c1", r)].sequence for r in ("l1", "l2", "l4")] == [1, 2, 3]
    assert store.accounts_by_id["acc-1"].balance_minor == 7 and run(store.next_offset(0)) == 5


class FlakyLog(FakeLog):
    """A log whose reads fail while ``down`` is set (the log server is restarting)."""

    down = True

    async def read(self, partition: int, from_offset: int, max_count: int) -> list[Any]:
        if self.down:
            raise ConnectionError("log server is restarting")
        return await super().read(partition, from_offset, max_count)


@pytest.mark.allium("rule-success.ConsumeLog")
def test_a_failed_read_admits_nothing_and_an_empty_read_polls_within_milliseconds() -> None:
    store, flog = FakeStore(), FlakyLog(partitions=1)
    opened(store, ("acc-1", 0))
    pipe = leader_pipeline(store)
    run(flog.append(0, "{not json"))
    submitted: list[int] = []

    async def submit(e: Envelope, channel: Channel, partition: int, offset: int) -> Any:
        submitted.append(offset)
        return await pipe.submit(e, channel, partition, offset)

    # A heartbeat of 2 s: polling on the heartbeat would miss the 1 s deadline below.
    consumer = PartitionConsumer(pipe.process, 0, store_port(store), LogPort(flog), submit,
                                 Config(heartbeat_micros=200_000))
    slow = Config(heartbeat_micros=2_000_000)

    async def scenario() -> float:
        task = asyncio.ensure_future(consumer.run())
        try:
            await asyncio.sleep(0.3)  # reads fail meanwhile: nothing admitted or dead-lettered
            assert store.dead == {} and submitted == []
            consumer.config = slow
            flog.down = False
            while (0, 1) not in store.dead:
                await asyncio.sleep(0.005)
            await asyncio.sleep(0.2)  # idle: empty reads
            run_at = time.monotonic()
            await flog.append(0, log_payload(env("l2", amount=9)))
            while ("c1", "l2") not in store.outcomes:
                await asyncio.sleep(0.005)
            return time.monotonic() - run_at
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    latency = run(with_pipeline(pipe, scenario()))
    assert latency < 1.0 and submitted == [2] and store.dead[(0, 1)].startswith("invalid_envelope")


def counted_next_offset(port: StorePort) -> list[int]:
    """Record every store.next_offset call made through ``port`` (the consumer's only)."""
    calls: list[int] = []
    honest = port.next_offset

    async def next_offset(partition: int) -> int:
        calls.append(partition)
        return await honest(partition)

    port.next_offset = next_offset  # type: ignore[method-assign]
    return calls


@pytest.mark.allium("rule-success.ConsumeLog")
def test_the_checkpoint_is_read_at_start_and_after_a_rewind_not_per_decided_window() -> None:
    """ConsumeLog's @guidance: the consumer asks the store for next_offset when it starts and
    after a rewind; after a window whose records were all decided (committed, replayed or
    dead-lettered) the next window starts right after its last record, and an empty read
    keeps its start, without a store round trip per window."""
    store, flog = FakeStore(), FakeLog(partitions=1)
    store.ordered = True  # a window that started anywhere but the checkpoint would be refused
    opened(store, ("acc-1", 0))
    pipe = leader_pipeline(store)
    payloads = [log_payload(env(f"k{i}", amount=1)) for i in range(1, 6)]
    payloads[2] = "{not json"  # offset 3: dead-lettered, the checkpoint passes it
    payloads.append(log_payload(env("k2", amount=1)))  # offset 6: a replay of offset 2 (200)
    for p in payloads:
        run(flog.append(0, p))
    port = store_port(store)
    calls = counted_next_offset(port)
    refused_once: set[int] = set()

    def admit(e: Envelope, channel: Channel, partition: int, offset: int) -> Any:
        """Pipeline.admit, except that the first try of offset 8 fails (503)."""
        if offset == 8 and offset not in refused_once:
            refused_once.add(offset)
            return Answer(503, {"error": "no_agreement", "detail": "x"}, {"Retry-After": "1"})
        return pipe.admit(e, channel, partition, offset)

    consumer = PartitionConsumer(pipe.process, 0, port, LogPort(flog), admit, Config(log_batch_max=2))

    async def scenario() -> dict[str, Any]:
        out: dict[str, Any] = {}
        out["decided"] = [await consumer.window() for _ in range(4)]  # offsets 1-2, 3-4, 5-6, empty
        out["calls_decided"] = len(calls)
        for i in (7, 8, 9):
            await flog.append(0, log_payload(env(f"k{i}", amount=1)))
        out["rewound"] = [await consumer.window() for _ in range(4)]  # 7 + 8 refused, 8-9, empty, empty
        out["calls_rewound"] = len(calls)
        return out

    out = run(with_pipeline(pipe, scenario()))
    assert out["decided"] == [True, True, True, False]
    assert out["calls_decided"] == 1  # once at the start, not once per window (4 windows)
    assert out["rewound"] == [False, True, False, False] and consumer.rewinds == 1
    assert out["calls_rewound"] == 2  # asked again after the rewind, and only then
    assert store.dead == {(0, 3): store.dead[(0, 3)]} and store.dead[(0, 3)].startswith("invalid_envelope")
    assert [store.outcomes[("c1", f"k{i}")].sequence for i in (1, 2, 4, 5, 7, 8, 9)] == list(range(1, 8))
    assert store.accounts_by_id["acc-1"].balance_minor == 7 and run(store.next_offset(0)) == 10


@pytest.mark.allium("rule-success.ConsumeLog")
def test_after_a_failed_read_the_consumer_asks_the_store_for_next_offset_again() -> None:
    """ConsumeLog's @guidance: a read that fails is never taken for records; the consumer
    reads again from the store's next_offset (and a decided window after it asks nothing)."""
    store, flog = FakeStore(), FlakyLog(partitions=1)
    store.ordered = True
    opened(store, ("acc-1", 0))
    pipe = leader_pipeline(store)
    for i in (1, 2, 3, 4):
        run(flog.append(0, log_payload(env(f"f{i}", amount=1))))
    port = store_port(store)
    calls = counted_next_offset(port)
    consumer = PartitionConsumer(pipe.process, 0, port, LogPort(flog), pipe.admit, Config(log_batch_max=2))

    async def scenario() -> list[Any]:
        flog.down = False
        first = await consumer.window()  # offsets 1-2
        flog.down = True
        try:
            await consumer.window()
            failed = False
        except PortUnavailable:
            failed = True
        flog.down = False
        return [first, failed, await consumer.window(), await consumer.window()]  # 3-4, empty

    assert run(with_pipeline(pipe, scenario())) == [True, True, True, False]
    # Start, then the failed read's window (started from the cache), then asked again after it.
    assert calls == [0, 0]
    assert [store.outcomes[("c1", f"f{i}")].sequence for i in (1, 2, 3, 4)] == [1, 2, 3, 4]


class UnreachableVoter:
    """A peer this primary cannot reach: every vote fails."""

    async def vote(self, batch_id: str, epoch: int, items: Any, reads: Any) -> Ballot:
        raise ConnectionError("peer unreachable")


@pytest.mark.allium("rule-success.StepDown")
def test_a_pipeline_reports_stepdown_failed_rounds_without_f_plus_one_ballots() -> None:
    store = FakeStore()
    opened(store, ("acc-1", 10))
    ks = keys(3)
    store.epoch, store.holder, store.expires = 1, "n1", time.monotonic() + 60
    voters: dict[str, Any] = {"n1": LocalVoteService("n1", ks["n1"], Fault.none),
                              "n2": UnreachableVoter(), "n3": UnreachableVoter()}
    cut: list[int] = []
    pipe = Pipeline(process(NodeStatus.leader, epoch=1), Config(batch_linger_micros=500), store_port(store),
                    voters, ks, lambda: T0, lambda: None, lambda: cut.append(pipe.failed_rounds))

    async def scenario() -> list[tuple[int, int]]:
        seen = []
        for i in range(2):
            answer = await pipe.submit(env(f"a{i}"), Channel.rest)
            seen.append((answer.status, len(cut)))
        pipe.voters["n2"] = LocalVoteService("n2", ks["n2"], Fault.none)  # one good round resets the count
        seen.append(((await pipe.submit(env("b"), Channel.rest)).status, pipe.failed_rounds))
        pipe.voters["n2"] = UnreachableVoter()
        for i in range(3):
            answer = await pipe.submit(env(f"c{i}"), Channel.rest)
            seen.append((answer.status, len(cut)))
        return seen

    seen = run(with_pipeline(pipe, scenario()))
    assert seen == [(503, 0), (503, 0), (200, 0), (503, 0), (503, 0), (503, 1)] and cut == [3]


def dead_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.allium("rule-success.StepDown")
def test_a_leader_cut_off_from_its_peers_steps_down_and_stops_renewing() -> None:
    store = FakeStoreWithLease()
    opened(store, ("acc-1", 10))
    base = dead_port() - 1  # n1's own port is not served; n2 and n3 do not exist
    runtime = NodeRuntime(settings("n1", nodes=3, base_port=base, stepdown_failed_rounds=2),
                          store_port(store), LogPort(FakeLog()))

    async def scenario() -> tuple[Any, ...]:
        join_as_backup(runtime.process)
        granted = await store.claim_epoch("n1", 0, 60_000_000)
        await runtime.become_leader(0, granted)
        try:
            first = await runtime.submit_rest(env("r1"), forwarded=True)
            still = runtime.process.status
            second = await runtime.submit_rest(env("r2"), forwarded=True)
            await asyncio.wait_for(runtime._stepping, 5)
            store.expires = time.monotonic() + 0.2
            await runtime.tick()  # a backup now: it does not renew the lease
            renewed = store.expires > time.monotonic() + 0.3
            return first, still, second, runtime.process.status, len(runtime.consumers), renewed
        finally:
            await runtime.stop()

    first, still, second, status, consumers, renewed = run(scenario())
    assert first.status == 503 and first.body["error"] == "no_agreement" and still is NodeStatus.leader
    assert second.status == 503 and status is NodeStatus.backup and consumers == 0 and renewed is False


@pytest.mark.allium("rule-failure.ClaimPrimary.2")
def test_a_backup_that_cannot_reach_f_plus_one_serving_nodes_does_not_claim() -> None:
    store = FakeStoreWithLease()  # the lease is free (never claimed)
    base = dead_port() - 2  # n2's port: nobody listens; n3's likewise
    runtime = NodeRuntime(settings("n1", nodes=3, base_port=base), store_port(store), LogPort(FakeLog()))

    async def scenario() -> tuple[NodeStatus, int, int]:
        join_as_backup(runtime.process)
        try:
            for _ in range(4):
                await runtime.tick()
            return runtime.process.status, store.epoch, runtime.reachable
        finally:
            await runtime.stop()

    status, epoch, reachable = run(scenario())
    assert status is NodeStatus.backup and epoch == 0 and reachable == 1
    # With a lone-node cluster (f = 0) the same backup reaches f + 1 = 1 (itself) and claims.
    alone = NodeRuntime(settings("n1", nodes=1, base_port=base, faults_tolerated=0), store_port(store),
                        LogPort(FakeLog()))

    async def claim() -> tuple[NodeStatus, int]:
        join_as_backup(alone.process)
        try:
            await alone.tick()
            return alone.process.status, store.epoch
        finally:
            await alone.stop()

    assert run(claim()) == (NodeStatus.leader, 1)


@pytest.mark.allium("rule-success.ForwardToPrimary")
def test_a_forward_that_gets_no_answer_is_a_prompt_503() -> None:
    silent = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)  # accepts connections, never answers
    port = silent.getsockname()[1]
    store = FakeStoreWithLease()
    runtime = NodeRuntime(settings("n1", nodes=3, base_port=port - 2, sync_wait_micros=300_000),
                          store_port(store), LogPort(FakeLog()))

    async def scenario() -> list[tuple[Any, float]]:
        join_as_backup(runtime.process)
        out = []
        try:
            for leader in ("n2", "n3"):  # n2: never answers; n3: nobody listens
                runtime.leader_id = leader
                started = time.monotonic()
                answers = await asyncio.gather(*(runtime.submit_rest(env(f"r{i}"), forwarded=False)
                                                 for i in range(20)))
                out.append((answers, time.monotonic() - started))
            return out
        finally:
            await runtime.stop()

    try:
        (hung, hung_s), (refused, refused_s) = run(scenario())
    finally:
        silent.close()
    for answers in (hung, refused):
        assert all(a.status == 503 and a.headers["Retry-After"] == "1" and a.body["error"] == "no_primary"
                   for a in answers)
    assert 0.25 <= hung_s < 2.0 and refused_s < 2.0  # bounded by sync_wait_micros, not a hang


@pytest.mark.allium("rule-success.AgreeOnBatch", "rule-success.ForwardToPrimary")
def test_the_lean_wire_client_keeps_connections_alive_and_bounds_every_exchange() -> None:
    """Votes and forwards go over WireClient: keep-alive, a bounded pool, a deadline."""
    accepted: list[int] = []

    async def serve_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length")))
                body = await reader.readexactly(length)
                if body == b"hang":
                    await asyncio.sleep(5)
                payload = msgspec.json.encode({"echo": body.decode(), "n": len(accepted)})
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(payload), payload))
                await writer.drain()
                if body == b"bye":
                    writer.close()  # closes a kept-alive connection after answering
                    return
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            writer.close()

    async def scenario() -> tuple[Any, ...]:
        server = await asyncio.start_server(serve_http, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = WireClient("127.0.0.1", port, connections=2)
        try:
            first = await client.request("POST", "/x", b"a", timeout=2)
            second = await client.request("POST", "/x", b"b", timeout=2)
            reused = len(accepted)
            burst = await asyncio.gather(*(client.request("POST", "/x", b"%d" % i, timeout=2) for i in range(10)))
            pooled = len(accepted)
            await client.request("POST", "/x", b"bye", timeout=2)
            await asyncio.sleep(0.05)
            after_close = await client.request("POST", "/x", b"c", timeout=2)  # not on the closed connection
            started = time.monotonic()
            with pytest.raises(WireError):
                await client.request("POST", "/x", b"hang", timeout=0.2)
            hung = time.monotonic() - started
            return first, second, reused, burst, pooled, after_close, hung
        finally:
            await client.close()
            server.close()

    first, second, reused, burst, pooled, after_close, hung = run(scenario())
    assert first.status == 200 and first.json()["echo"] == "a" and first.headers["retry-after"] == "1"
    assert second.json()["echo"] == "b" and reused == 1  # the second exchange reused the connection
    assert [r.json()["echo"] for r in burst] == [str(i) for i in range(10)] and pooled <= 2
    assert after_close.json()["echo"] == "c" and 0.15 <= hung < 1.5

    async def refused() -> None:
        await WireClient("127.0.0.1", dead_port()).request("GET", "/", timeout=1)

    with pytest.raises(WireError):
        run(refused())


# Amended guidance: the event loop and HTTP parser, a submission's bounded wait ----------------


def _loop_seen_by_node_main(monkeypatch: Any) -> tuple[int, str, int]:
    """Run node_main with _amain replaced by a probe: (exit code, loop class, port it was given)."""
    import ledger.node_runtime as runtime_module

    seen: dict[str, Any] = {}

    async def probe(node_settings: NodeSettings, sock: socket.socket) -> int:
        loop = asyncio.get_running_loop()
        seen["loop"] = f"{type(loop).__module__}.{type(loop).__qualname__}"
        seen["port"] = sock.getsockname()[1]
        sock.close()
        return 0

    monkeypatch.setattr(runtime_module, "_amain", probe)
    monkeypatch.setenv("LEDGER_CLUSTER_KEY", "z" * 32)
    base = free_base_port(1)
    code = node_main(["--id", "n1", "--ordinal", "1", "--nodes", "3", "--base-port", str(base),
                      "--store", "fake://", "--log", "fake://"])
    return code, seen.get("loop", ""), seen.get("port", -1) - base


@pytest.mark.allium("rule-success.StartNode")
def test_a_node_runs_on_uvloop_with_httptools_when_they_can_be_imported(monkeypatch: Any) -> None:
    """StartNode's @guidance and the settled ASGI decision: uvicorn with httptools on uvloop."""
    pytest.importorskip("uvloop")
    pytest.importorskip("httptools")
    code, loop, offset = _loop_seen_by_node_main(monkeypatch)
    assert code == 0 and offset == 1  # node 1 listens on base_port + 1
    assert loop == "uvloop.Loop"  # the node's own loop, which uvicorn serves on
    config = make_server(NodeApp(SimpleNamespace())).config  # type: ignore[arg-type]
    assert (config.loop, config.http) == ("uvloop", "httptools")


@pytest.mark.allium("rule-success.StartNode")
def test_a_node_falls_back_to_asyncio_and_h11_when_uvloop_and_httptools_cannot_be_imported(
        monkeypatch: Any) -> None:
    """StartNode's @guidance: loop "asyncio" without uvloop; http "h11" without httptools."""
    monkeypatch.setitem(sys.modules, "uvloop", None)  # "import uvloop" now raises ImportError
    monkeypatch.setitem(sys.modules, "httptools", None)
    code, loop, offset = _loop_seen_by_node_main(monkeypatch)
    assert code == 0 and offset == 1
    assert loop.startswith("asyncio.") and "uvloop" not in loop
    config = make_server(NodeApp(SimpleNamespace())).config  # type: ignore[arg-type]
    assert (config.loop, config.http) == ("asyncio", "h11")


@pytest.mark.allium("rule-success.AdmitRequest", "rule-success.AnswerPending")
def test_an_undecided_submission_gets_202_and_the_pipeline_still_decides_it() -> None:
    """AdmitRequest: a wait bounded by sync_wait_micros ends in 202, never in dropping the
    request; a resubmission with the same id (what a client does after a 202 whose status
    stays 404) joins it and is decided exactly once."""
    store = FakeStore()
    opened(store, ("acc-k", 10))

    async def scenario() -> dict[str, Any]:
        out: dict[str, Any] = {}
        async with _Leader(store) as (runtime, c):
            pipeline = runtime.pipeline
            assert pipeline is not None
            gate = asyncio.Event()
            pipeline.voters = {n: GatedVoter(v, gate)  # type: ignore[misc]
                               for n, v in pipeline.voters.items()}
            runtime.response_wait = 0.1
            started = time.monotonic()
            out["first"] = await c.post("/v1/requests", json=body_of(env("k1", account="acc-k", amount=4)))
            out["waited"] = time.monotonic() - started
            ticket = pipeline._inflight.get(("c1", "k1"))
            out["kept"] = ticket is not None  # still in flight, though its first waiter had its 202
            out["pending_status"] = None if ticket is None else ticket.pending.status
            out["status_before"] = await c.get("/v1/requests/c1/k1")
            out["again"] = await c.post("/v1/requests", json=body_of(env("k1", account="acc-k", amount=4)))
            gate.set()
            for _ in range(200):
                out["status_after"] = await c.get("/v1/requests/c1/k1")
                if out["status_after"].status_code == 200:
                    break
                await asyncio.sleep(0.01)
            out["committed"] = [i.envelope.request_id for batch in store.commits for i in batch]
            out["replay"] = await c.post("/v1/requests", json=body_of(env("k1", account="acc-k", amount=4)))
        return out

    out = run(scenario())
    assert out["first"].status_code == 202 and out["first"].json()["status"] == "pending"
    assert 0.09 <= out["waited"] < 1.5  # bounded by the (shortened) sync wait, not the vote timeout
    assert out["kept"] and out["pending_status"] is PendingStatus.voting  # the pipeline keeps it
    assert out["status_before"].status_code == 404
    assert out["again"].status_code == 202  # joined the first, not queued twice
    assert out["status_after"].status_code == 200 and out["status_after"].json()["account_delta_minor"] == 4
    assert out["replay"].status_code == 200 and out["replay"].json()["replayed"] is True
    assert out["committed"] == ["k1"]  # decided once although submitted twice while undecided
    assert store.accounts_by_id["acc-k"].balance_minor == 14


@pytest.mark.allium("rule-success.AdmitRequest")
def test_a_bounded_wait_costs_no_task_per_submission() -> None:
    """AdmitRequest's @guidance: a shared deadline timer, not asyncio.wait_for (a task per request)."""
    store = FakeStore()
    opened(store, ("acc-t", 0))
    count = 20

    async def scenario() -> tuple[int, list[Answer]]:
        async with _Leader(store) as (runtime, _c):
            pipeline = runtime.pipeline
            assert pipeline is not None
            gate = asyncio.Event()
            pipeline.voters = {n: GatedVoter(v, gate)  # type: ignore[misc]
                               for n, v in pipeline.voters.items()}
            runtime.response_wait = 0.3
            before = len(asyncio.all_tasks())
            waiters = [asyncio.ensure_future(runtime.submit_rest(env(f"t{i}", account="acc-t", amount=1), False))
                       for i in range(count)]
            await asyncio.sleep(0.1)  # every submission is admitted and waiting
            extra = len(asyncio.all_tasks()) - before - count  # beyond the callers' own tasks
            answers = await asyncio.gather(*waiters)
            gate.set()
            for _ in range(200):
                if len(store.outcomes) == count:
                    break
                await asyncio.sleep(0.01)
            return extra, answers

    extra, answers = run(scenario())
    # The in-flight batch holds one vote task per voter; wait_for would add one per submission.
    assert extra <= 3, f"{extra} tasks beyond the submissions' own"
    assert [a.status for a in answers] == [202] * count
    assert len(store.outcomes) == count  # all still decided after their 202


# Amended guidance: uvicorn options, the garbage collector, one deadline timer per
# millisecond of admissions, one evaluation of a batch on the primary ----------------------


@pytest.mark.allium("rule-success.StartNode")
def test_the_http_server_has_no_proxy_headers_middleware_and_no_access_log() -> None:
    """StartNode's @guidance: nodes listen on loopback behind no proxy; both cost CPU per request."""
    import logging

    app = NodeApp(SimpleNamespace())  # type: ignore[arg-type]
    config = make_server(app).config
    assert config.proxy_headers is False and config.access_log is False
    config.load()
    # uvicorn wraps the app in ProxyHeadersMiddleware unless proxy_headers is off: the
    # node's own ASGI callable must be what serves every request.
    assert config.loaded_app is app
    assert not logging.getLogger("uvicorn.access").hasHandlers()


@pytest.mark.allium("rule-success.StartNode")
def test_node_main_tunes_the_garbage_collector_after_opening_the_store_and_log_before_serving(
        monkeypatch: Any) -> None:
    """StartNode's @guidance: gc.collect(), gc.freeze(), gc.set_threshold(50_000, 50, 100),
    once the store and the log are open and before serving."""
    import gc
    import signal

    import ledger.node_runtime as runtime_module

    calls: list[Any] = []

    async def open_store(cls: Any, url: str) -> StorePort:
        calls.append("store")
        return store_port(FakeStore())

    async def open_log(cls: Any, url: str, partitions: int | None = None) -> LogPort:
        calls.append("log")
        return LogPort(FakeLog())

    async def fake_serve(runtime: NodeRuntime, sock: socket.socket, stop_event: Any = None,
                         announce: bool = False) -> int:
        calls.append("serve")
        sock.close()
        await runtime.log.close()
        await runtime.store.close()
        return 0

    monkeypatch.setattr(StorePort, "open", classmethod(open_store))
    monkeypatch.setattr(LogPort, "open", classmethod(open_log))
    monkeypatch.setattr(runtime_module, "serve", fake_serve)
    monkeypatch.setattr(gc, "collect", lambda *a: calls.append("collect") or 0)
    monkeypatch.setattr(gc, "freeze", lambda: calls.append("freeze"))
    monkeypatch.setattr(gc, "set_threshold", lambda *t: calls.append(("set_threshold", t)))
    monkeypatch.setenv("LEDGER_CLUSTER_KEY", "g" * 32)
    handlers = [signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)]
    base = free_base_port(1)
    code = node_main(["--id", "n1", "--ordinal", "1", "--nodes", "3", "--base-port", str(base),
                      "--store", "fake://", "--log", "fake://"])
    assert code == 0
    assert calls == ["store", "log", "collect", "freeze", ("set_threshold", (50_000, 50, 100)), "serve"]
    # The graceful-stop handlers go with the node's loop (none stays bound to a closed loop).
    assert [signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)] == handlers


def _record_timers(loop: asyncio.AbstractEventLoop) -> list[float]:
    """Every loop.call_at from now on (call_later, asyncio.timeout and sleep go through it)."""
    whens: list[float] = []
    real_call_at = loop.call_at

    def call_at(when: float, callback: Any, *args: Any, context: Any = None) -> Any:
        whens.append(when)
        return real_call_at(when, callback, *args, context=context)

    loop.call_at = call_at  # type: ignore[method-assign]
    return whens


@pytest.mark.allium("rule-success.AdmitRequest")
def test_submissions_admitted_within_one_millisecond_share_one_deadline_timer() -> None:
    """AdmitRequest's @guidance: one deadline timer (loop.call_at) shared by the submissions
    admitted within the same millisecond, settling each still-waiting one with its 202; not
    asyncio.timeout or asyncio.wait_for per request."""
    store = FakeStore()
    opened(store, ("acc-m", 0))
    wait = 0.3

    async def scenario() -> dict[str, Any]:
        out: dict[str, Any] = {}
        async with _Leader(store) as (runtime, _c):
            pipeline = runtime.pipeline
            assert pipeline is not None
            gate = asyncio.Event()
            pipeline.voters = {n: GatedVoter(v, gate)  # type: ignore[misc]
                               for n, v in pipeline.voters.items()}
            runtime.response_wait = wait
            loop = asyncio.get_running_loop()
            whens = _record_timers(loop)
            # The loop's clock is held still while each burst is admitted, so a burst
            # lies within one millisecond however busy the machine is.
            frozen = loop.time()
            loop.time = lambda: frozen  # type: ignore[method-assign]
            first = [asyncio.ensure_future(runtime.submit_rest(env(f"m{i}", account="acc-m", amount=1), False))
                     for i in range(20)]
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            loop.time = lambda: frozen + 0.0015  # type: ignore[method-assign]  # the next millisecond
            second = [asyncio.ensure_future(runtime.submit_rest(env(f"n{i}", account="acc-m", amount=1), False))
                      for i in range(5)]
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            del loop.time  # the real clock again
            out["deadline_timers"] = [w - frozen for w in whens if wait - 0.01 < w - frozen < wait + 0.01]
            started = time.monotonic()
            out["answers"] = await asyncio.gather(*first, *second)
            out["waited"] = time.monotonic() - started
            gate.set()
            for _ in range(300):
                if len(store.outcomes) == 25:
                    break
                await asyncio.sleep(0.01)
            del loop.call_at
        return out

    out = run(scenario())
    # asyncio.timeout per request armed 25 timers here; one per millisecond arms two.
    assert len(out["deadline_timers"]) == 2, out["deadline_timers"]
    first_at, second_at = sorted(out["deadline_timers"])
    # Each deadline is its admission's wait rounded up to the millisecond.
    assert wait <= first_at <= wait + 0.0011 and 0.0009 <= second_at - first_at <= 0.0026
    assert [a.status for a in out["answers"]] == [202] * 25
    assert all(a.body["status"] == "pending" and a.body["location"].startswith("/v1/requests/c1/")
               for a in out["answers"])
    assert 0.2 < out["waited"] < 1.5  # they waited for their deadline, not for the votes
    assert len(store.outcomes) == 25  # every deferred submission is still decided


@pytest.mark.allium("rule-success.AdmitRequest", "rule-success.AnswerPending")
def test_a_deadline_or_a_gone_waiter_ends_only_its_own_wait() -> None:
    """A submission deferred with 202, or whose waiter went away, stays in flight; a second
    submission of it joins it and gets the decided answer, and it is committed once."""
    store = FakeStore()
    opened(store, ("acc-j", 5))

    async def scenario() -> dict[str, Any]:
        out: dict[str, Any] = {}
        async with _Leader(store) as (runtime, _c):
            pipeline = runtime.pipeline
            assert pipeline is not None
            gate = asyncio.Event()
            pipeline.voters = {n: GatedVoter(v, gate)  # type: ignore[misc]
                               for n, v in pipeline.voters.items()}
            runtime.response_wait = 0.05
            out["first"] = await runtime.submit_rest(env("j1", account="acc-j", amount=3), False)
            runtime.response_wait = 5.0
            gone = asyncio.ensure_future(runtime.submit_rest(env("j1", account="acc-j", amount=3), False))
            joined = asyncio.ensure_future(runtime.submit_rest(env("j1", account="acc-j", amount=3), False))
            await asyncio.sleep(0.02)
            gone.cancel()  # the client went away
            await asyncio.sleep(0.02)
            gate.set()
            out["joined"] = await joined
            out["gone"] = gone.cancelled()
            out["committed"] = [i.envelope.request_id for batch in store.commits for i in batch]
            out["after"] = await runtime.submit_rest(env("j1", account="acc-j", amount=3), False)
        return out

    out = run(scenario())
    assert out["first"].status == 202 and out["gone"]
    assert out["joined"].status == 200 and out["joined"].body["replayed"] is False
    assert out["joined"].body["account_delta_minor"] == 3
    assert out["committed"] == ["j1"]  # in flight once, although submitted three times
    assert out["after"].status == 200 and out["after"].body["replayed"] is True  # a new ticket: the replay
    assert store.accounts_by_id["acc-j"].balance_minor == 8


class PresignedVoter:
    """A peer replica whose digests were computed before the test counts evaluations."""

    def __init__(self, node_id: str, key: bytes, digests: list[str]) -> None:
        self.node_id, self.key, self.digests = node_id, key, digests

    async def vote(self, batch_id: str, epoch: int, items: Any, reads: Any) -> Ballot:
        return sign_ballot(self.key, self.node_id, batch_id, epoch, self.digests)


@pytest.mark.allium("rule-success.AgreeOnBatch", "contract-signature.VoteService.vote")
def test_the_primary_evaluates_a_batch_once_and_signs_its_ballot_over_that_evaluation(
        monkeypatch: Any) -> None:
    """AgreeOnBatch's @guidance: the primary's own replica signs its ballot over the same
    evaluation the commit uses, not a second evaluate of the same items."""
    import ledger.node_votes as votes

    store = FakeStore()
    opened(store, ("acc-e", 100), ("acc-f", 0))
    items = [env("e1", "withdraw", "acc-e", 30), env("e2", "transfer", "acc-e", 50, counterparty="acc-f"),
             env("e3", "withdraw", "acc-e", 40)]
    reads = run(store.accounts({"acc-e", "acc-f"}))
    honest = [d.digest for d in evaluate_items(items, reads)]
    ks = keys(3)
    store.epoch, store.holder, store.expires = 1, "n1", time.monotonic() + 60
    # f + 1 = 2: the batch commits only if this primary's own ballot is valid and agrees
    # with the one reachable peer, digest for digest.
    voters: dict[str, Any] = {"n1": LocalVoteService("n1", ks["n1"]),
                              "n2": PresignedVoter("n2", ks["n2"], honest), "n3": UnreachableVoter()}
    pipe = Pipeline(process(NodeStatus.leader, epoch=1), Config(batch_linger_micros=20_000), store_port(store),
                    voters, ks, lambda: T0, lambda: None)
    evaluated: list[str] = []
    real_evaluate = votes.evaluate

    def counting_evaluate(envelope: Envelope, primary: Any, counter: Any) -> Any:
        evaluated.append(envelope.request_id)
        return real_evaluate(envelope, primary, counter)

    monkeypatch.setattr(votes, "evaluate", counting_evaluate)

    async def scenario() -> list[Answer]:
        return list(await asyncio.gather(*(pipe.submit(e, Channel.rest) for e in items)))

    answers = run(with_pipeline(pipe, scenario()))
    assert len(store.commits) == 1  # one batch of the three items
    assert evaluated == ["e1", "e2", "e3"]  # once each: the ballot and the commit share it
    assert [a.status for a in answers] == [200, 200, 200]
    assert [a.body["verdict"] for a in answers] == ["accepted", "accepted", "rejected"]
    assert [item.digest for item in store.commits[0]] == honest  # the digests the ballots agreed on


@pytest.mark.allium("rule-success.InjectFault", "rule-success.FailBatch")
def test_a_primary_with_an_injected_fault_still_votes_it_over_its_one_evaluation() -> None:
    """InjectFault applies to the primary's own ballot although it reuses the commit's
    evaluation: with one peer unreachable, its lying ballot leaves no f + 1 agreement."""
    ks = keys(3)

    def pipeline_with(own_fault: Fault, store: FakeStore) -> Pipeline:
        store.epoch, store.holder, store.expires = 1, "n1", time.monotonic() + 60
        voters: dict[str, Any] = {"n1": LocalVoteService("n1", ks["n1"], own_fault),
                                  "n2": LocalVoteService("n2", ks["n2"]), "n3": UnreachableVoter()}
        return Pipeline(process(NodeStatus.leader, epoch=1), Config(batch_linger_micros=500,
                                                                    vote_timeout_micros=300_000),
                        store_port(store), voters, ks, lambda: T0, lambda: None)

    results = {}
    for fault in (Fault.none, Fault.lie_about_digests, Fault.corrupt_outcomes):
        store = FakeStore()
        opened(store, ("acc-1", 10))
        pipe = pipeline_with(fault, store)
        results[fault] = (run(with_pipeline(pipe, pipe.submit(env("r1"), Channel.rest))), store)
    honest, store = results[Fault.none]
    assert honest.status == 200 and len(store.commits) == 1
    for fault in (Fault.lie_about_digests, Fault.corrupt_outcomes):
        answer, store = results[fault]
        assert answer.status == 503 and answer.body["error"] == "no_agreement" and store.commits == []


# Amended guidance: overlapping batches (FormBatch), one fingerprint per request, tallying
# only where ballots differ (AgreeOnBatch), a window queued without a task per record -------


class GatedStore(FakeStore):
    """A fake store whose n-th commit waits for ``gates[n]`` (when there is one) and which
    logs every read and every commit's start and end, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[str] = []
        self.gates: list[asyncio.Event] = []
        self.calls = 0

    async def accounts(self, account_ids: set[str]) -> list[FakeAccountRow]:
        self.events.append("read")
        return await super().accounts(account_ids)

    async def commit(self, epoch: int, items: list[FakeCommitItem]) -> list[FakeCommitResult]:
        n, self.calls = self.calls, self.calls + 1
        self.events.append(f"commit{n + 1}-start")
        if n < len(self.gates):
            await self.gates[n].wait()
        try:
            return await super().commit(epoch, items)
        finally:
            self.events.append(f"commit{n + 1}-end")


async def until(predicate: Any, timeout: float = 1.0) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` passes; whether it held."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.002)
    return True


def _reads_between(events: list[str], start: str, end: str) -> int:
    """How many store reads happened after ``start`` and before ``end``."""
    if start not in events:
        return 0
    tail = events[events.index(start) + 1:]
    return tail[:tail.index(end) if end in tail else len(tail)].count("read")


@pytest.mark.allium("rule-success.FormBatch", "rule-entity-creation.FormBatch.1")
def test_a_batch_formed_while_another_commits_reads_that_batchs_results() -> None:
    """FormBatch's @guidance: while batch 1 commits, batch 2 is formed, read and voted on the
    store's rows overlaid with batch 1's running reads (versions included): the second of two
    withdrawals from one account sees the first, and a deposit into an account batch 1 opens
    sees it open.  At most two batches are in flight and commits go in batch order."""
    store = GatedStore()
    opened(store, ("acc-a", 100))
    store.gates = [asyncio.Event()]  # created outside a loop: fine on 3.10+
    pipe = leader_pipeline(store)

    async def scenario() -> dict[str, Any]:
        out: dict[str, Any] = {}
        first = [asyncio.ensure_future(pipe.submit(env("w1", "withdraw", "acc-a", 60), Channel.rest)),
                 asyncio.ensure_future(pipe.submit(env("o1", "open", "acc-x", 0, owner="c9"), Channel.rest))]
        assert await until(lambda: "commit1-start" in store.events)
        second = [asyncio.ensure_future(pipe.submit(env("w2", "withdraw", "acc-a", 60), Channel.rest)),
                  asyncio.ensure_future(pipe.submit(env("d1", "deposit", "acc-x", 5), Channel.rest))]
        out["overlapped"] = await until(lambda: _reads_between(store.events, "commit1-start", "commit1-end") >= 1)
        await asyncio.sleep(0.05)  # batch 2 is voted meanwhile; a third request arrives
        third = asyncio.ensure_future(pipe.submit(env("w3", "withdraw", "acc-a", 10), Channel.rest))
        await asyncio.sleep(0.05)
        out["held"] = list(store.events)
        store.gates[0].set()
        out["answers"] = [await f for f in (*first, *second, third)]
        return out

    out = run(with_pipeline(pipe, scenario()))
    w1, o1, w2, d1, w3 = out["answers"]
    assert out["overlapped"], "batch 2 was not read while batch 1 committed"
    held = out["held"]
    # Two batches in flight: batch 2 read and voted, no third batch formed, batch 2's
    # commit not issued before batch 1's returned.
    assert held.count("read") == 2 and "commit2-start" not in held
    assert store.events.index("commit1-end") < store.events.index("commit2-start")
    assert (w1.status, w1.body["verdict"], w1.body["account_delta_minor"]) == (200, "accepted", -60)
    assert o1.status == 200 and o1.body["verdict"] == "accepted"
    # The second withdrawal saw the first (40 left), so it is rejected at once, not
    # accepted on the stale 100 and refused by the store.
    assert (w2.status, w2.body["verdict"], w2.body["reason"]) == (200, "rejected", "insufficient_funds")
    assert (d1.status, d1.body["verdict"]) == (200, "accepted")
    assert w3.status == 200 and w3.body["verdict"] == "accepted"
    second = {i.envelope.request_id: i for i in store.commits[1]}
    assert second["w2"].expected_primary_version == 2 and second["d1"].expected_primary_version == 1
    assert [[i.envelope.request_id for i in c] for c in store.commits] == [["w1", "o1"], ["w2", "d1"], ["w3"]]
    assert store.accounts_by_id["acc-a"].balance_minor == 30 and store.accounts_by_id["acc-x"].balance_minor == 5


@pytest.mark.allium("rule-success.CommitBatch", "rule-success.FormBatch")
def test_when_the_first_commit_is_refused_the_dependent_item_is_requeued_with_fresh_reads() -> None:
    """FormBatch's @guidance: no safety rests on the overlay.  Batch 1's withdrawal is refused
    by the store; batch 2's withdrawal, decided on batch 1's overlay, is refused
    version_conflict, re-queued once and answered from fresh reads.  While batch 2 (read on
    an overlay that proved wrong) commits, no batch is formed on its overlay."""
    store = GatedStore()
    opened(store, ("acc-a", 100))
    store.gates = [asyncio.Event(), asyncio.Event()]
    store.forced = ["negative_balance"]  # the store refuses commit 1's items
    pipe = leader_pipeline(store)

    async def scenario() -> dict[str, Any]:
        out: dict[str, Any] = {}
        w1 = asyncio.ensure_future(pipe.submit(env("w1", "withdraw", "acc-a", 60), Channel.rest))
        assert await until(lambda: "commit1-start" in store.events)
        w2 = asyncio.ensure_future(pipe.submit(env("w2", "withdraw", "acc-a", 30), Channel.rest))
        out["overlapped"] = await until(lambda: _reads_between(store.events, "commit1-start", "commit1-end") >= 1)
        await asyncio.sleep(0.05)
        store.gates[0].set()
        out["w1"] = await w1
        assert await until(lambda: "commit2-start" in store.events)
        d1 = asyncio.ensure_future(pipe.submit(env("d1", "deposit", "acc-a", 5), Channel.rest))
        await asyncio.sleep(0.05)
        out["reads_during_commit2"] = _reads_between(store.events, "commit2-start", "commit2-end")
        store.gates[1].set()
        out["w2"], out["d1"] = await w2, await d1
        return out

    out = run(with_pipeline(pipe, scenario()))
    assert out["overlapped"], "batch 2 was not read while batch 1 committed"
    assert out["w1"].status == 503 and out["w1"].body["error"] == "negative_balance"
    w2, d1 = out["w2"], out["d1"]
    assert (w2.status, w2.body["verdict"], w2.body["account_delta_minor"]) == (200, "accepted", -30)
    assert (d1.status, d1.body["verdict"]) == (200, "accepted")
    assert out["reads_during_commit2"] == 0  # batch 2's overlay proved wrong: not built on
    attempts = [[(i.envelope.request_id, i.expected_primary_version) for i in c] for c in store.commits]
    # w2 first on the overlay (version 2), refused; then re-queued with fresh reads (version 1).
    assert attempts == [[("w1", 1)], [("w2", 2)], [("w2", 1), ("d1", 2)]]
    assert store.accounts_by_id["acc-a"].balance_minor == 75 and store.accounts_by_id["acc-a"].version == 3


@pytest.mark.allium("rule-success.FormBatch", "rule-success.AdmitRequest")
def test_the_primary_computes_a_requests_fingerprint_once(monkeypatch: Any) -> None:
    """FormBatch's @guidance: the fingerprint computed at admission is reused for the primary's
    own item digests and for the commit item."""
    import ledger.core as core
    import ledger.node_pipeline as pipeline_module
    import ledger.node_votes as votes

    store = FakeStore()
    opened(store, ("acc-f", 100), ("acc-g", 0))
    items = [env("f1", "withdraw", "acc-f", 30), env("f2", "transfer", "acc-f", 50, counterparty="acc-g"),
             env("f3", "deposit", "acc-g", 1)]
    reads = run(store.accounts({"acc-f", "acc-g"}))
    honest = [d.digest for d in evaluate_items(items, reads)]
    ks = keys(3)
    store.epoch, store.holder, store.expires = 1, "n1", time.monotonic() + 60
    voters: dict[str, Any] = {"n1": LocalVoteService("n1", ks["n1"]),
                              "n2": PresignedVoter("n2", ks["n2"], honest), "n3": UnreachableVoter()}
    pipe = Pipeline(process(NodeStatus.leader, epoch=1), Config(batch_linger_micros=20_000), store_port(store),
                    voters, ks, lambda: T0, lambda: None)
    computed: list[str] = []

    def counting(envelope: Envelope) -> str:
        computed.append(envelope.request_id)
        return core.fingerprint(envelope)

    monkeypatch.setattr(pipeline_module, "fingerprint", counting)
    monkeypatch.setattr(votes, "fingerprint", counting)

    async def scenario() -> list[Answer]:
        return list(await asyncio.gather(*(pipe.submit(e, Channel.rest) for e in items)))

    answers = run(with_pipeline(pipe, scenario()))
    assert [a.status for a in answers] == [200, 200, 200] and len(store.commits) == 1
    assert sorted(computed) == ["f1", "f2", "f3"]  # once each, at admission
    assert [i.fingerprint for i in store.commits[0]] == [core.fingerprint(e) for e in items]
    assert [i.digest for i in store.commits[0]] == honest  # the digests are over the same fingerprints


def _naive_agreed(ballots: list[Ballot], size: int, needed: int) -> list[str | None]:
    """The reference tally: a count per item over every ballot."""
    from collections import Counter

    out: list[str | None] = []
    for i in range(size):
        best = Counter(b.digests[i] for b in ballots).most_common(1)
        out.append(best[0][0] if best and best[0][1] >= needed else None)
    return out


@pytest.mark.allium("rule-success.AgreeOnBatch")
def test_the_tally_counts_per_item_only_where_ballots_differ(monkeypatch: Any) -> None:
    """AgreeOnBatch's @guidance: equal digest lists agree on every item at once; only the items
    on which some ballot differs are counted one by one; the result is the per-item count's."""
    import random

    import ledger.node_votes as votes

    counted: list[int] = []

    class CountingCounter(votes.Counter):  # type: ignore[misc,name-defined]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            counted.append(1)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(votes, "Counter", CountingCounter)
    ks = keys(3)
    size = 64
    honest = [f"d{i}" for i in range(size)]

    def tally_of(*lists: list[str]) -> Tally:
        t = Tally.open("b", 1, size, 1, ks)
        for n, digests in zip(("n1", "n2", "n3"), lists):
            assert t.add(n, sign_ballot(ks[n], n, "b", 1, digests))
            t.complete()  # asked after every ballot, as the pipeline does
        return t

    equal = tally_of(honest, list(honest), list(honest))
    assert equal.agreed() == honest and equal.complete() and counted == []
    liar = tally_of(honest, [f"x{i}" for i in range(size)], list(honest))
    assert liar.agreed() == honest and counted == []  # two equal lists outvote the third everywhere
    one_off = list(honest)
    one_off[7] = "other"
    two = Tally.open("b", 1, size, 1, ks)
    two.add("n1", sign_ballot(ks["n1"], "n1", "b", 1, honest))
    two.add("n2", sign_ballot(ks["n2"], "n2", "b", 1, one_off))
    assert two.agreed() == [None if i == 7 else d for i, d in enumerate(honest)] and not two.complete()
    assert len(counted) == 1  # only item 7 was counted
    assert two.supporters(two.agreed()) == list(two.valid.values())
    # Whatever the ballots, the result is the per-item count's.
    rng = random.Random(7)
    for _ in range(200):
        n = rng.randint(1, 3)
        lists = [[rng.choice(["a", "b", "c"]) for _ in range(6)] for _ in range(n)]
        t = Tally.open("b", 1, 6, 1, ks)
        for name, digests in zip(("n1", "n2", "n3"), lists):
            t.add(name, sign_ballot(ks[name], name, "b", 1, digests))
        assert t.agreed() == _naive_agreed(list(t.valid.values()), 6, 2)
        assert t.complete() == (None not in _naive_agreed(list(t.valid.values()), 6, 2))


@pytest.mark.allium("rule-success.ConsumeLog")
def test_a_window_is_queued_together_without_a_task_per_record() -> None:
    """ConsumeLog's @guidance: a window's records are queued together in offset order, then
    their answers awaited in order; no task and no gather per record (the leader's own
    consumer, as NodeRuntime wires it to its pipeline)."""
    store, flog = FakeStore(), FakeLog(partitions=1)
    store.ordered = True
    opened(store, ("acc-1", 0))
    count = 40
    for i in range(count):
        run(flog.append(0, log_payload(env(f"q{i}", amount=1))))

    async def scenario() -> tuple[int, list[list[int]]]:
        runtime = NodeRuntime(settings("n1", nodes=1, base_port=1, faults_tolerated=0), store_port(store),
                              LogPort(flog))
        join_as_backup(runtime.process)
        granted = await store.claim_epoch("n1", 0, 60_000_000)
        before = len(asyncio.all_tasks())
        await runtime.become_leader(0, granted)  # starts the pipeline and one consumer task
        pipeline = runtime.pipeline
        assert pipeline is not None
        gate = asyncio.Event()
        pipeline.voters = {n: GatedVoter(v, gate) for n, v in pipeline.voters.items()}  # type: ignore[misc]
        try:
            await until(lambda: pipeline.queued == 0 and len(asyncio.all_tasks()) > before + 2)
            await asyncio.sleep(0.05)  # the window's records are queued and their batch is voted
            extra = len(asyncio.all_tasks()) - before - 2  # beyond the pipeline's and the consumer's
            gate.set()
            assert await until(lambda: len(store.outcomes) == count, timeout=5)
            return extra, [[i.offset for i in c] for c in store.commits]
        finally:
            gate.set()
            await runtime.stop()

    extra, commits = run(scenario())
    # The batch being voted holds one task per voter; a task per record would add 40.
    assert extra <= 3, f"{extra} tasks beyond the pipeline's and the consumer's"
    assert commits == [list(range(1, count + 1))]  # the whole window in one batch, in offset order
    assert store.accounts_by_id["acc-1"].balance_minor == count and run(store.next_offset(0)) == count + 1


@pytest.mark.allium("rule-success.ConsumeLog")
def test_the_consumer_reads_next_offset_only_after_its_windows_commits_returned() -> None:
    """store.allium's @guidance: reads run on their own connection and may overtake a commit in
    flight; only a read that starts after a commit returned must see it.  The consumer relies on
    no more: after a 503 it drains the window's answers (all given once their commit returned)
    before it asks next_offset, so the rewind never starts from a checkpoint a commit in flight
    is about to move."""
    store, flog = GatedStore(), FakeLog(partitions=1)
    store.ordered = True
    store.gates = [asyncio.Event()]
    opened(store, ("acc-1", 0))
    pipe = leader_pipeline(store)
    for i in (1, 2, 3, 4):
        run(flog.append(0, log_payload(env(f"g{i}", amount=1))))
    port = store_port(store)
    honest = port.next_offset

    async def next_offset(partition: int) -> int:
        store.events.append("next_offset")
        return await honest(partition)

    port.next_offset = next_offset  # type: ignore[method-assign]
    refused_once: set[int] = set()

    def admit(e: Envelope, channel: Channel, partition: int, offset: int) -> Any:
        if offset == 2 and offset not in refused_once:
            refused_once.add(offset)
            return Answer(503, {"error": "no_agreement", "detail": "x"}, {"Retry-After": "1"})
        return pipe.admit(e, channel, partition, offset)

    consumer = PartitionConsumer(pipe.process, 0, port, LogPort(flog), admit, Config())

    async def scenario() -> list[bool]:
        first = asyncio.ensure_future(consumer.window())
        assert await until(lambda: "commit1-start" in store.events)
        await asyncio.sleep(0.05)  # the commit is held: the consumer must not ask the store meanwhile
        store.gates[0].set()
        return [await first, await consumer.window()]

    assert run(with_pipeline(pipe, scenario())) == [False, True]
    events = [e for e in store.events if e != "read"]
    assert events == ["next_offset", "commit1-start", "commit1-end", "next_offset", "commit2-start", "commit2-end"]
    assert [store.outcomes[("c1", f"g{i}")].sequence for i in (1, 2, 3, 4)] == [1, 2, 3, 4]
