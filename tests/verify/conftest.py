"""Shared helpers for the verify tests.

The fixture projects under fixtures/ are *inputs*: their tests are meant to be
collected by the subprocess pytest that allium.verify starts, never by this run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fixture_projects import copy_fixture

collect_ignore_glob = ["fixtures/*"]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """copy_fixture into a module-scoped temp dir: ``project("covered")``."""

    def make(name: str) -> Path:
        return copy_fixture(name, tmp_path_factory.mktemp(name) / name)

    return make
