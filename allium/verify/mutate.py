"""`allium check --mutate`: mutation testing scoped by the spec.

1. *Map code to obligations.* One worker runs every tagged test once under a
   line tracer: an obligation's code is the lines its tests run in its own
   component's files, plus the functions marked ``@implements`` its rule.
2. *Mutate only that code* (:mod:`allium.verify.mutants`), never anything
   outside the generated package's own source files.
3. *Phase 1, the score.* Each mutant runs against the tests tagged with its
   own component's obligations that reach its line (fastest first) until one
   fails. Other components' tests are not used: a component's spec must pin
   its own code, and a dependent's slow tests (a server, a database) would
   otherwise run against every survivor.
4. *Phase 2, the obligations.* An obligation none of whose tests was the
   killer in phase 1 runs its own tests against its mutants until one dies;
   if none does, it is reported (``allium.verify.noMutantKilled``) with a
   surviving mutant as a diff.

Results are cached per unit under a key of everything that can change them
(its files, the tests that reach it, the files those tests run, the
operators), so an unchanged unit is not mutated again.
"""

from __future__ import annotations

import ast as pyast
import base64
import hashlib
import json
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from allium.verify.mutants import OPERATORS_VERSION, Mutant, mutants_of
from allium.verify.package import PackageLayout
from allium.verify.report import ObligationResult, VerifyReport
from allium.verify.workers import Worker, WorkerError

CACHE_VERSION = 1
KILLED = ("killed", "timeout")


@dataclass
class MutantResult:
    mutant: Mutant
    component: str
    status: str = "not-run"  # killed | timeout | survived | error | not-run
    killed_by: str | None = None
    tests: tuple[str, ...] = ()  # the tagged tests that reach its line
    error: str | None = None
    path: str = ""  # absolute path of its file (not cached: only fresh mutants are run)

    def to_json(self) -> dict[str, Any]:
        m = self.mutant
        return {"id": m.id, "component": self.component, "file": m.file, "line": m.line, "function": m.qualname,
                "operator": m.operator, "change": m.description, "status": self.status,
                "killed_by": self.killed_by, "tests": len(self.tests), "diff": m.diff,
                **({"error": self.error} if self.error else {})}


@dataclass
class ObligationMutation:
    result: ObligationResult
    mutants: list[str] = field(default_factory=list)  # ids of the mutants of its code
    killed: str | None = None  # a mutant its own tests kill
    survivor: str | None = None  # when they kill none: one they let live

    @property
    def status(self) -> str:
        """kills | kills-none | unmapped (no mutable code reached) | untested (no tests) | not-run (budget)."""
        if not self.result.tests:
            return "untested"
        if not self.mutants:
            return "unmapped"
        if self.killed:
            return "kills"
        return "kills-none" if self.survivor else "not-run"


@dataclass
class Score:
    killed: int = 0
    survived: int = 0
    other: int = 0  # errors and mutants not run (budget)

    @property
    def percent(self) -> float:
        tested = self.killed + self.survived
        return 100.0 if tested == 0 else 100.0 * self.killed / tested

    def add(self, status: str) -> None:
        if status in KILLED:
            self.killed += 1
        elif status == "survived":
            self.survived += 1
        else:
            self.other += 1

    def to_json(self) -> dict[str, Any]:
        return {"killed": self.killed, "survived": self.survived, "not_scored": self.other,
                "score": round(self.percent, 1)}


