"""The demo load client behind ``python -m ledger demo`` (rule RunDemo).

Starts a deployment in a fresh temporary run dir, opens accounts, sends
deposits, withdrawals and transfers - about three quarters over REST
(httpx.AsyncClient, to the leader /healthz names, over a small keep-alive pool) and the rest appended to the
event log - then checks the invariants (``ledger.main_invariants``) and
returns a DemoSummary.  A 503 is retried with the same request id, which the
spec makes safe (api.allium RetrySafe).
"""

from __future__ import annotations

import asyncio
import json
import random
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from ledger.core import Envelope, OperationKind
from ledger.main import Config, DemoSummary, LogKind, StoreKind
from ledger.main_invariants import OpRecord, check_invariants
from ledger.main_supervisor import (
    LaunchError,
    NodeCommand,
    Supervisor,
    free_port_block,
)

CLIENT_ID = "demo"
# Keep-alive connections the demo keeps to the leader (rule RunDemo guidance:
# "a small pool").  ASSUMPTION: 8, a quarter of demo_concurrency, measured to
# keep the leader's batches full without a connection per request in flight.
DEMO_POOL_SIZE = 8
LogFactory = Callable[[str], Any]
Clock = Callable[[], float]


def _default_log_factory(url: str) -> Any:
    from ledger.main_adapter import make_log

    return make_log(url)


async def _append(log: Any, envelope: Envelope) -> int:
    from ledger.main_adapter import append_envelope

    return await append_envelope(log, envelope)


def envelope_body(envelope: Envelope) -> dict[str, object]:
    """POST /v1/requests body: exactly the Envelope's fields (node.allium JsonShapes)."""
    return {"client_id": envelope.client_id, "request_id": envelope.request_id,
            "kind": envelope.kind.value, "account_id": envelope.account_id,
            "counterparty_id": envelope.counterparty_id, "owner": envelope.owner,
            "amount_minor": envelope.amount_minor}


def plan_operations(ops: int, account_ids: list[str], token: str, seed: int) -> list[tuple[Envelope, str]]:
    """Deterministic mix: 40% deposits, 30% withdrawals, 30% transfers; every 4th on the log."""
    rng = random.Random(seed)
    planned = []
    for k in range(ops):
        kind = rng.choices([OperationKind.deposit, OperationKind.withdraw, OperationKind.transfer],
                           weights=[4, 3, 3])[0]
        account = rng.choice(account_ids)
        counterparty = None
        if kind is OperationKind.transfer and len(account_ids) > 1:
            counterparty = rng.choice([a for a in account_ids if a != account])
        elif kind is OperationKind.transfer:
            kind = OperationKind.deposit
        envelope = Envelope(request_id=f"{token}-op{k:06d}", client_id=CLIENT_ID, kind=kind,
                            account_id=account, counterparty_id=counterparty, owner=None,
                            amount_minor=rng.randint(1, 10_000))
        planned.append((envelope, "log" if k % 4 == 3 else "rest"))
    return planned


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-fraction * len(ordered) // 1))))
    return ordered[rank - 1]


