"""verify: pin generated code to the spec.

Tests declare the obligations they discharge with
``@pytest.mark.allium("rule-success.EntryExpires", ...)`` (the marker is
registered by :mod:`allium.verify.plugin`, a ``pytest11`` plugin), and
implementation code may declare the rules it implements with
:func:`implements`.  Importing this package never loads the parser.
"""

from allium.verify.markers import implemented_rules, implements

__all__ = ["implements", "implemented_rules"]
