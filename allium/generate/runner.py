"""One generation run: plan -> requests -> provider -> staged output -> swap.

Every answer is judged (``allium.generate.answers``) and, if accepted,
recorded in the transcript store before anything is written; the recording
provider answers from the store when it already holds the question, so a run
that dies half way resumes without paying again for the units it had
finished. Refused answers, and answers whose tests do not collect, go to the
store's ``rejected/`` folder instead, so the next run asks again. Output is
staged and swapped in only when every selected unit has answered, every file
is safe, every ``.py`` compiles and the tests collect: a failed run leaves
``generated/`` exactly as it was. One run at a time holds the output's lock.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path

from allium.errors import AlliumError
from allium.generate import lockfile
from allium.generate.answers import AnswerRejected, check_answer, with_hint
from allium.generate.units import ENTRY_UNIT, Plan, Unit
from allium.generate.writer import OutputCheckError, OutputLock, StagedOutput, UnsafePathError
from allium.providers.base import Provider, ProviderError, Request, Response, Usage, price_for
from allium.providers.exchange import ExchangePending
from allium.providers.transcripts import RecordingProvider, TranscriptStore
from allium.untrusted import resource_limits, scrubbed_env

# Scaffolding allium writes itself (never model output): the package marker and
# a conftest that lets `pytest <output>/tests` import the package.
CONFTEST = '''"""Written by allium: makes the generated package importable from its tests."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
'''


ENTRY_POINT = '''"""Written by allium: `python -m {package}` runs unit `{unit}`'s command line."""
from {package}.{unit} import main