class DemoClient:
    """REST side of the demo (rule RunDemo): talk to the leader, submit, poll, read back.

    Requests go to the current leader, which GET /healthz names, so none pays
    a forward hop through a backup.  On a connection error or a 503 the retry
    goes to another node (a backup forwards, so any node answers) and the
    leader is looked up again; a connection error also moves every later
    request off that node until /healthz names a leader that answers.
    """

    def __init__(self, http: httpx.AsyncClient, nodes: dict[str, str], *, op_timeout_s: float,
                 clock: Clock = time.monotonic, probe_timeout_s: float = 2.0,
                 refresh_interval_s: float = 0.25) -> None:
        if not nodes:
            raise ValueError("the demo needs at least one node URL")
        self.http, self.nodes, self.clock = http, dict(nodes), clock
        self.urls = list(self.nodes.values())
        self.op_timeout_s = op_timeout_s
        self.probe_timeout_s = probe_timeout_s
        self.refresh_interval_s = refresh_interval_s
        self.target = self.urls[0]  # until /healthz names the leader
        self._refresh_lock = asyncio.Lock()
        self._refreshed_at = float("-inf")

    # leader discovery --------------------------------------------------------------------

    def _other_than(self, url: str) -> str:
        """The node after ``url`` in the deployment's order (a retry goes elsewhere)."""
        if url not in self.urls:
            return self.urls[0]
        return self.urls[(self.urls.index(url) + 1) % len(self.urls)]

    async def _health(self, url: str) -> dict[str, Any] | None:
        try:
            response = await self.http.get(f"{url}/healthz", timeout=self.probe_timeout_s)
            body = response.json()
        except (httpx.HTTPError, ValueError):
            return None
        return body if isinstance(body, dict) else None

    async def find_leader(self) -> str | None:
        """The URL of the node /healthz names as leader, if that node answers.

        A node that reports itself leader wins; otherwise the leader most
        nodes name.  None when no answering node names a reachable leader.
        """
        healths = await asyncio.gather(*(self._health(url) for url in self.urls))
        answering = {url for url, body in zip(self.urls, healths) if body is not None}
        named: dict[str, int] = {}
        for url, body in zip(self.urls, healths):
            if body is None:
                continue
            if body.get("status") == "leader":
                return url
            leader = body.get("leader")
            if isinstance(leader, str) and self.nodes.get(leader) in answering:
                named[self.nodes[leader]] = named.get(self.nodes[leader], 0) + 1
        return max(named, key=named.__getitem__) if named else None

    async def refresh_leader(self) -> None:
        """Look the leader up again, at most once per ``refresh_interval_s`` for all callers."""
        async with self._refresh_lock:
            if self.clock() - self._refreshed_at < self.refresh_interval_s:
                return  # another request just did it
            leader = await self.find_leader()
            self._refreshed_at = self.clock()
            if leader is not None:
                self.target = leader

    async def wait_for_leader(self, timeout_s: float) -> bool:
        """Poll GET /healthz until a node names a leader that answers (or time runs out)."""
        deadline = self.clock() + timeout_s
        while self.clock() < deadline:
            leader = await self.find_leader()
            if leader is not None:
                self.target = leader
                self._refreshed_at = self.clock()
                return True
            await asyncio.sleep(0.1)
        return False

    async def _failed(self, url: str, *, unreachable: bool) -> str:
        """After a connection error or a 503 at ``url``: where the retry goes."""
        if unreachable and self.target == url:
            self.target = self._other_than(url)  # nobody else waits on a dead node
        await self.refresh_leader()
        return self.target if self.target != url else self._other_than(url)

    # requests ----------------------------------------------------------------------------

    async def submit(self, record: OpRecord) -> None:
        """POST until a definite answer: 200 (or 202 then the outcome), 409/4xx; retry 503."""
        started = self.clock()
        deadline = started + self.op_timeout_s
        body = envelope_body(record.envelope)
        url = self.target
        while self.clock() < deadline:
            try:
                response = await self.http.post(f"{url}/v1/requests", json=body)
            except httpx.TransportError:
                url = await self._failed(url, unreachable=True)
                await asyncio.sleep(0.05)
                continue
            code = response.status_code
            if code == 200:
                record.seen, record.acknowledged = _json(response), True
                break
            if code == 202:
                record.seen = await self.poll_outcome(record.envelope, deadline)
                record.acknowledged = record.seen is not None
                break
            if code == 503:
                record.refusals += 1  # retried with the same request id (api RetrySafe)
                await asyncio.sleep(_retry_after(response))
                url = await self._failed(url, unreachable=False)
                continue
            record.anomalies.append(f"unexpected HTTP {code}: {response.text[:200]}")
            if code < 500:
                record.acknowledged = True  # a definite (if wrong) answer: do not resend
                break
            await asyncio.sleep(0.1)
        if record.acknowledged:
            record.latency_ms = (self.clock() - started) * 1000.0

    async def poll_outcome(self, envelope: Envelope, deadline: float) -> dict[str, object] | None:
        """GET /v1/requests/{client}/{id} until it has an outcome or ``deadline`` passes."""
        while self.clock() < deadline:
            found = await self.read_outcome(envelope)
            if found is not None:
                return found
            await asyncio.sleep(0.05)
        return None

    async def _get(self, path: str) -> dict[str, object] | None:
        """GET ``path`` from the leader (another node on failure); None on 404 or no answer."""
        url = self.target
        for _ in range(3 * len(self.urls)):
            try:
                response = await self.http.get(f"{url}{path}")
            except httpx.TransportError:
                url = await self._failed(url, unreachable=True)
                await asyncio.sleep(0.05)
                continue
            if response.status_code == 200:
                return _json(response)
            if response.status_code == 404:
                return None
            url = await self._failed(url, unreachable=False)
            await asyncio.sleep(0.05)
        return None

    async def read_outcome(self, envelope: Envelope) -> dict[str, object] | None:
        """The stored outcome, or None when the service says unknown_request (404)."""
        return await self._get(f"/v1/requests/{envelope.client_id}/{envelope.request_id}")

    async def read_account(self, account_id: str) -> dict[str, object] | None:
        """GET /v1/accounts/{id}; None on 404."""
        return await self._get(f"/v1/accounts/{account_id}")


