"""Recording every call, and answering from the recordings alone."""

from __future__ import annotations

import json

import pytest

from allium.providers.base import ProviderError, Request, Response, TranscriptMissingError, Usage
from allium.providers.replay import ReplayProvider
from allium.providers.transcripts import RecordingProvider, Transcript, TranscriptStore
from tests.fakeapi import scenarios as sc
from tests.providers.conftest import KEY, make_request

FILES = {"pkg/orders.py": "def place() -> None:\n    pass\n", "tests/test_orders.py": "x = 1\n"}


class Counting:
    """A stub provider that answers with a fixed response and counts calls."""

    name = "stub"

    def __init__(self, response: Response | None = None, error: Exception | None = None):
        self.calls = 0
        self.response = response or Response(({"type": "text", "text": "hi"},), (("a.py", "1\n"),),
                                             "end_turn", "claude-haiku-4-5", Usage(10, 5, 0, 0))
        self.error = error

    def complete(self, request: Request) -> Response:
        self.calls += 1
        if self.error:
            raise self.error
        return self.response


def test_live_call_is_recorded_by_hash_without_the_key(fake, make_provider, tmp_path):
    store = TranscriptStore(tmp_path / "t", secrets=[KEY])
    fake.script(*sc.files_then_done(FILES))
    request = make_request()
    response = RecordingProvider(make_provider(), store).complete(request)

    path = tmp_path / "t" / f"{request.request_hash()}.json"
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == [path.name]  # no temp files left
    raw = path.read_bytes()
    assert KEY.encode() not in raw and b"LEAKCHECK" not in raw
    data = json.loads(raw)
    assert data["request"] == request.to_payload()
    assert data["unit"] == "orders" and data["provider"] == "anthropic"
    assert data["usage"] == response.usage.to_dict()
    assert data["usage"]["cache_creation_input_tokens"] > 0
    assert data["cost_usd"] == pytest.approx(response.usage.cost_usd("claude-haiku-4-5"))
    assert data["duration_s"] >= 0 and data["created_at"].endswith("+00:00")
    assert Response.from_dict(data["response"]) == response


def test_replay_returns_the_recorded_response_byte_for_byte(fake, make_provider, tmp_path):
    store = TranscriptStore(tmp_path)
    fake.script(*sc.files_then_done(FILES, note="notes"))
    recorded = RecordingProvider(make_provider(), store).complete(make_request())
    requests_before = len(fake.log)

    replayed = ReplayProvider(store).complete(make_request())
    assert replayed == recorded
    assert json.dumps(replayed.to_dict()) == json.dumps(recorded.to_dict())
    assert dict(replayed.files) == FILES
    assert len(fake.log) == requests_before  # no network


def test_missing_transcript_names_the_unit_and_hash(tmp_path):
    request = make_request(unit="billing")
    with pytest.raises(TranscriptMissingError, match="'billing'") as info:
        ReplayProvider(TranscriptStore(tmp_path)).complete(request)
    assert info.value.request_hash == request.request_hash()
    assert request.request_hash() in str(info.value) and info.value.unit == "billing"


def test_replay_rejects_a_transcript_holding_another_request(tmp_path):
    store = TranscriptStore(tmp_path)
    RecordingProvider(Counting(), store).complete(make_request())
    path = store.path_for(make_request().request_hash())
    data = json.loads(path.read_text())
    data["request"]["messages"][0]["content"] = "edited by hand"
    path.write_text(json.dumps(data))
    with pytest.raises(ProviderError, match="does not hold the request"):
        ReplayProvider(store).complete(make_request())


def test_store_refuses_to_write_a_credential(tmp_path):
    store = TranscriptStore(tmp_path, secrets=[KEY])
    with pytest.raises(ProviderError, match="credential"):
        RecordingProvider(Counting(), store).complete(make_request(prompt=f"my key is {KEY}"))
    assert list(tmp_path.iterdir()) == []


def test_store_reads_secrets_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    with pytest.raises(ProviderError):
        RecordingProvider(Counting(), TranscriptStore(tmp_path)).complete(
            make_request(prompt=KEY))


def test_failed_calls_are_not_recorded(tmp_path):
    store = TranscriptStore(tmp_path)
    with pytest.raises(ProviderError):
        RecordingProvider(Counting(error=ProviderError("boom")), store).complete(make_request())
    assert list(store) == []


def test_reuse_answers_finished_units_without_asking_again(tmp_path):
    store = TranscriptStore(tmp_path)
    inner = Counting()
    first = RecordingProvider(inner, store, reuse=True).complete(make_request())
    again = RecordingProvider(inner, store, reuse=True).complete(make_request())
    other = RecordingProvider(inner, store, reuse=True).complete(make_request(prompt="new"))
    assert inner.calls == 2 and first == again == other
    assert len(list(store)) == 2
    RecordingProvider(inner, store).complete(make_request())  # without reuse: always asks
    assert inner.calls == 3


def test_store_overwrites_atomically_and_reports_corruption(tmp_path):
    store = TranscriptStore(tmp_path)
    request = make_request()
    transcript = Transcript(request.request_hash(), "orders", "stub", request.to_payload(),
                            Counting().response, 0.5, "2025-01-01T00:00:00+00:00")
    store.put(transcript)
    store.put(transcript)
    assert [p.name for p in tmp_path.iterdir()] == [f"{request.request_hash()}.json"]
    assert store.get(request.request_hash()) == transcript
    assert request.request_hash() in store and "0" * 64 not in store
    store.path_for(request.request_hash()).write_text("{not json")
    with pytest.raises(ProviderError, match="corrupt transcript"):
        store.get(request.request_hash())
    with pytest.raises(ValueError):
        store.path_for("../escape")


@pytest.mark.parametrize("data", [b"\xff\xfe{}", b"[1, 2]", b"[" * 50_000, b'{"request_hash": "x"}'])
def test_a_corrupt_transcript_is_one_clear_error(tmp_path, data):
    from allium.providers.base import ProviderError

    store = TranscriptStore(tmp_path)
    (tmp_path / ("ab" * 32 + ".json")).write_bytes(data)
    with pytest.raises(ProviderError, match="corrupt transcript"):
        store.get("ab" * 32)