@dataclass
class MutationReport:
    units: list[str]
    mutants: list[MutantResult]
    obligations: list[ObligationMutation]
    seconds: float = 0.0
    budget_hit: bool = False
    cached_units: list[str] = field(default_factory=list)
    trace_failures: list[str] = field(default_factory=list)  # tagged tests that fail unmutated

    def by_component(self) -> dict[str, Score]:
        scores: dict[str, Score] = {u: Score() for u in self.units}
        for r in self.mutants:
            scores.setdefault(r.component, Score()).add(r.status)
        return scores

    def by_rule(self) -> dict[str, Score]:
        """Per construct (rule, entity, invariant...): the mutants of the code its obligations' tests run."""
        from allium.verify.coverage import construct_of

        status = {r.mutant.id: r.status for r in self.mutants}
        members: dict[str, set[str]] = {}
        for ob in self.obligations:
            members.setdefault(f"{ob.result.component}.{construct_of(ob.result.id)}", set()).update(ob.mutants)
        scores = {}
        for rule, ids in sorted(members.items()):
            if ids:
                scores[rule] = Score()
                for mid in ids:
                    scores[rule].add(status.get(mid, "not-run"))
        return scores

    def survivors(self) -> list[MutantResult]:
        return [r for r in self.mutants if r.status == "survived"]

    def to_json(self) -> dict[str, Any]:
        return {
            "units": self.units, "seconds": round(self.seconds, 1), "budget_hit": self.budget_hit,
            "cached_units": self.cached_units, "operators_version": OPERATORS_VERSION,
            "components": {c: s.to_json() for c, s in self.by_component().items()},
            "rules": {r: s.to_json() for r, s in self.by_rule().items()},
            "obligations": [{"id": o.result.id, "component": o.result.component, "status": o.status,
                             "mutants": len(o.mutants), "killed": o.killed, "survivor": o.survivor}
                            for o in self.obligations],
            "mutants": [r.to_json() for r in self.mutants],
        }


# ---------------------------------------------------------------- the run


@dataclass
class _Unit:
    name: str
    files: list[Path]  # absolute paths of its own source files


def mutate_package(report: VerifyReport, layout: PackageLayout, *, units: Iterable[str] = (), jobs: int = 2,
                   budget: float | None = None, cache_dir: Path | None = None,
                   progress: Callable[[str], None] | None = None) -> MutationReport:
    """Mutate the package's units that back `report`'s components (all, or those named in `units`)."""
    start = time.perf_counter()
    deadline = None if budget is None else time.monotonic() + budget
    say = progress or (lambda _msg: None)
    all_units = _units(layout, {c.name for c in report.components})
    chosen = [u for u in all_units if not units or u.name in set(units)]
    obligations = [o for c in report.components if any(u.name == c.name for u in chosen) for o in c.obligations]
    names = {u.name for u in chosen}
    owners: dict[str, set[str]] = {}  # test -> the chosen components whose obligations it is tagged with
    for o in report.obligations:
        if o.component in names:
            for t in o.tests:
                owners.setdefault(t, set()).add(o.component)
    tagged = sorted(owners)
    test_files = sorted({layout.root / t.split("::", 1)[0] for t in tagged})
    tags: dict[str, list[str]] = {}
    for o in report.obligations:
        for t in o.tests:
            tags.setdefault(t, []).append(f"{o.component}:{o.id}")

    pool = _Pool(layout, max(1, jobs), test_files)
    try:
        say(f"tracing {len(tagged)} tagged tests")
        trace = pool.workers[0].call({"op": "trace", "files": [str(f) for u in chosen for f in u.files],
                                      "tests": tagged}, 600)
        if trace is None:
            raise WorkerError("tracing the tests took longer than 600 s")
        tests = {n: t for n, t in trace["tests"].items() if n in owners}
        failing = sorted(n for n, t in tests.items() if t["outcome"] == "failed")
        reach = _reach(tests, failing)
        results: list[MutantResult] = []
        per_ob: list[ObligationMutation] = []
        cached: list[str] = []
        fresh: list[tuple[_Unit, str, list[MutantResult], list[ObligationMutation]]] = []
        for unit in chosen:
            key = _cache_key(unit, tests, _own(reach, owners, unit.name), tags, layout)
            unit_results = _load_cache(cache_dir, unit.name, key)
            implemented = _implements(unit, layout.root)
            mine = [o for o in obligations if o.component == unit.name]
            if unit_results is not None:
                cached.append(unit.name)
                results.extend(unit_results[0])
                per_ob.extend(_restore_obligations(mine, unit_results[1]))
                continue
            made = _make_mutants(unit, layout.root, reach, implemented, owners, tests)
            obs = [_obligation_code(o, made, reach, implemented) for o in mine]
            results.extend(made)
            per_ob.extend(obs)
            fresh.append((unit, key, made, obs))
        todo = [r for _, _, made, _ in fresh for r in made if r.tests]
        say(f"{len(todo)} mutants to run on {len(pool.workers)} worker(s); cached: {', '.join(cached) or 'none'}")
        budget_hit = pool.phase_one(todo, tests, deadline)
        budget_hit = pool.phase_two([o for _, _, _, obs in fresh for o in obs], results, tests, deadline) or budget_hit
        if not budget_hit:
            for unit, key, made, obs in fresh:
                _save_cache(cache_dir, unit.name, key, made, obs)
    finally:
        pool.close()
    for r in results:
        if not r.tests and r.status == "not-run":
            r.status = "survived"  # no tagged test reaches it: nothing could kill it
    return MutationReport([u.name for u in chosen], results, per_ob, time.perf_counter() - start, budget_hit,
                          cached, failing)