def _json(response: httpx.Response) -> dict[str, object]:
    try:
        body = response.json()
    except ValueError:
        return {"_raw": response.text}
    return body if isinstance(body, dict) else {"_raw": body}


def _retry_after(response: httpx.Response) -> float:
    """Honour Retry-After, capped at 1 s so the demo keeps moving."""
    try:
        return max(0.02, min(float(response.headers.get("retry-after", "0.2")), 1.0))
    except ValueError:
        return 0.2


async def _append_with_retry(log: Any, record: OpRecord, clock: Clock, deadline: float) -> None:
    """Append one log operation until the log acknowledges it (rule RunDemo's log share).

    Retrying is safe twice over: an append re-sends the very same envelope, so
    the JetStream log answers a retry whose first answer was lost with the
    original offset (eventlog.allium OpenLog: Nats-Msg-Id is the payload's
    SHA-256, and an append that raised is never stored later), and the node
    decides one (client_id, request_id) once however often the log holds it.
    While the log server is down (``kill nats``) an append fails at once, so
    the loop waits and tries again through the same open handle until the
    server is back or the operation's deadline passes (then it is dropped).
    """
    started = clock()
    while clock() < deadline:
        try:
            await _append(log, record.envelope)
        except Exception:  # noqa: BLE001 - any failure: retry (the same request id is safe)
            await asyncio.sleep(0.1)
            continue
        record.acknowledged = True
        # ASSUMPTION: a log operation's latency is that of its append, because a
        # successful append is its acknowledgement (node.allium resolved question);
        # its outcome is awaited afterwards and counts toward ops_per_s only.
        record.latency_ms = (clock() - started) * 1000.0
        return


async def drive(nodes: dict[str, str], log_url: str, *, ops: int, accounts: int, concurrency: int,
                log_factory: LogFactory, seed: int, op_timeout_s: float, settle_timeout_s: float,
                leader_timeout_s: float, pool_size: int = DEMO_POOL_SIZE,
                clock: Clock = time.monotonic
                ) -> tuple[list[OpRecord], list[OpRecord], dict[str, Any], float]:
    """Run the load; returns (opens, operations, account bodies, elapsed seconds).

    ``nodes`` maps each node id (as /healthz names it) to its URL.
    """
    token = secrets.token_hex(3)
    account_ids = [f"{token}-acct{j:03d}" for j in range(accounts)]
    gate = asyncio.Semaphore(concurrency)
    # A small pool of keep-alive connections, shared by every request in flight:
    # a request waits for a free connection (pool timeout) rather than opening more.
    size = max(1, min(pool_size, concurrency))
    limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
    timeout = httpx.Timeout(10.0, pool=op_timeout_s)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as http:
        client = DemoClient(http, nodes, op_timeout_s=op_timeout_s, clock=clock)
        await client.wait_for_leader(leader_timeout_s)
        opens = [OpRecord(Envelope(request_id=f"{token}-open-{a}", client_id=CLIENT_ID,
                                   kind=OperationKind.open, account_id=a, owner=CLIENT_ID,
                                   amount_minor=0), "rest") for a in account_ids]

        async def bounded_submit(record: OpRecord) -> None:
            async with gate:
                await client.submit(record)

        await asyncio.gather(*(bounded_submit(r) for r in opens))
        records = [OpRecord(env, channel) for env, channel in plan_operations(ops, account_ids, token, seed)]
        log = log_factory(log_url)
        await log.open()
        started = clock()
        try:
            async def one(record: OpRecord) -> None:
                async with gate:
                    if record.channel == "rest":
                        await client.submit(record)
                    else:
                        await _append_with_retry(log, record, clock, clock() + op_timeout_s)

            await asyncio.gather(*(one(r) for r in records))
        finally:
            await log.close()
        settle_deadline = clock() + settle_timeout_s

        async def read_back(record: OpRecord) -> None:
            async with gate:
                if record.channel == "log" and record.acknowledged:
                    record.stored = await client.poll_outcome(record.envelope, settle_deadline)
                else:
                    record.stored = await client.read_outcome(record.envelope)

        await asyncio.gather(*(read_back(r) for r in records + opens))
        elapsed = max(clock() - started, 1e-9)
        bodies = dict(zip(account_ids, await asyncio.gather(*(client.read_account(a) for a in account_ids))))
    return opens, records, bodies, elapsed


