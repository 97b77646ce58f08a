"""A pytest plugin that turns one pytest process into a mutation worker.

Loaded with ``-p allium.verify.mutworker`` by :mod:`allium.verify.mutate`, and
inert unless ``ALLIUM_MUTATE_IN`` / ``ALLIUM_MUTATE_OUT`` name the two pipe
descriptors it talks over (pytest captures stdin and stdout, so those are not
used). The session collects once; then, instead of pytest's own loop, the
worker answers JSON-line requests:

* ``{"op": "trace", "files": [...], "tests": [...]}``: run those tests (or
  all) once under a line tracer; per test: outcome, duration and the lines
  it ran in those files;
* ``{"op": "mutant", "module", "qualname", "code", "tests"}``: swap the
  function's code object for the mutant's, run the tests in order until one
  fails, restore the code; answers which test killed it (or none).

Importing the package, collecting and assertion rewriting are paid once per
worker, not once per mutant: a mutant costs only its tests.
"""

from __future__ import annotations

import base64
import importlib
import json
import marshal
import os
import sys
import threading
import time
from typing import Any

import pytest

IN_ENV, OUT_ENV = "ALLIUM_MUTATE_IN", "ALLIUM_MUTATE_OUT"


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> bool | None:
    if IN_ENV not in os.environ:
        return None
    items = {item.nodeid: item for item in session.items}
    with os.fdopen(int(os.environ[IN_ENV]), "r", encoding="utf-8") as requests, \
            os.fdopen(int(os.environ[OUT_ENV]), "w", encoding="utf-8", buffering=1) as answers:
        answers.write(json.dumps({"op": "ready", "tests": list(items)}) + "\n")
        for line in requests:
            message = json.loads(line)
            if message["op"] == "quit":
                break
            if message["op"] == "trace":
                answer = _trace({n: items[n] for n in message.get("tests", items) if n in items}, set(message["files"]))
            else:
                answer = _mutant(items, message)
            answers.write(json.dumps(answer) + "\n")
    return True


def _run(item: pytest.Item) -> tuple[str, float]:
    """Run one test (setup, call, teardown) without logging; its outcome and duration."""
    from _pytest.runner import runtestprotocol

    start = time.perf_counter()
    reports = runtestprotocol(item, log=False, nextitem=None)
    seconds = time.perf_counter() - start
    if any(r.failed for r in reports):
        return "failed", seconds
    if any(r.skipped for r in reports):
        return "skipped", seconds
    return "passed", seconds


def _trace(items: dict[str, pytest.Item], files: set[str]) -> dict[str, Any]:
    """Every test once, recording the lines of `files` (absolute paths) it executes."""
    results: dict[str, Any] = {}
    canonical: dict[str, str | None] = {}  # co_filename -> the path we were asked about, or None

    def wanted(name: str) -> str | None:
        if name not in canonical:
            real = os.path.realpath(name)
            canonical[name] = real if real in files else None
        return canonical[name]

    for nodeid, item in items.items():
        seen: dict[str, set[int]] = {}
        tracer = _tracer(seen, wanted, canonical)
        sys.settrace(tracer)
        threading.settrace(tracer)
        try:
            outcome, seconds = _run(item)
        finally:
            sys.settrace(None)
            threading.settrace(None)
        results[nodeid] = {"outcome": outcome, "seconds": round(seconds, 6),
                           "lines": {f: sorted(v) for f, v in seen.items()}}
    return {"op": "trace", "tests": results}


def _tracer(seen: dict[str, set[int]], wanted: Any, canonical: dict[str, str | None]) -> Any:
    """A sys.settrace function recording, into `seen`, the lines run in the wanted files only."""

    def local(frame: Any, event: str, arg: Any) -> Any:
        if event == "line":
            seen[canonical[frame.f_code.co_filename]].add(frame.f_lineno)  # type: ignore[index]
        return local

    def calls(frame: Any, event: str, arg: Any) -> Any:
        name = wanted(frame.f_code.co_filename)
        if name is None:
            return None  # frames elsewhere run untraced
        seen.setdefault(name, set()).add(frame.f_lineno)
        return local

    return calls


def _mutant(items: dict[str, pytest.Item], message: dict[str, Any]) -> dict[str, Any]:
    code = marshal.loads(base64.b64decode(message["code"]))
    answer: dict[str, Any] = {"op": "mutant", "id": message["id"], "killed_by": None, "ran": 0}
    target = _target(message["module"], message["qualname"], code)
    if target is None:
        answer["status"] = "error"
        answer["error"] = f"no live function {message['qualname']} defined at line {code.co_firstlineno}"
        return answer
    original = target.__code__
    try:
        target.__code__ = code
    except ValueError as exc:  # e.g. the mutant no longer uses a closure variable
        answer["status"], answer["error"] = "error", str(exc)
        return answer
    try:
        for nodeid in message["tests"]:
            item = items.get(nodeid)
            if item is None:
                continue
            answer["ran"] += 1
            if _run(item)[0] == "failed":
                answer["killed_by"] = nodeid
                break
    finally:
        target.__code__ = original
    answer["status"] = "killed" if answer["killed_by"] else "survived"
    return answer


def _target(module_name: str, qualname: str, code: Any) -> Any:
    """The live function object the mutant replaces: found through the module, unwrapped."""
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = vars(obj)[part]
    except (ImportError, KeyError, TypeError):
        return None
    candidates = [obj]
    if isinstance(obj, (staticmethod, classmethod)):
        candidates = [obj.__func__]
    elif isinstance(obj, property):
        candidates = [f for f in (obj.fget, obj.fset, obj.fdel) if f is not None]
    for func in candidates:
        while func is not None:  # through decorators that keep __wrapped__ (contextmanager, wraps...)
            live = getattr(func, "__code__", None)
            if live is not None and live.co_name == code.co_name and live.co_firstlineno == code.co_firstlineno:
                return func
            func = getattr(func, "__wrapped__", None)
    return None
