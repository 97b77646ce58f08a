"""Unit `main` (main.allium): the command line of the ledger service.

``python -m ledger up|down|status|kill|restart|demo|node`` (the toolchain writes
``ledger/__main__.py`` calling :func:`main`).  This module holds the spec's
declarations - DemoSummary, StoreKind, LogKind, Deployment, Child, Config and
the rules over them - and the argument parsing.  The moving parts live in
helper modules so each stays a few hundred lines:

* ``ledger.main_supervisor`` - starts, watches and stops the child processes
  (NATS, PostgreSQL, the nodes) and keeps ``<run dir>/deployment.json``;
* ``ledger.main_demo`` - the demo load client;
* ``ledger.main_invariants`` - the checks the demo runs over what it saw;
* ``ledger.main_adapter`` - the ONLY place that calls the node, store and
  event-log units, so a mismatch with their generated code is easy to see.
"""

from __future__ import annotations

import argparse
import enum
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from allium.verify import implements

from ledger.core import Rejected, TransitionRejected

__all__ = [
    "CHILD_TRANSITIONS",
    "Child",
    "ChildStatus",
    "Config",
    "DEPLOYMENT_TRANSITIONS",
    "DemoSummary",
    "Deployment",
    "DeploymentStatus",
    "Deployments",
    "LogKind",
    "Rejected",
    "StoreKind",
    "TransitionRejected",
    "child_exited",
    "deployment_failed",
    "deployment_running",
    "deployment_stopped",
    "down",
    "kill_child",
    "main",
    "restart_child",
    "run_demo",
    "up",
]


# Enumerations ---------------------------------------------------------------


class StoreKind(str, enum.Enum):
    """enum StoreKind { sqlite | postgres }: which database backs the store."""

    sqlite = "sqlite"
    postgres = "postgres"


class LogKind(str, enum.Enum):
    """enum LogKind { embedded | nats }: which event log the nodes share."""

    embedded = "embedded"
    nats = "nats"


class DeploymentStatus(str, enum.Enum):
    """Deployment.status: starting | running | stopping | stopped | failed."""

    starting = "starting"
    running = "running"
    stopping = "stopping"
    stopped = "stopped"
    failed = "failed"


class ChildStatus(str, enum.Enum):
    """Child.status: alive | killed | exited."""

    alive = "alive"
    killed = "killed"
    exited = "exited"


# `transitions status { ... }` blocks: the only legal edges.
DEPLOYMENT_TRANSITIONS: dict[DeploymentStatus, frozenset[DeploymentStatus]] = {
    DeploymentStatus.starting: frozenset({DeploymentStatus.running, DeploymentStatus.failed}),
    DeploymentStatus.running: frozenset({DeploymentStatus.stopping}),
    DeploymentStatus.stopping: frozenset({DeploymentStatus.stopped}),
    DeploymentStatus.stopped: frozenset(),
    DeploymentStatus.failed: frozenset(),
}
DEPLOYMENT_TERMINAL = frozenset({DeploymentStatus.stopped, DeploymentStatus.failed})

CHILD_TRANSITIONS: dict[ChildStatus, frozenset[ChildStatus]] = {
    ChildStatus.alive: frozenset({ChildStatus.killed, ChildStatus.exited}),
    ChildStatus.killed: frozenset({ChildStatus.alive}),
    ChildStatus.exited: frozenset({ChildStatus.alive}),
}


# Config and values ----------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """config block of main.allium."""

    run_dir: str = ".ledger-run"
    nodes: int = 3
    nats_port: int = 7422
    demo_ops: int = 2000
    demo_accounts: int = 50
    demo_concurrency: int = 32
    start_timeout_micros: int = 30_000_000


@dataclass(frozen=True, kw_only=True)
class DemoSummary:
    """value DemoSummary: what ``demo --json`` prints, as one JSON object."""

    ops: int
    ops_per_s: Decimal
    p50_ms: Decimal
    p99_ms: Decimal
    dropped: int
    rejected: int
    refused: int
    invariants_ok: bool
    store: StoreKind
    log: LogKind

    def to_json_dict(self) -> dict[str, object]:
        """The JSON object, keys in declaration order.

        ASSUMPTION: the spec's Decimal fields are printed as JSON numbers (the
        summary is a report, not money, so the float conversion is harmless).
        """
        return {
            "ops": self.ops,
            "ops_per_s": float(self.ops_per_s),
            "p50_ms": float(self.p50_ms),
            "p99_ms": float(self.p99_ms),
            "dropped": self.dropped,
            "rejected": self.rejected,
            "refused": self.refused,
            "invariants_ok": self.invariants_ok,
            "store": self.store.value,
            "log": self.log.value,
        }


# Entities -------------------------------------------------------------------


@dataclass(eq=False, kw_only=True)
class Child:
    """entity Child: a child process the launcher started and is responsible for."""

    deployment: Deployment
    name: str
    pid: int
    status: ChildStatus = ChildStatus.alive

    def transition(self, target: ChildStatus) -> None:
        """Change status along a declared edge only (transitions status)."""
        if target not in CHILD_TRANSITIONS[self.status]:
            raise TransitionRejected(
                "Child.status", 0, f"undeclared transition {self.status.value} -> {target.value}"
            )
        self.status = target


