"""rule ConsumeLog: one consumer task per log partition, run by the leader only.

Each task reads from the store's next_offset, admits the records in offset
order with channel log and their (partition, offset), keeps at most
log_batch_max records in flight, dead-letters a record that is not a valid
Envelope (so the checkpoint passes it) and re-reads from the store's
checkpoint after every window, so a record whose batch failed is retried and
a decided one is never decided twice (the store records its position).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from allium.verify import implements
from ledger.core import Channel, Envelope
from ledger.node import Config, NodeProcess, consume_log
from ledger.node_http_schema import EnvelopeInvalid, envelope_from_json
from ledger.node_pipeline import Answer
from ledger.node_ports import LogPort, PortUnavailable, StorePort

log = logging.getLogger("ledger.node.log")

Submit = Callable[[Envelope, Channel, int, int], Awaitable[Answer]]

# ASSUMPTION: node.allium says an item agreed as "fault" is never committed and is
# answered 503, which leaves a log record's checkpoint where it is.  An evaluation
# bug raises on every replica, so retrying such a record forever would stall its
# whole partition; after this many evaluation_fault answers in a row for one offset
# the record is dead-lettered (cause "evaluation_fault: ...").  A dead letter records
# no outcome, so the request is still never committed, not even as a rejection.
EVALUATION_FAULT_RETRIES = 3


def payload_digest(payload: str) -> str:
    """The dead letter's payload digest: lowercase hex SHA-256 of the UTF-8 payload."""
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def decode_payload(payload: str) -> Envelope:
    """A log record's payload (the JSON text of a core Envelope) as an Envelope."""
    try:
        data = msgspec.json.decode(payload)
    except msgspec.DecodeError as exc:
        raise EnvelopeInvalid(f"payload is not JSON: {exc}") from None
    return envelope_from_json(data)


class PartitionConsumer:
    """One partition's consumer for one leadership epoch."""

    def __init__(self, process: NodeProcess, partition: int, store: StorePort, log_: LogPort,
                 submit: Submit, config: Config) -> None:
        self.process = process
        self.partition = partition
        self.store = store
        self.log = log_
        self.submit = submit
        self.config = config
        self.handled = 0
        self._faults: dict[int, int] = {}  # offset -> evaluation_fault answers in a row

    @implements("ConsumeLog")
    async def run(self) -> None:
        """Consume until the process is no longer leader (or the task is cancelled)."""
        backoff = self.config.heartbeat_micros / 1e6
        while True:
            consume_log(self.process, self.partition)  # raises Rejected once no longer leader
            try:
                progressed = await self.window()
            except PortUnavailable as exc:
                log.warning("partition %d: %s", self.partition, exc)
                progressed = False
            if not progressed:
                await asyncio.sleep(backoff)

    async def window(self) -> bool:
        """Read up to log_batch_max records from the checkpoint and decide them; True if any."""
        start = await self.store.next_offset(self.partition)
        records = await self.log.read(self.partition, start, self.config.log_batch_max)
        if not records:
            return False
        # Admission happens in offset order (each submit queues synchronously up to
        # its first await on the store, and log items skip that lookup).
        waits = [asyncio.ensure_future(self.handle(r)) for r in sorted(records, key=lambda r: r.offset)]
        await asyncio.gather(*waits)
        return True

    async def handle(self, record: Any) -> None:
        """Admit one record; invalid payloads and reused ids are dead-lettered."""
        try:
            envelope = decode_payload(record.payload)
        except EnvelopeInvalid as exc:
            await self._dead_letter(record, f"invalid_envelope: {exc}")
            return
        answer = await self.submit(envelope, Channel.log, self.partition, record.offset)
        # ASSUMPTION: a reused request id on the log is dead-lettered so the checkpoint passes it.
        if answer.status == 409 and answer.body.get("error") == "fingerprint_mismatch":
            await self._dead_letter(record, "fingerprint_mismatch")
        elif answer.status == 422:
            await self._dead_letter(record, f"invalid_envelope: {answer.body.get('detail')}")
        elif answer.status < 500:
            self.handled += 1
        elif answer.body.get("error") == "evaluation_fault":
            await self._count_fault(record, str(answer.body.get("detail", "")))

    async def _count_fault(self, record: Any, detail: str) -> None:
        """A record whose evaluation keeps faulting is dead-lettered after a few tries."""
        tries = self._faults.get(record.offset, 0) + 1
        self._faults[record.offset] = tries
        if tries >= EVALUATION_FAULT_RETRIES:
            self._faults.pop(record.offset, None)
            await self._dead_letter(record, f"evaluation_fault: {detail}")

    async def _dead_letter(self, record: Any, cause: str) -> None:
        log.warning("partition %d offset %d dead-lettered: %s", self.partition, record.offset, cause)
        await self.store.dead_letter(self.partition, record.offset, payload_digest(record.payload), cause)
        self.handled += 1
