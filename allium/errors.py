"""The exception hierarchy. Diagnostics are data; exceptions are for aborting."""

from __future__ import annotations


class AlliumError(Exception):
    """Root of every error allium raises on purpose."""


class UsageError(AlliumError):
    """The command line asked for something impossible (exit code 2)."""


class InternalError(AlliumError):
    """A bug in allium (not in the user's input): say so, and where, for a bug report."""

    @classmethod
    def from_exception(cls, doing: str, exc: BaseException) -> InternalError:
        """The error for `exc`, raised while `doing` something, naming the innermost frame."""
        import traceback

        frames = traceback.extract_tb(exc.__traceback__)
        where = f" at {_short(frames[-1].filename)}:{frames[-1].lineno} in {frames[-1].name}" if frames else ""
        return cls(
            f"internal error while {doing}: {type(exc).__name__}: {exc}{where}. This is a bug in allium, "
            "not in your input; please report it with this message (ALLIUM_TRACEBACK=1 prints the traceback)"
        )


def _short(filename: str) -> str:
    """`.../site-packages/allium/syntax/build.py` -> `allium/syntax/build.py`."""
    parts = filename.replace("\\", "/").split("/")
    return "/".join(parts[parts.index("allium"):]) if "allium" in parts else filename