def _units(layout: PackageLayout, components: set[str]) -> list[_Unit]:
    """Each component's own source files: from the lockfile, else `<package>/<component>.py`."""
    from allium.generate import lockfile

    lock = lockfile.load(layout.lockfile) if layout.lockfile else None
    out = []
    for name in sorted(components):
        if lock is not None and name in lock.units:
            files = [layout.root / f for f in lock.units[name].files if f.endswith(".py") and not f.startswith("tests/")]
        else:
            files = [p for p in layout.root.glob(f"*/{name}.py") if p.parent != layout.tests_dir]
        files = [f.resolve() for f in files if f.is_file()]
        if files:
            out.append(_Unit(name, files))
    return out


def _reach(tests: dict[str, Any], failing: list[str]) -> dict[tuple[str, int], list[str]]:
    """(file, line) -> the passing tagged tests that run it."""
    reach: dict[tuple[str, int], list[str]] = {}
    for nodeid, test in tests.items():
        if nodeid in failing:
            continue  # a test that fails unmutated kills nothing
        for file, lines in test["lines"].items():
            for line in lines:
                reach.setdefault((file, line), []).append(nodeid)
    return reach


def _own(reach: dict[tuple[str, int], list[str]], owners: dict[str, set[str]],
         unit: str) -> dict[tuple[str, int], list[str]]:
    """`reach` limited to the tests tagged with the unit's own obligations."""
    own = {where: [t for t in ts if unit in owners.get(t, ())] for where, ts in reach.items()}
    return {where: ts for where, ts in own.items() if ts}


def _implements(unit: _Unit, root: Path) -> dict[str, set[tuple[str, int]]]:
    """Rule -> the (file, line)s of the functions marked ``@implements(rule)``."""
    found: dict[str, set[tuple[str, int]]] = {}
    for file in unit.files:
        tree = pyast.parse(file.read_text(encoding="utf-8"))
        for node in pyast.walk(tree):
            if not isinstance(node, (pyast.FunctionDef, pyast.AsyncFunctionDef, pyast.ClassDef)):
                continue
            for deco in node.decorator_list:
                if isinstance(deco, pyast.Call) and getattr(deco.func, "id", getattr(deco.func, "attr", "")) == "implements":
                    span = {(str(file), n) for n in range(node.lineno, (node.end_lineno or node.lineno) + 1)}
                    for arg in deco.args:
                        if isinstance(arg, pyast.Constant) and isinstance(arg.value, str):
                            found.setdefault(arg.value, set()).update(span)
    return found


