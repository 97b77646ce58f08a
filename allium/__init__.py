"""allium: Allium specifications in, working and tested Python out.

The pipeline, one package per stage: syntax (parse) -> check -> plan ->
prompt -> generate -> verify.  This module is the small public API; it loads
the parser lazily so that `import allium` (the pytest plugin, say) stays cheap.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["ParseResult", "parse_file", "parse_text", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("ParseResult", "parse_file", "parse_text"):
        from allium import syntax

        return getattr(syntax, name)
    raise AttributeError(f"module 'allium' has no attribute {name!r}")
