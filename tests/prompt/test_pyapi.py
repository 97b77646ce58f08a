"""The Python interface of a dependency module, as shown in a unit's request."""

import pytest

from allium.prompt.pyapi import python_interface

CASES = [
    (  # public function: signature and first docstring line, body and private helpers dropped
        'def evaluate(envelope: "Envelope", limit: int = 5) -> bool:\n'
        '    """Decide one envelope.\n\n    More prose.\n    """\n'
        '    return _helper(envelope)\n\n'
        'def _helper(x):\n    return True\n',
        'def evaluate(envelope: \'Envelope\', limit: int=5) -> bool: ...\n'
        '    """Decide one envelope."""',
    ),
    (  # dataclass: decorator, fields with defaults, async and public methods; private method dropped
        "import dataclasses\n"
        "@dataclasses.dataclass(frozen=True)\n"
        "class Row(Base):\n"
        "    id: str\n    n: int = 0\n"
        "    async def load(self, key: str) -> 'Row':\n        return self\n"
        "    def _secret(self):\n        pass\n",
        "@dataclasses.dataclass(frozen=True)\n"
        "class Row(Base):\n"
        "    id: str\n    n: int = 0\n"
        "    async def load(self, key: str) -> 'Row': ...",
    ),
    (  # the rule marker is not part of the interface; constants in capitals are
        "LIMIT = 10\nlower = 3\n"
        "@implements('Open')\ndef open_account(state) -> None:\n    pass\n",
        "LIMIT = 10\n\ndef open_account(state) -> None: ...",
    ),
    ("def broken(:\n", ""),  # a file that does not parse has no interface
]


@pytest.mark.parametrize(("source", "expected"), CASES)
def test_python_interface(source: str, expected: str) -> None:
    assert python_interface(source) == expected


def test_dependency_api_reaches_the_request(tmp_path) -> None:
    from allium.generate.units import build_plan
    from allium.prompt.builder import render_unit
    from allium.syntax import parse_text

    core = parse_text("-- allium: 3\nentity Thing {\n    n: Integer\n}\n").module
    user = parse_text('-- allium: 3\nuse "./core.allium" as core\n'
                      "entity User {\n    thing: core/Thing\n}\n").module
    plan = build_plan({str(tmp_path / "core.allium"): core, str(tmp_path / "user.allium"): user},
                      package="app", root=tmp_path, obligations=lambda m: ())
    (tmp_path / "out" / "app").mkdir(parents=True)
    before = render_unit(plan, plan.unit("user"), code_root=tmp_path / "out")
    assert "generated Python API" not in before  # core is not generated yet
    (tmp_path / "out" / "app" / "core.py").write_text("class Thing:\n    n: int\n")
    after = render_unit(plan, plan.unit("user"), code_root=tmp_path / "out")
    assert "class Thing:\n    n: int" in after
