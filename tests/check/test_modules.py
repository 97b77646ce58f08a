"""Cross-module checks: `use` resolution, qualified names, use across files."""

from __future__ import annotations

from pathlib import Path

from allium.diagnostics import Severity
from tests.check.helpers import check_files, check_text, found

CORE = """
entity Account {
    owner: String
}

enum Tier { basic | gold }

rule Open {
    when: Open(owner)
    ensures: Account.created(owner: owner)
}
"""


def _failing(diagnostics):
    return [(d.code, d.span.start.line) for d in diagnostics if d.severity is not Severity.INFO]


def test_use_unresolved_path(tmp_path: Path) -> None:
    diags = check_files(tmp_path, {"app.allium": 'use "./missing.allium" as missing\n'})
    assert found(diags, "allium.use.unresolvedPath") == [("allium.use.unresolvedPath", 2)]


def test_use_resolves_relative_to_the_importing_file(tmp_path: Path) -> None:
    diags = check_files(
        tmp_path,
        {
            "lib/core.allium": CORE,
            "app/app.allium": """
            use "../lib/core.allium" as core

            entity Card {
                account: core/Account
                tier: core/Tier
            }

            rule Issue {
                when: account: core/Account.created
                ensures: Card.created(account: account, tier: basic)
            }

            surface Teller {
                provides:
                    core/Open(owner)
            }
            """,
        },
    )
    assert found(diags, "allium.use.unresolvedPath") == []
    assert _failing(diags) == []
    # core's Open is provided by the importing module's surface, and Account is
    # used from app: neither is reported.
    assert found(diags, "allium.rule.unreachableTrigger") == []
    assert found(diags, "allium.entity.unused") == []


def test_unknown_name_in_imported_module(tmp_path: Path) -> None:
    diags = check_files(
        tmp_path,
        {
            "core.allium": CORE,
            "app.allium": """
            use "./core.allium" as core

            entity Card {
                account: core/Ghost
            }

            rule Issue {
                when: Issue(account)
                ensures: Card.created(account: account)
            }
            """,
        },
    )
    assert found(diags, "allium.reference.unknownName") == [("allium.reference.unknownName", 5)]
    assert found(diags, "allium.type.undefinedReference") == []


def test_import_outside_the_check_set_is_not_second_guessed(tmp_path: Path) -> None:
    """Only the unresolved `use` is reported, not every name qualified through it."""
    diags = check_files(
        tmp_path,
        {
            "app.allium": """
            use "./elsewhere.allium" as other

            entity Card {
                account: other/Account
            }

            rule Issue {
                when: Issue(account)
                ensures: Card.created(account: account)
            }
            """,
        },
    )
    assert _failing(diags) == [("allium.use.unresolvedPath", 2)]


def test_qualified_config_reference(tmp_path: Path) -> None:
    diags = check_files(
        tmp_path,
        {
            "core.allium": CORE + "\nconfig {\n    limit: Integer = 3\n}\n",
            "app.allium": """
            use "./core.allium" as core

            entity Card {
                uses: Integer
            }

            rule Issue {
                when: Issue()
                ensures: Card.created(uses: core/config.limit + core/config.nope)
            }
            """,
        },
    )
    assert found(diags, "allium.config.undefinedReference") == [("allium.config.undefinedReference", 10)]


def test_suppression_comment_silences_the_next_line() -> None:
    diags = check_text(
        """
        -- allium-ignore allium.entity.unused
        entity Orphan {
            name: String
        }
        """
    )
    assert found(diags, "allium.entity.unused") == []
