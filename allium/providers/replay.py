"""Answer requests from recorded transcripts, by request hash, without any network."""

from __future__ import annotations

from allium.providers.base import ProviderError, Request, Response, TranscriptMissingError
from allium.providers.base import canonical_json
from allium.providers.transcripts import TranscriptStore


class ReplayProvider:
    name = "replay"

    def __init__(self, store: TranscriptStore) -> None:
        self.store = store

    def complete(self, request: Request) -> Response:
        request_hash = request.request_hash()
        transcript = self.store.get(request_hash)
        if transcript is None:
            raise TranscriptMissingError(request.unit, request_hash, str(self.store.root))
        # The name is only a hash of the content; check the content itself so a
        # hand-edited or mis-copied transcript cannot answer the wrong question.
        if canonical_json(transcript.request) != canonical_json(request.to_payload()):
            raise ProviderError(f"transcript {self.store.path_for(request_hash)} does not hold "
                                f"the request of unit {request.unit!r}", unit=request.unit)
        return transcript.response
