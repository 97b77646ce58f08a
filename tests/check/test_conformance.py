"""JUXT's v3 language fixtures: valid files check clean, invalid files are caught.

Each invalid fixture's `.expected` sidecar holds regexes (one per line, `#`
comments) that must all match our text output, as JUXT's own harness does.
A fixture is checked together with the other `.allium` files of its folder
when it has `use` imports, so relative imports resolve.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from allium.check import check_paths
from allium.diagnostics import Severity, render_text

ROOT = Path("/work/shared/corpus/juxt+allium/tests/fixtures/language/v3")

pytestmark = pytest.mark.skipif(not ROOT.is_dir(), reason="JUXT fixture corpus not present")


def _fixtures(kind: str) -> list[Path]:
    return sorted((ROOT / kind).rglob("*.allium")) if ROOT.is_dir() else []


def _check(path: Path):
    text = path.read_text(encoding="utf-8")
    targets = [path]
    if re.search(r"^\s*use\s+\"", text, re.M):
        targets = sorted(path.parent.glob("*.allium"))
    report = check_paths([str(t) for t in targets])
    mine = [d for d in report.diagnostics if d.file == str(path)]
    return report, mine


def _failing(diagnostics) -> list:
    return [d for d in diagnostics if d.severity is not Severity.INFO]


def _id(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("path", _fixtures("valid"), ids=_id)
def test_valid_fixture_checks_clean(path: Path) -> None:
    report, mine = _check(path)
    assert not _failing(mine), render_text(mine, report.sources)


def _expected(path: Path) -> list[str]:
    sidecar = path.with_suffix(".expected")
    if not sidecar.exists():
        return []
    lines = sidecar.read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _invalid_ok(path: Path) -> tuple[bool, str]:
    report, mine = _check(path)
    text = render_text(mine, report.sources)
    if not _failing(mine):
        return False, "no error or warning:\n" + text
    missing = [rx for rx in _expected(path) if not re.search(rx, text)]
    return not missing, f"regexes not matched: {missing}\n{text}"


@pytest.mark.parametrize("path", _fixtures("invalid"), ids=_id)
def test_invalid_fixture_is_caught(path: Path) -> None:
    ok, why = _invalid_ok(path)
    assert ok, why


def test_conformance_score(capsys: pytest.CaptureFixture[str]) -> None:
    valid = _fixtures("valid")
    invalid = _fixtures("invalid")
    passed = sum(1 for p in valid if not _failing(_check(p)[1]))
    passed += sum(1 for p in invalid if _invalid_ok(p)[0])
    total = len(valid) + len(invalid)
    with capsys.disabled():
        print(f"\nv3 conformance: {passed}/{total}")
    assert passed == total
