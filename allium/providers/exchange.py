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

    request-hash: 3f2a...        <- required: the request's hash (at least its first 12 digits)
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

    {"request_hash": "3f2a... (required)", "text": "notes (optional)",
     "files": [{"path": "src/shop/orders.py", "content": "def place_order(): ...\\n"}]}

The request hash ties an answer to the question it answers: after a spec edit
the request changes, and an old answer is refused rather than silently used.
Response files are read as UTF-8, at most ``MAX_RESPONSE_BYTES``, never
through a symlink; request files are written by rename, so a symlink planted
at their name is replaced, never followed. Paths are passed on exactly as
written; the generator decides whether they are safe.
"""

from __future__ import annotations

import json
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import Any

from allium.providers.base import ProviderError, Request, Response, validate_write_file

_FILE_HEADING = re.compile(r"^###\s+file:\s*(?P<path>\S.*?)\s*$")
_FENCE = re.compile(r"^(?P<fence>`{3,}|~{3,})[^`]*$")
_HASH_LINE = re.compile(r"^request-hash:\s*`?(?P<hash>[0-9a-fA-F]+)`?\s*$")
EXCHANGE_MODEL = "exchange"
MAX_RESPONSE_BYTES = 8 << 20  # a response file over 8 MiB is refused unread
MIN_HASH_DIGITS = 12


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

    def retry_hint(self, unit: str) -> str:
        paths = self.paths(unit)
        return f"fix {paths['response.md']} (or {paths['response.json'].name}) and run again"

    def complete(self, request: Request) -> Response:
        paths = self.paths(request.unit)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            payload = json.dumps(request.to_payload(), indent=2, ensure_ascii=False) + "\n"
            _write_no_follow(paths["request.json"], payload)
            _write_no_follow(paths["request.md"], render_request(request, paths["response.md"].name))
        except OSError as exc:
            raise ProviderError(f"cannot write the request for unit {request.unit!r}: {exc}",
                                unit=request.unit) from None
        parsers = {"response.json": parse_response_json, "response.md": parse_response_md}
        for kind, parse in parsers.items():
            source = paths[kind]
            if os.path.lexists(source):
                notes, files, claimed = parse(read_response(source, request.unit), source)
                break
        else:
            raise ExchangePending(request.unit, paths["request.md"], paths["response.md"])
        _check_claim(source, claimed, request, paths["request.md"])
        return _response(request.unit, notes, files)


def _check_claim(source: Path, claimed: object, request: Request, request_md: Path) -> None:
    """The answer must name the request it answers (see the module docstring)."""
    request_hash = request.request_hash()
    if not isinstance(claimed, str) or not claimed:
        raise ExchangeResponseError(
            f"{source} does not say which request it answers: if it answers the current "
            f"{request_md.name}, start it with the line 'request-hash: {request_hash}' "
            "(\"request_hash\" in a .response.json) and run again", unit=request.unit)
    claimed = claimed.lower()
    if len(claimed) < MIN_HASH_DIGITS or not request_hash.startswith(claimed):
        raise ExchangeResponseError(
            f"{source} answers request {claimed[:12]}…, but unit {request.unit!r} now asks "
            f"{request_hash[:12]}… (the spec, templates or model changed): read the new "
            f"{request_md.name}, update the answer and its request-hash line, or delete it; "
            "then run again", unit=request.unit)


def read_response(path: Path, unit: str) -> str:
    """A response file's text: a regular file, not a symlink, UTF-8, within the size cap."""
    try:
        info = os.lstat(path)
        if stat.S_ISLNK(info.st_mode):
            raise ExchangeResponseError(f"{path} is a symlink; write the answer there as a plain file",
                                        unit=unit)
        if not stat.S_ISREG(info.st_mode):
            raise ExchangeResponseError(f"{path} is not a regular file", unit=unit)
        if info.st_size > MAX_RESPONSE_BYTES:
            raise ExchangeResponseError(f"{path} is {info.st_size:,} bytes; answers over "
                                        f"{MAX_RESPONSE_BYTES >> 20} MiB are refused", unit=unit)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as handle:
            data = handle.read(MAX_RESPONSE_BYTES + 1)
    except OSError as exc:
        raise ExchangeResponseError(f"cannot read {path}: {exc.strerror or exc}", unit=unit) from None
    if len(data) > MAX_RESPONSE_BYTES:
        raise ExchangeResponseError(f"{path}: answers over {MAX_RESPONSE_BYTES >> 20} MiB are refused",
                                    unit=unit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ExchangeResponseError(f"{path}:{line}: not UTF-8 text (byte {exc.start}: "
                                    f"{data[exc.start:exc.start + 1]!r}); save it as UTF-8",
                                    unit=unit) from None


def _write_no_follow(path: Path, text: str) -> None:
    """Write by rename: a symlink at ``path`` is replaced, never written through."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
        raise ExchangeResponseError(f"{source}: not a valid response ({exc}); expected "
                                    '{"files": [{"path": ..., "content": ...}], "text": ...}') from exc
    if not all(isinstance(p, str) and isinstance(c, str) for p, c in files):
        raise ExchangeResponseError(f"{source}: every file needs a string path and content")
    claimed = data.get("request_hash")
    return str(data.get("text", "")), files, claimed if isinstance(claimed, str) else None


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
           "block, and every file the unit owns",
           f"- the answer's first line must be `request-hash: {request.request_hash()}`, so that "
           "it is never taken for the answer to a later request", ""]
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
