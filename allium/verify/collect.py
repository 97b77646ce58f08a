"""Collect (or run) a package's tests in a separate pytest process.

Collection imports the generated code, and generated code is untrusted until
checked: it may hang, exit, or poison ``sys.modules``.  So pytest always runs
in a subprocess with a timeout, and we read back the JSON report the allium
pytest plugin writes (``--allium-report``), never pytest's console output.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from allium.errors import AlliumError
from allium.untrusted import resource_limits, scrubbed_env

# pytest exit codes (pytest.ExitCode) that still mean "we have a usable report".
_OK, _TESTS_FAILED, _NO_TESTS = 0, 1, 5
# config file -> the section that makes pytest adopt it (None: any content)
_CONFIG_FILES = {"pytest.ini": None, ".pytest.ini": None, "pyproject.toml": "[tool.pytest",
                 "tox.ini": "[pytest]", "setup.cfg": "[tool:pytest]"}


class CollectError(AlliumError):
    """pytest could not collect (or run) the package's tests; carries pytest's output."""

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(message + (f"\n--- pytest output ---\n{output.rstrip()}" if output else ""))
        self.output = output


@dataclass(frozen=True, slots=True)
class CollectedTest:
    nodeid: str
    obligations: tuple[str, ...]
    outcome: str = "not run"  # passed | failed | error | skipped | xfailed | xpassed | not run
    duration: float = 0.0
    message: str | None = None

    @property
    def file(self) -> str:
        """The test file, relative to the collection root."""
        return self.nodeid.split("::", 1)[0]

    @property
    def failed(self) -> bool:
        return self.outcome in ("failed", "error")


@dataclass
class Collection:
    root: Path  # pytest's rootdir: node ids are relative to it
    tests: list[CollectedTest] = field(default_factory=list)
    ran: bool = False
    seconds: float = 0.0

    @property
    def tagged(self) -> list[CollectedTest]:
        return [t for t in self.tests if t.obligations]

    def by_obligation(self) -> dict[str, list[CollectedTest]]:
        out: dict[str, list[CollectedTest]] = {}
        for test in self.tests:
            for oid in test.obligations:
                out.setdefault(oid, []).append(test)
        return out


def collect_tests(tests_dir: str | Path, *, root: str | Path | None = None, timeout: float = 120) -> Collection:
    """Collect without running (`pytest --collect-only`); outcomes are "not run"."""
    return start_pytest(tests_dir, root=root, timeout=timeout, run=False).wait()


def run_tests(tests_dir: str | Path, *, root: str | Path | None = None, timeout: float = 120) -> Collection:
    """Run the tests; each test carries its outcome and, on failure, pytest's one-line message."""
    return start_pytest(tests_dir, root=root, timeout=timeout, run=True).wait()


def start_pytest(tests_dir: str | Path, *, root: str | Path | None = None, timeout: float = 120,
                 run: bool = False) -> PendingPytest:
    """Start pytest in the background; :meth:`PendingPytest.wait` gives the :class:`Collection`.

    So the caller can check specs and derive obligations while pytest imports
    the package: the two take about as long as each other.
    """
    tests = Path(tests_dir).resolve()
    if not tests.exists():
        raise CollectError(f"no tests found: {tests} does not exist")
    base = Path(root).resolve() if root else (tests if tests.is_dir() else tests.parent)
    return PendingPytest(tests, base, timeout, run)


def pytest_command(tests_dir: Path, root: Path, report: Path | None, *, run: bool, lean: bool = False,
                   scratch: Path | None = None) -> list[str]:
    """The pytest command line. ``lean`` (collection only) skips what collection does not need.

    Files of our own (an empty ini) go in ``scratch``, else beside ``report``.
    """
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
           f"--rootdir={root}", f"--confcutdir={root}"]
    if report is not None:
        cmd.append(f"--allium-report={report}")
    # --confcutdir: conftest.py files above the package belong to whatever project
    # it sits in, not to the package.
    if not _has_own_config(tests_dir, root):
        # Otherwise pytest walks up past the package and picks up whatever project
        # it sits in (addopts, testpaths...), which is not the package's config.
        # An empty ini file of our own: pytest 9 refuses `-c /dev/null`
        # ("unsupported format").
        folder = scratch if scratch is not None else report.parent if report is not None else None
        if folder is None:
            raise ValueError("pytest_command needs a report path or a scratch folder")
        config = folder / "allium-empty-pytest.ini"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text("[pytest]\n", encoding="utf-8")
        cmd += ["-c", str(config)]
    if not run:
        cmd.append("--collect-only")
    if lean:
        # With plugin autoload off (see PendingPytest) only our plugin is loaded;
        # assertion rewriting matters only when asserts run.
        cmd += ["-p", "allium.verify.plugin", "--assert=plain"]
    cmd.append(str(tests_dir))
    return cmd


