"""Where diagnostics point: at the name, path, binding or value they are about.

JUXT's `allium check` reports these at the thing named in the message, not at
the start of its declaration or field; the columns below are the ones it
gives for the same text (compared by hand against its CLI).  Line numbers
count the `-- allium: 3` marker as 1.
"""

from __future__ import annotations

import pytest

from tests.check.helpers import check_text

LOCATIONS: list[tuple[str, str, list[tuple[int, int]]]] = [
    ("allium.entity.unused", "entity Lonely {\n    x: String\n}\n", [(2, 8)]),
    (
        "allium.externalEntity.missingSourceHint",
        "external entity Mailbox {\n    address: String\n}\n",
        [(2, 17)],
    ),
    (
        "allium.definition.unused",
        "value Money {\n    cents: Integer\n}\nenum Colour { red | green }\n",
        [(2, 7), (5, 6)],
    ),
    ("allium.use.unresolvedPath", 'use "./nowhere.allium" as elsewhere\n', [(2, 5)]),
    (
        "allium.status.unreachableValue",
        "entity Job {\n    status: queued | running | done\n}\n"
        "rule Start {\n    when: Go(job)\n    ensures: job.status = running\n}\n",
        [(3, 13), (3, 32)],  # queued, done: each value where it is written
    ),
    (
        "allium.status.noExit",
        "enum JobStatus { queued | running | done }\nentity Job {\n    status: JobStatus\n"
        "    transitions status {\n        queued -> running\n        running -> done\n"
        "        terminal: done\n    }\n}\n"
        "rule Start {\n    when: Go(job)\n    requires: job.status = queued\n    ensures: job.status = running\n}\n",
        [(4, 13)],  # a named enum: its values are written elsewhere, so at the field's type
    ),
    (
        "allium.surface.unusedBinding",
        "actor Clerk {\n    identified_by: User where role = clerk\n}\nentity User {\n    role: String\n}\n"
        "surface Desk {\n    facing clerk: Clerk\n    context user: User\n    provides: Open(user)\n}\n",
        [(9, 12)],
    ),
]


@pytest.mark.parametrize(("code", "text", "expected"), LOCATIONS, ids=[row[0] for row in LOCATIONS])
def test_diagnostic_points_at_what_it_names(code: str, text: str, expected: list[tuple[int, int]]) -> None:
    diagnostics = [d for d in check_text(text) if d.code == code]
    assert sorted((d.span.start.line, d.span.start.column) for d in diagnostics) == expected
