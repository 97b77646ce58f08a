"""The running node: StartNode, JoinAsBackup, ClaimPrimary, StepDown, StopNode,
NodeStopped, ForwardToPrimary, RefuseWhenNotServing and InjectFault wired to
the store's lease, the HTTP server (uvicorn) and the primary's pipeline.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import importlib
import json
import logging
import signal
import socket
import sys
import time
from urllib.parse import quote
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Iterator, Literal

import httpx
import msgspec
import uvicorn

from ledger.core import AccountStatus, Channel, Envelope, Rejected
from ledger.node import (
    Ballot, NodeProcess, NodeStatus, cast_ballot, claim_primary, forward_to_primary, inject_fault,
    join_as_backup, node_stopped, refuse_when_not_serving, start_node, step_down, stop_node,
)
from ledger.node_config import ConfigError, NodeSettings, parse_settings
from ledger.node_http import FORWARDED_HEADER, NodeApp
from ledger.node_log import PartitionConsumer
from ledger.node_pipeline import DEFERRED, Answer, Pipeline, SharedDeadlines, outcome_answer, unavailable
from ledger.node_ports import LeaseView, LogPort, PortUnavailable, StorePort, store_lease_micros
from ledger.node_votes import ROW_FIELDS, LocalVoteService, PeerVoteClient
from ledger.node_wire import WireError, WirePool
from ledger.node import VoteService

log = logging.getLogger("ledger.node")

# ASSUMPTION: DurableStore.current_lease is how a backup learns the lease; a store
# without it (an older store build) is still served: the backup then learns the
# epoch from its peers and probes this many epochs upward in one claim.  Safe:
# claim_epoch succeeds only for the store's current epoch with an expired lease.
EPOCH_PROBE = 8

# ForwardToPrimary's @guidance: the forwarding pool is at least as large as the
# submissions a node may hold at once.  ASSUMPTION: the HTTP server admits at most
# this many concurrent connections/requests (uvicorn's limit_concurrency answers
# 503 beyond it), so the pool can never be the bottleneck of a forward.
MAX_HELD_SUBMISSIONS = 1024

# AgreeOnBatch's @guidance: a few vote connections per peer (one batch is voted at a
# time while at most one other commits; late ballots of earlier batches may still hold
# a connection).
VOTE_CONNECTIONS = 4


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class NodeRuntime:
    """One node process: lease watching, leadership, HTTP service and graceful stop."""

    def __init__(self, settings: NodeSettings, store: StorePort, log_: LogPort, *,
                 clock: Callable[[], datetime] = utc_now) -> None:
        self.settings = settings
        self.config = settings.config
        self.keys = settings.keys()
        self.store = store
        self.log = log_
        self.clock = clock
        # AdmitRequest's @guidance: a submission waits at most sync_wait_micros for its
        # answer, then gets 202 (api.allium's response_wait has the same 2 s default).
        self.response_wait = self.config.sync_wait_micros / 1e6
        self.deadlines = SharedDeadlines()  # one timer per millisecond of admissions, not per request
        self.process: NodeProcess = start_node({}, settings.node_id, settings.ordinal, settings.fault,
                                               clock(), self.config)
        self.voter = LocalVoteService(settings.node_id, self.keys[settings.node_id], settings.fault,
                                      settings.slow_vote_seconds)
        self.pipeline: Pipeline | None = None
        self.consumers: list[asyncio.Task[None]] = []
        self.leader_id: str | None = None
        self.known_epoch = 0
        self.leader_seen = time.monotonic()  # a fresh node first gives a live leader a lease's time
        self.expired_since: float | None = None
        # Keep-alive expiry below uvicorn's (timeout_keep_alive, set to 30 s in make_server)
        # so a pooled connection is never reused just as the peer closes it.
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(self.response_wait + 1.0),
                                        limits=httpx.Limits(max_connections=64, max_keepalive_connections=32,
                                                            keepalive_expiry=10.0))
        # ForwardToPrimary: one shared keep-alive client whose pool holds every
        # submission this node may hold at once; connect, pool wait and answer are all
        # bounded by sync_wait_micros, so a forward is a prompt 503, never a hang.
        self.forward_wait = self.config.sync_wait_micros / 1e6
        self.forwards = WirePool(connections=MAX_HELD_SUBMISSIONS)
        # AgreeOnBatch: votes go over the same lean client, a few connections per peer.
        self.votes = WirePool(connections=VOTE_CONNECTIONS)
        # ClaimPrimary: serving nodes (itself included) whose /healthz answered in the
        # last heartbeat's probe.
        self.reachable = 1
        self.lease_read_at = float("-inf")  # store.current_lease is read at most once per heartbeat
        self.app = NodeApp(self)
        self._heartbeat: asyncio.Task[None] | None = None
        self._stepping: asyncio.Task[None] | None = None

    # Lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """JoinAsBackup, InjectFault (launcher configuration only), then watch the lease."""
        join_as_backup(self.process)
        inject_fault(self.process, self.settings.fault)
        self._heartbeat = asyncio.get_running_loop().create_task(self._heartbeat_loop(), name="heartbeat")

    async def stop(self, server: uvicorn.Server | None = None) -> None:
        """StopNode then NodeStopped: listener closed, queued requests 503, in-flight commit done."""
        if self.process.status in (NodeStatus.stopping, NodeStatus.stopped):
            return
        stop_node(self.process)
        if server is not None:
            server.should_exit = True  # closes the listener; open exchanges still get their answer
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)
        await self._leave_leadership("this node is stopping")
        await self.client.aclose()
        await self.forwards.close()
        await self.votes.close()
        await self.log.close()
        await self.store.close()
        node_stopped(self.process, self.clock())

    async def _heartbeat_loop(self) -> None:
        period = self.config.heartbeat_micros / 1e6
        while self.process.is_serving:
            try:
                await self.tick()
            except Exception:  # the loop must survive a bad tick
                log.exception("heartbeat failed")
            await asyncio.sleep(period)

    async def tick(self) -> None:
        """One heartbeat: a leader renews its lease; a backup watches it and may claim."""
        if self.process.status is NodeStatus.leader:
            try:
                ok = await self.store.renew_lease(self.process.node_id, self.process.epoch,
                                                  self.settings.lease_micros)
            except PortUnavailable:
                ok = False
            if not ok and self.process.status is NodeStatus.leader:
                await self.step_down("the lease could not be renewed")
        elif self.process.status is NodeStatus.backup:
            expired, readable = await self.observe_lease()
            await self.maybe_claim(expired, readable)

    # Lease watching and claiming -----------------------------------------------------------------

    async def observe_lease(self) -> tuple[bool, bool]:
        """(lease expired?, read from the store?): store.current_lease, read once per heartbeat.

        The peers' /healthz is probed in the same heartbeat: ClaimPrimary needs to
        know how many serving nodes this backup can reach.
        """
        lease, views = await asyncio.gather(self._read_lease(), self.gossip())
        self.reachable = 1 + sum(1 for v in views if v.get("status") in ("backup", "leader"))
        if lease is not None:
            return self._apply_lease(lease), True
        return time.monotonic() - self.leader_seen > self.settings.lease_micros / 1e6, False

    def _apply_lease(self, lease: LeaseView) -> bool:
        """Learn the epoch and the lease holder from store.current_lease; True if it expired."""
        self.known_epoch = max(self.known_epoch, lease.epoch)
        expired = lease.holder is None or lease.expires_at <= self.clock()
        self.leader_id = None if expired else lease.holder
        return expired

    async def _read_lease(self) -> LeaseView | None:
        """store.current_lease (None when unreadable); remembers when it was read."""
        self.lease_read_at = time.monotonic()
        try:
            return await self.store.read_lease()
        except PortUnavailable:
            return None

    async def _refresh_leader(self) -> None:
        """ForwardToPrimary with no known primary: read the lease again, at most once per heartbeat."""
        if time.monotonic() - self.lease_read_at < self.config.heartbeat_micros / 1e6:
            return
        lease = await self._read_lease()
        if lease is not None:
            self._apply_lease(lease)

    async def gossip(self) -> list[dict[str, Any]]:
        """Ask every peer's /healthz; a peer that says it leads renews our view of the lease."""
        views = await asyncio.gather(*(self._peer_health(p) for p in self.settings.peer_ids))
        for view in views:
            epoch = view.get("epoch")
            if isinstance(epoch, int):
                self.known_epoch = max(self.known_epoch, epoch)
            if view.get("status") == "leader" and isinstance(epoch, int) and epoch >= self.known_epoch:
                self.leader_id, self.leader_seen = view["node_id"], time.monotonic()
        if time.monotonic() - self.leader_seen > self.settings.lease_micros / 1e6:
            self.leader_id = None
        return views

    async def _peer_health(self, peer: str) -> dict[str, Any]:
        try:
            r = await self.client.get(f"{self.settings.url_of(peer)}/healthz",
                                      timeout=max(0.05, self.config.heartbeat_micros / 2e6))
            body = r.json()
            return body if isinstance(body, dict) else {"node_id": peer, "status": "unreachable"}
        except (httpx.HTTPError, ValueError):
            return {"node_id": peer, "status": "unreachable", "epoch": None, "leader": None}

    async def maybe_claim(self, expired: bool, readable: bool) -> bool:
        """ClaimPrimary's @guidance: after expiry wait (ordinal - 1) heartbeats, then claim."""
        if not expired:
            self.expired_since = None
            return False
        if self.reachable < self.config.faults_tolerated + 1:
            # Cut off from its peers it could take the lease but never gather f + 1
            # votes, and would halt the cluster until it lost the lease again.
            log.warning("%s does not claim: reaches %d serving nodes, needs %d", self.process.node_id,
                        self.reachable, self.config.faults_tolerated + 1)
            return False
        now = time.monotonic()
        if self.expired_since is None:
            self.expired_since = now
        wait = (self.process.ordinal - 1) * self.config.heartbeat_micros / 1e6
        if now - self.expired_since < wait:
            return False
        candidates = [self.known_epoch] if readable else range(self.known_epoch, self.known_epoch + EPOCH_PROBE)
        for expected in candidates:
            try:
                granted = await self.store.claim_epoch(self.process.node_id, expected, self.settings.lease_micros)
            except PortUnavailable:
                return False
            if granted is not None:
                await self.become_leader(expected, granted)
                return True
        return False  # a refused claim leaves it a backup

    async def become_leader(self, expected: int, granted: int) -> None:
        """ClaimPrimary: leader at the granted epoch; fresh pipeline; consume every partition."""
        now = self.clock()
        # The store granted the claim, which proves the lease had expired by its clock.
        claim_primary(self.process, LeaseView(expected, None, now), now)
        if granted != self.process.epoch:
            log.warning("store granted epoch %d, expected %d", granted, self.process.epoch)
        self.process.epoch = granted  # the store's grant is authoritative
        self.known_epoch, self.leader_id, self.expired_since = granted, self.process.node_id, None
        voters: dict[str, VoteService] = {self.process.node_id: self.voter}
        for peer in self.settings.peer_ids:
            voters[peer] = PeerVoteClient(self.process.node_id, self.keys[self.process.node_id], peer,
                                          self.settings.url_of(peer), self.votes.client(self.settings.url_of(peer)),
                                          self.config.vote_timeout_micros / 1e6)
        self.pipeline = Pipeline(self.process, self.config, self.store, voters, self.keys, self.clock,
                                 self._on_stale_epoch, self._on_cut_off)
        self.pipeline.start()
        loop = asyncio.get_running_loop()
        self.consumers = [loop.create_task(self._consume(p), name=f"consume-{p}")
                          for p in range(self.log.partitions)]
        log.warning("%s is primary at epoch %d", self.process.node_id, granted)

    async def _consume(self, partition: int) -> None:
        assert self.pipeline is not None
        pipeline = self.pipeline
        # ConsumeLog's @guidance: a window's records are queued together without a task
        # per record: Pipeline.admit queues synchronously and returns the answer's future.
        consumer = PartitionConsumer(self.process, partition, self.store, self.log, pipeline.admit, self.config)
        try:
            await consumer.run()
        except Rejected:
            pass  # no longer leader: ConsumeLog stops

    def _on_stale_epoch(self) -> None:
        self._step_down_soon("the store fenced this epoch")

    def _on_cut_off(self) -> None:
        self._step_down_soon(f"{self.config.stepdown_failed_rounds} vote rounds in a row without f + 1 ballots")

    def _step_down_soon(self, reason: str) -> None:
        """Step down from a task: the pipeline that asks must not await its own close."""
        if self._stepping is None or self._stepping.done():
            self._stepping = asyncio.get_running_loop().create_task(self.step_down(reason))

    async def step_down(self, reason: str) -> None:
        """StepDown: answer every queued request 503, stop consuming the log and stop renewing.

        Renewal stops because the heartbeat renews only while the status is leader;
        a connected backup claims the lease once it expires.
        """
        if self.process.status is not NodeStatus.leader:
            return
        step_down(self.process)
        log.warning("%s steps down: %s", self.process.node_id, reason)
        await self._leave_leadership(reason)
        self.leader_id, self.leader_seen, self.expired_since = None, time.monotonic(), None

    async def _leave_leadership(self, reason: str) -> None:
        consumers, self.consumers = self.consumers, []
        for task in consumers:
            task.cancel()
        await asyncio.gather(*consumers, return_exceptions=True)
        pipeline, self.pipeline = self.pipeline, None
        if pipeline is not None:
            await pipeline.close(reason)

    # NodeService (used by the HTTP layer) -----------------------------------------------------

    async def submit_rest(self, envelope: Envelope, forwarded: bool) -> Answer:
        """Leader: the pipeline with a bounded wait (202 after it); backup: forward; else 503."""
        if not self.process.is_serving:
            refuse_when_not_serving(self.process, envelope)
            return unavailable("unavailable", f"node is {self.process.status.value}")
        pipeline = self.pipeline
        if self.process.status is NodeStatus.leader and pipeline is not None:
            return await self.await_answer(pipeline, envelope)
        if forwarded:  # never forward twice: the sender thought we lead
            return unavailable("unavailable", "this node is not the primary")
        return await self.forward(envelope)

    async def await_answer(self, pipeline: Pipeline, envelope: Envelope) -> Answer:
        """AdmitRequest with its wait bounded by sync_wait_micros: the answer, or 202 pending.

        AdmitRequest's @guidance: one deadline timer shared by the submissions admitted
        within the same millisecond (SharedDeadlines: loop.call_at settling each
        still-waiting waiter), not asyncio.timeout or asyncio.wait_for per request.
        The deadline ends only this wait: the request stays queued or in flight and is
        still decided, and a client that got 202 polls its location (resolved question:
        what a client does after a 202).
        """
        waiter = pipeline.admit(envelope, Channel.rest)
        if isinstance(waiter, Answer):
            return waiter
        self.deadlines.add(waiter.get_loop(), waiter, self.response_wait)
        answer = await waiter
        return pending_answer(envelope) if answer is DEFERRED else answer

    async def forward(self, envelope: Envelope) -> Answer:
        """ForwardToPrimary: relay to the lease holder; 503 Retry-After: 1 when none answers."""
        forward_to_primary(self.process, envelope)
        if self.leader_id is None:
            await self._refresh_leader()
        target = self.leader_id
        if target is None or target == self.process.node_id:
            return unavailable("no_primary", "no primary is known; retry")
        body = {"client_id": envelope.client_id, "request_id": envelope.request_id, "kind": envelope.kind.value,
                "account_id": envelope.account_id, "counterparty_id": envelope.counterparty_id,
                "owner": envelope.owner, "amount_minor": envelope.amount_minor}
        client = self.forwards.client(self.settings.url_of(target))
        try:
            r = await client.request("POST", "/v1/requests", msgspec.json.encode(body),
                                     {"Content-Type": "application/json", FORWARDED_HEADER: self.process.node_id},
                                     timeout=self.forward_wait)
            data = r.json()
        except WireError as exc:
            # No connection or no answer within sync_wait_micros: a prompt 503.
            return unavailable("no_primary", f"the primary {target} did not answer: {exc}")
        if not isinstance(data, dict):
            return unavailable("no_primary", f"the primary {target} answered no JSON object")
        headers = {k: r.headers[k.lower()] for k in ("Retry-After", "Location") if k.lower() in r.headers}
        return Answer(r.status, data, headers)

    async def request_status(self, client_id: str, request_id: str) -> Answer:
        try:
            outcome = await self.store.find_outcome(client_id, request_id)
        except PortUnavailable as exc:
            return unavailable("store_unavailable", str(exc))
        if outcome is None:
            return Answer(404, {"error": "unknown_request", "detail": "no outcome for this request"})
        return outcome_answer(outcome, replayed=False)

    async def account(self, account_id: str) -> Answer:
        try:
            rows = [r for r in await self.store.accounts({account_id}) if r.account_id == account_id]
        except PortUnavailable as exc:
            return unavailable("store_unavailable", str(exc))
        if not rows:
            return Answer(404, {"error": "unknown_account", "detail": "no such account"})
        row = rows[0]
        return Answer(200, {"account_id": row.account_id, "owner": row.owner,
                            "status": str(getattr(row.status, "value", row.status)),
                            "balance_minor": row.balance_minor, "version": row.version})

    def health(self) -> tuple[int, dict[str, Any]]:
        leading = self.process.status is NodeStatus.leader
        body = {"node_id": self.process.node_id, "status": self.process.status.value,
                "epoch": self.process.epoch if leading else self.known_epoch, "leader": self.leader_id}
        return (200 if self.process.is_serving else 503), body

    async def nodes(self) -> list[dict[str, Any]]:
        """GET /v1/nodes: every configured node's /healthz view (this one answered locally).

        ASSUMPTION: "every node the store knows" is every configured node; the
        DurableStore contract has no membership call, and each node's view of
        itself is the authoritative one.
        """
        peers = await asyncio.gather(*(self._peer_health(p) for p in self.settings.peer_ids))
        return sorted([self.health()[1], *peers], key=lambda v: str(v.get("node_id")))

    async def cast_vote(self, batch_id: str, epoch: int, items: Sequence[Envelope],
                        reads: Sequence[Mapping[str, Any]]) -> Ballot | None:
        """PeerVotes / CastBallot: a serving replica evaluates and signs; None when not serving."""
        try:
            cast_ballot(self.process)
        except Rejected:
            return None
        if epoch > self.process.epoch and self.process.status is NodeStatus.leader:
            self._on_stale_epoch()  # someone holds a newer epoch: this primary was deposed
        self.known_epoch = max(self.known_epoch, epoch)
        try:
            rows = [self.store.account_row(**{k: (AccountStatus(r[k]) if k == "status" else r[k])
                                              for k in ROW_FIELDS}) for r in reads]
        except (KeyError, ValueError, TypeError):
            return None
        return await self.voter.vote(batch_id, epoch, items, rows)


