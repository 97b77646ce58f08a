"""The command line: a thin click layer over the library.

The only module that imports click.  Exit codes: 0 clean, 1 findings
(any error or warning), 2 usage errors.
"""

from __future__ import annotations

import gc
import json
import sys
import warnings
from collections.abc import Sequence

import click

from allium import __version__
from allium.diagnostics import (
    Diagnostic,
    has_failures,
    render_json,
    render_sarif,
    render_text,
)
from allium.errors import AlliumError, UsageError
from allium.source import SourceFile

FORMATS = click.Choice(["text", "json", "sarif"])


CONFIG_FILE = "allium.toml"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="allium")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Turn Allium specifications into working, tested software.

    Defaults for any command's options can be set in ./allium.toml, one table
    per command (e.g. [generate] model = "...", jobs = 8); the command line and
    environment variables take precedence over it.
    """
    ctx.default_map = _config_defaults(CONFIG_FILE)


def _config_defaults(path: str) -> dict[str, dict[str, object]]:
    import tomllib
    from pathlib import Path

    file = Path(path)
    if not file.is_file():
        return {}
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise click.UsageError(f"{path}: {exc}") from None
    tables = {name: values for name, values in data.items() if isinstance(values, dict)}
    # TOML keys use dashes or underscores; click's parameter names use underscores.
    return {cmd: {k.replace("-", "_"): v for k, v in values.items()} for cmd, values in tables.items()}


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
@click.option("--package", type=click.Path(), default=None,
              help="Also check this generated package's tests against the specs "
              "(default: generated/ when generated/allium.lock exists).")
@click.option("--specs-only", is_flag=True, help="Check the specs only, even if generated/ exists.")
@click.option("--run", "run_tests", is_flag=True, help="Run the tests and map failures to rules.")
@click.option("--min-coverage", type=click.FloatRange(0, 100), default=100.0, show_default=True,
              help="Obligation coverage (percent) below which the check fails.")
@click.option("--junit", type=click.Path(dir_okay=False), default=None, help="Also write JUnit XML here.")
@click.option("--timeout", type=float, default=120.0, show_default=True, help="Seconds for pytest.")
def check(paths: tuple[str, ...], fmt: str, package: str | None, specs_only: bool, run_tests: bool,
          min_coverage: float, junit: str | None, timeout: float) -> None:
    """Validate the specs in PATHS, and a generated package's tests against them."""
    from pathlib import Path

    if package is None and not specs_only and _generated_from(paths, Path("generated")):
        package = "generated"
    if package is None or specs_only:
        _check_specs(paths, fmt)
    _check_package(paths, package, fmt, run_tests, min_coverage, junit, timeout)


def _generated_from(paths: tuple[str, ...], output) -> bool:
    """Is `output` a package generated from (all of) the specs being checked?

    Only then is checking its tests implied: a lone spec file, or another
    spec set, says nothing about that package.
    """
    from pathlib import Path

    from allium.check import discover
    from allium.generate import lockfile

    lock = lockfile.load(output / lockfile.LOCKFILE_NAME)
    if lock is None or not lock.spec_files:
        return False
    try:
        names = {Path(f).name for f in discover(paths)}
    except UsageError:
        return False
    return {Path(f).name for f in lock.spec_files} <= names


def _check_specs(paths: tuple[str, ...], fmt: str) -> None:
    from allium.check import check_paths

    try:
        report = check_paths(paths)
    except UsageError as exc:
        raise click.UsageError(str(exc)) from None
    _emit(report.diagnostics, report.sources, fmt)
    sys.exit(1 if has_failures(report.diagnostics) else 0)


def _check_package(paths: tuple[str, ...], package: str, fmt: str, run_tests: bool, min_coverage: float,
                   junit: str | None, timeout: float) -> None:
    from allium.verify.coverage import verify_package
    from allium.verify.report import render_report_json, render_report_text, write_junit

    try:
        report = verify_package(paths, package, run=run_tests, timeout=timeout, min_coverage=min_coverage)
    except UsageError as exc:
        raise click.UsageError(str(exc)) from None
    if fmt == "json":
        click.echo(render_report_json(report))
    elif fmt == "sarif":
        click.echo(render_sarif(report.diagnostics, __version__))
    else:
        click.echo(render_report_text(report))
    if junit:
        write_junit(report, junit)
    sys.exit(report.exit_code)


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
def plan(paths: tuple[str, ...], fmt: str) -> None:
    """Derive the test obligations of the specs in PATHS."""
    from allium import plan as planning
    from allium.check import discover, parse_all

    try:
        results = parse_all(discover(paths))
    except UsageError as exc:
        raise click.UsageError(str(exc)) from None
    broken = [r for r in results if r.module is None]
    if broken:
        diagnostics = [d for r in broken for d in r.diagnostics]
        click.echo(render_text(diagnostics, {r.source.path: r.source for r in broken}), err=True)
        sys.exit(1)
    modules = [r.module for r in results if r.module is not None]
    obligations = planning.plan_for(modules)
    if fmt == "json":
        versions = {m.version for m in modules}
        click.echo(planning.render_json(obligations, version=versions.pop() if len(versions) == 1 else None))
    else:
        click.echo(planning.render_text(obligations))


