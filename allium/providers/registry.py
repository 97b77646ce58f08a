"""Which providers `allium generate --provider NAME` can use: one registry.

A provider is made by a factory, ``factory(settings) -> Provider``, where
:class:`Settings` carries what a provider may need from the command line.
allium's own factories are listed here; another package adds one through
the ``allium.providers`` entry-point group, as llm's plugins do::

    [project.entry-points."allium.providers"]
    mymodel = "mypackage.provider:make_provider"

Entry points are read only when a name is not one of allium's own, or when
the list of names is asked for (help, an unknown name), so a run with a
built-in provider pays nothing for the lookup.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from allium.errors import UsageError

GROUP = "allium.providers"


@dataclass(frozen=True)
class Settings:
    transcripts: Any  # the TranscriptStore of this run
    exchange_dir: str
    on_progress: Callable[[Any], None] | None = None


def _anthropic(settings: Settings) -> Any:
    from allium.providers.anthropic import AnthropicProvider

    return AnthropicProvider(on_progress=settings.on_progress)


def _replay(settings: Settings) -> Any:
    from allium.providers.replay import ReplayProvider

    return ReplayProvider(settings.transcripts)


def _exchange(settings: Settings) -> Any:
    from allium.providers.exchange import ExchangeProvider

    return ExchangeProvider(settings.exchange_dir)


BUILTIN: dict[str, Callable[[Settings], Any]] = {
    "anthropic": _anthropic,
    "replay": _replay,
    "exchange": _exchange,
}


def names() -> list[str]:
    """Every provider name: allium's own first, then the installed plugins', sorted."""
    return [*BUILTIN, *sorted(set(_plugins()) - set(BUILTIN))]


def factory(name: str) -> Callable[[Settings], Any]:
    if name in BUILTIN:
        return BUILTIN[name]
    entry = _plugins().get(name)
    if entry is None:
        raise UsageError(f"unknown provider {name!r}; choose from {', '.join(names())}")
    try:
        return entry.load()
    except Exception as exc:  # noqa: BLE001 - a broken plugin is the user's to fix, with its name
        raise UsageError(f"provider {name!r} ({entry.value}) cannot be loaded: {exc}") from None


def _plugins() -> dict[str, Any]:
    from importlib.metadata import entry_points

    return {entry.name: entry for entry in entry_points(group=GROUP)}