def pending_answer(envelope: Envelope) -> Answer:
    """ClientApi's 202 {request_id, status: pending, location} with the status location."""
    location = f"/v1/requests/{quote(envelope.client_id, safe='')}/{quote(envelope.request_id, safe='')}"
    return Answer(202, {"request_id": envelope.request_id, "status": "pending", "location": location},
                  {"Location": location})


# Process entry point -------------------------------------------------------------------------

LoopName = Literal["uvloop", "asyncio"]
HttpName = Literal["httptools", "h11"]


def _importable(module: str) -> bool:
    """True when ``module`` can actually be imported (not merely found on the path)."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def choose_loop() -> LoopName:
    """StartNode's @guidance: loop "uvloop", "asyncio" when uvloop cannot be imported.

    Settled decision (the ASGI server and loop): uvloop measured 0.72-0.91x the CPU
    per request of the asyncio loop.
    """
    return "uvloop" if _importable("uvloop") else "asyncio"


def choose_http() -> HttpName:
    """StartNode's @guidance: http "httptools", "h11" when httptools cannot be imported."""
    return "httptools" if _importable("httptools") else "h11"


def loop_factory(loop: LoopName) -> Callable[[], asyncio.AbstractEventLoop]:
    """The event loop constructor for ``loop`` (the node runs its own loop, see run_node_main)."""
    if loop == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the node installs graceful handlers."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def make_server(app: NodeApp, sock: socket.socket | None = None, host: str = "127.0.0.1",
                port: int = 0) -> _Server:
    """The node's uvicorn server (StartNode's @guidance).

    No proxy-headers middleware and no access log: nodes listen on loopback behind
    no proxy, and both cost CPU on every request (uvicorn enables the first by
    default, wrapping the app in ProxyHeadersMiddleware).
    """
    # The loop named here is the one run_node_main runs the node on: uvicorn's own
    # loop setup is not used because the node calls Server.serve inside that loop.
    config = uvicorn.Config(app, host=host, port=port, loop=choose_loop(), http=choose_http(), lifespan="off",
                            log_level="warning", access_log=False, proxy_headers=False,
                            timeout_graceful_shutdown=10, timeout_keep_alive=30,
                            limit_concurrency=MAX_HELD_SUBMISSIONS)
    return _Server(config)


