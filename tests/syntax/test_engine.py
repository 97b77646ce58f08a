"""The engine (lalr.py) must give exactly what lark's own runtime gives.

The reference is stock lark: `Lark.parse` into a parse tree, then
AstBuilder over its parse tree (children.TreeBuilder), with SourceFile.span for positions.
Every result is compared: declarations, every span, the comments, and which
inputs fail.
"""

from __future__ import annotations

import marshal
import os
import subprocess
import sys
from functools import lru_cache

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lark import Lark
from lark.exceptions import UnexpectedInput

from allium.cli import main
from allium.diagnostics import Diagnostic
from allium.source import SourceFile
from allium.syntax import _reference_parse, parse_text
from allium.syntax import lalr
from allium.syntax import grammar as grammar_module
from allium.syntax.build import AstBuilder
from allium.syntax.children import ReferenceTree
from allium.syntax.lalr import Engine, EngineError, SyntaxFailure, tables_from
from allium.syntax.postlex import AlliumPostLexer

from .conftest import CORPUS, src
from .test_constructs import RESOLVED
from .test_fuzz import BUILTIN, MUTATIONS, mutate, seeds
from .test_real_world import SOURCES as REAL_WORLD


@lru_cache(maxsize=1)
def stock_parser() -> Lark:
    return Lark(
        grammar_module.GRAMMAR_PATH.read_text(encoding="utf-8"),
        parser="lalr",
        lexer="contextual",
        postlex=AlliumPostLexer(),
        propagate_positions=True,
        maybe_placeholders=False,
        tree_class=ReferenceTree,
    )


class _StockBuilder(AstBuilder):
    def _make_span(self, start, end):
        return self.source.span(start, end)


def stock(text: str):
    source = SourceFile("s.allium", text)
    parser = stock_parser()
    try:
        tree = parser.parse(text)
    except UnexpectedInput:
        return "error"
    return grammar_module.build_tree_builder().build(_StockBuilder(source), tree), list(parser.options.postlex.comments)


def fast(text: str):
    try:
        decls, comments = grammar_module.build_engine().parse(text, AstBuilder(SourceFile("s.allium", text)))
    except (EngineError, SyntaxFailure):
        return "error"
    return decls, list(comments)


def diagnostic_pair(text: str):
    """The syntax diagnostic from the engine's failure and from lark's, or None."""
    result = parse_text(text, "s.allium")
    reference = _reference_parse(SourceFile("s.allium", text))
    engine_side = result.diagnostics[-1] if result.module is None else None
    return engine_side, (reference if isinstance(reference, Diagnostic) else None)


def corpus_texts() -> list[str]:
    texts = []
    manifest = CORPUS / "MANIFEST.tsv"
    if manifest.is_file():
        for line in manifest.read_text(encoding="utf-8").splitlines()[1:]:
            cols = line.split("\t")
            if len(cols) >= 5 and cols[4] in ("1", "2", "3"):
                texts.append((CORPUS / cols[0]).read_text(encoding="utf-8"))
    return texts


# The last one: byte offsets on, after and below lines with multi-byte characters.
NON_ASCII = (
    '-- allium: 3\n-- résumé ☃\nentity A {\n    label: "naïve ☃" ?? x  -- é\n'
    "    kind: `ü-mode` | plain\n    x: String\n}\n"
)
SAMPLES = [*BUILTIN, "-- allium: 3\n" + RESOLVED, "-- allium: 3\nentity A {\n  x: (a + b) * -c ?? d\n}\n", NON_ASCII,
           *REAL_WORLD]


@pytest.mark.parametrize("text", SAMPLES)
def test_engine_equals_lark_on_our_samples(text):
    assert fast(text) == stock(text) != "error"


@pytest.mark.parametrize("text", REAL_WORLD)
def test_engine_and_lark_warn_alike_on_accepted_looseness(text):
    builders = AstBuilder(SourceFile("s.allium", text)), _StockBuilder(SourceFile("s.allium", text))
    grammar_module.build_engine().parse(text, builders[0])
    grammar_module.build_tree_builder().build(builders[1], stock_parser().parse(text))
    assert builders[0].diagnostics == builders[1].diagnostics


