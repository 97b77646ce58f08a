"""JSON schemas of every document `--format json` prints (see allium/envelope.py).

Written from the contract, not generated from output: a key that appears,
goes away or changes type fails tests/cli/test_contract.py.
"""

from __future__ import annotations

from typing import Any

LOCATION = {
    "type": "object",
    "required": ["file", "line", "col"],
    "properties": {"file": {"type": "string"}, "line": {"type": "integer"}, "col": {"type": "integer"},
                   "end_line": {"type": "integer"}, "end_col": {"type": "integer"}},
}
DIAGNOSTIC = {
    "type": "object",
    "required": ["code", "severity", "message", "location"],
    "properties": {
        "code": {"type": "string", "pattern": r"^allium\."},
        "severity": {"enum": ["error", "warning", "info"]},
        "message": {"type": "string"},
        "location": LOCATION,
        "notes": {"type": "array", "items": {"type": "string"}},
    },
    "additionalProperties": False,
}
SUMMARY = {
    "type": "object",
    "required": ["error", "warning", "info"],
    "properties": {k: {"type": "integer", "minimum": 0} for k in ("error", "warning", "info")},
    "additionalProperties": False,
}
FILES = {
    "type": "array",
    "items": {"type": "object", "required": ["file", "diagnostics"],
              "properties": {"file": {"type": "string"}, "diagnostics": {"type": "array", "items": DIAGNOSTIC}}},
}
OBLIGATION = {"type": "object", "required": ["id", "category", "description", "source_construct", "component"]}


def envelope(command: str, body: dict[str, Any]) -> dict[str, Any]:
    """The schema of `command`'s result document: the header, `body`'s keys, the diagnostics."""
    return {
        "type": "object",
        "required": ["format", "version", *body, "diagnostics", "summary", "exit_code"],
        "properties": {
            "format": {"const": f"allium.{command}"},
            "version": {"const": 1},
            **body,
            "diagnostics": {"type": "array", "items": DIAGNOSTIC},
            "summary": SUMMARY,
            "exit_code": {"enum": [0, 1]},
        },
        "additionalProperties": False,
    }


PACKAGE = {
    "type": "object",
    "required": ["package", "spec_files", "ran", "tests", "tagged_tests", "coverage", "obligations", "failures"],
    "properties": {"package": {"type": "string"}, "spec_files": {"type": "array", "items": {"type": "string"}},
                   "ran": {"type": "boolean"}, "tests": {"type": "integer"}, "tagged_tests": {"type": "integer"},
                   "coverage": {"type": "object", "required": ["covered", "total", "percent", "minimum"]},
                   "obligations": {"type": "array"}, "failures": {"type": "array"}},
    "additionalProperties": False,
}
MUTATION = {
    "type": "object",
    "required": ["units", "components", "rules", "obligations", "mutants", "budget_hit", "cached_units"],
}
UNIT_ROW = {
    "type": "object",
    "required": ["unit", "files", "lines", "input_tokens", "cached_tokens", "cache_write_tokens",
                 "output_tokens", "cost_usd", "seconds", "from_transcript"],
}
NUMBER = {"type": "number"}

SCHEMAS: dict[str, dict[str, Any]] = {
    "parse": envelope("parse", {"file": {"type": "string"},
                                "module": {"oneOf": [{"type": "null"},
                                                     {"type": "object", "properties": {"node": {"const": "Module"}},
                                                      "required": ["node", "span", "decls"]}]}}),
    "check": envelope("check", {"files": FILES, "package": {"oneOf": [{"type": "null"}, PACKAGE]},
                                "mutation": {"oneOf": [{"type": "null"}, MUTATION]}}),
    "plan": envelope("plan", {"language_version": {"type": ["integer", "null"]},
                              "obligations": {"type": "array", "items": OBLIGATION}}),
    "prompt": envelope("prompt", {"unit": {"type": "string"},
                                  "payload": {"type": "object", "required": ["model", "system", "messages"]}}),
    "generate": envelope("generate", {
        "dry_run": {"type": "boolean"},
        "units": {"type": "array", "items": UNIT_ROW},
        "skipped": {"type": "array", "items": {"type": "string"}},
        "estimate": {"oneOf": [{"type": "null"}, {
            "type": "object", "required": ["requested", "input_tokens", "cost_usd"],
            "properties": {"requested": {"type": "array", "items": {"type": "string"}},
                           "input_tokens": {"type": "integer"}, "cost_usd": {"type": ["number", "null"]}}}]},
        "cost_usd": NUMBER, "seconds": NUMBER, "output": {"type": "string"},
    }),
}

ERROR = {
    "type": "object",
    "required": ["format", "version", "error", "diagnostics", "summary", "exit_code"],
    "properties": {
        "format": {"type": "string", "pattern": r"^allium\.[a-z]+$"},
        "version": {"const": 1},
        "error": {"type": "object", "required": ["kind", "message"],
                  "properties": {"kind": {"enum": ["usage", "failure", "internal"]}, "message": {"type": "string", "minLength": 1}},
                  "additionalProperties": False},
        "diagnostics": {"type": "array", "items": DIAGNOSTIC},
        "summary": SUMMARY,
        "exit_code": {"enum": [1, 2]},
    },
    "additionalProperties": False,
}
