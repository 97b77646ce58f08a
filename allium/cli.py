"""The command line: a thin click layer over the library.

The only module that imports click.  Exit codes: 0 clean, 1 findings
(any error or warning), 2 usage errors.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

import click

from allium import __version__
from allium.diagnostics import Diagnostic, has_failures, render_json, render_sarif, render_text
from allium.errors import AlliumError, UsageError
from allium.source import SourceFile

FORMATS = click.Choice(["text", "json", "sarif"])


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="allium")
def main() -> None:
    """Turn Allium specifications into working, tested software."""


def _emit(diagnostics: Sequence[Diagnostic], sources: dict[str, SourceFile], fmt: str) -> None:
    if fmt == "json":
        click.echo(render_json(diagnostics, list(sources)))
    elif fmt == "sarif":
        click.echo(render_sarif(diagnostics, __version__))
    else:
        click.echo(render_text(diagnostics, sources))


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the AST as JSON.")
@click.option("--format", "fmt", type=FORMATS, default="text", help="Diagnostics format.")
def parse(file: str, as_json: bool, fmt: str) -> None:
    """Parse FILE; print its diagnostics, or its AST with --json."""
    from allium.ast import to_json
    from allium.syntax import parse_file

    try:
        result = parse_file(file)
    except OSError as exc:
        raise click.UsageError(f"cannot read {file}: {exc.strerror}") from None
    if as_json and result.module is not None:
        click.echo(json.dumps(to_json(result.module), indent=2))
        if result.diagnostics:
            click.echo(render_text(result.diagnostics, {file: result.source}, summary=False), err=True)
    else:
        _emit(result.diagnostics, {file: result.source}, fmt)
    sys.exit(0 if result.module is not None and not has_failures(result.diagnostics) else 1)


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--format", "fmt", type=FORMATS, default="text", help="Output format.")
def check(paths: tuple[str, ...], fmt: str) -> None:
    """Validate the specs in PATHS (files or folders, searched recursively)."""
    from allium.check import check_paths

    try:
        report = check_paths(paths)
    except UsageError as exc:
        raise click.UsageError(str(exc)) from None
    _emit(report.diagnostics, report.sources, fmt)
    sys.exit(1 if has_failures(report.diagnostics) else 0)


def run() -> None:
    """Entry point that turns our own errors into messages, never tracebacks."""
    try:
        main(standalone_mode=True)
    except AlliumError as exc:  # pragma: no cover - commands handle their own
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
