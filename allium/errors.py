"""The exception hierarchy. Diagnostics are data; exceptions are for aborting."""

from __future__ import annotations


class AlliumError(Exception):
    """Root of every error allium raises on purpose."""


class UsageError(AlliumError):
    """The command line asked for something impossible (exit code 2)."""
