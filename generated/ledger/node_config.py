"""Configuration of one node process (StartNode's @guidance) and the HMAC keys.

The cluster key comes from the environment (LEDGER_CLUSTER_KEY) or from a key
file the launcher writes with mode 0600; it never appears in the source or in
a log line.  Per-node keys are HMAC-SHA256(cluster key, node_id)
(VoteService @invariant SignedBallots).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from ledger.node import Config, Fault

KEY_ENV = "LEDGER_CLUSTER_KEY"
FAULT_ENV = "LEDGER_FAULT"


class ConfigError(Exception):
    """The configuration is unusable or unsafe: the node refuses to start (exit 2)."""


def node_key(cluster_key: bytes, node_id: str) -> bytes:
    """A node's signing key: HMAC-SHA256(cluster key, node_id)."""
    return hmac.new(cluster_key, node_id.encode("utf-8"), hashlib.sha256).digest()


def node_ids(nodes: int) -> list[str]:
    """The configured node ids, n1..nN.

    ASSUMPTION: node i is named ``n<i>`` (the launcher's convention in
    main.allium); a peer's id and ordinal are therefore interchangeable.
    """
    return [f"n{i}" for i in range(1, nodes + 1)]


@dataclass(frozen=True)
class NodeSettings:
    """Everything one node process needs to run."""

    node_id: str
    ordinal: int
    nodes: int
    host: str
    base_port: int
    store_url: str
    log_url: str
    cluster_key: bytes = field(repr=False)
    fault: Fault = Fault.none
    config: Config = Config()
    slow_vote_seconds: float = 2.0
    lease_micros: int = 1_500_000

    @property
    def port(self) -> int:
        """Node i listens on base_port + i."""
        return self.base_port + self.ordinal

    def url_of(self, node_id: str) -> str:
        """The HTTP base URL of a configured node."""
        return f"http://{self.host}:{self.base_port + int(node_id[1:])}"

    @property
    def peer_ids(self) -> list[str]:
        """Every configured node but this one."""
        return [n for n in node_ids(self.nodes) if n != self.node_id]

    def keys(self) -> dict[str, bytes]:
        """Every configured node's signing key."""
        return {n: node_key(self.cluster_key, n) for n in node_ids(self.nodes)}

    def with_config(self, **changes: int) -> NodeSettings:
        """A copy with some Config values changed (tests shorten the timers)."""
        return replace(self, config=replace(self.config, **changes))


def load_cluster_key(key_file: str | None, environ: Mapping[str, str]) -> bytes:
    """The cluster key from LEDGER_CLUSTER_KEY or a 0600 key file."""
    if environ.get(KEY_ENV):
        return environ[KEY_ENV].strip().encode("utf-8")
    if not key_file:
        raise ConfigError(f"no cluster key: set {KEY_ENV} or pass --key-file")
    try:
        mode = os.stat(key_file).st_mode
        text = open(key_file, encoding="utf-8").read().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read key file {key_file}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"key file {key_file} is readable by others (want mode 0600)")
    if len(text) < 16:
        raise ConfigError(f"key file {key_file} holds no usable key")
    return text.encode("utf-8")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ledger node", add_help=True, exit_on_error=False)
    p.add_argument("--id", dest="node_id", required=True)
    p.add_argument("--ordinal", type=int, required=True)
    p.add_argument("--nodes", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--base-port", type=int, default=Config().base_port)
    p.add_argument("--store", dest="store_url", required=True)
    p.add_argument("--log", dest="log_url", required=True)
    p.add_argument("--key-file", default=None)
    p.add_argument("--fault", default=None)
    return p


def parse_settings(argv: list[str], environ: Mapping[str, str] | None = None) -> NodeSettings:
    """Parse and validate ``node`` arguments; ConfigError says why a start is refused."""
    env = os.environ if environ is None else environ
    try:
        args = _parser().parse_args(argv)
    except (argparse.ArgumentError, SystemExit) as exc:
        raise ConfigError(f"bad arguments: {exc}") from None
    fault_name = args.fault or env.get(FAULT_ENV) or "none"
    try:
        fault = Fault(fault_name)
    except ValueError:
        raise ConfigError(f"unknown fault {fault_name!r}") from None
    if args.nodes < 1 or not 1 <= args.ordinal <= args.nodes:
        raise ConfigError(f"ordinal {args.ordinal} is not within 1..{args.nodes}")
    if args.node_id != f"n{args.ordinal}":
        raise ConfigError(f"node id {args.node_id!r} does not match ordinal {args.ordinal} (want n{args.ordinal})")
    # ASSUMPTION: faults_tolerated is what the configured node count can mask,
    # f = (nodes - 1) // 2 (1 for the default 3 nodes), so every ordinal is
    # within StartNode's 1..2f+1.  f < 1 needs no quorum check.
    f = (args.nodes - 1) // 2
    if f >= 1 and args.nodes < f + 1:
        raise ConfigError(f"a quorum of {args.nodes} is below f + 1 = {f + 1}")
    if not 0 < args.base_port + args.nodes < 65536:
        raise ConfigError(f"base port {args.base_port} leaves no room for {args.nodes} nodes")
    return NodeSettings(node_id=args.node_id, ordinal=args.ordinal, nodes=args.nodes,
                        host=args.host, base_port=args.base_port, store_url=args.store_url,
                        log_url=args.log_url, cluster_key=load_cluster_key(args.key_file, env),
                        fault=fault, config=Config(faults_tolerated=f, base_port=args.base_port))