@dataclass(eq=False, kw_only=True)
class Deployment:
    """entity Deployment: one deployment, described by a state file in its run dir."""

    run_dir: str
    store_kind: StoreKind
    log_kind: LogKind
    nodes: int
    status: DeploymentStatus = DeploymentStatus.starting
    # ASSUMPTION: the spec's entity has no reason field, but DeploymentFailed's
    # guidance says the Deployment "ends in status failed with that reason";
    # it is kept here (None until the deployment fails) so callers and tests
    # can read why a start failed from the Deployment itself.
    reason: str | None = None
    _children: list[Child] = field(default_factory=list, repr=False)

    @property
    def children(self) -> tuple[Child, ...]:
        """Relationship ``children: Child with deployment = this``."""
        return tuple(c for c in self._children if c.deployment is self)

    def add_child(self, name: str, pid: int) -> Child:
        """Record a child process started for this deployment."""
        child = Child(deployment=self, name=name, pid=pid)
        self._children.append(child)
        return child

    def child(self, name: str) -> Child | None:
        """``Child{deployment: this, name: name}``."""
        return next((c for c in self._children if c.name == name), None)

    def transition(self, target: DeploymentStatus) -> None:
        """Change status along a declared edge only (transitions status)."""
        if target not in DEPLOYMENT_TRANSITIONS[self.status]:
            raise TransitionRejected(
                "Deployment.status", 0,
                f"undeclared transition {self.status.value} -> {target.value}",
            )
        self.status = target


class Deployments:
    """All Deployments the launcher knows (one per run dir and attempt)."""

    def __init__(self, items: Iterable[Deployment] = ()) -> None:
        self._items: list[Deployment] = list(items)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._items)

    def add(self, deployment: Deployment) -> None:
        self._items.append(deployment)

    def running_in(self, run_dir: str) -> Deployment | None:
        """``Deployment{run_dir: run_dir, status: running}``."""
        return next(
            (d for d in self._items if d.run_dir == run_dir and d.status is DeploymentStatus.running),
            None,
        )


# Rules ----------------------------------------------------------------------


@implements("Up")
def up(
    deployments: Deployments, run_dir: str, store_kind: StoreKind, log_kind: LogKind, nodes: int
) -> Deployment:
    """rule Up: create a starting Deployment for an odd cluster of at least 3 nodes.

    The processes themselves are started by ``main_supervisor.Supervisor.up``,
    which calls this first so a refused Up starts nothing.
    """
    if not (nodes >= 3 and nodes % 2 == 1):
        raise Rejected("Up", 1, f"nodes must be odd and at least 3, got {nodes}")
    if deployments.running_in(run_dir) is not None:
        raise Rejected("Up", 2, f"a deployment is already running in {run_dir}")
    deployment = Deployment(run_dir=run_dir, store_kind=store_kind, log_kind=log_kind, nodes=nodes)
    deployments.add(deployment)
    return deployment


@implements("DeploymentRunning")
def deployment_running(deployment: Deployment) -> None:
    """rule DeploymentRunning: a starting deployment whose children are ready runs."""
    if deployment.status is not DeploymentStatus.starting:
        raise Rejected("DeploymentRunning", 1, f"deployment is {deployment.status.value}")
    deployment.transition(DeploymentStatus.running)


@implements("DeploymentFailed")
def deployment_failed(deployment: Deployment, reason: str) -> str:
    """rule DeploymentFailed: a deployment that could not start fails.

    The Deployment ends in status failed and records ``reason``, the one
    line the user sees, which is also returned; the supervisor stops
    everything already started before the command exits non-zero.
    """
    if deployment.status is not DeploymentStatus.starting:
        raise Rejected("DeploymentFailed", 1, f"deployment is {deployment.status.value}")
    deployment.transition(DeploymentStatus.failed)
    deployment.reason = reason
    return reason


@implements("Down")
def down(deployment: Deployment) -> None:
    """rule Down: a running deployment starts stopping."""
    if deployment.status is not DeploymentStatus.running:
        raise Rejected("Down", 1, f"deployment is {deployment.status.value}")
    deployment.transition(DeploymentStatus.stopping)


@implements("DeploymentStopped")
def deployment_stopped(deployment: Deployment) -> None:
    """rule DeploymentStopped: fires when status transitions to stopping."""
    if deployment.status is not DeploymentStatus.stopping:
        raise Rejected("DeploymentStopped", 0, f"deployment is {deployment.status.value}")
    deployment.transition(DeploymentStatus.stopped)


@implements("KillChild")
def kill_child(child: Child) -> None:
    """rule KillChild: an alive child is killed (SIGKILL: a crash, not a stop)."""
    if child.status is not ChildStatus.alive:
        raise Rejected("KillChild", 1, f"{child.name} is {child.status.value}")
    child.transition(ChildStatus.killed)