raise SystemExit(main())
'''


class BudgetExceeded(AlliumError):
    """Starting another unit would take the run past --max-cost."""


class ExchangeWaiting(AlliumError):
    """Exchange mode: these units' requests are written and await answers."""

    def __init__(self, pending: Sequence[ExchangePending]) -> None:
        lines = [f"  {p.unit}: read {p.request_path}, write {p.response_path}" for p in pending]
        super().__init__(f"{len(pending)} unit(s) await an answer; then run again:\n" + "\n".join(lines))
        self.pending = list(pending)


@dataclass(frozen=True)
class UnitOutcome:
    unit: str
    request_hash: str
    response: Response
    seconds: float
    reused: bool  # answered from the transcript store

    @property
    def cost_usd(self) -> float:
        return 0.0 if self.reused else (self.response.cost_usd() or 0.0)


@dataclass
class RunReport:
    selected: list[str]
    skipped: list[str]  # up to date, not requested
    outcomes: list[UnitOutcome] = field(default_factory=list)
    seconds: float = 0.0
    output: Path | None = None

    @property
    def cost_usd(self) -> float:
        return sum(o.cost_usd for o in self.outcomes)


Event = Callable[[str, str], None]  # (unit, message) for progress displays


def select_units(plan: Plan, output: Path, only: Sequence[str] = (), everything: bool = False) -> list[Unit]:
    """Which units to (re)generate: named ones, or those whose spec slice changed."""
    if only:
        return [plan.unit(name) for name in only]
    if everything:
        return list(plan.units)
    lock = lockfile.load(output / lockfile.LOCKFILE_NAME)
    current = {u.name: u.slice_hash for u in plan.units}
    stale = set(lockfile.stale_units(lock, current))
    return [u for u in plan.units if u.name in stale or not (output / u.module_path).exists()]


def estimate_cost(requests: Sequence[Request], count: Callable[[Request], int] | None = None,
                  output_tokens: int = 8_000, warm_prefix: bool = False) -> tuple[int, float | None]:
    """Input tokens and a cost estimate before anything is spent.

    Token counts come from the API's counting endpoint when a counter is
    given, else from ~4 characters per token.  The shared prefix is billed as
    a cache write once and cache reads after that, as it will be.
    """
    if not requests:
        return 0, 0.0
    price = price_for(requests[0].model)
    total = 0
    cost = 0.0
    prefix_tokens = len("".join(requests[0].system)) // 4
    for i, request in enumerate(requests):
        tokens = count(request) if count else len(request.to_payload().__repr__()) // 4
        total += tokens
        if price is not None:
            fresh = max(tokens - prefix_tokens, 0)
            prefix_rate = price.cache_write if i == 0 and not warm_prefix else price.cache_read
            cost += (fresh * price.input + prefix_tokens * prefix_rate + output_tokens * price.output) / 1e6
    return total, (cost if price is not None else None)


class Generator:
    def __init__(self, plan: Plan, provider: Provider, store: TranscriptStore, output: Path, *,
                 model: str | None = None, max_tokens: int | None = None, jobs: int = 4,
                 max_cost: float | None = None, on_event: Event | None = None,
                 amend: bool = True) -> None:
        self.plan = plan
        self.amend = amend
        self._fresh: set[str] = set()  # units asked from scratch whatever `amend` says
        self.store = store
        self.provider = provider
        self.recorder = RecordingProvider(provider, store, reuse=True, check=self._check_fresh)
        self.warmup_usage: Usage | None = None
        self.output = output
        self.model = model
        self.max_tokens = max_tokens
        self.jobs = max(1, jobs)
        self.max_cost = max_cost
        self.on_event = on_event or (lambda unit, message: None)
        self._spent = 0.0
        self._reserved = 0.0  # estimates of the units being asked right now
        self._budget_lock = threading.Lock()

    def discard(self, units: Sequence[Unit]) -> list[str]:
        """Set aside the stored answers to these units' current requests, so they are asked again.

        Both forms of the request count (amending the current files, and from
        scratch); the units are then asked from scratch, because an answer set
        aside is no base for the next one."""
        amending = self.requests(units)
        self._fresh.update(u.name for u in units)
        fresh = self.requests(units)
        done = []
        for unit in units:
            hashes = dict.fromkeys(r.request_hash() for r in (amending[unit.name], fresh[unit.name]))
            moved = [m for m in map(self.store.discard, hashes) if m]
            done.append(f"{unit.name}: " + (f"stored answer moved to {', '.join(map(str, moved))}"
                                            if moved else "no stored answer"))
        return done

    def requests(self, units: Sequence[Unit]) -> dict[str, Request]:
        from allium.prompt.builder import build_request

        lock = lockfile.load(self.output / lockfile.LOCKFILE_NAME) if self.amend else None
        return {u.name: build_request(u, self.plan, self.model, self.max_tokens, code_root=self.output,
                                      current=self.current_files(u, lock))
                for u in units}

    def current_files(self, unit: Unit, lock: lockfile.Lockfile | None) -> dict[str, str] | None:
        """The unit's files as last generated, for the model to amend, or None to ask afresh.

        Amending keeps what still meets the spec (and the Python API other
        units were built against) instead of rewriting a whole unit for a
        one-line spec edit. Files that differ from the lock are never sent."""
        if not self.amend or unit.name in self._fresh:
            return None
        entry = lock.units.get(unit.name) if lock else None
        if entry is None:
            return None
        files = lockfile.locked_files(self.output, entry)
        if files is None:
            self.on_event(unit.name, "asked afresh: its files differ from the lock")
        return files

    def run(self, units: Sequence[Unit], *, pin_to_lockfile: bool = False) -> RunReport:
        """Answer and write `units`.

        With `pin_to_lockfile` (replay), a unit whose spec slice is unchanged
        since the lockfile is answered from the transcript the lockfile names,
        even though its request now differs (the shared prefix carries the whole
        spec set, so any spec edit changes every request): that is what makes
        `--provider replay` rebuild generated/ byte for byte after a partial
        regeneration.
        """
        with OutputLock(self.output):  # for the whole run: two runs would pay twice, then collide
            return self._run(units, pin_to_lockfile)

    def _run(self, units: Sequence[Unit], pin_to_lockfile: bool) -> RunReport:
        started = time.monotonic()
        selected = [u.name for u in units]
        report = RunReport(selected, [u.name for u in self.plan.units if u.name not in selected])
        pinned = self._pinned(units) if pin_to_lockfile else {}
        requests = self.requests([u for u in units if u.name not in pinned])
        answered = {o.unit: o for o in self._answer_all(requests)} if requests else {}
        report.outcomes = [pinned.get(u.name) or answered[u.name] for u in units]
        self._write(units, requests, report.outcomes)
        report.seconds = time.monotonic() - started
        report.output = self.output
        return report

    def _pinned(self, units: Sequence[Unit]) -> dict[str, UnitOutcome]:
        lock = lockfile.load(self.output / lockfile.LOCKFILE_NAME)
        out: dict[str, UnitOutcome] = {}
        for unit in units:
            entry = lock.units.get(unit.name) if lock else None
            if entry is None or entry.spec_slice != unit.slice_hash:
                continue
            transcript = self.store.get(entry.transcript)
            if transcript is not None:
                out[unit.name] = UnitOutcome(unit.name, entry.request_hash, transcript.response, 0.0, True)
                self.on_event(unit.name, "from the transcript the lockfile names")
        return out

    # ------------------------------------------------------------ asking

    def _answer_all(self, requests: dict[str, Request]) -> list[UnitOutcome]:
        # Every unit runs to its end even when another fails: answers are
        # recorded as they arrive, so the rerun only asks for what is missing.
        self._warm_cache(requests)
        # Largest requests first: with more units than jobs, the long ones
        # should not be the ones left running alone at the end.
        order = sorted(requests, key=lambda n: len(requests[n].messages[-1]["content"]), reverse=True)
        with ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="allium-unit") as pool:
            futures = {name: pool.submit(self._answer, name, requests[name]) for name in order}
            wait(futures.values())
        errors = {name: f.exception() for name, f in futures.items() if f.exception() is not None}
        if errors:
            pending = [e for e in errors.values() if isinstance(e, ExchangePending)]
            if len(pending) == len(errors):
                raise ExchangeWaiting(pending)
            raise next(e for e in errors.values() if not isinstance(e, ExchangePending))  # type: ignore[misc]
        return [futures[name].result() for name in requests]

    def _warm_cache(self, requests: dict[str, Request]) -> None:
        """Write the shared prefix to the prompt cache once, before fanning out.

        Parallel requests that arrive together would each pay for writing the
        same prefix; one tiny request first lets all of them read it instead.
        Only for a live API: replay and exchange answers cost nothing.
        """
        fresh = [r for r in requests.values() if r.request_hash() not in self.store]
        if self.jobs < 2 or len(fresh) < 2 or getattr(self.provider, "name", "") != "anthropic":
            return
        first = fresh[0]
        warmup = replace(first, unit="(cache warm-up)", max_tokens=16,
                         messages=({"role": "user", "content": "Reply with the single word OK."},))
        self.on_event("*", "warming the prompt cache")
        try:
            response = self.provider.complete(warmup)
        except ProviderError as exc:  # the units will meet and report the same problem
            self.on_event("*", f"cache warm-up failed: {exc}")
            return
        self.warmup_usage = response.usage
        self._spent += response.cost_usd() or 0.0

    def _answer(self, name: str, request: Request) -> UnitOutcome:
        request_hash = request.request_hash()
        reused = request_hash in self.store
        reserved = 0.0
        if not reused:
            reserved = self._check_budget(name, request)
            self.on_event(name, "requesting")
        started = time.monotonic()
        try:
            response = self.recorder.complete(request)
        except (AnswerRejected, UnsafePathError) as exc:
            raise with_hint(exc, name, self._hint(name, request_hash, stored=reused)) from None
        finally:
            with self._budget_lock:
                self._reserved -= reserved
        outcome = UnitOutcome(name, request_hash, response, time.monotonic() - started, reused)
        with self._budget_lock:
            self._spent += outcome.cost_usd
        self.on_event(name, "from transcript" if reused else f"answered ({len(response.files)} files)")
        return outcome

    def _check_fresh(self, request: Request, response: Response) -> None:
        check_answer(self.plan.unit(request.unit), response.files)

    def _hint(self, unit: str, request_hash: str, *, stored: bool) -> str:
        """What to do about a refused answer, which depends on where it came from."""
        if stored:
            return (f"it is the stored answer {self.store.path_for(request_hash)}; run again with "
                    f"--discard {unit} to set it aside and ask again")
        ask_again = getattr(self.provider, "retry_hint", None)
        where = self.store.rejected_root / f"{request_hash}.json"
        return ((ask_again(unit) if ask_again else "run again to ask again")
                + f" (the refused answer is kept in {where}, not as a transcript)")

    def _check_budget(self, unit: str, request: Request) -> float:
        """Reserve the unit's estimated cost, or refuse to start it.

        Spent money plus the estimates of units still running must stay
        within --max-cost, so parallel units cannot overshoot it together.
        """
        if self.max_cost is None:
            return 0.0
        _, estimate = estimate_cost([request], warm_prefix=True)
        estimate = estimate or 0.0
        with self._budget_lock:
            if self._spent + self._reserved + estimate > self.max_cost:
                raise BudgetExceeded(
                    f"stopping before unit {unit!r}: ${self._spent + self._reserved:.2f} spent or "
                    f"committed plus its estimated ${estimate:.2f} would pass --max-cost "
                    f"${self.max_cost:.2f}; finished units are kept in the transcript store"
                )
            self._reserved += estimate
        return estimate

    # ------------------------------------------------------------ writing

    def _write(self, units: Sequence[Unit], requests: dict[str, Request],
               outcomes: Sequence[UnitOutcome]) -> None:
        lock_path = self.output / lockfile.LOCKFILE_NAME
        lock = lockfile.load(lock_path) or lockfile.Lockfile(self.plan.package)
        spec_files = sorted({f for u in self.plan.units for f in u.spec_files})
        lock = lockfile.Lockfile(self.plan.package, lockfile.spec_file_hashes(self.plan.root, spec_files),
                                 lock.units)
        lock = lock.without_units({u for u in lock.units if u not in {x.name for x in self.plan.units}})
        by_name = {u.name: u for u in units}
        for outcome in outcomes:  # answers from the store were judged by older rules, or not at all
            try:
                check_answer(by_name[outcome.unit], outcome.response.files)
            except (AnswerRejected, UnsafePathError) as exc:
                raise with_hint(exc, outcome.unit,
                                self._hint(outcome.unit, outcome.request_hash, stored=True)) from None
        with StagedOutput(self.output) as staged:
            staged.write_own(f"{self.plan.package}/__init__.py", '"""Generated by allium."""\n')
            staged.write_own("tests/conftest.py", CONFTEST)
            if any(u.name == ENTRY_UNIT for u in self.plan.units):
                staged.write_own(f"{self.plan.package}/__main__.py", ENTRY_POINT.format(
                    package=self.plan.package, unit=ENTRY_UNIT))
            for outcome in outcomes:
                unit = by_name[outcome.unit]
                staged.write_unit(unit, outcome.response.files)
                lock = lock.with_unit(unit.name, lockfile.unit_entry(
                    spec_slice=unit.slice_hash, request_hash=outcome.request_hash,
                    files=dict(outcome.response.files), transcript=outcome.request_hash,
                    model=outcome.response.model, usage=outcome.response.usage))
            staged.write_own(lockfile.LOCKFILE_NAME, lockfile.dumps(lock))
            staged.check()
            try:
                _check_tests_collect(staged.root)
            except CollectionFailed as exc:
                raise self._collection_refused(exc, outcomes) from None
            staged.commit()

    def _collection_refused(self, exc: CollectionFailed, outcomes: Sequence[UnitOutcome]) -> AlliumError:
        """Set aside the answers the collection failure names (all of them if it names none)."""
        named = [o for o in outcomes if any(path in exc.output for path, _ in o.response.files)]
        lines = []
        for outcome in named or outcomes:
            if outcome.reused:
                lines.append(f"{outcome.unit}: " + self._hint(outcome.unit, outcome.request_hash, stored=True))
            else:
                self.store.discard(outcome.request_hash)
                lines.append(f"{outcome.unit}: " + self._hint(outcome.unit, outcome.request_hash, stored=False))
        return OutputCheckError([*exc.problems, "what to do:", *lines])


class CollectionFailed(OutputCheckError):
    """The staged tests do not collect; ``output`` is pytest's whole output."""

    def __init__(self, problems: list[str], output: str) -> None:
        super().__init__(problems)
        self.output = output


def _check_tests_collect(root: Path, timeout: float = 120.0) -> None:
    """The staged tests must import and collect, in a subprocess (it runs model code)."""
    tests = root / "tests"
    if not any(tests.glob("test_*.py")):
        return
    try:
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", str(tests)],
            cwd=root, capture_output=True, text=True, errors="replace", timeout=timeout,
            env=scrubbed_env(), preexec_fn=resource_limits(),  # model-written code: no secrets
        )
    except subprocess.TimeoutExpired as exc:
        output = _text(exc.stdout) + _text(exc.stderr)
        raise CollectionFailed([f"generated tests did not finish collecting within {timeout:g} s "
                                "(a test module that hangs when imported?)"], output) from None
    if result.returncode != 0:
        output = result.stdout + result.stderr
        tail = output.strip().splitlines()[-15:]
        raise CollectionFailed(["generated tests do not collect:", *tail], output)


def _text(data: bytes | str | None) -> str:
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")
    return data or ""
