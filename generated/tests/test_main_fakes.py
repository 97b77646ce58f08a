"""Fakes for unit `main`'s tests: a tiny fake node process and a fake event log.

They stand in for the node and store units so `main`'s supervisor and demo
are tested quickly and deterministically; the fake log keeps eventlog's
Connection and is fed through eventlog's publish_operation.  The fake node takes exactly the node command line of
node.allium StartNode, prints the ready line, and serves a minimal version of
the ClientApi over one SQLite file (the ``--store`` URL) shared by all fake
nodes.  Every fake names n1 as leader in GET /healthz and counts the POSTs
it receives (GET /fake/posts).  It is deliberately not a faithful ledger; it is a fixture.

Collected by pytest (its name matches ``test_main_*``) but holds no tests.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

FAKE_NODE_SOURCE = r'''
import argparse, json, os, sqlite3, sys, threading, time, zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODE = os.environ.get("FAKE_MODE", "")
LOCK = threading.Lock()
POSTS = [0]  # POST /v1/requests this node received (GET /fake/posts), to see where clients send


def connect(path):
    return sqlite3.connect(path, timeout=10, isolation_level=None)


def create_schema(path):
    for attempt in range(100):  # several fake nodes create the schema at once
        try:
            return _create_schema(path)
        except sqlite3.OperationalError:
            time.sleep(0.05)
    return _create_schema(path)


def _create_schema(path):
    db = connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(
        "CREATE TABLE IF NOT EXISTS outcomes (client_id TEXT, request_id TEXT, body TEXT,"
        " PRIMARY KEY (client_id, request_id));"
        "CREATE TABLE IF NOT EXISTS accounts (account_id TEXT PRIMARY KEY, owner TEXT,"
        " balance INTEGER, version INTEGER);"
        "CREATE TABLE IF NOT EXISTS attempts (key TEXT PRIMARY KEY, n INTEGER);")
    db.close()


def bump(db, key):
    db.execute("INSERT INTO attempts VALUES (?, 1) ON CONFLICT(key) DO UPDATE SET n = n + 1", (key,))
    return db.execute("SELECT n FROM attempts WHERE key = ?", (key,)).fetchone()[0]


def apply(path, env):
    """Decide and record one envelope (idempotent per key); returns (body, replayed)."""
    db = connect(path)
    try:
        db.execute("BEGIN IMMEDIATE")
        row = db.execute("SELECT body FROM outcomes WHERE client_id = ? AND request_id = ?",
                         (env["client_id"], env["request_id"])).fetchone()
        if row:
            db.execute("COMMIT")
            return json.loads(row[0]), True
        acc = {r[0]: r[1] for r in db.execute("SELECT account_id, balance FROM accounts")}
        kind, a, c, amt = env["kind"], env["account_id"], env.get("counterparty_id"), env["amount_minor"]
        reason, d1, d2 = None, 0, 0
        if kind == "open":
            reason = "account_exists" if a in acc else None
        elif a not in acc:
            reason = "account_missing"
        elif kind == "deposit":
            d1 = amt
        elif kind == "withdraw":
            reason, d1 = ("insufficient_funds", 0) if acc[a] < amt else (None, -amt)
        elif kind == "transfer":
            if c not in acc:
                reason = "counterparty_missing"
            elif acc[a] < amt:
                reason = "insufficient_funds"
            else:
                d1, d2 = -amt, amt
        if reason is None and kind == "open":
            db.execute("INSERT INTO accounts VALUES (?, ?, 0, 1)", (a, env.get("owner") or env["client_id"]))
        for acct, d in ((a, d1), (c, d2)):
            if d:
                db.execute("UPDATE accounts SET balance = balance + ?, version = version + 1"
                           " WHERE account_id = ?", (d, acct))
        seq = db.execute("SELECT COUNT(*) FROM outcomes").fetchone()[0] + 1
        body = {"request_id": env["request_id"], "client_id": env["client_id"], "kind": kind,
                "verdict": "rejected" if reason else "accepted", "reason": reason,
                "account_id": a, "counterparty_id": c, "account_delta_minor": d1,
                "counterparty_delta_minor": d2, "sequence": seq, "epoch": 1, "replayed": False}
        db.execute("INSERT INTO outcomes VALUES (?, ?, ?)", (env["client_id"], env["request_id"], json.dumps(body)))
        db.execute("COMMIT")
        return body, False
    finally:
        db.close()


def serve(args):
    # With a non-SQLite store (postgres) the fake keeps its state next to its cwd (the run dir).
    path = args.store[len("sqlite:///"):] if args.store.startswith("sqlite:///") else "fake-store.db"
    create_schema(path)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def reply(self, code, body, headers=()):
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in headers:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            parts = self.path.strip("/").split("/")
            if parts == ["fake", "posts"]:
                return self.reply(200, {"node_id": args.id, "posts": POSTS[0]})
            if parts == ["healthz"]:
                return self.reply(200, {"node_id": args.id, "status": "leader" if args.ordinal == 1 else "backup",
                                        "epoch": 1, "leader": "n1"})
            db = connect(path)
            try:
                if parts[:2] == ["v1", "requests"] and len(parts) == 4:
                    row = db.execute("SELECT body FROM outcomes WHERE client_id = ? AND request_id = ?",
                                     (parts[2], parts[3])).fetchone()
                    return self.reply(200, json.loads(row[0])) if row else self.reply(404, {"error": "unknown_request"})
                if parts[:2] == ["v1", "accounts"] and len(parts) == 3:
                    row = db.execute("SELECT account_id, owner, balance, version FROM accounts"
                                     " WHERE account_id = ?", (parts[2],)).fetchone()
                    if not row:
                        return self.reply(404, {"error": "unknown_account"})
                    return self.reply(200, {"account_id": row[0], "owner": row[1], "status": "active",
                                            "balance_minor": row[2], "version": row[3]})
            finally:
                db.close()
            self.reply(404, {"error": "not_found"})

        def do_POST(self):
            with LOCK:
                POSTS[0] += 1
            env = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            key = env["client_id"] + "/" + env["request_id"]
            h = zlib.crc32(key.encode())
            db = connect(path)
            try:
                n = bump(db, key)
            finally:
                db.close()
            if h % 5 == 0 and n == 1:
                return self.reply(503, {"error": "unavailable", "detail": "fake refusal"}, [("Retry-After", "0.05")])
            body, replayed = apply(path, env)
            if h % 7 == 1 and n == 1:
                return self.reply(202, {"request_id": env["request_id"], "status": "pending",
                                        "location": "/v1/requests/" + key})
            seen = dict(body, replayed=replayed)
            if MODE == "liar" and seen["verdict"] == "accepted" and env["kind"] != "open":
                seen["account_delta_minor"] += 1
            self.reply(200, seen)

    try:
        server = ThreadingHTTPServer((args.host, args.base_port + args.ordinal), Handler)
    except OSError as exc:
        print(f"port {args.base_port + args.ordinal} is in use: {exc}", file=sys.stderr, flush=True)
        return 2
    print(json.dumps({"ready": True, "node_id": args.id, "port": args.base_port + args.ordinal}), flush=True)
    server.serve_forever()


def main():
    p = argparse.ArgumentParser()
    for name in ("--id", "--host", "--store", "--log", "--key-file"):
        p.add_argument(name, required=True)
    for name in ("--ordinal", "--nodes", "--base-port"):
        p.add_argument(name, type=int, required=True)
    p.add_argument("--fault", default="none")
    args = p.parse_args()
    if MODE == "crash" and args.ordinal == 2:
        print("fake node refuses to start: store cannot be opened", file=sys.stderr, flush=True)
        return 2
    if not os.path.exists(args.key_file) or oct(os.stat(args.key_file).st_mode & 0o777) != "0o600":
        print("key file missing or not 0600", file=sys.stderr, flush=True)
        return 2
    return serve(args)


if __name__ == "__main__":
    sys.exit(main())
'''


def write_fake_node(directory: Path) -> Path:
    """Write the fake node script into ``directory``; returns its path."""
    path = directory / "fake_node.py"
    path.write_text(FAKE_NODE_SOURCE)
    return path


def load_fake_module(script: Path) -> ModuleType:
    """Import the fake node script (for its ``apply``, used by the fake log)."""
    spec = importlib.util.spec_from_file_location("fake_node_for_main_tests", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_node_command(script: Path):  # type: ignore[no-untyped-def]
    """A node_command for the Supervisor: the real node arguments, run by the fake script."""
    from ledger.main_supervisor import default_node_command

    def command(spec):  # type: ignore[no-untyped-def]
        argv = default_node_command(spec)
        return [sys.executable, str(script), *argv[4:]]  # drop "python -m ledger node"

    return command


class FakeLog:
    """An EventLog stand-in: append decides the envelope in the fake nodes' store.

    It has a real eventlog Connection, so the demo's appends go through
    eventlog's own publish_operation exactly as with the real log.
    """

    def __init__(self, url: str, fake: ModuleType) -> None:
        from ledger.eventlog import Backend, Connection

        self.store_path = str(Path(url[len("sqlite:///"):]).with_name("store.db"))
        self.fake = fake
        self.connection = Connection(url=url, backend=Backend.embedded)
        self.appended: list[tuple[int, str]] = []
        self.opened = self.closed = False

    async def open(self) -> None:
        from ledger.eventlog import connection_ready

        connection_ready(self.connection)
        self.opened = True

    async def close(self) -> None:
        from ledger.eventlog import close_log

        close_log(self.connection)
        self.closed = True

    def partition_of(self, account_id: str) -> int:
        return len(account_id) % 4

    async def append(self, partition: int, payload: str) -> int:
        import json

        import asyncio

        self.appended.append((partition, payload))
        offset = len(self.appended)
        await asyncio.to_thread(self.fake.apply, self.store_path, json.loads(payload))
        return offset