def _make_mutants(unit: _Unit, root: Path, reach: dict[tuple[str, int], list[str]],
                  implemented: dict[str, set[tuple[str, int]]], owners: dict[str, set[str]],
                  tests: dict[str, Any]) -> list[MutantResult]:
    """Mutants on the lines the unit's own tagged tests reach, or inside @implements functions."""
    out = []
    reach = _own(reach, owners, unit.name)
    marked = {line for spans in implemented.values() for line in spans}
    for file in unit.files:
        rel = file.relative_to(root).as_posix()
        module = rel[:-3].replace("/", ".").removesuffix(".__init__")
        lines = {ln for (f, ln) in reach if f == str(file)} | {ln for (f, ln) in marked if f == str(file)}
        for mutant in mutants_of(file.read_text(encoding="utf-8"), rel, module, lines):
            covering = reach.get((str(file), mutant.line), [])
            ordered = sorted(covering, key=lambda t: tests[t]["seconds"])  # fastest first: the likeliest quick kill
            out.append(MutantResult(mutant, unit.name, tests=tuple(ordered), path=str(file)))
    return out


def _obligation_code(ob: ObligationResult, made: list[MutantResult], reach: dict[tuple[str, int], list[str]],
                     implemented: dict[str, set[tuple[str, int]]]) -> ObligationMutation:
    from allium.verify.coverage import construct_of

    mine = set(ob.tests)
    marked = implemented.get(construct_of(ob.id), set())
    ids = []
    for r in made:
        where = (r.path, r.mutant.line)
        if where in marked or mine.intersection(r.tests):
            ids.append(r.mutant.id)
    return ObligationMutation(ob, ids)


