"""What every command shares: exit codes, output formats, errors, allium.toml.

* Exit codes: 0 clean, 1 findings or a failure, 2 usage errors (a missing
  path, a bad option or value, an unknown name), on every command.
* `--format text|json|sarif` on every command (`--json` kept as an alias
  where it was there before).  JSON is one envelope (allium/envelope.py);
  SARIF carries the diagnostics.
* Errors come in the format asked for: with `--format json` an error is a
  JSON error document on stdout, never text, so a script reads one document
  whatever happened.  The format is known before the command runs only if
  the arguments parsed, so an argument error reads the format off argv.
* allium.toml: one table per command, keyed by option names as written on
  the command line (`max-tokens` or `max_tokens`); anything else is an error.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import click

from allium import __version__
from allium.diagnostics import Diagnostic, render_sarif, render_text
from allium.envelope import EXIT_FINDINGS, EXIT_USAGE, dumps, error_document
from allium.errors import AlliumError, InternalError, UsageError
from allium.source import SourceFile

FORMAT_CHOICES = ("text", "json", "sarif")


class Refused(click.ClickException):
    """A command stops on findings (e.g. spec errors before generating): exit 1, with them."""

    exit_code = EXIT_FINDINGS

    def __init__(self, message: str, diagnostics: Sequence[Diagnostic], sources: dict[str, SourceFile]) -> None:
        super().__init__(message)
        self.diagnostics, self.sources = list(diagnostics), sources


@dataclass
class _Run:
    """The command running and the format it asked for, once its arguments parsed."""

    argv: list[str] = field(default_factory=list)
    command: str | None = None
    fmt: str | None = None

    def output_format(self) -> str:
        return self.fmt or _format_in(self.argv)


RUN = _Run()


def begin(command: str, fmt: str) -> str:
    """Called first by each command: errors from here on use `fmt`."""
    RUN.command, RUN.fmt = command, fmt
    return fmt


class AlliumGroup(click.Group):
    """click's group, with every error mapped to the contract's exit code and format."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        RUN.argv, RUN.command, RUN.fmt = argv, _command_in(argv), None
        try:
            result = super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
            code = result if isinstance(result, int) else 0
        except click.Abort:
            click.echo("Aborted!", err=True)
            code = EXIT_FINDINGS
        except click.ClickException as exc:
            code = _report_click(exc)
        except UsageError as exc:
            code = report_error("usage", str(exc), EXIT_USAGE)
        except InternalError as exc:
            code = _report_internal(exc)
        except AlliumError as exc:
            code = report_error("failure", str(exc), EXIT_FINDINGS)
        except Exception as exc:  # noqa: BLE001 - a bug: still one line (or one JSON document), not a traceback
            internal = InternalError.from_exception(f"running allium {RUN.command or ''}".strip(), exc)
            internal.__cause__ = exc
            code = _report_internal(internal)
        if standalone_mode:
            sys.exit(code)
        return code


def _report_internal(exc: InternalError) -> int:
    if os.environ.get("ALLIUM_TRACEBACK"):
        traceback.print_exception(exc.__cause__ or exc, file=sys.stderr)
    return report_error("internal", str(exc), EXIT_FINDINGS)


def _report_click(exc: click.ClickException) -> int:
    usage = isinstance(exc, click.UsageError)
    code = EXIT_USAGE if usage else exc.exit_code
    diagnostics = exc.diagnostics if isinstance(exc, Refused) else []
    if RUN.output_format() == "text":
        if isinstance(exc, Refused):
            click.echo(render_text(exc.diagnostics, exc.sources), err=True)
        exc.show()
        return code
    return report_error("usage" if usage else "failure", exc.format_message(), code, diagnostics)


def report_error(kind: str, message: str, code: int, diagnostics: Sequence[Diagnostic] = ()) -> int:
    """Print an error in the run's format; return the exit code."""
    fmt = RUN.output_format()
    if fmt == "json":
        click.echo(dumps(error_document(RUN.command, kind, message, code, diagnostics)))
    elif fmt == "sarif":
        click.echo(render_sarif(diagnostics, __version__, failure=message))
    else:
        click.echo(f"error: {message}", err=True)
    return code


def _command_in(argv: list[str]) -> str | None:
    """The subcommand named in argv: the group's own options take no values."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


def _format_in(argv: list[str]) -> str:
    """The output format argv asks for, read without click (whose parse may have failed)."""
    fmt = "text"
    for index, arg in enumerate(argv):
        if arg == "--":
            break
        if arg == "--json":
            fmt = "json"
        elif arg == "--format" and index + 1 < len(argv):
            fmt = argv[index + 1]
        elif arg.startswith("--format="):
            fmt = arg.partition("=")[2]
    return fmt if fmt in FORMAT_CHOICES else "text"


def format_options(alias: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """`--format text|json|sarif`, and `--json` for it where that flag already existed."""

    def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
        if alias:
            function = click.option("--json", "as_json", is_flag=True, help="Same as --format json.")(function)
        return click.option("--format", "fmt", type=click.Choice(FORMAT_CHOICES), default="text",
                            show_default=True, help="Output format.")(function)

    return decorate


def chosen_format(fmt: str, as_json: bool = False) -> str:
    return "json" if as_json else fmt


# ---------------------------------------------------------------- allium.toml


def config_defaults(path: str, group: click.Group) -> dict[str, dict[str, object]]:
    """allium.toml as click's default_map: option names mapped to parameter names.

    An unknown table or key is a usage error naming what is allowed, so a
    typo (or an internal parameter name such as `provider_name`) is not
    silently ignored.
    """
    import tomllib
    from pathlib import Path

    file = Path(path)
    if not file.is_file():
        return {}
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise click.UsageError(f"{path}: {exc}") from None
    out: dict[str, dict[str, object]] = {}
    for table, values in data.items():
        command = group.commands.get(table)
        if command is None or not isinstance(values, dict):
            what = "not a table of options" if not isinstance(values, dict) else "not a command"
            raise click.UsageError(f"{path}: [{table}] is {what}; tables: {', '.join(sorted(group.commands))}")
        names = _option_names(command)
        out[table] = {}
        for key, value in values.items():
            param = names.get(key.replace("_", "-"))
            if param is None:
                known = ", ".join(sorted(names))
                raise click.UsageError(f"{path}: [{table}] has no option {key!r}; options: {known}")
            out[table][param] = value
    return out


def _option_names(command: click.Command) -> dict[str, str]:
    """`max-tokens` -> `max_tokens`: each long option's name (without dashes) -> its parameter."""
    names: dict[str, str] = {}
    for param in command.params:
        if isinstance(param, click.Option) and param.name and param.name != "help":
            for opt in param.opts:
                if opt.startswith("--"):
                    names[opt[2:]] = param.name
    return names
