"""Start, inspect and break a deployment of the generated service through its
own launcher (`python -m ledger up|down|kill|restart`, specs/main.allium), so
the benchmarks exercise exactly what a user would run."""

from __future__ import annotations

import http.client
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# SHOWCASE_GENERATED points the harness at another build of the service (a candidate).
GENERATED = Path(os.environ.get("SHOWCASE_GENERATED", ROOT / "generated"))


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(GENERATED), env.get("PYTHONPATH")]))
    env.update(extra or {})
    return env


@dataclass
class Deployment:
    workdir: Path
    store: str
    log: str
    nodes: int
    # Where the nodes listen when the harness, not the launcher, started them.
    ports_override: dict[str, int] | None = None
    # up() made workdir for this deployment alone, so down() removes it.
    owned: bool = False

    @property
    def run_dir(self) -> Path:
        return self.workdir / ".ledger-run"

    def ledger(self, *args: str, env: dict[str, str] | None = None, timeout: float = 90) -> str:
        """Run one launcher command; a failure raises with the launcher's own words."""
        proc = subprocess.run([sys.executable, "-m", "ledger", *args], cwd=self.workdir,
                              env=_env(env), capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"ledger {' '.join(args)} exited {proc.returncode}: "
                               f"{(proc.stderr or proc.stdout).strip()[-2000:]}")
        return proc.stdout

    def state(self) -> dict:
        return json.loads((self.run_dir / "deployment.json").read_text())

    def node_ports(self) -> dict[str, int]:
        if self.ports_override:
            return dict(self.ports_override)
        ports = {}
        for child in _children(self.state()):
            if child.get("kind", "node") == "node" and child.get("port"):
                ports[child["name"]] = int(child["port"])
        if not ports:
            base = int(self.state().get("base_port", 7400))
            ports = {f"n{i}": base + i for i in range(1, self.nodes + 1)}
        return ports

    def health(self, node: str, timeout: float = 1.0) -> dict | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.node_ports()[node]}/healthz",
                                        timeout=timeout) as resp:
                return json.loads(resp.read())
        except (OSError, ValueError, http.client.HTTPException):
            return None

    def leader(self, wait: float = 15.0) -> str | None:
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            for node in self.node_ports():
                doc = self.health(node)
                if doc and doc.get("status") == "leader":
                    return node
            time.sleep(0.1)
        return None

    def kill(self, name: str) -> None:
        self.ledger("kill", name)

    def restart(self, name: str) -> None:
        self.ledger("restart", name)

    def down(self) -> None:
        try:
            self.ledger("down", timeout=60)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            print(f"warning: down failed: {exc}", file=sys.stderr)
            return  # something may still run there: keep the files for a look
        if self.owned:
            self.remove_files()

    def remove_files(self) -> None:
        """Delete the run's files, PostgreSQL's data directory included (the
        launcher keeps both across down/up, and each run left ~40 MB in /tmp)."""
        pointer = self.run_dir / "pgdata.path"
        if pointer.is_file():
            shutil.rmtree(pointer.read_text().strip(), ignore_errors=True)
        shutil.rmtree(self.workdir, ignore_errors=True)


def _children(state: dict) -> list[dict]:
    children = state.get("children", [])
    if isinstance(children, dict):
        return [dict(v, name=k) for k, v in children.items()]
    return list(children)


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_block(size: int) -> int:
    """A base port b with b+1 .. b+size free on loopback (other runs may share the machine)."""
    for _ in range(200):
        base = random.randrange(21000, 39000)
        if all(port_free(base + i) for i in range(1, size + 1)):
            return base
    raise RuntimeError("no free block of loopback ports")


def up(store: str = "sqlite", log: str = "embedded", nodes: int = 3,
       faults: dict[str, str] | None = None, workdir: Path | None = None) -> Deployment:
    """`python -m ledger up` in a fresh directory on free ports; faults maps a
    node name to the launcher's --fault value for it."""
    owned = workdir is None
    workdir = workdir or Path(tempfile.mkdtemp(prefix="ledger-bench-"))
    dep = Deployment(workdir, store, log, nodes, owned=owned)
    base = free_block(nodes + 1)
    args = ["up", "--store", store, "--log", log, "--nodes", str(nodes), "--base-port", str(base)]
    if log == "nats":
        args += ["--nats-port", str(base + nodes + 1)]
    for node, fault in (faults or {}).items():
        args += ["--fault", f"{node}={fault}"]
    dep.ledger(*args, timeout=180)
    try:
        leader = dep.leader(wait=30)
    except BaseException:
        dep.down()
        raise
    if leader is None:
        dep.down()
        raise RuntimeError("no node became leader within 30 s of `ledger up`")
    return dep