def summarise(store_kind: StoreKind, log_kind: LogKind, ops: int, opens: list[OpRecord],
              records: list[OpRecord], bodies: dict[str, Any], elapsed: float,
              violations: list[str]) -> DemoSummary:
    """Build the DemoSummary (rule RunDemo) and collect every invariant violation.

    ASSUMPTION: the invariants are checked through the REST API (stored outcomes
    and account bodies), not by opening the store directly, so `main` depends on
    the node's public contract only; totals cover the accounts this demo created.
    """
    found = check_invariants(records + opens, bodies)
    violations.extend(found)
    latencies = [r.latency_ms for r in records if r.latency_ms is not None]
    answers = [r.stored or r.seen for r in records]
    return DemoSummary(
        ops=ops,
        ops_per_s=Decimal(str(round(ops / elapsed, 1))),
        p50_ms=Decimal(str(round(percentile(latencies, 0.50), 2))),
        p99_ms=Decimal(str(round(percentile(latencies, 0.99), 2))),
        dropped=sum(1 for r in records + opens if not r.definite),
        rejected=sum(1 for a in answers if a is not None and a.get("verdict") == "rejected"),
        refused=sum(r.refusals for r in records + opens),
        invariants_ok=not found,
        store=store_kind,
        log=log_kind,
    )


def execute_demo(store_kind: StoreKind, log_kind: LogKind, ops: int, *, nodes: int = 3,
                 accounts: int = Config.demo_accounts, concurrency: int = Config.demo_concurrency,
                 base_port: int | None = None, nats_port: int | None = None,
                 faults: dict[str, str] | None = None,
                 node_command: NodeCommand | None = None,
                 log_factory: LogFactory | None = None, seed: int = 7,
                 op_timeout_s: float = 30.0, settle_timeout_s: float = 60.0,
                 pool_size: int = DEMO_POOL_SIZE,
                 violations: list[str] | None = None) -> DemoSummary:
    """Start a fresh deployment, drive it, stop it; raises LaunchError if it cannot start."""
    run_dir = Path(tempfile.mkdtemp(prefix="ledger-demo-"))
    supervisor = Supervisor(run_dir, node_command=node_command, stop_grace_s=10.0)
    log_factory = log_factory or _default_log_factory
    base = base_port if base_port is not None else free_port_block(nodes)
    while log_kind is LogKind.nats and nats_port is None:
        candidate = free_port_block(1) + 1
        nats_port = candidate if not base < candidate <= base + nodes else None
    try:
        state = supervisor.up(store_kind, log_kind, nodes, base_port=base, nats_port=nats_port,
                              faults=faults)
        try:
            opens, records, bodies, elapsed = asyncio.run(drive(
                state.nodes_by_name(), state.log_url, ops=ops, accounts=max(2, accounts),
                concurrency=max(1, concurrency), log_factory=log_factory, seed=seed,
                op_timeout_s=op_timeout_s, settle_timeout_s=settle_timeout_s,
                leader_timeout_s=supervisor.start_timeout_s, pool_size=pool_size))
        finally:
            try:
                supervisor.down()
            except LaunchError:
                pass
        return summarise(store_kind, log_kind, ops, opens, records, bodies, elapsed,
                         violations if violations is not None else [])
    finally:
        pointer = run_dir / "pgdata.path"
        if pointer.exists():
            shutil.rmtree(Path(pointer.read_text().strip()).parent, ignore_errors=True)
        shutil.rmtree(run_dir, ignore_errors=True)


def print_table(summary: DemoSummary) -> None:
    rows = summary.to_json_dict()
    width = max(len(k) for k in rows)
    for key, value in rows.items():
        print(f"{key:<{width}}  {value}")


def cli_demo(store_kind: StoreKind, log_kind: LogKind, ops: int, *, nodes: int, accounts: int,
             concurrency: int, base_port: int | None, nats_port: int | None,
             faults: dict[str, str], as_json: bool) -> int:
    """``demo``: exit 0 only when invariants_ok and dropped = 0 (rule RunDemo)."""
    from ledger.main import run_demo

    violations: list[str] = []
    try:
        summary = run_demo(store_kind, log_kind, ops, nodes=nodes, accounts=accounts,
                           concurrency=concurrency, base_port=base_port, nats_port=nats_port,
                           faults=faults, violations=violations)
    except LaunchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for line in violations[:50]:
        print(f"violation: {line}", file=sys.stderr)
    if as_json:
        print(json.dumps(summary.to_json_dict()))
    else:
        print_table(summary)
    return 0 if summary.invariants_ok and summary.dropped == 0 else 1
