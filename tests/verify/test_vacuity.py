"""Static vacuity analysis and subject terms, on small hand-written test files (no subprocess)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from allium.syntax import parse_text
from allium.verify.terms import key, phrase_keys, subject_terms, vocabulary, words
from allium.verify.vacuity import find_vacuous, locate, tag_location

SPEC = """\
-- allium: 3
entity Entry {
    key: String
    status: live | expired
    expires_at: Timestamp

    transitions status {
        live -> expired
        terminal: expired
    }
}

rule StoreEntry {
    when: StoreRequested(key)
    requires: not exists Entry{key: key}
    ensures: Entry.created(key: key, status: live)
}

rule EntryExpires {
    when: entry: Entry.expires_at <= now
    requires: entry.status = live
    ensures: entry.status = expired
}
"""


@pytest.fixture(scope="module")
def vocab():
    result = parse_text(SPEC, "cache.allium")
    assert result.module is not None
    return vocabulary([result.module])


def test_word_normalisation_equates_snake_camel_and_prose() -> None:
    assert words("EntryExpires") == words("entry_expires") == words("entry expires") == ("entry", "expires")
    assert words("HTTPServer_v2") == ("http", "server", "v", "2")
    assert key("EntryExpires") == key("ENTRY_EXPIRES") == "entryexpires"
    assert "entryexpires" in set(phrase_keys("handle_entry_expires_now"))
    assert "expiresat" in set(phrase_keys("expires_at"))


def test_rule_terms_are_spec_names_in_when_requires_ensures(vocab) -> None:
    assert subject_terms("rule-success.EntryExpires", vocab) == {
        "EntryExpires", "Entry", "expires_at", "status", "live", "expired",
    }
    # the trigger of a rule, and the fields its ensures sets; not binding names like `key`'s rebinding
    assert subject_terms("rule-failure.StoreEntry.1", vocab) == {
        "StoreEntry", "StoreRequested", "Entry", "key", "status", "live",
    }


def test_transition_and_other_terms_come_from_the_id(vocab) -> None:
    assert subject_terms("transition-edge.Entry.live.expired", vocab) == {"Entry", "live", "expired"}
    assert subject_terms("when-presence.Entry.expires_at", vocab) == {"Entry", "expires_at"}
    assert subject_terms("config-default.ttl", vocab) == {"ttl"}
    assert subject_terms("nonsense", vocab) == frozenset()


TESTS = '''
import pytest
from cache import Cache, expire


@pytest.fixture
def stored():
    return Cache().store_entry("k")


def check_expired(e):
    assert e.status == "expired"


@pytest.mark.allium("rule-success.EntryExpires")
def test_direct(stored):
    expire(stored)
    assert stored.status == "expired"


@pytest.mark.allium("rule-success.EntryExpires")
def test_no_assert(stored):
    expire(stored)


@pytest.mark.allium("rule-success.EntryExpires")
def test_entry_expires_unrelated():
    assert sum([1, 2]) == 3


@pytest.mark.allium("rule-success.EntryExpires")
def test_via_helper():
    e = make()
    check_expired(e)


@pytest.mark.allium("rule-success.EntryExpires")
def test_touches_only_through_fixture(stored):
    assert stored


@pytest.mark.allium("rule-failure.StoreEntry.1")
def test_raises_counts_as_assertion():
    with pytest.raises(KeyError):
        Cache().store_twice()


@pytest.mark.allium("rule-success.EntryExpires")
def test_string_constant_counts():
    assert run("EntryExpires") is None


class TestGrouped:
    @pytest.mark.allium("transition-edge.Entry.live.expired")
    @pytest.mark.parametrize("n", [1, 2])
    def test_in_class(self, n):
        self.assertEqual(n, n)
'''


@pytest.fixture
def test_dir(tmp_path: Path) -> Path:
    (tmp_path / "test_cache.py").write_text(textwrap.dedent(TESTS))
    return tmp_path


def _verdicts(test_dir: Path, vocab, *nodes: tuple[str, str]) -> dict[str, str]:
    found = find_vacuous([(f"test_cache.py::{n}", (o,)) for n, o in nodes], test_dir,
                         lambda oid: subject_terms(oid, vocab))
    return {v.nodeid.split("::", 1)[1]: v.reason for v in found}


def test_vacuity_verdicts(test_dir: Path, vocab) -> None:
    success = "rule-success.EntryExpires"
    verdicts = _verdicts(
        test_dir, vocab,
        ("test_direct", success),
        ("test_no_assert", success),
        ("test_entry_expires_unrelated", success),
        ("test_via_helper", success),
        ("test_touches_only_through_fixture", success),
        ("test_raises_counts_as_assertion", "rule-failure.StoreEntry.1"),
        ("test_string_constant_counts", success),
        ("TestGrouped::test_in_class[1]", "transition-edge.Entry.live.expired"),
        ("test_missing_function", success),
    )
    assert verdicts == {
        "test_no_assert": "no-assert",
        # its *name* mentions the rule; its body touches nothing of it
        "test_entry_expires_unrelated": "unrelated",
        # `self.assertEqual(n, n)` asserts, but on nothing about Entry/live/expired
        "TestGrouped::test_in_class[1]": "unrelated",
    }


def test_vacuity_detail_names_the_missing_terms(test_dir: Path, vocab) -> None:
    [finding] = find_vacuous([("test_cache.py::test_entry_expires_unrelated", ("rule-success.EntryExpires",))],
                             test_dir, lambda oid: subject_terms(oid, vocab))
    assert finding.detail == "never touches any of: Entry, EntryExpires, expired, expires_at, live, status"
    assert finding.line == 27


def test_locate_and_tag_location(test_dir: Path) -> None:
    import ast

    tree = ast.parse((test_dir / "test_cache.py").read_text())
    assert locate(tree, "test_cache.py::TestGrouped::test_in_class[2]").name == "test_in_class"
    assert locate(tree, "test_cache.py::Nope::test_in_class") is None
    assert tag_location(test_dir, "test_cache.py::test_direct", "rule-success.EntryExpires") == (15, 21)
    assert tag_location(test_dir, "test_cache.py::test_direct", "other") == (16, 1)
