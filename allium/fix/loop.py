"""`allium fix run`: regenerate what a spec edit touched, run its tests, feed failures back.

One invocation drives the loop as far as the provider allows. A live provider
(anthropic) answers at once, so up to `rounds` rounds run back to back: the
stale units are generated, their tests run, and a unit whose tests fail is
asked again with the failures appended to its request. The exchange provider
answers through files, so each invocation goes one step and stops while an
answer is awaited; the round reached is kept in `.allium/fix-feedback.json`, so
rerunning continues where it stopped. Replay cannot answer a new question; it
only rebuilds what was recorded. A feedback round is an ordinary request: it is
recorded in the transcript store like any other.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from allium.diagnostics import Diagnostic
from allium.generate import runner
from allium.generate.lockfile import LOCKFILE_NAME
from allium.generate.units import Plan, Unit
from allium.providers.base import Provider, Request
from allium.providers.transcripts import TranscriptStore

STATE_FILE = Path(".allium") / "fix-feedback.json"
MAX_FAILURES = 20  # per unit and round: enough to act on, short enough to read
MAX_MESSAGE = 1_500


@dataclass
class LoopResult:
    rounds: int  # generation rounds run in this invocation
    failing: dict[str, list[str]] = field(default_factory=dict)  # unit -> failure lines, after the last round
    waiting: str = ""  # set when the provider awaits an answer (exchange)
    gave_up: list[str] = field(default_factory=list)  # units still failing after the last allowed round

    @property
    def green(self) -> bool:
        return not self.failing and not self.waiting


class FeedbackGenerator(runner.Generator):
    """A Generator whose request for a unit carries the previous round's test failures."""

    def __init__(self, *args: object, feedback: Mapping[str, str] | None = None, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.feedback = dict(feedback or {})

    def requests(self, units: Sequence[Unit]) -> dict[str, Request]:
        out = super().requests(units)
        for name, text in self.feedback.items():
            if name in out:
                out[name] = with_feedback(out[name], text)
        return out


def with_feedback(request: Request, text: str) -> Request:
    """The request with `text` appended to its (last) user message."""
    *head, last = request.messages
    content = last["content"]
    if not isinstance(content, str):  # a structured message: add the feedback as one more text block
        return replace(request, messages=(*head, {**last, "content": [*content, {"type": "text", "text": text}]}))
    return replace(request, messages=(*head, {**last, "content": f"{content}\n\n{text}"}))


def feedback_text(round_no: int, rounds: int, failures: Sequence[str]) -> str:
    lines = [f"# Feedback: round {round_no} of {rounds}",
             "Your previous answer for this unit was written and its tests were run and checked against",
             "the specs. These failed, or prove nothing for the obligation they are tagged with:", ""]
    lines += [f"- {f}" for f in failures[:MAX_FAILURES]]
    if len(failures) > MAX_FAILURES:
        lines.append(f"- ... and {len(failures) - MAX_FAILURES} more")
    lines += ["", "Fix the code (or a test that contradicts the specification) and answer again with the",
              "complete files of the unit. Do not weaken a test that the specification supports."]
    return "\n".join(lines)


def unit_test_failures(output: Path, unit: Unit, timeout: float = 600.0) -> list[str]:
    """Run the unit's test files in `output`; one line per failing test (id: message)."""
    output = output.resolve()  # pytest runs in output: a relative --rootdir would point below it
    tests = [output / f for f in unit.files if f.startswith("tests/")]
    tests = [t for t in tests if t.exists()]
    if not tests:
        return []
    with tempfile.TemporaryDirectory(prefix="allium-fix-run-") as tmp:
        report = Path(tmp) / "report.json"
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--rootdir={output}",
                   f"--allium-report={report}", *map(str, tests)]
        try:
            done = subprocess.run(command, cwd=output, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return [f"{unit.name}: the tests did not finish within {timeout:.0f}s"]
        try:
            entries = json.loads(report.read_text(encoding="utf-8")).get("tests", [])
        except (OSError, json.JSONDecodeError):
            tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
            return [f"{unit.name}: the tests could not be collected: {' | '.join(tail)}"]
    return [f"{t['nodeid']}: {(t.get('message') or t.get('outcome'))[:MAX_MESSAGE]}"
            for t in entries if t.get("outcome") in ("failed", "error")]


def package_findings(plan: Plan, output: Path) -> list[Diagnostic]:
    """`allium check` of the whole generated package against the specs, without running its
    tests: one pytest collection, shared by every unit of a round."""
    from allium.verify.coverage import verify_package

    return list(verify_package([str(plan.root)], output).findings)


def unit_findings(plan: Plan, output: Path, unit: Unit, findings: Sequence[Diagnostic] | None = None) -> list[str]:
    """What `allium check` holds against the unit's tests without running them:
    vacuous tests in its test files and its obligations that no test covers.

    Passing tests that prove nothing are as much a reason to ask again as
    failing ones, and the model can only fix what it is told."""
    from allium.verify.report import UNCOVERED, VACUOUS_TEST

    lines = []
    for finding in package_findings(plan, output) if findings is None else findings:
        where = _relative(Path(finding.file), output) if finding.file else ""
        line = finding.span.start.line if finding.span else 0
        if finding.code == VACUOUS_TEST and where.startswith("tests/") and unit.allows(where):
            lines.append(f"{where}:{line}: {finding.message}")
        elif finding.code == UNCOVERED and any(finding.file.endswith(f) for f in unit.spec_files):
            lines.append(f"uncovered: {finding.message}")
    return lines


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def _consume_answers(provider: Provider, units: Sequence[Unit]) -> None:
    """An exchange answer, once recorded, is spent: the next round must wait for a new one."""
    paths = getattr(provider, "paths", None)
    if paths is None:
        return
    for unit in units:
        for kind in ("response.md", "response.json"):
            paths(unit.name)[kind].unlink(missing_ok=True)


def _load_state(path: Path) -> dict[str, dict[str, object]]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def _save_state(path: Path, state: Mapping[str, object]) -> None:
    if not state:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def run_loop(plan: Plan, provider: Provider, store: TranscriptStore, output: Path, *, rounds: int = 3,
             state_path: Path = STATE_FILE, on_event: Callable[[str, str], None] | None = None,
             run_tests: Callable[[Path, Unit], list[str]] | None = None,
             recheck: Sequence[str] = (), **generator_options: object) -> LoopResult:
    """Generate the stale units (and those awaiting feedback), test them, and ask again.

    `run_tests` defaults to the unit's failing tests plus what `allium check`
    finds against them (vacuous tests, uncovered obligations). Units named in
    `recheck` are tested first even when they are up to date, and asked again
    with their findings as a first feedback round. A unit whose tests still
    fail after `rounds` feedback rounds is given up (listed in `gave_up`, its
    failures in `failing`); its state is cleared."""
    state = _load_state(state_path)
    result = LoopResult(rounds=0)

    checked: dict[tuple[Path, int], list[Diagnostic]] = {}  # package findings per state of the lockfile

    def test_and_check(out: Path, unit: Unit) -> list[str]:
        # Checking is package-wide; a round's units share it, a write (a new lock) redoes it.
        lock = out / LOCKFILE_NAME
        key = (out, lock.stat().st_mtime_ns if lock.exists() else 0)
        if key not in checked:
            checked.clear()
            checked[key] = package_findings(plan, out)
        return unit_test_failures(out, unit) + unit_findings(plan, out, unit, checked[key])

    run_tests = run_tests or test_and_check
    for name in recheck:
        if name not in state and (failures := run_tests(output, plan.unit(name))):
            state[name] = {"round": 1, "feedback": feedback_text(1, rounds, failures)}
    while True:
        names = {u.name for u in runner.select_units(plan, output)} | set(state)
        units = [u for u in plan.units if u.name in names]
        if not units:
            break
        feedback = {n: str(s["feedback"]) for n, s in state.items() if s.get("feedback")}
        generator = FeedbackGenerator(plan, provider, store, output, feedback=feedback, on_event=on_event,
                                      **generator_options)
        try:
            generator.run(units)
        except runner.ExchangeWaiting as waiting:
            result.waiting = str(waiting)
            break
        result.rounds += 1
        _consume_answers(provider, units)
        result.failing = {u.name: f for u in units if (f := run_tests(output, u))}
        for unit in units:
            if unit.name not in result.failing:
                state.pop(unit.name, None)
        for name, failures in result.failing.items():
            sent = state.get(name, {}).get("round", 0)  # feedback rounds sent so far
            done = sent if isinstance(sent, int) else 0
            if done >= rounds:
                result.gave_up.append(name)
                state.pop(name, None)
                continue
            state[name] = {"round": done + 1, "feedback": feedback_text(done + 1, rounds, failures)}
        if not any(n in state for n in result.failing):
            break
    _save_state(state_path, state)
    return result
