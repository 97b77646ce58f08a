"""A provider that is a person, or any coding agent, working through a folder.

For each unit the provider writes two files into the exchange folder:

* ``<unit>.request.md`` — the request rendered for reading: system blocks,
  messages and tools, with the request hash and these instructions;
* ``<unit>.request.json`` — the exact API payload (what a live model would get).

and answers from ``<unit>.response.json`` if it exists, else ``<unit>.response.md``.
If neither exists it raises ``ExchangePending`` naming the file to write; write it
and run again. (``<unit>`` is the unit name with characters outside
``A-Z a-z 0-9 . _ -`` replaced by ``_``.)

``<unit>.response.md`` format::

    request-hash: 3f2a...        <- optional; if present it must match the request
    Any text outside file sections is kept as the answer's notes.

    ### file: src/shop/orders.py
    ```python
    def place_order(): ...
    ```

    ### file: tests/test_orders.py
    ````python
    # a file that itself contains ``` needs a longer fence
    ````

Each ``### file: PATH`` heading is followed (after optional blank lines) by a
fence of three or more backticks or tildes, with an optional info string; the
file is every line up to the matching closing fence (same character, at least
as long), and ends with a newline unless it is empty.

``<unit>.response.json`` format::

    {"request_hash": "3f2a... (optional)", "text": "notes (optional)",
     "files": [{"path": "src/shop/orders.py", "content": "def place_order(): ...\\n"}]}

Paths are passed on exactly as written; the writer decides whether they are safe.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from allium.providers.base import ProviderError, Request, Response, validate_write_file

_FILE_HEADING = re.compile(r"^###\s+file:\s*(?P<path>\S.*?)\s*$")
_FENCE = re.compile(r"^(?P<fence>`{3,}|~{3,})[^`]*$")
_HASH_LINE = re.compile(r"^request-hash:\s*(?P<hash>[0-9a-f]+)\s*$")
EXCHANGE_MODEL = "exchange"


class ExchangePending(ProviderError):
    """No answer yet: someone has to write the response file."""

    def __init__(self, unit: str, request_path: Path, response_path: Path) -> None:
        super().__init__(
            f"unit {unit!r} is waiting for an answer: read {request_path} and write "
            f"{response_path} (or the .response.json form; the format is described in "
            "allium/providers/exchange.py), then run again",
            unit=unit)
        self.request_path = request_path
        self.response_path = response_path


class ExchangeResponseError(ProviderError):
    """A response file exists but cannot be used."""


def file_stem(unit: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", unit).lstrip(".")
    return stem or "request"


class ExchangeProvider:
    name = "exchange"

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)

    def paths(self, unit: str) -> dict[str, Path]:
        stem = file_stem(unit)
        return {kind: self.folder / f"{stem}.{kind}" for kind in
                ("request.md", "request.json", "response.json", "response.md")}

    def complete(self, request: Request) -> Response:
        paths = self.paths(request.unit)
        request_hash = request.request_hash()
        self.folder.mkdir(parents=True, exist_ok=True)
        payload = json.dumps(request.to_payload(), indent=2, ensure_ascii=False) + "\n"
        paths["request.json"].write_text(payload, encoding="utf-8")
        paths["request.md"].write_text(render_request(request, paths["response.md"].name),
                                       encoding="utf-8")
        if paths["response.json"].is_file():
            source = paths["response.json"]
            notes, files, claimed = parse_response_json(source.read_text(encoding="utf-8"), source)
        elif paths["response.md"].is_file():
            source = paths["response.md"]
            notes, files, claimed = parse_response_md(source.read_text(encoding="utf-8"), source)
        else:
            raise ExchangePending(request.unit, paths["request.md"], paths["response.md"])
        if claimed is not None and claimed != request_hash:
            raise ExchangeResponseError(
                f"{source} answers request {claimed[:12]}…, but unit {request.unit!r} now asks "
                f"{request_hash[:12]}…: delete it and answer the new request", unit=request.unit)
        return _response(request.unit, notes, files)


def _response(unit: str, notes: str, files: list[tuple[str, str]]) -> Response:
    content: list[dict[str, Any]] = [{"type": "text", "text": notes}] if notes else []
    for number, (path, text) in enumerate(files, 1):
        block = {"type": "tool_use", "id": f"exchange_{number}", "name": "write_file",
                 "input": {"path": path, "content": text}}
        validate_write_file(block, unit)
        content.append(block)
    return Response(tuple(content), tuple(files), "end_turn", EXCHANGE_MODEL)


def parse_response_json(text: str, source: Path) -> tuple[str, list[tuple[str, str]], str | None]:
    try:
        data = json.loads(text)
        files = [(f["path"], f["content"]) for f in data.get("files", [])]
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ExchangeResponseError(f"{source}: not a valid response ({exc}); expected "
                                    '{"files": [{"path": ..., "content": ...}], "text": ...}') from exc
    if not all(isinstance(p, str) and isinstance(c, str) for p, c in files):
        raise ExchangeResponseError(f"{source}: every file needs a string path and content")
    return str(data.get("text", "")), files, data.get("request_hash")


def parse_response_md(text: str, source: Path) -> tuple[str, list[tuple[str, str]], str | None]:
    lines = text.splitlines()
    notes: list[str] = []
    files: list[tuple[str, str]] = []
    claimed: str | None = None
    i = 0
    while i < len(lines):
        heading = _FILE_HEADING.match(lines[i])
        hash_line = _HASH_LINE.match(lines[i])
        if heading:
            content, i = _read_fenced(lines, i + 1, heading["path"], source)
            files.append((heading["path"], content))
            continue
        if hash_line and claimed is None and not files:
            claimed = hash_line["hash"]
        else:
            notes.append(lines[i])
        i += 1
    return "\n".join(notes).strip(), files, claimed


def _read_fenced(lines: list[str], i: int, path: str, source: Path) -> tuple[str, int]:
    """The fenced block starting at or after line ``i``, and the line after it."""
    while i < len(lines) and not lines[i].strip():
        i += 1
    opening = _FENCE.match(lines[i]) if i < len(lines) else None
    if opening is None:
        raise ExchangeResponseError(f"{source}:{i + 1}: '### file: {path}' must be followed by "
                                    "a fenced block (``` or ~~~)")
    fence = opening["fence"]
    closing = re.compile(rf"^{re.escape(fence[0])}{{{len(fence)},}}\s*$")
    body: list[str] = []
    for j in range(i + 1, len(lines)):
        if closing.match(lines[j]):
            return ("\n".join(body) + "\n" if body else ""), j + 1
        body.append(lines[j])
    raise ExchangeResponseError(f"{source}:{i + 1}: the fenced block for {path} is never closed")


def render_request(request: Request, response_name: str) -> str:
    """A readable rendering of a request; the .request.json next to it is authoritative."""
    out = [f"# Request for unit `{request.unit}`", "",
           f"- request hash: `{request.request_hash()}`",
           f"- model: `{request.model}`, max_tokens: {request.max_tokens}",
           f"- answer by writing `{response_name}` next to this file (format: see "
           "allium/providers/exchange.py); write each file with `### file: PATH` and a fenced "
           "block", ""]
    out += ["## System", ""]
    for number, text in enumerate(request.system, 1):
        cached = " (stable prefix, cached)" if number <= request.cached_prefix_blocks else ""
        out += [f"### System block {number}{cached}", "", text.rstrip(), ""]
    out += ["## Messages", ""]
    for message in request.messages:
        out += [f"### {message['role']}", "", _render_content(message["content"]), ""]
    if request.tools:
        out += ["## Tools", ""]
        for tool in request.tools:
            schema = json.dumps(tool.get("input_schema", {}), indent=2)
            out += [f"### {tool['name']}", "", str(tool.get("description", "")), "",
                    "```json", schema, "```", ""]
    return "\n".join(out).rstrip() + "\n"


def _render_content(content: Any) -> str:
    if isinstance(content, str):
        return content.rstrip()
    parts = []
    for block in content:
        if block.get("type") == "text":
            parts.append(str(block["text"]).rstrip())
        else:
            parts.append("```json\n" + json.dumps(block, indent=2) + "\n```")
    return "\n\n".join(parts)
