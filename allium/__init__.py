"""allium: Allium specifications in, working and tested Python out.

The pipeline, one package per stage: syntax (parse) -> check -> plan ->
prompt -> generate -> verify.  This module is the small public API.
"""

from __future__ import annotations

__version__ = "0.1.0"

from allium.syntax import ParseResult, parse_file, parse_text  # noqa: E402

__all__ = ["ParseResult", "parse_file", "parse_text", "__version__"]