def test_engine_equals_lark_on_the_whole_corpus():
    texts = corpus_texts()
    if not texts:
        pytest.skip("corpus not available")
    differ = [i for i, text in enumerate(texts) if fast(text) != stock(text)]
    failed = [text for text in texts if stock(text) == "error"]
    print(f"engine == lark on {len(texts) - len(differ)}/{len(texts)} corpus files ({len(failed)} fail in both)")
    assert differ == []
    for text in failed:
        engine_side, reference = diagnostic_pair(text)
        assert engine_side == reference is not None


@pytest.mark.parametrize(
    "text",
    [
        "-- allium: 3\nentity Foo\n    bar: String\n",
        "-- allium: 3\nrule R {\n    when: X(a, b\n    ensures: Y()\n}\n",
        "-- allium: 3\nentity A {\n    x: 'q'\n}\n",
        "-- allium: 3\nentity A {\n    x: String\n",
        "-- allium: 3\nentity A {\n    x: a +\n}\n",
    ],
)
def test_engine_fails_where_lark_fails(text):
    assert fast(text) == stock(text) == "error"
    engine_side, reference = diagnostic_pair(text)
    assert engine_side == reference is not None


@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    seed=st.integers(min_value=0, max_value=10_000),
    ops=st.lists(st.tuples(st.sampled_from(MUTATIONS), st.integers(0, 1 << 16), st.integers(0, 1 << 16)),
                 min_size=1, max_size=3),
)
def test_engine_equals_lark_on_mutated_specs(seed, ops):
    pool = seeds()
    text = mutate(pool[seed % len(pool)], ops)
    outcome = fast(text)
    assert outcome == stock(text)
    if outcome == "error":
        engine_side, reference = diagnostic_pair(text)
        assert engine_side == reference is not None


def test_keywords_read_as_names_where_only_a_name_fits():
    # `entity`, `rule` and `value` are keywords, but as field names only NAME fits.
    text = src("""
        entity A {
            entity: String
            rule: Integer
            value: a.value + 1
        }
    """)
    assert fast(text) == stock(text) != "error"
    fields = parse_text(text).module.decls[0].fields
    assert [f.name for f in fields] == ["entity", "rule", "value"]


SHAPES = {
    "negation": lambda n: "- " * n + "1",
    "not": lambda n: "not " * n + "true",
    "attribute": lambda n: "a" + ".b" * n,
    "sum": lambda n: " + ".join(["1"] * n),
    "call": lambda n: "f(" * n + "1" + ")" * n,
}


def nested(shape: str, depth: int) -> str:
    return src(f"entity A {{\n    x: {SHAPES[shape](depth)}\n}}")


@pytest.mark.parametrize("shape", SHAPES)
def test_nesting_beyond_the_limit_is_a_diagnostic_not_a_crash(shape):
    result = parse_text(nested(shape, lalr.MAX_DEPTH + 5), "deep.allium")
    assert result.module is None
    [diag] = result.diagnostics
    assert diag.code == "allium.syntax.tooDeep"
    assert diag.span.start.line == 3


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("command", [["check", "--specs-only"], ["plan"], ["plan", "--format", "json"], ["parse", "--json"]])
def test_nesting_within_the_limit_goes_through_every_command(tmp_path, shape, command):
    # Within the limit, everything downstream (recursive AST walks, the JSON
    # encoder) must cope, or the limit is too high.
    path = tmp_path / "deep.allium"
    path.write_text(nested(shape, lalr.MAX_DEPTH - 15))
    result = CliRunner().invoke(main, [*command, str(path)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "tooDeep" not in result.output


def test_tables_from_a_freshly_compiled_grammar_survive_marshal():
    # A grammar compiled from scratch names rules with lark Tokens, which
    # marshal refuses; tables_from must hand back plain data.
    tables = tables_from(stock_parser(), AstBuilder)
    copied = marshal.loads(marshal.dumps(tables))
    assert copied == tables
    engine = Engine(copied, stock_parser)
    text = SAMPLES[0]
    decls, comments = engine.parse(text, AstBuilder(SourceFile("s.allium", text)))
    assert (decls, list(comments)) == stock(text)


def test_an_unreadable_engine_cache_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    tables = grammar_module._engine_tables()
    [path] = (tmp_path / "allium").glob("engine-*.marshal")
    assert marshal.loads(path.read_bytes()) == tables
    path.write_bytes(b"\x00 not marshal data")
    assert grammar_module._engine_tables() == tables
    assert marshal.loads(path.read_bytes()) == tables
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".engine-")] == []


