"""One contract on every command: exit codes, formats, JSON envelopes, errors as JSON.

For each command, a run that is clean (exit 0), one with findings (exit 1)
and one with a usage error (exit 2), in each of the three formats; every
JSON document is held to its schema (tests/cli/schemas.py).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner

from allium.cli import main
from tests.cli.schemas import ERROR, SCHEMAS

E2E = Path(__file__).parents[1] / "generate" / "fixtures" / "e2e"
BAD = "-- allium: 3\n\nentity Foo\n    bar: String\n}\n"


@pytest.fixture
def specs(tmp_path: Path) -> dict[str, str]:
    good = tmp_path / "good"
    shutil.copytree(E2E, good)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.allium").write_text(BAD)
    return {"good": str(good), "good_file": str(good / "counters.allium"), "bad": str(bad),
            "bad_file": str(bad / "broken.allium"), "missing": str(tmp_path / "nope.allium"),
            "out": str(tmp_path / "generated")}


# (command, exit code) -> argv; {names} are filled from the `specs` fixture.
CASES = {
    ("parse", 0): ["parse", "{good_file}"],
    ("parse", 1): ["parse", "{bad_file}"],
    ("parse", 2): ["parse", "{missing}"],
    ("check", 0): ["check", "{good}"],
    ("check", 1): ["check", "{bad}"],
    ("check", 2): ["check", "{missing}"],
    ("plan", 0): ["plan", "{good}"],
    ("plan", 1): ["plan", "{bad}"],
    ("plan", 2): ["plan", "{missing}"],
    ("prompt", 0): ["prompt", "counters", "{good}", "--out", "{out}"],
    ("prompt", 1): ["prompt", "broken", "{bad}", "--out", "{out}"],
    ("prompt", 2): ["prompt", "no_such_unit", "{good}", "--out", "{out}"],
    ("generate", 0): ["generate", "{good}", "--out", "{out}", "--dry-run"],
    ("generate", 1): ["generate", "{bad}", "--out", "{out}", "--provider", "replay"],
    ("generate", 2): ["generate", "{good}", "--out", "{out}", "--provider", "no-such-provider"],
}


def invoke(argv: list[str], specs: dict[str, str]):
    return CliRunner().invoke(main, [arg.format(**specs) for arg in argv], catch_exceptions=False)


@pytest.mark.parametrize("fmt", ["text", "json", "sarif"])
@pytest.mark.parametrize(("command", "code"), list(CASES))
def test_exit_code_and_output_per_command_and_format(specs, command: str, code: int, fmt: str) -> None:
    result = invoke([*CASES[command, code], "--format", fmt], specs)
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    if fmt == "json":
        document = json.loads(result.stdout)  # one document, and nothing else, on stdout
        jsonschema.validate(document, ERROR if "error" in document else SCHEMAS[command])
        assert document["exit_code"] == code
        assert ("error" in document) == (code == 2 or command in ("prompt", "generate") and code == 1)
    elif fmt == "sarif":
        log = json.loads(result.stdout)
        assert log["version"] == "2.1.0"
        [run] = log["runs"]
        assert run["invocations"][0]["executionSuccessful"] is (code != 2 and command not in ("prompt", "generate")
                                                                or code == 0)
    elif code == 2:
        assert "Error:" in result.output or "error:" in result.output


@pytest.mark.parametrize(("command", "code"), [key for key in CASES if key[0] in ("parse", "prompt", "generate")])
def test_json_flag_is_an_alias_of_format_json(specs, command: str, code: int) -> None:
    by_flag = invoke([*CASES[command, code], "--json"], specs)
    by_format = invoke([*CASES[command, code], "--format", "json"], specs)
    assert by_flag.exit_code == by_format.exit_code == code
    assert json.loads(by_flag.stdout)["format"] == json.loads(by_format.stdout)["format"]


def test_a_bad_option_in_json_mode_is_a_json_usage_error(specs) -> None:
    result = invoke(["check", "{good}", "--format", "json", "--no-such-option"], specs)
    assert result.exit_code == 2
    document = json.loads(result.stdout)
    jsonschema.validate(document, ERROR)
    assert document["format"] == "allium.check"
    assert document["error"]["kind"] == "usage" and "--no-such-option" in document["error"]["message"]


def test_spec_errors_before_prompting_are_listed_in_the_json_error(specs) -> None:
    result = invoke(CASES["prompt", 1] + ["--format", "json"], specs)
    document = json.loads(result.stdout)
    assert document["error"]["kind"] == "failure"
    assert [d["code"] for d in document["diagnostics"]] == ["allium.syntax.unexpectedToken"]


def test_check_json_has_the_same_keys_with_or_without_a_generated_package(specs, tmp_path, monkeypatch) -> None:
    fixture = Path(__file__).parents[1] / "verify" / "fixtures" / "covered"
    root = tmp_path / "covered"
    shutil.copytree(fixture, root)
    alone = invoke(["check", str(root / "specs"), "--format", "json"], specs)
    monkeypatch.chdir(root)  # generated/allium.lock is now there: the package check is implied
    implied = invoke(["check", "specs", "--format", "json"], specs)
    documents = [json.loads(alone.stdout), json.loads(implied.stdout)]
    for document in documents:
        jsonschema.validate(document, SCHEMAS["check"])
    assert documents[0].keys() == documents[1].keys()
    assert documents[0]["package"] is None and documents[1]["package"]["package"].endswith("generated")


def test_plan_json_on_a_spec_that_does_not_parse_says_why(specs) -> None:
    result = invoke(["plan", "{bad}", "--format", "json"], specs)
    document = json.loads(result.stdout)
    assert result.exit_code == document["exit_code"] == 1
    assert document["obligations"] == []
    assert document["summary"]["error"] == 1


def test_negative_timeout_is_refused(specs) -> None:
    result = invoke(["check", "{good}", "--timeout", "-5"], specs)
    assert result.exit_code == 2
    assert "--timeout" in result.output


def test_a_finding_about_no_file_names_no_file() -> None:
    from allium.diagnostics import error, render_text

    text = render_text([error("allium.verify.coverageBelowMinimum", "coverage 50% is below 100%")], {})
    assert text.splitlines()[0] == "error[allium.verify.coverageBelowMinimum]: coverage 50% is below 100%"
    assert "<input>" not in text


# ---------------------------------------------------------------- allium.toml


def test_toml_takes_option_names(specs, tmp_path, monkeypatch) -> None:
    (tmp_path / "allium.toml").write_text('[check]\nformat = "json"\nmin-coverage = 50\n[generate]\nmax_tokens = 10\n')
    monkeypatch.chdir(tmp_path)
    result = invoke(["check", "{good}"], specs)
    assert result.exit_code == 0
    assert json.loads(result.stdout)["format"] == "allium.check"


@pytest.mark.parametrize(("toml", "complaint"), [
    ('[generate]\nprovider_name = "replay"\n', "[generate] has no option 'provider_name'"),
    ('[check]\nfmt = "json"\n', "[check] has no option 'fmt'"),
    ('[chek]\nformat = "json"\n', "[chek] is not a command"),
    ('format = "json"\n', "[format] is not a table of options"),
])
def test_toml_rejects_unknown_keys_and_tables(specs, tmp_path, monkeypatch, toml: str, complaint: str) -> None:
    (tmp_path / "allium.toml").write_text(toml)
    monkeypatch.chdir(tmp_path)
    result = invoke(["check", "{good}"], specs)
    assert result.exit_code == 2
    assert complaint in result.output


# ---------------------------------------------------------------- providers


def test_a_plugin_provider_is_found_through_its_entry_point(specs, monkeypatch) -> None:
    from importlib.metadata import EntryPoint

    from allium.providers import registry

    plugin = EntryPoint("echo", "tests.cli.test_contract:_plugin_factory", registry.GROUP)
    monkeypatch.setattr(registry, "_plugins", lambda: {"echo": plugin})
    assert registry.names() == ["anthropic", "replay", "exchange", "echo"]
    assert registry.factory("echo").__name__ == "_plugin_factory"
    result = invoke(["generate", "--help"], specs)
    assert "[anthropic|replay|exchange|echo]" in result.output


def _plugin_factory(settings):  # pragma: no cover - only looked up
    raise AssertionError("not called")


@pytest.mark.parametrize("argv", [
    ["prompt", "counters", "{missing}"],
    ["generate", "{missing}", "--dry-run"],
    ["generate", "{good}", "--out", "{out}", "--only", "no_such_unit", "--dry-run"],
    ["generate", "{good}", "--package", "not-an-identifier", "--dry-run"],
    ["parse", "{good}"],  # a folder where a file is wanted
    ["plan"],  # no paths
])
def test_other_usage_errors_exit_2_with_a_json_error(specs, argv: list[str]) -> None:
    result = invoke([*argv, "--format", "json"], specs)
    assert result.exit_code == 2, result.output
    jsonschema.validate(json.loads(result.stdout), ERROR)


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["check", "--help"]])
def test_help_and_version_exit_0(argv: list[str]) -> None:
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 0
    assert result.output


def test_an_unexpected_exception_is_one_internal_error_not_a_traceback(specs, monkeypatch) -> None:
    import allium.check

    def broken(paths):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(allium.check, "check_paths", broken)
    text = invoke(["check", "{good}"], specs)
    assert text.exit_code == 1
    assert "Traceback" not in text.output
    assert "internal error while running allium check: ZeroDivisionError: division by zero at " in text.output
    as_json = json.loads(invoke(["check", "{good}", "--format", "json"], specs).stdout)
    assert as_json["error"]["kind"] == "internal"
    monkeypatch.setenv("ALLIUM_TRACEBACK", "1")
    assert "Traceback" in invoke(["check", "{good}"], specs).output
