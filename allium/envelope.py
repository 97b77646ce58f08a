"""The one JSON document shape every command prints with `--format json`.

Every document is an object that starts with `format` ("allium.<command>")
and `version` (of that command's document shape, bumped when a key changes
meaning or goes away), then the command's own keys.  Every document carries
`diagnostics` (JUXT's shape, see diagnostics.py) and `summary` (counts by
severity), and `exit_code`, the status the command exits with, so a script
can read one document whatever happened.  When a command cannot run at all
(a usage error, a failure before any result) the document is an error
document: `format`, `version`, `error` {kind, message}, `diagnostics`,
`summary` and `exit_code`; its `kind` is "usage" (exit 2), "failure"
(exit 1) or "internal" (exit 1: a bug in allium, the message says where).  tests/test_cli_contract.py holds every command to these shapes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from allium.diagnostics import Diagnostic, Severity

VERSION = 1
EXIT_CLEAN, EXIT_FINDINGS, EXIT_USAGE = 0, 1, 2


def document(command: str, diagnostics: Sequence[Diagnostic], exit_code: int, **body: Any) -> dict[str, Any]:
    """The envelope of `command`'s result: its own keys between the header and the diagnostics."""
    return {"format": f"allium.{command}", "version": VERSION, **body, **_diagnostics(diagnostics),
            "exit_code": exit_code}


def error_document(command: str | None, kind: str, message: str, exit_code: int,
                   diagnostics: Sequence[Diagnostic] = ()) -> dict[str, Any]:
    """What a command prints when it could not run: `kind` is "usage", "failure" or "internal"."""
    return {"format": f"allium.{command or 'error'}", "version": VERSION,
            "error": {"kind": kind, "message": message}, **_diagnostics(diagnostics), "exit_code": exit_code}


def diagnostics_by_file(diagnostics: Sequence[Diagnostic], files: Sequence[str]) -> list[dict[str, Any]]:
    """Each file checked with its own diagnostics (clean files too, with none)."""
    by_file: dict[str, list[dict[str, object]]] = {f: [] for f in files}
    for diag in sorted(diagnostics, key=Diagnostic.sort_key):
        if diag.file:
            by_file.setdefault(diag.file, []).append(diag.to_json())
    return [{"file": f, "diagnostics": d} for f, d in by_file.items()]


def dumps(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False)


def _diagnostics(diagnostics: Sequence[Diagnostic]) -> dict[str, Any]:
    ordered = sorted(diagnostics, key=Diagnostic.sort_key)
    return {
        "diagnostics": [d.to_json() for d in ordered],
        "summary": {s.value: sum(1 for d in ordered if d.severity is s) for s in Severity},
    }
