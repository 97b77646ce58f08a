"""`allium check --package`: the CLI over verify_package, its formats and exit codes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from xml.etree import ElementTree as ET

from click.testing import CliRunner

from allium.cli import main
from fixture_projects import FIXTURES, copy_fixture


def check(tmp_path: Path, name: str, *extra: str):
    root = copy_fixture(name, tmp_path / name)
    argv = ["check", str(root / "specs"), "--package", str(root / "generated"), *extra]
    return CliRunner().invoke(main, argv, catch_exceptions=False)


def test_fully_covered_package_exits_clean_with_junit(tmp_path: Path) -> None:
    junit = tmp_path / "junit.xml"
    result = check(tmp_path, "covered", "--junit", str(junit))
    assert result.exit_code == 0, result.output
    assert "100.0%" in result.output
    cases = ET.parse(junit).getroot().iter("testcase")
    assert [c for c in cases if c.find("failure") is not None] == []


def test_gaps_fail_and_json_lists_each_finding(tmp_path: Path) -> None:
    result = check(tmp_path, "gaps", "--format", "json")
    assert result.exit_code == 1
    document = json.loads(result.output)
    codes = sorted({d["code"] for d in document["diagnostics"] if d["code"].startswith("allium.verify.")})
    assert codes == [
        "allium.verify.coverageBelowMinimum",
        "allium.verify.orphanTag",
        "allium.verify.uncovered",
        "allium.verify.vacuousTest",
    ]


def test_sarif_carries_verify_findings(tmp_path: Path) -> None:
    result = check(tmp_path, "gaps", "--format", "sarif")
    assert result.exit_code == 1
    sarif = json.loads(result.output)
    assert {r["ruleId"] for r in sarif["runs"][0]["results"]} >= {"allium.verify.uncovered", "allium.verify.vacuousTest"}


def test_lower_minimum_coverage_turns_the_gate_off(tmp_path: Path) -> None:
    result = check(tmp_path, "gaps", "--format", "json", "--min-coverage", "50")
    severities = {d["code"]: d["severity"] for d in json.loads(result.output)["diagnostics"]}
    assert "allium.verify.coverageBelowMinimum" not in severities
    assert severities["allium.verify.uncovered"] == "info"


def test_package_check_is_implied_only_for_the_spec_set_it_was_generated_from(tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "covered"
    shutil.copytree(FIXTURES / "covered", root)
    shutil.copytree(root / "generated", tmp_path / "generated")
    other = tmp_path / "other.allium"
    other.write_text("-- allium: 3\nenum Colour { red | green }\n")
    monkeypatch.chdir(tmp_path)
    implied = CliRunner().invoke(main, ["check", str(root / "specs")], catch_exceptions=False)
    assert "tests collected" in implied.output
    unrelated = CliRunner().invoke(main, ["check", str(other)], catch_exceptions=False)
    assert "tests collected" not in unrelated.output
    assert "1 file checked" in unrelated.output
