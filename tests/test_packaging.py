"""The wheel must carry every subpackage, the grammar and the templates."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _setuptools() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_allium_subpackage_is_listed() -> None:
    on_disk = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for p in (ROOT / "allium").rglob("__init__.py")
        if "__pycache__" not in p.parts
    }
    listed = set(_setuptools()["packages"])
    assert on_disk - listed == set(), "add these to [tool.setuptools] packages"


def test_templates_ship_as_package_data() -> None:
    config = _setuptools()
    assert config["package-dir"]["allium.templates"] == "templates"
    assert "*.j2" in config["package-data"]["allium.templates"]
    assert any((ROOT / "templates").glob("*.j2"))


def test_grammar_ships_as_package_data() -> None:
    assert "*.lark" in _setuptools()["package-data"]["allium.syntax"]
    assert (ROOT / "allium" / "syntax" / "allium.lark").is_file()


def test_type_hints_ship_with_the_package() -> None:
    assert "py.typed" in _setuptools()["package-data"]["allium"]
    assert (ROOT / "allium" / "py.typed").is_file()