# StartNode's @guidance: young-generation collections ran thousands of times a second
# over objects a batch keeps alive for milliseconds, and each full collection walked
# every long-lived object while requests waited (measured at 5,000 REST requests/s on
# two cores: p99 1,237 ms with the default (700, 10, 10), 55 ms with these).
GC_THRESHOLDS = (50_000, 50, 100)


def tune_gc() -> None:
    """StartNode's @guidance: collect, freeze what startup built, raise the thresholds.

    Called once the store and the log are open and before serving: what startup
    built is never scanned again.  Reference cycles are still collected, only less
    often.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything else so a taken port fails fast."""
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on sockets whose proto
    # says TCP, and without it every response (headers, then body) waits ~40 ms for
    # the peer's delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(1024)
    sock.setblocking(False)
    return sock


async def serve(runtime: NodeRuntime, sock: socket.socket,
                stop_event: asyncio.Event | None = None, announce: bool = False) -> int:
    """Serve until ``stop_event`` is set (or the server dies), then stop gracefully."""
    stop_event = stop_event or asyncio.Event()
    server = make_server(runtime.app)
    await runtime.start()
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    while not server.started and not task.done():
        await asyncio.sleep(0.01)
    if task.done():
        await runtime.stop()
        return 2
    if announce:
        port = sock.getsockname()[1]
        sys.stdout.write(json.dumps({"ready": True, "node_id": runtime.process.node_id, "port": port}) + "\n")
        sys.stdout.flush()
    waiter = asyncio.ensure_future(stop_event.wait())
    await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    await runtime.stop(server)
    await asyncio.wait({task}, timeout=15)
    return 0


