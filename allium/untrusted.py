"""How allium runs model-written code: with a scrubbed environment, optionally limited.

Generated tests are imported while ``allium generate`` checks that they
collect, and run by ``allium check --run``. That code came from a model (or
from whoever wrote an exchange answer), so it must not see API keys, tokens
or anything else in the caller's environment: it gets an allow-list of
variables a Python process needs (``PATH``, locale, temp folders, ``HOME``,
``PYTHONPATH``...) and nothing else. ``ALLIUM_PASS_ENV`` (names separated
by commas or spaces) lets more through when a package really needs them.

Optional limits (POSIX only), off unless set: ``ALLIUM_TEST_MEMORY_MB``
caps the address space and ``ALLIUM_TEST_CPU_SECONDS`` the CPU time of the
pytest process. This is not a sandbox: the code still runs as the user, with
the user's files; it only does not inherit the user's secrets by accident.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping

ALLOWED = frozenset({
    "PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TEMP", "TMP", "TERM", "NO_COLOR", "COLUMNS",
    "PYTHONPATH", "PYTHONUTF8", "PYTHONIOENCODING", "PYTHONHASHSEED", "PYTHONDONTWRITEBYTECODE",
    "VIRTUAL_ENV", "SYSTEMROOT", "SYSTEMDRIVE", "WINDIR", "COMSPEC", "PATHEXT",
})
ALLOWED_PREFIXES = ("LC_",)
PASS_ENV = "ALLIUM_PASS_ENV"
MEMORY_ENV = "ALLIUM_TEST_MEMORY_MB"
CPU_ENV = "ALLIUM_TEST_CPU_SECONDS"


def scrubbed_env(source: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
    """The environment for model-written code: the allow-list of ``source``, plus ``extra``."""
    source = os.environ if source is None else source
    passed = set(re.split(r"[,\s]+", source.get(PASS_ENV, "").strip())) - {""}
    env = {name: value for name, value in source.items()
           if name in ALLOWED or name in passed or name.startswith(ALLOWED_PREFIXES)}
    env.update(extra)
    return env


def resource_limits(source: Mapping[str, str] | None = None) -> Callable[[], None] | None:
    """A ``preexec_fn`` applying the optional limits, or None when none is set (or on Windows)."""
    source = os.environ if source is None else source
    memory, cpu = _positive(source, MEMORY_ENV), _positive(source, CPU_ENV)
    if memory is None and cpu is None:
        return None
    try:
        import resource
    except ImportError:  # Windows: no rlimits
        return None

    def apply() -> None:  # runs in the child between fork and exec
        if memory is not None:
            resource.setrlimit(resource.RLIMIT_AS, (memory << 20, memory << 20))
        if cpu is not None:
            resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))

    return apply


def _positive(source: Mapping[str, str], name: str) -> int | None:
    text = source.get(name, "").strip()
    if not text:
        return None
    if not text.isdigit() or int(text) == 0:
        from allium.errors import UsageError

        raise UsageError(f"{name} must be a positive whole number, not {text!r}")
    return int(text)
