"""The command line: a thin click layer over the library.

With cli_contract.py, the only modules that import click.  Every command
keeps one contract (see cli_contract.py): exit codes 0 clean, 1 findings,
2 usage errors; `--format text|json|sarif`; JSON errors in JSON mode.
"""

from __future__ import annotations

import gc
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import click

from allium import __version__
from allium.cli_contract import (
    AlliumGroup,
    Refused,
    begin,
    chosen_format,
    config_defaults,
    format_options,
)
from allium.diagnostics import Diagnostic, has_failures, render_sarif, render_text
from allium.envelope import EXIT_CLEAN, EXIT_FINDINGS, diagnostics_by_file, document, dumps
from allium.errors import UsageError
from allium.source import SourceFile

CONFIG_FILE = "allium.toml"


@click.group(cls=AlliumGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="allium")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Turn Allium specifications into working, tested software.

    Defaults for any command's options can be set in ./allium.toml, one table
    per command keyed by option names (e.g. [generate] provider = "replay",
    max-tokens = 8000); the command line and environment variables take
    precedence over it.  Exit codes: 0 clean, 1 findings, 2 usage errors.
    """
    assert isinstance(ctx.command, click.Group)
    ctx.default_map = config_defaults(CONFIG_FILE, ctx.command)


def _emit(command: str, fmt: str, diagnostics: Sequence[Diagnostic], sources: dict[str, SourceFile],
          exit_code: int, text: Callable[[], str] | None = None, **body: Any) -> None:
    """Print a command's result in `fmt`; `body` is its JSON envelope's own keys."""
    if fmt == "json":
        click.echo(dumps(document(command, diagnostics, exit_code, **body)))
    elif fmt == "sarif":
        click.echo(render_sarif(diagnostics, __version__))
    else:
        click.echo(text() if text is not None else render_text(diagnostics, sources))


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@format_options(alias=True)
def parse(file: str, fmt: str, as_json: bool) -> None:
    """Parse FILE; print its diagnostics, or with --format json its AST and diagnostics."""
    from allium.ast import to_json
    from allium.syntax import parse_file

    fmt = begin("parse", chosen_format(fmt, as_json))
    try:
        result = parse_file(file)
    except OSError as exc:
        raise UsageError(f"cannot read {file}: {exc.strerror}") from None
    code = EXIT_CLEAN if result.module is not None and not has_failures(result.diagnostics) else EXIT_FINDINGS
    module = to_json(result.module) if result.module is not None else None
    _emit("parse", fmt, result.diagnostics, {file: result.source}, code, file=file, module=module)
    sys.exit(code)


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@format_options()
@click.option("--package", type=click.Path(), default=None,
              help="Also check this generated package's tests against the specs "
              "(default: generated/ when generated/allium.lock exists).")
@click.option("--specs-only", is_flag=True, help="Check the specs only, even if generated/ exists.")
@click.option("--run", "run_tests", is_flag=True, help="Run the tests and map failures to rules.")
@click.option("--min-coverage", type=click.FloatRange(0, 100), default=100.0, show_default=True,
              help="Obligation coverage (percent) below which the check fails.")
@click.option("--junit", type=click.Path(dir_okay=False), default=None, help="Also write JUnit XML here.")
@click.option("--timeout", type=click.FloatRange(0, min_open=True), default=120.0, show_default=True,
              help="Seconds for pytest.")
@click.option("--mutate", is_flag=True, help="Also mutation-test the code the obligations map to (implies --run).")
@click.option("--mutate-only", multiple=True, metavar="UNIT", help="Mutate only this unit (repeatable).")
@click.option("--mutate-jobs", type=click.IntRange(1, 64), default=2, show_default=True,
              help="Parallel mutation workers.")
@click.option("--mutate-budget", type=click.FloatRange(min=1), default=None, metavar="SECONDS",
              help="Stop starting mutants after this long; what is left is reported as not run.")
@click.option("--mutate-cache", type=click.Path(file_okay=False), default=".allium/mutants", show_default=True,
              help="Results per unit, reused while nothing they depend on changes.")
@click.option("--min-mutation-score", type=click.FloatRange(0, 100), default=0.0, show_default=True,
              help="Per-component mutation score (percent) below which the check fails.")
def check(paths: tuple[str, ...], fmt: str, package: str | None, specs_only: bool, run_tests: bool,
          min_coverage: float, junit: str | None, timeout: float, mutate: bool, mutate_only: tuple[str, ...],
          mutate_jobs: int, mutate_budget: float | None, mutate_cache: str, min_mutation_score: float) -> None:
    """Validate the specs in PATHS, and a generated package's tests against them.

    With --format json the document has the same keys either way; `package`
    is null when no package was checked, `mutation` when --mutate was not given.
    """
    from pathlib import Path

    begin("check", fmt)
    if package is None and not specs_only and _generated_from(paths, Path("generated")):
        package = "generated"
    if package is None or specs_only:
        if mutate:
            raise UsageError("--mutate needs a generated package (--package, or generated/allium.lock)")
        _check_specs(paths, fmt)
    else:
        mutation = None
        if mutate:
            mutation = {"units": mutate_only, "jobs": mutate_jobs, "budget": mutate_budget,
                        "cache_dir": Path(mutate_cache), "min_score": min_mutation_score}
        _check_package(paths, package, fmt, run_tests or mutate, min_coverage, junit, timeout, mutation)


def _generated_from(paths: tuple[str, ...], output: Any) -> bool:
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

    report = check_paths(paths)
    code = EXIT_FINDINGS if has_failures(report.diagnostics) else EXIT_CLEAN
    _emit("check", fmt, report.diagnostics, report.sources, code,
          files=diagnostics_by_file(report.diagnostics, report.files), package=None, mutation=None)
    sys.exit(code)


def _check_package(paths: tuple[str, ...], package: str, fmt: str, run_tests: bool, min_coverage: float,
                   junit: str | None, timeout: float, mutation: dict | None = None) -> None:
    from allium.verify.coverage import verify_package
    from allium.verify.report import package_json, write_junit

    report = verify_package(paths, package, run=run_tests, timeout=timeout, min_coverage=min_coverage)
    mutated = _mutate(report, package, mutation, quiet=fmt != "text") if mutation is not None else None
    if mutated is not None and fmt == "sarif":
        from allium.verify import mutreport

        survivors = mutreport.survivor_findings(mutated, report.package_root)
        click.echo(mutreport.add_to_sarif(render_sarif([*report.diagnostics, *survivors], __version__), mutated))
    else:
        _emit("check", fmt, report.diagnostics, report.sources, report.exit_code,
              lambda: _check_text(report, mutated),
              files=diagnostics_by_file(report.spec_diagnostics, report.spec_files), package=package_json(report),
              mutation=mutated.to_json() if mutated is not None else None)
    if junit:
        write_junit(report, junit)
    sys.exit(report.exit_code)


def _check_text(report: Any, mutated: Any) -> str:
    from allium.verify.report import render_report_text

    if mutated is None:
        return render_report_text(report)
    from allium.verify.mutreport import render_mutation_text

    return render_report_text(report) + "\n\n" + render_mutation_text(mutated)


def _mutate(report: Any, package: str, options: dict[str, Any], *, quiet: bool) -> Any:
    """Run the mutation gate and add its findings to `report`; None when the suite is not fit for it."""
    from allium.verify.mutate import mutate_package
    from allium.verify.mutreport import merge
    from allium.verify.package import find_package
    from allium.verify.report import COLLECT_FAILED

    if report.by_code(COLLECT_FAILED):
        click.echo("mutation testing skipped: the tests could not be collected", err=True)
        return None
    # a failing test is already a finding; the gate leaves it out (it would "kill" every mutant)
    say = None if quiet else (lambda msg: click.echo(f"  [mutate] {msg}", err=True))
    # a worker that cannot start raises WorkerError, an AlliumError: one line, exit 1
    mutation = mutate_package(report, find_package(package), units=options["units"], jobs=options["jobs"],
                              budget=options["budget"], cache_dir=options["cache_dir"], progress=say)
    merge(report, mutation, min_score=options["min_score"])
    return mutation


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@format_options()
def plan(paths: tuple[str, ...], fmt: str) -> None:
    """Derive the test obligations of the specs in PATHS."""
    from allium import plan as planning
    from allium.check import discover, parse_all

    begin("plan", fmt)
    results = parse_all(discover(paths))
    diagnostics = [d for r in results for d in r.diagnostics]
    broken = [r for r in results if r.module is None]
    if broken:
        if fmt == "text":
            errors = [d for r in broken for d in r.diagnostics]
            click.echo(render_text(errors, {r.source.path: r.source for r in broken}), err=True)
        else:
            _emit("plan", fmt, diagnostics, {}, EXIT_FINDINGS, **planning.to_document([]))
        sys.exit(EXIT_FINDINGS)
    modules = [r.module for r in results if r.module is not None]
    versions = {m.version for m in modules}
    obligations = planning.plan_for(modules)
    body = planning.to_document(obligations, version=versions.pop() if len(versions) == 1 else None)
    _emit("plan", fmt, diagnostics, {}, EXIT_CLEAN, lambda: planning.render_text(obligations), **body)


# ---------------------------------------------------------------- generation

PACKAGE_HELP = "Python package name (default: the one in OUT/allium.lock, else 'app')."


def _package_name(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not value.isidentifier():
        raise click.BadParameter(f"{value!r} is not a Python identifier")
    return value


def _package(explicit: str | None, output: str) -> str:
    """The package to generate: as given, else as last generated into `output`."""
    if explicit:
        return explicit
    from pathlib import Path

    from allium.generate import lockfile

    lock = lockfile.load(Path(output) / lockfile.LOCKFILE_NAME)
    return lock.package if lock is not None and lock.package else "app"


def _load_plan(specs: tuple[str, ...], package: str) -> tuple[Any, list[Diagnostic]]:
    """The generation plan, and what checking the specs found (warnings do not stop it)."""
    from allium.check import check_paths
    from allium.generate.units import load_plan

    report = check_paths(specs or ("specs",))
    errors = [d for d in report.diagnostics if d.severity.value == "error"]
    if errors:
        raise Refused("the specs have errors; fix them before generating", errors, report.sources)
    return load_plan(report.files, package=package, parsed=report.modules), report.diagnostics


def _units(the_plan: Any, names: Sequence[str]) -> list[Any]:
    """The named units; a name the plan does not have is a usage error."""
    known = {u.name: u for u in the_plan.units}
    for name in names:
        if name not in known:
            raise UsageError(f"no unit named {name!r}; the plan has: {', '.join(known)}")
    return [known[name] for name in names]


@main.command()
@click.argument("unit")
@click.argument("specs", nargs=-1, type=click.Path())
@click.option("--package", default=None, help=PACKAGE_HELP, callback=_package_name)
@click.option("--out", "output", default="generated", show_default=True, type=click.Path(file_okay=False))
@format_options(alias=True)
def prompt(unit: str, specs: tuple[str, ...], package: str | None, output: str, fmt: str, as_json: bool) -> None:
    """Print the request allium would send for UNIT (as JSON: the exact API payload)."""
    from pathlib import Path

    from allium.prompt.builder import build_request

    fmt = begin("prompt", chosen_format(fmt, as_json))
    the_plan, diagnostics = _load_plan(specs, _package(package, output))
    _units(the_plan, [unit])
    request = build_request(unit, the_plan, code_root=Path(output))
    _emit("prompt", fmt, diagnostics, {}, EXIT_CLEAN, lambda: _request_text(request),
          unit=unit, payload=request.to_payload())


def _request_text(request: Any) -> str:
    import json

    lines = []
    for i, block in enumerate(request.system):
        lines.append(f"===== system block {i + 1}{' (cached prefix)' if i < request.cached_prefix_blocks else ''}")
        lines.append(block)
    for message in request.messages:
        lines.append(f"===== {message['role']}")
        lines.append(message["content"] if isinstance(message["content"], str) else json.dumps(message["content"]))
    return "\n".join(lines)


class _ProviderName(click.ParamType):
    """A name in the provider registry, looked up only when given (entry points cost a scan)."""

    name = "provider"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        from allium.providers import registry

        if value not in registry.BUILTIN and value not in registry.names():
            self.fail(f"unknown provider {value!r}; choose from {', '.join(registry.names())}", param, ctx)
        return str(value)

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        from allium.providers import registry

        return "[" + "|".join(registry.names()) + "]"


@main.command()
@click.argument("specs", nargs=-1, type=click.Path())
@click.option("--out", "output", default="generated", show_default=True, type=click.Path(file_okay=False))
@click.option("--package", default=None, help=PACKAGE_HELP, callback=_package_name)
@click.option("--provider", "provider_name", type=_ProviderName(), default="anthropic", show_default=True,
              help="Who answers: anthropic, replay, exchange, or an installed plugin's provider.")
@click.option("--model", envvar="ALLIUM_MODEL", default=None, help="Model id (env ALLIUM_MODEL).")
@click.option("--max-tokens", type=click.IntRange(1), envvar="ALLIUM_MAX_TOKENS", default=None)
@click.option("--jobs", "-j", type=click.IntRange(1, 64), envvar="ALLIUM_JOBS", default=4, show_default=True)
@click.option("--transcripts", default=".allium/transcripts", show_default=True, type=click.Path(file_okay=False))
@click.option("--exchange-dir", default=".allium/exchange", show_default=True, type=click.Path(file_okay=False))
@click.option("--only", multiple=True, help="Regenerate only this unit (repeatable).")
@click.option("--all", "everything", is_flag=True, help="Regenerate every unit, not only stale ones.")
@click.option("--discard", multiple=True, metavar="UNIT",
              help="Set aside UNIT's stored answer and ask again (repeatable; implies regenerating UNIT).")
@click.option("--fresh", is_flag=True,
              help="Ask for each unit from scratch instead of sending its current files to amend.")
@click.option("--max-cost", type=click.FloatRange(0), default=None, help="Stop before spending more than this (USD).")
@click.option("--dry-run", is_flag=True, help="Print the plan and a token and cost estimate; spend nothing.")
@format_options(alias=True)
def generate(specs: tuple[str, ...], output: str, package: str | None, provider_name: str, model: str | None,
             max_tokens: int | None, jobs: int, transcripts: str, exchange_dir: str, only: tuple[str, ...],
             everything: bool, discard: tuple[str, ...], fresh: bool, max_cost: float | None, dry_run: bool,
             fmt: str, as_json: bool) -> None:
    """Generate the package and its tests from SPECS (default: specs/)."""
    from pathlib import Path

    from allium.errors import AlliumError
    from allium.generate import runner
    from allium.providers import registry
    from allium.providers.transcripts import TranscriptStore

    fmt = begin("generate", chosen_format(fmt, as_json))
    the_plan, diagnostics = _load_plan(specs, _package(package, output))
    out = Path(output)
    units = _units(the_plan, only) if only else runner.select_units(the_plan, out, (), everything)
    discarded = _units(the_plan, discard)
    units += [u for u in discarded if u not in units]
    store = TranscriptStore(transcripts)
    if dry_run:
        _dry_run(the_plan, units, store, out, model, max_tokens, fmt, diagnostics, fresh)
        return
    make = registry.factory(provider_name)
    try:
        settings = registry.Settings(store, exchange_dir, None if fmt != "text" else _ProgressLine())
        generator = runner.Generator(the_plan, make(settings), store, out, model=model, max_tokens=max_tokens,
                                     jobs=jobs, max_cost=max_cost, on_event=_progress(fmt != "text"),
                                     amend=not fresh)
        for line in generator.discard(discarded):
            _progress(fmt != "text")("discard", line)
        report = generator.run(units, pin_to_lockfile=provider_name == "replay")
    except AlliumError as exc:
        raise click.ClickException(f"{exc}\n{output}/ was left unchanged") from None
    rows = _rows(report)
    _emit("generate", fmt, diagnostics, {}, EXIT_CLEAN, lambda: _summary_text(report, rows), dry_run=False,
          units=rows, skipped=report.skipped, estimate=None, cost_usd=round(report.cost_usd, 4),
          seconds=round(report.seconds, 2), output=str(report.output))


def _dry_run(the_plan: Any, units: list[Any], store: Any, out: Any, model: str | None, max_tokens: int | None,
             fmt: str, diagnostics: list[Diagnostic], fresh: bool) -> None:
    from allium.generate import runner
    from allium.generate.units import describe_plan

    planner = runner.Generator(the_plan, _NoProvider(), store, out, model=model, max_tokens=max_tokens,
                               amend=not fresh)
    requests = list(planner.requests(units).values())
    tokens, cost = runner.estimate_cost(requests)

    def text() -> str:
        return "\n".join([
            describe_plan(the_plan),
            f"\nwould request {len(requests)} unit(s): {', '.join(u.name for u in units) or '-'}",
            f"estimated input tokens: {tokens:,}; estimated cost: "
            + ("unknown for this model" if cost is None else f"${cost:.2f}"),
        ])

    estimate = {"requested": [u.name for u in units], "input_tokens": tokens,
                "cost_usd": None if cost is None else round(cost, 4)}
    _emit("generate", fmt, diagnostics, {}, EXIT_CLEAN, text, dry_run=True, units=[], skipped=[],
          estimate=estimate, cost_usd=0.0, seconds=0.0, output=str(out))


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


def _progress(quiet: bool) -> Callable[[str, str], None]:
    def show(unit: str, message: str) -> None:
        if not quiet:
            click.echo(f"  [{unit}] {message}", err=True)

    return show


def _rows(report: Any) -> list[dict[str, Any]]:
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
    return rows


def _summary_text(report: Any, rows: list[dict[str, Any]]) -> str:
    header = f"{'unit':14} {'files':>5} {'lines':>6} {'input':>8} {'cached':>8} {'output':>7} {'cost':>8} {'time':>6}"
    lines = [header]
    for r in rows:
        source = " (transcript)" if r["from_transcript"] else ""
        lines.append(f"{r['unit']:14} {r['files']:5d} {r['lines']:6d} {r['input_tokens']:8d} "
                     f"{r['cached_tokens']:8d} {r['output_tokens']:7d} ${r['cost_usd']:7.4f} "
                     f"{r['seconds']:5.1f}s{source}")
    lines.append(f"{len(rows)} unit(s) written to {report.output}/, {len(report.skipped)} up to date; "
                 f"${report.cost_usd:.4f} in {report.seconds:.1f}s")
    return "\n".join(lines)


# ---------------------------------------------------------------- fixing bugs through the spec


@main.group()
def fix() -> None:
    """Fix a bug through the spec: see what an edit touches, record and re-verify the proof.

    The loop: edit specs/, `allium fix status` (stale units, obligations added or
    changed), `allium generate`, `allium fix record NAME --test ID...` (the
    named tests must fail on the previous generated code and pass on the new),
    commit. `allium fix verify` re-proves every recorded fix from fixes/.
    """


def _fix_root() -> Any:
    from pathlib import Path

    from allium.fix.gitrev import repo_root

    try:
        return repo_root(Path.cwd())
    except UsageError as exc:
        raise click.UsageError(str(exc)) from None


@fix.command("status")
@click.option("--against", "rev", default="HEAD", show_default=True, help="Git revision before the edit.")
@click.option("--specs", default="specs", show_default=True, help="Spec folder, relative to the repository.")
def fix_status(rev: str, specs: str) -> None:
    """Units a spec edit makes stale, and the obligations it adds, changes or removes."""
    from allium.fix.record import status

    try:
        click.echo(status(_fix_root(), rev, specs).render())
    except UsageError as exc:
        raise click.UsageError(str(exc)) from None


@fix.command("run")
@click.argument("specs", nargs=-1, type=click.Path())
@click.option("--out", "output", default="generated", show_default=True, type=click.Path(file_okay=False))
@click.option("--package", default=None, help=PACKAGE_HELP)
@click.option("--provider", "provider_name", type=click.Choice(["anthropic", "exchange"]), default="anthropic",
              show_default=True)
@click.option("--model", envvar="ALLIUM_MODEL", default=None, help="Model id (env ALLIUM_MODEL).")
@click.option("--transcripts", default=".allium/transcripts", show_default=True, type=click.Path(file_okay=False))
@click.option("--exchange-dir", default=".allium/exchange", show_default=True, type=click.Path(file_okay=False))
@click.option("--rounds", type=click.IntRange(0, 3), default=3, show_default=True,
              help="Feedback rounds at most: failing tests are sent back to the model with the request.")
@click.option("--recheck", multiple=True, metavar="UNIT",
              help="Test and check UNIT even if it is up to date, and ask again with what is found (repeatable).")
def fix_run(specs: tuple[str, ...], output: str, package: str | None, provider_name: str, model: str | None,
            transcripts: str, exchange_dir: str, rounds: int, recheck: tuple[str, ...]) -> None:
    """Regenerate the units a spec edit made stale, run their tests, and feed failures back."""
    from pathlib import Path

    from allium.errors import AlliumError
    from allium.fix.loop import run_loop
    from allium.providers import registry
    from allium.providers.transcripts import TranscriptStore

    the_plan, _ = _load_plan(specs, _package(package, output))
    store = TranscriptStore(transcripts)
    try:
        provider = registry.factory(provider_name)(registry.Settings(store, exchange_dir, _ProgressLine()))
        result = run_loop(the_plan, provider, store, Path(output), rounds=rounds, on_event=_progress(False),
                          model=model, recheck=[u.name for u in _units(the_plan, recheck)])
    except AlliumError as exc:
        raise click.ClickException(f"{exc}\n{output}/ was left unchanged") from None
    for unit, failures in sorted(result.failing.items()):
        click.echo(f"{unit}: {len(failures)} failing test(s)" + (" (gave up)" if unit in result.gave_up else ""))
        for line in failures[:5]:
            click.echo(f"  {line}")
    if result.waiting:
        click.echo(result.waiting)
        click.echo("run `allium fix run` again once the answers are written")
        return
    click.echo(f"{result.rounds} round(s); " + ("green" if result.green else "still failing"))
    sys.exit(0 if result.green else 1)


@fix.command("record")
@click.argument("name")
@click.option("--test", "tests", multiple=True, required=True, help="Test id proving the fix (repeatable).")
@click.option("--summary", default="", help="One line: the bug and how the spec now rules it out.")
@click.option("--against", "rev", default="HEAD", show_default=True, help="Git revision before the fix.")
@click.option("--specs", default="specs", show_default=True)
def fix_record(name: str, tests: tuple[str, ...], summary: str, rev: str, specs: str) -> None:
    """Record fix NAME: red on the previous generated code, green on the new, or nothing is kept."""
    from allium.fix.record import record, render_proof

    try:
        evidence, red, green = record(_fix_root(), name, tests, summary, rev, specs)
    except UsageError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(render_proof(red, green))
    click.echo(f"recorded fixes/{name}/: units {', '.join(evidence.units) or '-'}, {len(tests)} test(s)")


@fix.command("questions")
@click.argument("specs", nargs=-1, type=click.Path())
@click.option("--all", "show_all", is_flag=True, help="Also list the settled decisions that are implemented.")
def fix_questions(specs: tuple[str, ...], show_all: bool) -> None:
    """Flag resolved questions that name no rule or invariant implementing them (exit 1 if any)."""
    from pathlib import Path

    from allium.errors import AlliumError
    from allium.fix.questions import render, settled_decisions
    from allium.generate.units import load_spec_set

    try:
        files = [p for s in (specs or ("specs",)) for p in (sorted(Path(s).glob("*.allium")) if Path(s).is_dir()
                                                          else [Path(s)])]
        decisions = settled_decisions(load_spec_set(files))
    except AlliumError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(render(decisions, str(Path.cwd()), show_all))
    sys.exit(1 if any(not d.implemented for d in decisions) else 0)


@fix.command("verify")
@click.argument("names", nargs=-1)
@click.option("--jobs", "-j", type=click.IntRange(1, 64), default=None, help="pytest processes at once (default: CPUs).")
def fix_verify(names: tuple[str, ...], jobs: int | None) -> None:
    """Re-prove recorded fixes (all by default) from fixes/ alone."""
    from allium.fix.record import render_proof, verify

    try:
        verdicts = verify(_fix_root(), names, jobs)
    except UsageError as exc:
        raise click.UsageError(str(exc)) from None
    for v in verdicts:
        click.echo(f"{'ok  ' if v.ok else 'FAIL'} {v.evidence.name}: {v.evidence.summary}")
        click.echo(render_proof(v.red, v.green, v.current))
    bad = sum(not v.ok for v in verdicts)
    click.echo(f"{len(verdicts) - bad} of {len(verdicts)} fix(es) re-proved")
    sys.exit(1 if bad else 0)


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
        main(standalone_mode=True)  # AlliumGroup.main maps every error to its exit code
    except SystemExit as exc:
        _exit_now(exc.code)
    _exit_now(0)


def _exit_now(code: object) -> None:
    """Exit without tearing the heap down object by object.

    Freeing the ASTs of a large spec set one by one took as long as checking
    it (8 of 20 CPU seconds at 10 MB); the operating system frees the memory
    at once. Output is flushed first; nothing of ours needs exit handlers.
    """
    if isinstance(code, str):  # sys.exit("message")
        print(code, file=sys.stderr)
        code = 1
    status = code if isinstance(code, int) else (0 if code is None else 1)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed pipe: exit as Python would have
        status = status or 120
    os._exit(status)