@implements("ChildExited")
def child_exited(child: Child, code: int | None) -> None:
    """rule ChildExited: an alive child that exited on its own (code may be unknown)."""
    if child.status is not ChildStatus.alive:
        raise Rejected("ChildExited", 1, f"{child.name} is {child.status.value}")
    child.transition(ChildStatus.exited)


@implements("RestartChild")
def restart_child(child: Child, pid: int) -> None:
    """rule RestartChild: a killed or exited child is alive again (under a new pid)."""
    if child.status not in (ChildStatus.killed, ChildStatus.exited):
        raise Rejected("RestartChild", 1, f"{child.name} is {child.status.value}")
    child.transition(ChildStatus.alive)
    child.pid = pid


@implements("RunDemo")
def run_demo(store_kind: StoreKind, log_kind: LogKind, ops: int, **options: object) -> DemoSummary:
    """rule RunDemo: run the demo load against a fresh deployment; emit a DemoSummary.

    ``options`` go to :func:`ledger.main_demo.execute_demo` (accounts,
    concurrency, ports, and the injection points tests use).
    """
    if ops < 1:
        raise Rejected("RunDemo", 1, f"ops must be at least 1, got {ops}")
    from ledger.main_demo import execute_demo  # lazy: httpx is only needed here

    return execute_demo(store_kind, log_kind, ops, **options)  # type: ignore[arg-type]


# Command line -----------------------------------------------------------------


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run-dir", default=Config.run_dir, help="run directory (state, logs, data)")


def _topology(parser: argparse.ArgumentParser, config: Config) -> None:
    parser.add_argument("--store", choices=[k.value for k in StoreKind], default="sqlite")
    parser.add_argument("--log", choices=[k.value for k in LogKind], default="embedded")
    parser.add_argument("--nodes", type=int, default=config.nodes)
    parser.add_argument("--base-port", type=int, default=None,
                        help="node i listens on BASE+i (default 7400; demo: any free ports)")
    parser.add_argument("--nats-port", type=int, default=None)
    parser.add_argument("--fault", action="append", default=[], metavar="NODE=FAULT",
                        help="start NODE with --fault FAULT (e.g. n2=lie_about_digests)")


def build_parser(config: Config = Config()) -> argparse.ArgumentParser:
    """The ``python -m ledger`` argument parser (``node`` is dispatched before it)."""
    parser = argparse.ArgumentParser(prog="python -m ledger", description="Distributed ledger service.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="start a deployment and leave it running")
    _common(p_up)
    _topology(p_up, config)
    p_down = sub.add_parser("down", help="stop the deployment")
    _common(p_down)
    p_status = sub.add_parser("status", help="show the deployment's children")
    _common(p_status)
    p_status.add_argument("--json", action="store_true")
    for name, text in (("kill", "SIGKILL a child (crash)"), ("restart", "start a killed child again")):
        p = sub.add_parser(name, help=text)
        _common(p)
        p.add_argument("child", help="n1, n2, ..., nats or postgres")
    p_demo = sub.add_parser("demo", help="start a fresh deployment, run load, check invariants")
    _topology(p_demo, config)
    p_demo.add_argument("--ops", type=int, default=config.demo_ops)
    p_demo.add_argument("--accounts", type=int, default=config.demo_accounts)
    p_demo.add_argument("--concurrency", type=int, default=config.demo_concurrency)
    p_demo.add_argument("--json", action="store_true", help="print one JSON object")
    sub.add_parser("node", help="run one node process (arguments go to ledger.node)")
    return parser


def _faults(values: Sequence[str]) -> dict[str, str]:
    faults: dict[str, str] = {}
    for value in values:
        node, sep, fault = value.partition("=")
        if not sep or not node or not fault:
            raise ValueError(f"--fault expects NODE=FAULT, got {value!r}")
        faults[node] = fault
    return faults


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m ledger``; returns the process exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["node"]:
        from ledger.main_adapter import run_node  # lazy: the node unit is heavy

        return run_node(args_list[1:])
    parser = build_parser()
    args = parser.parse_args(args_list)
    from ledger import main_supervisor as sv  # lazy: keeps `--help` fast

    try:
        if args.command == "up":
            return sv.cli_up(args.run_dir, StoreKind(args.store), LogKind(args.log), args.nodes,
                             base_port=args.base_port, nats_port=args.nats_port,
                             faults=_faults(args.fault))
        if args.command == "down":
            return sv.cli_down(args.run_dir)
        if args.command == "status":
            return sv.cli_status(args.run_dir, as_json=args.json)
        if args.command == "kill":
            return sv.cli_kill(args.run_dir, args.child)
        if args.command == "restart":
            return sv.cli_restart(args.run_dir, args.child)
        if args.command == "demo":
            from ledger.main_demo import cli_demo

            return cli_demo(StoreKind(args.store), LogKind(args.log), args.ops,
                            nodes=args.nodes, accounts=args.accounts, concurrency=args.concurrency,
                            base_port=args.base_port, nats_port=args.nats_port,
                            faults=_faults(args.fault), as_json=args.json)
    except (Rejected, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    parser.error(f"unknown command {args.command}")
    return 2  # pragma: no cover - parser.error exits