class PendingPytest:
    """One pytest subprocess (`python -m pytest`, so the package root is importable).

    Collection is first tried *lean*: installed plugins are not autoloaded,
    which halves its cost (hypothesis alone takes most of a second to import).
    If that fails (the package may need a plugin to collect), it is retried
    with the user's full plugin set before reporting an error. Runs always use
    the full set.
    """

    def __init__(self, tests_dir: Path, root: Path, timeout: float, run: bool) -> None:
        self.tests_dir, self.root, self.timeout, self.run = tests_dir, root, timeout, run
        self._tmp = tempfile.TemporaryDirectory(prefix="allium-verify-")
        self.report = Path(self._tmp.name) / "report.json"
        self._started = time.perf_counter()
        self._lean = not run
        self._proc = self._spawn()

    def _spawn(self) -> subprocess.Popen[str]:
        # Model-written code: no secrets from our environment (allium.untrusted);
        # PYTEST_ADDOPTS is not on the allow-list either, the caller's options not being the package's.
        env = scrubbed_env()
        if self._lean:
            env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
        cmd = pytest_command(self.tests_dir, self.root, self.report, run=self.run, lean=self._lean)
        return subprocess.Popen(cmd, cwd=self.root, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, errors="replace",
                                preexec_fn=resource_limits())

    def wait(self) -> Collection:
        try:
            return self._wait()
        finally:
            self._tmp.cleanup()

    def cancel(self) -> None:
        """Stop pytest if it is still running and drop the report directory."""
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.communicate()
        self._tmp.cleanup()

    def _wait(self) -> Collection:
        while True:
            remaining = max(0.0, self.timeout - (time.perf_counter() - self._started))
            try:
                output, _ = self._proc.communicate(timeout=remaining)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                output, _ = self._proc.communicate()
                verb = "running" if self.run else "collecting"
                raise CollectError(f"pytest timed out after {self.timeout:g} s {verb} {self.tests_dir}",
                                   output or "") from None
            code = self._proc.returncode
            if code in (_OK, _TESTS_FAILED, _NO_TESTS) and self.report.exists():
                break
            if not self._lean:
                raise CollectError(
                    f"pytest could not collect the tests in {self.tests_dir} (exit code {code})", output or ""
                )
            self._lean = False
            self.report.unlink(missing_ok=True)
            self._proc = self._spawn()
        collection = parse_report(json.loads(self.report.read_text(encoding="utf-8")), self.root)
        collection.ran = self.run
        collection.seconds = time.perf_counter() - self._started
        return collection


def parse_report(document: dict, root: Path) -> Collection:
    """The plugin's JSON report (version 1) as a :class:`Collection`."""
    if document.get("version") != 1:
        raise CollectError(f"unsupported allium pytest report version {document.get('version')!r}")
    tests = [
        CollectedTest(
            nodeid=entry["nodeid"],
            obligations=tuple(entry.get("obligations", ())),
            outcome=entry.get("outcome", "not run"),
            duration=float(entry.get("duration", 0.0)),
            message=entry.get("message"),
        )
        for entry in document.get("tests", [])
    ]
    return Collection(root=root, tests=tests)


def _has_own_config(tests_dir: Path, root: Path) -> bool:
    """Does the package carry a pytest config between its tests and its root?"""
    here = tests_dir if tests_dir.is_dir() else tests_dir.parent
    while True:
        for name, section in _CONFIG_FILES.items():
            path = here / name
            if path.is_file() and (section is None or section in path.read_text(errors="replace")):
                return True
        if here == root or here.parent == here or root not in here.parents:
            return False
        here = here.parent


