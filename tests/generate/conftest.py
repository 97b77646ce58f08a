"""Fixtures shared by the generate tests."""

from __future__ import annotations

import pytest

from allium.generate.units import Plan, load_plan
from tests.generate.test_end_to_end import SPECS


@pytest.fixture
def plan() -> Plan:
    """The plan of the two-unit e2e fixture (counters, alarms)."""
    return load_plan(sorted(SPECS.glob("*.allium")))