async def _amain(settings: NodeSettings, sock: socket.socket) -> int:
    try:
        store = await StorePort.open(settings.store_url)
    except PortUnavailable as exc:
        print(f"ledger node {settings.node_id}: {exc}", file=sys.stderr, flush=True)
        return 2
    try:
        log_ = await LogPort.open(settings.log_url)
    except PortUnavailable as exc:
        await store.close()
        print(f"ledger node {settings.node_id}: {exc}", file=sys.stderr, flush=True)
        return 2
    runtime = NodeRuntime(settings, store, log_)
    tune_gc()  # the store and the log are open; nothing is served yet
    stop_event = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_event.set)
    try:
        return await serve(runtime, sock, stop_event, announce=True)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)  # the loop closes next: leave no handler bound to it


def run_node_main(argv: list[str]) -> int:
    """``ledger.node.node_main``: exit 0 after a graceful stop, 2 when refusing to start."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        settings = parse_settings(argv)
        start_node({}, settings.node_id, settings.ordinal, settings.fault, utc_now(), settings.config)
    except (ConfigError, Rejected) as exc:
        print(f"ledger node: refusing to start: {exc}", file=sys.stderr, flush=True)
        return 2
    settings = dataclasses.replace(settings, lease_micros=store_lease_micros())
    try:
        sock = bind(settings.host, settings.port)
    except OSError as exc:
        print(f"ledger node {settings.node_id}: port {settings.port} on {settings.host} is not available: "
              f"{exc.strerror}", file=sys.stderr, flush=True)
        return 2
    # StartNode's @guidance: the node (uvicorn included) runs on uvloop when it can be
    # imported, else on asyncio.  asyncio.Runner's loop_factory chooses the loop
    # without installing a process-wide event loop policy.
    with asyncio.Runner(loop_factory=loop_factory(choose_loop())) as runner:
        return runner.run(_amain(settings, sock))
