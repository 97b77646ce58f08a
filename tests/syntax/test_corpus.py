"""The whole public corpus (../shared/corpus): real specs must parse.

* every MANIFEST file whose language_version is 1, 2 or 3 parses without a
  syntax error, except those in known_invalid.tsv, which must fail to parse
  (so the list cannot rot);
* every deliberately invalid v3 fixture whose `.expected` names a syntax
  problem is rejected with a syntax diagnostic matching it, at the right line.

Skips when the corpus is absent.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path


from allium.diagnostics import Severity
from allium.syntax import parse_file

HERE = Path(__file__).resolve().parent
INVALID_FIXTURES = "juxt+allium/tests/fixtures/language/v3/invalid"
# A `.expected` line that names a syntax problem rather than a checker code.
SYNTAX_EXPECTATION = re.compile(r"^(expected|found|unexpected)\b")
# Where each syntax-invalid fixture's error belongs: the line a person must edit.
FIXTURE_LINES = {
    "contracts/contract-with-entity.allium": 5,  # the `entity` inside the contract
    "entities/missing-opening-brace.allium": 3,  # `entity Foo` lacks its `{`
    "entities/unclosed-brace.allium": 4,  # the body's last line; nothing closes it
}


def manifest(corpus: Path) -> list[str]:
    with (corpus / "MANIFEST.tsv").open(newline="", encoding="utf-8") as handle:
        rows = csv.DictReader(handle, delimiter="\t")
        return [row["file"] for row in rows if (row.get("language_version") or "").strip() in {"1", "2", "3"}]


def known_invalid() -> dict[str, str]:
    out: dict[str, str] = {}
    for line in (HERE / "known_invalid.tsv").read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        path, _, reason = line.partition("\t")
        assert reason.strip(), f"known_invalid.tsv: {path} needs a reason"
        out[path.strip()] = reason.strip()
    return out


def syntax_errors(result):
    return [d for d in result.diagnostics if d.severity is Severity.ERROR and d.code.startswith("allium.syntax")]


def test_known_invalid_list_is_well_formed():
    entries = known_invalid()
    assert entries, "known_invalid.tsv is empty"
    for path, reason in entries.items():
        assert not path.startswith("/") and ".." not in Path(path).parts, path
        assert len(reason) >= 20, f"{path}: give a specific reason"


def test_corpus_parses(corpus: Path, capsys):
    files = manifest(corpus)
    invalid = known_invalid()
    unlisted = sorted(set(invalid) - set(files))
    assert not unlisted, f"known_invalid.tsv lists files not in the manifest (versions 1-3): {unlisted}"

    parsed, failures, unexpectedly_valid = 0, [], []
    for name in files:
        result = parse_file(str(corpus / name))
        errs = syntax_errors(result)
        if name in invalid:
            if result.module is not None and not errs:
                unexpectedly_valid.append(name)
            continue
        if result.module is None or errs:
            first = errs[0] if errs else result.diagnostics[0]
            failures.append(f"{name}:{first.span.start.line}:{first.span.start.column}: {first.message}")
        else:
            parsed += 1

    expected = len(files) - len(invalid)
    with capsys.disabled():
        print(f"\ncorpus: {parsed}/{expected} parsed, {len(invalid)} known-invalid")
    assert not failures, "valid corpus files fail to parse:\n" + "\n".join(failures)
    assert not unexpectedly_valid, (
        "these files are listed in known_invalid.tsv but now parse; remove them:\n" + "\n".join(unexpectedly_valid)
    )
    assert parsed == expected


def invalid_fixtures(corpus: Path) -> list[tuple[str, list[str]]]:
    root = corpus / INVALID_FIXTURES
    out = []
    for expected_file in sorted(root.rglob("*.expected")):
        patterns = [
            line.strip()
            for line in expected_file.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.startswith("#")
        ]
        if any(SYNTAX_EXPECTATION.match(p) for p in patterns):
            out.append((expected_file.with_suffix(".allium").relative_to(root).as_posix(), patterns))
    return out


def test_syntax_invalid_fixtures_are_rejected(corpus: Path):
    fixtures = invalid_fixtures(corpus)
    assert len(fixtures) >= 3, fixtures
    problems = []
    for rel, patterns in fixtures:
        result = parse_file(str(corpus / INVALID_FIXTURES / rel))
        errs = syntax_errors(result)
        if result.module is not None or not errs:
            problems.append(f"{rel}: accepted")
            continue
        diag = errs[0]
        text = f"{diag.message} " + " ".join(diag.notes)
        for pattern in patterns:
            if not re.search(pattern, text):
                problems.append(f"{rel}: {text!r} does not match {pattern!r}")
        if rel not in FIXTURE_LINES:
            problems.append(f"{rel}: new syntax fixture; add its expected line to FIXTURE_LINES")
        elif diag.span.start.line != FIXTURE_LINES[rel]:
            problems.append(f"{rel}: reported at line {diag.span.start.line}, expected {FIXTURE_LINES[rel]}")
    assert not problems, "\n".join(problems)


def test_semantically_invalid_fixtures_still_parse(corpus: Path):
    """The other invalid fixtures are the checker's business: they must parse."""
    syntax = {rel for rel, _ in invalid_fixtures(corpus)}
    root = corpus / INVALID_FIXTURES
    failures = []
    for path in sorted(root.rglob("*.allium")):
        rel = path.relative_to(root).as_posix()
        if rel in syntax:
            continue
        result = parse_file(str(path))
        if result.module is None:
            failures.append(f"{rel}: {result.diagnostics[-1].message}")
    assert not failures, "\n".join(failures)