# ---------------------------------------------------------------- generation

PACKAGE_HELP = "Python package name (default: the one in OUT/allium.lock, else 'app')."


def _package(explicit: str | None, output: str) -> str:
    """The package to generate: as given, else as last generated into `output`."""
    if explicit:
        return explicit
    from pathlib import Path

    from allium.generate import lockfile

    lock = lockfile.load(Path(output) / lockfile.LOCKFILE_NAME)
    return lock.package if lock is not None and lock.package else "app"


def _load_plan(specs: tuple[str, ...], package: str):
    from allium.check import check_paths
    from allium.generate.units import load_plan

    report = check_paths(specs or ("specs",))
    errors = [d for d in report.diagnostics if d.severity.value == "error"]
    if errors:
        click.echo(render_text(errors, report.sources), err=True)
        raise click.ClickException("the specs have errors; fix them before generating")
    return load_plan(report.files, package=package, parsed=report.modules)


@main.command()
@click.argument("unit")
@click.argument("specs", nargs=-1, type=click.Path())
@click.option("--package", default=None, help=PACKAGE_HELP)
@click.option("--out", "output", default="generated", show_default=True, type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the exact API payload.")
def prompt(unit: str, specs: tuple[str, ...], package: str | None, output: str, as_json: bool) -> None:
    """Print the request allium would send for UNIT."""
    from allium.prompt.builder import build_request

    from pathlib import Path

    request = build_request(unit, _load_plan(specs, _package(package, output)), code_root=Path(output))
    if as_json:
        click.echo(json.dumps(request.to_payload(), indent=2))
        return
    for i, block in enumerate(request.system):
        click.echo(f"===== system block {i + 1}{' (cached prefix)' if i < request.cached_prefix_blocks else ''}")
        click.echo(block)
    for message in request.messages:
        click.echo(f"===== {message['role']}")
        click.echo(message["content"] if isinstance(message["content"], str) else json.dumps(message["content"]))


@main.command()
@click.argument("specs", nargs=-1, type=click.Path())
@click.option("--out", "output", default="generated", show_default=True, type=click.Path(file_okay=False))
@click.option("--package", default=None, help=PACKAGE_HELP)
@click.option("--provider", "provider_name", type=click.Choice(["anthropic", "replay", "exchange"]),
              default="anthropic", show_default=True)
@click.option("--model", envvar="ALLIUM_MODEL", default=None, help="Model id (env ALLIUM_MODEL).")
@click.option("--max-tokens", type=int, envvar="ALLIUM_MAX_TOKENS", default=None)
@click.option("--jobs", "-j", type=click.IntRange(1, 64), envvar="ALLIUM_JOBS", default=4, show_default=True)
@click.option("--transcripts", default=".allium/transcripts", show_default=True, type=click.Path(file_okay=False))
@click.option("--exchange-dir", default=".allium/exchange", show_default=True, type=click.Path(file_okay=False))
@click.option("--only", multiple=True, help="Regenerate only this unit (repeatable).")
@click.option("--all", "everything", is_flag=True, help="Regenerate every unit, not only stale ones.")
@click.option("--max-cost", type=float, default=None, help="Stop before spending more than this (USD).")
@click.option("--dry-run", is_flag=True, help="Print the plan and a token and cost estimate; spend nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary for scripts.")
def generate(specs: tuple[str, ...], output: str, package: str | None, provider_name: str, model: str | None,
             max_tokens: int | None, jobs: int, transcripts: str, exchange_dir: str, only: tuple[str, ...],
             everything: bool, max_cost: float | None, dry_run: bool, as_json: bool) -> None:
    """Generate the package and its tests from SPECS (default: specs/)."""
    from pathlib import Path

    from allium.generate import engine
    from allium.generate.units import describe_plan
    from allium.providers.transcripts import TranscriptStore

    the_plan = _load_plan(specs, _package(package, output))
    out = Path(output)
    units = engine.select_units(the_plan, out, only, everything)
    store = TranscriptStore(transcripts)
    if dry_run:
        planner = engine.Generator(the_plan, _NoProvider(), store, out, model=model, max_tokens=max_tokens)
        requests = list(planner.requests(units).values())
        tokens, cost = engine.estimate_cost(requests)
        click.echo(describe_plan(the_plan))
        click.echo(f"\nwould request {len(requests)} unit(s): {', '.join(u.name for u in units) or '-'}")
        click.echo(f"estimated input tokens: {tokens:,}; estimated cost: "
                   + ("unknown for this model" if cost is None else f"${cost:.2f}"))
        return
    try:
        provider = _provider(provider_name, store, exchange_dir, None if as_json else _ProgressLine())
        generator = engine.Generator(the_plan, provider, store, out, model=model, max_tokens=max_tokens,
                                     jobs=jobs, max_cost=max_cost, on_event=_progress(as_json))
        report = generator.run(units, pin_to_lockfile=provider_name == "replay")
    except AlliumError as exc:
        raise click.ClickException(f"{exc}\n{output}/ was left unchanged") from None
    _summarise(report, as_json)


class _NoProvider:
    """Stands in during --dry-run, which builds requests but never sends them."""

    name = "dry-run"

    def complete(self, request):  # pragma: no cover - never called
        raise AssertionError("dry run must not call a provider")


class _ProgressLine:
    """Live provider progress on stderr: streamed tokens (every 2,000), retries, turns."""

    def __init__(self) -> None:
        self.shown: dict[str, int] = {}

    def __call__(self, progress) -> None:
        unit = progress.unit
        if progress.kind == "tokens":
            if progress.output_tokens - self.shown.get(unit, 0) < 2000:
                return
            self.shown[unit] = progress.output_tokens
            text = f"{progress.output_tokens:,} tokens"
        elif progress.kind == "retry":
            text = f"attempt {progress.attempt} failed ({progress.message}); retrying in {progress.delay:.1f}s"
        else:
            text = progress.message or "continuing"
        click.echo(f"  [{unit}] {text}", err=True)


def _provider(name: str, store, exchange_dir: str, on_progress=None):
    if name == "replay":
        from allium.providers.replay import ReplayProvider

        return ReplayProvider(store)
    if name == "exchange":
        from allium.providers.exchange import ExchangeProvider

        return ExchangeProvider(exchange_dir)
    from allium.providers.anthropic import AnthropicProvider

    return AnthropicProvider(on_progress=on_progress)


def _progress(quiet: bool):
    def show(unit: str, message: str) -> None:
        if not quiet:
            click.echo(f"  [{unit}] {message}", err=True)

    return show


def _summarise(report, as_json: bool) -> None:
    rows = []
    for o in report.outcomes:
        usage = o.response.usage
        lines = sum(content.count("\n") + 1 for _, content in o.response.files)
        rows.append({
            "unit": o.unit, "files": len(o.response.files), "lines": lines,
            "input_tokens": usage.input_tokens, "cached_tokens": usage.cache_read_input_tokens,
            "cache_write_tokens": usage.cache_creation_input_tokens, "output_tokens": usage.output_tokens,
            "cost_usd": round(o.cost_usd, 4), "seconds": round(o.seconds, 2), "from_transcript": o.reused,
        })
    if as_json:
        click.echo(json.dumps({"units": rows, "skipped": report.skipped, "cost_usd": round(report.cost_usd, 4),
                               "seconds": round(report.seconds, 2), "output": str(report.output)}, indent=2))
        return
    header = f"{'unit':14} {'files':>5} {'lines':>6} {'input':>8} {'cached':>8} {'output':>7} {'cost':>8} {'time':>6}"
    click.echo(header)
    for r in rows:
        source = " (transcript)" if r["from_transcript"] else ""
        click.echo(f"{r['unit']:14} {r['files']:5d} {r['lines']:6d} {r['input_tokens']:8d} {r['cached_tokens']:8d} "
                   f"{r['output_tokens']:7d} ${r['cost_usd']:7.4f} {r['seconds']:5.1f}s{source}")
    click.echo(f"{len(rows)} unit(s) written to {report.output}/, {len(report.skipped)} up to date; "
               f"${report.cost_usd:.4f} in {report.seconds:.1f}s")


def run() -> None:
    """The console entry point: our own errors become messages, never tracebacks."""
    # A run builds large trees of objects that live until it exits and hold
    # no reference cycles; at the default threshold (700) the cyclic
    # collector rescans them over and over.  A short-lived command can afford
    # to collect less often (mypy's main makes the same trade).
    gc.set_threshold(100_000, 50, 100)
    # Library warnings (e.g. a cache folder not used) read as one line, like our errors.
    warnings.formatwarning = lambda message, *_args, **_kwargs: f"warning: {message}\n"
    try:
        main(standalone_mode=True)
    except AlliumError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
