"""benchmarks/showcase_encoding.py checks the generated encoder's bytes before timing it:
its plain encoder must match core.allium's own vector, and a changed byte must fail the check."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from benchmarks import showcase_encoding as bench

GENERATED = Path(__file__).resolve().parents[2] / "generated"

# core.allium, resolved question "What are the canonical bytes, exactly?", vector E1.
E1_HEX = ("00000003636531 00000008456e76656c6f7065 00000003722d31 00000003632d31 "
          "000000076465706f736974 000000056163632d31 00 00 00000000000000fa")
E1_FINGERPRINT = "ce1:c8ebe8d71cf5b20153f2f8b63173c892ebc1497ff0ce7b03653c0816d295c0f9"


class Kind:
    value = "deposit"


def test_plain_encoder_gives_the_spec_vector() -> None:
    fields = [("r-1", False), ("c-1", False), (Kind(), False), ("acc-1", False), (None, True), (None, True),
              (250, False)]
    data = bench.plain_encoding("Envelope", fields)
    assert data == bytes.fromhex(E1_HEX.replace(" ", ""))
    assert bench.plain_digest(data) == E1_FINGERPRINT


@pytest.fixture(scope="module")
def core() -> types.ModuleType:
    sys.path.insert(0, str(GENERATED))
    from ledger import core as generated_core
    return generated_core


def test_generated_bytes_pass_the_check(core: types.ModuleType) -> None:
    assert bench.check_bytes(core) == 9


def test_a_changed_byte_fails_the_check(core: types.ModuleType) -> None:
    wrong = types.SimpleNamespace(**vars(core))
    wrong.encode_envelope = lambda env: core.encode_envelope(env)[:-1] + b"\xff"
    with pytest.raises(AssertionError, match="Envelope bytes differ"):
        bench.check_bytes(wrong)