class _Pool:
    """Worker processes and the two phases, run on as many threads as workers."""

    def __init__(self, layout: PackageLayout, jobs: int, files: list[Path]) -> None:
        self.workers: list[Worker] = []
        for _ in range(jobs):
            self.workers.append(Worker(layout.tests_dir, layout.root, files or None))

    def close(self) -> None:
        for worker in self.workers:
            worker.close()

    def _run(self, jobs: list[Any], handle: Callable[[Worker, Any], None], deadline: float | None) -> bool:
        """Feed jobs to the workers; True if the deadline stopped it early."""
        work: queue.Queue[Any] = queue.Queue()
        for job in jobs:
            work.put(job)
        stopped = threading.Event()
        errors: list[BaseException] = []

        def loop(worker: Worker) -> None:
            while True:
                if deadline is not None and time.monotonic() > deadline:
                    stopped.set()
                    return
                try:
                    job = work.get_nowait()
                except queue.Empty:
                    return
                try:
                    handle(worker, job)
                except BaseException as exc:  # noqa: BLE001 - surfaced below, after the threads stop
                    errors.append(exc)
                    return

        threads = [threading.Thread(target=loop, args=(w,), daemon=True) for w in self.workers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        return stopped.is_set()

    def phase_one(self, todo: list[MutantResult], tests: dict[str, Any], deadline: float | None) -> bool:
        def handle(worker: Worker, result: MutantResult) -> None:
            answer = worker.call(_request(result.mutant, result.tests), _timeout(result.tests, tests))
            _record(result, answer)

        return self._run(todo, handle, deadline)

    def phase_two(self, obligations: list[ObligationMutation], results: list[MutantResult],
                  tests: dict[str, Any], deadline: float | None) -> bool:
        by_id = {r.mutant.id: r for r in results}
        passing = {n for n, t in tests.items() if t["outcome"] != "failed"}
        pending = []
        for ob in obligations:
            mine = set(ob.result.tests)
            for mid in ob.mutants:
                if by_id[mid].killed_by in mine:
                    ob.killed = mid
                    break
            if ob.killed is None and ob.mutants:
                pending.append(ob)

        def handle(worker: Worker, ob: ObligationMutation) -> None:
            mine = set(ob.result.tests)
            for mid in ob.mutants:
                result = by_id[mid]
                # its tests that reach the mutant, else all its passing ones (an @implements body)
                own = [t for t in result.tests if t in mine] or [t for t in ob.result.tests if t in passing]
                if not own:
                    return  # every test of it fails unmutated: already a finding, nothing to judge
                if result.status == "survived" and set(own) <= set(result.tests):
                    ob.survivor = ob.survivor or mid  # phase 1 ran these tests already: all passed
                    continue
                if deadline is not None and time.monotonic() > deadline:
                    return
                answer = worker.call(_request(result.mutant, own), _timeout(own, tests))
                if answer is None or answer.get("status") == "killed":
                    ob.killed = mid
                    return
                if answer.get("status") == "survived":
                    ob.survivor = ob.survivor or mid

        return self._run(pending, handle, deadline)


def _request(mutant: Mutant, tests: Iterable[str]) -> dict[str, Any]:
    return {"op": "mutant", "id": mutant.id, "module": mutant.module, "qualname": mutant.qualname,
            "code": base64.b64encode(mutant.code).decode(), "tests": list(tests)}


def _timeout(nodeids: Iterable[str], tests: dict[str, Any]) -> float:
    """Ten times what the tests took unmutated (traced, so already slow), plus start-up slack."""
    return 5.0 + 10.0 * sum(tests[n]["seconds"] for n in nodeids if n in tests)


def _record(result: MutantResult, answer: dict[str, Any] | None) -> None:
    if answer is None:
        result.status = "timeout"  # a mutant that hangs the tests is caught
        return
    result.status = answer.get("status", "error")
    result.killed_by = answer.get("killed_by")
    result.error = answer.get("error")


# ---------------------------------------------------------------- cache


def _cache_key(unit: _Unit, tests: dict[str, Any], reach: dict[tuple[str, int], list[str]],
               tags: dict[str, list[str]], layout: PackageLayout) -> str:
    """Everything a unit's results depend on: its files, the tests that reach it and what they run."""
    mine = {str(f) for f in unit.files}
    reaching = sorted({t for (f, _), ts in reach.items() if f in mine for t in ts})
    files = set(mine)
    for t in reaching:
        files.update(tests[t]["lines"])
        files.add(str(layout.root / t.split("::", 1)[0]))
    digest = hashlib.sha256(f"{CACHE_VERSION}|{OPERATORS_VERSION}".encode())
    for path in sorted(files):
        digest.update(path.encode() + b"\0" + hashlib.sha256(Path(path).read_bytes()).digest())
    for t in reaching:
        digest.update(f"{t}|{','.join(tags.get(t, ()))}".encode())
    return digest.hexdigest()


def _load_cache(cache_dir: Path | None, unit: str, key: str) -> tuple[list[MutantResult], dict] | None:
    if cache_dir is None:
        return None
    path = cache_dir / f"{unit}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if data.get("key") != key:
        return None
    results = []
    for m in data["mutants"]:
        mutant = Mutant(m["id"], m["file"], m["module"], m["function"], m["line"], m["operator"], m["change"],
                        b"", m["diff"])
        results.append(MutantResult(mutant, unit, m["status"], m["killed_by"], tuple(m["tests"]), m.get("error")))
    return results, data["obligations"]


def _restore_obligations(obligations: list[ObligationResult], saved: dict) -> list[ObligationMutation]:
    out = []
    for ob in obligations:
        entry = saved.get(ob.id, {})
        out.append(ObligationMutation(ob, entry.get("mutants", []), entry.get("killed"), entry.get("survivor")))
    return out


def _save_cache(cache_dir: Path | None, unit: str, key: str, made: list[MutantResult],
                obligations: list[ObligationMutation]) -> None:
    if cache_dir is None:
        return
    cache_dir.mkdir(parents=True, exist_ok=True)
    data = {
        "key": key,
        "mutants": [{"id": r.mutant.id, "file": r.mutant.file, "module": r.mutant.module, "function": r.mutant.qualname,
                     "line": r.mutant.line, "operator": r.mutant.operator, "change": r.mutant.description,
                     "diff": r.mutant.diff, "status": r.status, "killed_by": r.killed_by, "tests": list(r.tests),
                     "error": r.error} for r in made],
        "obligations": {o.result.id: {"mutants": o.mutants, "killed": o.killed, "survivor": o.survivor}
                        for o in obligations},
    }
    tmp = cache_dir / f".{unit}.json.tmp"
    tmp.write_text(json.dumps(data), encoding="utf-8")
    tmp.replace(cache_dir / f"{unit}.json")