def test_the_engine_cache_is_keyed_on_the_code_that_makes_it(tmp_path, monkeypatch):
    # Tables (compiled reducers among them) made by other code than the
    # running engine's must not be loaded.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    source = tmp_path / "reductions.py"
    source.write_text("one version")
    monkeypatch.setattr(grammar_module, "TABLE_SOURCES", (*grammar_module.TABLE_SOURCES, source))
    grammar_module._engine_tables()
    source.write_text("another version")
    grammar_module._engine_tables()
    assert len(list((tmp_path / "cache" / "allium").glob("engine-*.marshal"))) == 2


def test_without_a_cache_folder_the_engine_is_built_in_memory(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    assert grammar_module.cache_dir() is None
    engine = Engine(grammar_module._engine_tables(), stock_parser)  # another compilation's state numbers
    text = SAMPLES[0]
    decls, comments = engine.parse(text, AstBuilder(SourceFile("s.allium", text)))
    assert (decls, list(comments)) == stock(text)


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX permissions")
def test_a_cache_folder_others_can_write_to_is_not_used(tmp_path, monkeypatch):
    # Its files become code when loaded (lark's pickle, the compiled reducers).
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert grammar_module.cache_dir() == tmp_path / "allium"
    (tmp_path / "allium").chmod(0o777)
    with pytest.warns(RuntimeWarning, match="not using the cache folder .*: it is writable by other users"):
        assert grammar_module.cache_dir() is None
    (tmp_path / "allium").chmod(0o755)
    assert grammar_module.cache_dir() == tmp_path / "allium"


def test_contextual_lexing_works_with_a_lark_compiled_separately():
    # After `order.` only a name fits, but the scanner over all terminals reads
    # `total/count` as one qualified name: the state's own scanner must give
    # `total`, and be found by its terminals, since another compilation of
    # the grammar numbers its LALR states differently.
    engine = Engine(tables_from(grammar_module.build_parser(), AstBuilder), stock_parser)
    asked = []
    original = engine._contextual_token
    engine._contextual_token = lambda *args: asked.append(args[3:5]) or original(*args)
    text = src("entity A {\n    x: order.total/count\n}")
    decls, comments = engine.parse(text, AstBuilder(SourceFile("s.allium", text)))
    assert asked == [("QNAME", "total/count")]
    assert (decls, list(comments)) == stock(text)
    assert decls[0].fields[0].value.op == "/"


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX permissions")
def test_the_cli_says_once_why_it_does_not_use_the_cache_folder(tmp_path):
    shared = tmp_path / "cache" / "allium"
    shared.mkdir(parents=True)
    shared.chmod(0o777)
    spec = tmp_path / "a.allium"
    spec.write_text("-- allium: 3\nentity A {\n    x: String\n}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "allium", "parse", str(spec)],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == [f"warning: not using the cache folder {shared}: it is writable by other users"]
    assert list(shared.iterdir()) == []  # nothing written there either


def test_lark_caches_of_different_grammars_do_not_share_a_file(tmp_path, monkeypatch):
    # Two checkouts with different grammars (one branch edits it) must not
    # overwrite each other's compiled grammar on every run.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    names = set()
    for grammar in (grammar_module.GRAMMAR_PATH.read_text(), grammar_module.GRAMMAR_PATH.read_text() + "\n// edited\n"):
        path = tmp_path / "allium.lark"
        path.write_text(grammar)
        monkeypatch.setattr(grammar_module, "GRAMMAR_PATH", path)
        grammar_module.build_parser.cache_clear()
        grammar_module.build_parser()
        names |= {p.name for p in (tmp_path / "allium").glob("*.lark-cache")}
    grammar_module.build_parser.cache_clear()
    assert len(names) == 2
