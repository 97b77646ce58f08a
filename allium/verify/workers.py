"""Long-lived pytest worker processes for mutation runs (see :mod:`allium.verify.mutworker`).

Each worker is ``python -m pytest`` on the package's tests, with our plugin
serving requests over two pipes. Model-written code runs in it, so it gets a
scrubbed environment (:func:`scrubbed_env`: no API keys or other secrets), its
own process group (a hung or runaway mutant is killed with everything it
started), and a deadline per request.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from allium.errors import AlliumError
from allium.verify.collect import pytest_command
from allium.verify.mutworker import IN_ENV, OUT_ENV

# Variables a test run may need; everything else (API keys, tokens, cloud credentials...) is dropped.
_KEEP = frozenset({"PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TEMP", "TMP", "TERM", "USER", "LOGNAME",
                   "SYSTEMROOT", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHASHSEED", "PYTHONIOENCODING",
                   "PYTHONDONTWRITEBYTECODE", "PYTHONUTF8", "SOURCE_DATE_EPOCH"})
_KEEP_PREFIXES = ("LC_", "XDG_")


def scrubbed_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for running model-written code: an allow-list, never the caller's secrets."""
    env = {k: v for k, v in os.environ.items() if k in _KEEP or k.startswith(_KEEP_PREFIXES)}
    env.update(extra or {})
    return env


class WorkerError(AlliumError):
    """The worker died or could not start; carries the tail of its output."""


class Worker:
    """One pytest process serving requests; restartable after a timeout."""

    def __init__(self, tests_dir: Path, root: Path, files: list[Path] | None = None,
                 start_timeout: float = 120.0) -> None:
        """A worker on the tests in `tests_dir`, or only in `files` (test files under it) when given."""
        self.tests_dir, self.root, self.start_timeout = tests_dir, root, start_timeout
        self.files = files
        self.tests: list[str] = []
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the worker; closed in close()
        self._scratch = tempfile.TemporaryDirectory(prefix="allium-mutate-")
        self._buffer = b""
        self.start()

    def start(self) -> None:
        req_read, self._req = os.pipe()
        self._ans, ans_write = os.pipe()
        # no report file: answers come over the pipes
        cmd = pytest_command(self.tests_dir, self.root, None, run=True, scratch=Path(self._scratch.name))
        cmd[-1:] = ["-p", "allium.verify.mutworker", "-p", "no:randomly", "--assert=rewrite",
                    *(map(str, self.files) if self.files else [cmd[-1]])]
        env = scrubbed_env({IN_ENV: str(req_read), OUT_ENV: str(ans_write)})
        self._log.seek(0)
        self._log.truncate()
        self._proc = subprocess.Popen(cmd, cwd=self.root, env=env, pass_fds=(req_read, ans_write),
                                      stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        os.close(req_read)
        os.close(ans_write)
        self._buffer = b""
        ready = self._read(self.start_timeout)
        if ready is None or ready.get("op") != "ready":
            self.stop()
            raise WorkerError(f"the mutation worker could not start pytest on {self.tests_dir}:\n{self.output()}")
        self.tests = ready["tests"]

    def call(self, message: dict[str, Any], timeout: float) -> dict[str, Any] | None:
        """The answer, or None when it took longer than `timeout` (the worker is then restarted)."""
        try:
            os.write(self._req, (json.dumps(message) + "\n").encode())
        except OSError:
            answer = None
        else:
            answer = self._read(timeout)
        if answer is None:
            self.stop()
            self.start()
        return answer

    def _read(self, timeout: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._ans], [], [], left)[0]:
                return None
            chunk = os.read(self._ans, 1 << 16)
            if not chunk:
                return None  # the worker exited
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return json.loads(line)

    def output(self) -> str:
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")[-4000:]

    def stop(self) -> None:
        """End this worker's process group (ours alone: it was started in a new session)."""
        for fd in (self._req, self._ans):
            try:
                os.close(fd)
            except OSError:
                pass
        if self._proc is not None and self._proc.poll() is None:
            try:
                os.killpg(self._proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self._proc.wait()
        self._proc = None

    def close(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            try:
                os.write(self._req, b'{"op": "quit"}\n')
                self._proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self.stop()
        self._log.close()
        self._scratch.cleanup()
