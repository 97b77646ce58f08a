"""`derive_obligations` must run on every valid corpus spec and on specs/."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from allium.plan import derive_obligations, plan_for
from allium.syntax import parse_file
from tests.plan.conftest import CORPUS, REPO


def _manifest() -> list[str]:
    manifest = CORPUS / "MANIFEST.tsv"
    if not manifest.is_file():
        return []
    with manifest.open(newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    return sorted(r["file"] for r in rows if r["language_version"] in ("1", "2", "3") and r["file"].endswith(".allium"))


CORPUS_FILES = _manifest()


@pytest.mark.skipif(not CORPUS_FILES, reason="shared corpus not available")
def test_every_valid_corpus_spec() -> None:
    # One test for the lot: a failure names every file, and the run stays fast.
    failures: list[str] = []
    planned = 0
    for rel in CORPUS_FILES:
        result = parse_file(str(CORPUS / rel))
        if result.module is None:
            continue
        try:
            obs = derive_obligations(result.module)
        except Exception as exc:  # noqa: BLE001 - report every file, not just the first
            failures.append(f"{rel}: {type(exc).__name__}: {exc}")
            continue
        found = [o.id for o in obs]
        if len(found) != len(set(found)):
            failures.append(f"{rel}: duplicate ids")
        planned += 1
    assert not failures, "\n".join(failures)
    assert planned > 100


def _own_specs() -> list[Path]:
    return sorted((REPO / "specs").glob("*.allium"))


@pytest.mark.skipif(not _own_specs(), reason="no specs/ directory")
def test_own_specs() -> None:
    modules = []
    for path in _own_specs():
        result = parse_file(str(path))
        assert result.module is not None, path
        modules.append(result.module)
    obs = plan_for(modules)
    keys = [(o.component, o.id) for o in obs]
    assert len(keys) == len(set(keys))
    assert {o.component for o in obs} == {p.stem for p in _own_specs()}
