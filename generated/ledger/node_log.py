"""rule ConsumeLog: one consumer task per log partition, run by the leader only.

Each task reads from the store's next_offset, admits the records in offset
order with channel log and their (partition, offset), keeps at most
log_batch_max records in flight, and dead-letters a record that is not a valid
Envelope (so the checkpoint passes it).  Records are decided in offset order:
the store refuses a record beyond its partition's checkpoint (out_of_order), so
when any record of a window is answered 503 the rest of the window is dropped
and the next window reads again from store.next_offset, retrying the refused
record before anything after it.  The store is asked for next_offset only when
the consumer starts and after such a rewind (or a failed read or store call):
after a window whose records were all decided the checkpoint has passed its last
record, so the next window starts right after it without a store round trip.
A failed read admits nothing; an empty read is polled again within milliseconds
(backing off to 50 ms).  A window's records are queued together without a task
per record: all are admitted in offset order, then their answers are awaited in
order.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
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

# How the consumer admits a record: Pipeline.admit, which queues it at once and returns
# the future its answer arrives on (or the answer itself when it is refused at once).
# A coroutine function is accepted too; it is then only queued when awaited.
Submit = Callable[[Envelope, Channel, int, int], "Answer | Awaitable[Answer]"]

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


# ConsumeLog's @guidance: after an empty read poll again within a few milliseconds,
# doubling up to at most 50 ms (not a heartbeat).
POLL_MIN_SECONDS = 0.002
POLL_MAX_SECONDS = 0.05


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
        self.rewinds = 0  # windows cut short by a 503 (the consumer read again from next_offset)
        self._faults: dict[int, int] = {}  # offset -> evaluation_fault answers in a row
        # Where the next window starts when it is known without asking the store: None
        # at the start and after a rewind, a failed read or a failed store call, so the
        # next window asks store.next_offset (ConsumeLog's @guidance).
        self._resume_at: int | None = None

    @implements("ConsumeLog")
    async def run(self) -> None:
        """Consume until the process is no longer leader (or the task is cancelled)."""
        idle = POLL_MIN_SECONDS
        failure_wait = self.config.heartbeat_micros / 1e6
        while True:
            consume_log(self.process, self.partition)  # raises Rejected once no longer leader
            try:
                progressed = await self.window()
            except PortUnavailable as exc:
                # A failed read is never taken for records: wait, then read again
                # from the store's checkpoint.
                log.warning("partition %d: %s", self.partition, exc)
                await asyncio.sleep(failure_wait)
                continue
            if progressed:
                idle = POLL_MIN_SECONDS
                continue
            await asyncio.sleep(idle)
            idle = min(idle * 2, POLL_MAX_SECONDS)

    async def window(self) -> bool:
        """Read up to log_batch_max records from the checkpoint and decide them in offset order.

        True when the window was read and fully decided.  When a record is answered
        503 the rest of the window is dropped and False is returned, so the next
        window reads again from store.next_offset and retries the refused record
        before anything after it (the store refuses those out_of_order anyway).

        ConsumeLog's @guidance: the store is asked for next_offset only when the
        consumer starts and after a rewind; a fully decided window (every record
        committed, replayed, refused for good or dead-lettered, so the checkpoint
        has passed its last record) lets the next window start right after its last
        record, and an empty read keeps its start, with no store round trip.
        """
        start = self._resume_at
        if start is None:
            start = await self.store.next_offset(self.partition)
        # Forgotten until this window ends decided (or empty): a 503, a failed read or
        # a failed store call (PortUnavailable propagates) makes the next window ask the
        # store's checkpoint again.
        self._resume_at = None
        records = sorted(await self.log.read(self.partition, start, self.config.log_batch_max),
                         key=lambda r: r.offset)
        if not records:
            self._resume_at = start
            return False
        # Valid records are admitted together up to the next invalid one (which is
        # dead-lettered only once everything before it is decided, so the store's
        # checkpoint reaches it): one batch can carry a whole window.
        segment: list[tuple[Any, Envelope]] = []
        for record in records:
            try:
                segment.append((record, decode_payload(record.payload)))
                continue
            except EnvelopeInvalid as exc:
                invalid = exc
            if not await self._decide(segment):
                return self._rewind()
            segment = []
            await self._dead_letter(record, f"invalid_envelope: {invalid}")
        if not await self._decide(segment):
            return self._rewind()
        # ASSUMPTION: a window's answers all arrive after their commits returned, and a
        # record's answer below 500 means its position is recorded (committed, duplicate,
        # position_taken) or dead-lettered, so the checkpoint is past the last record.
        # Were it not (another writer), the next window's records would be refused
        # out_of_order (503) and the consumer would rewind to the store's checkpoint.
        self._resume_at = records[-1].offset + 1
        return True

    def _rewind(self) -> bool:
        """A window cut short by a 503: the next window asks store.next_offset again."""
        self.rewinds += 1
        self._resume_at = None
        return False

    async def _decide(self, segment: list[tuple[Any, Envelope]]) -> bool:
        """Admit the records together (in offset order) and handle their answers in order.

        ConsumeLog's @guidance: the window is queued without a task per record: every
        record is admitted first (each admission queues it synchronously, so they enter
        the pipeline in offset order), then their answers are awaited in order.  False
        at the first record answered 503: the records after it are dropped (their
        answers are still awaited, so none of them is in flight when the window is read
        again from next_offset).
        """
        if not segment:
            return True
        # ASSUMPTION: after a 503 the dropped records' answers are still awaited (they
        # are quick: the store refuses them out_of_order), as the whole window's were
        # before, so no record is in flight twice when the window is read again.
        partition, submit = self.partition, self.submit
        waits = [submit(envelope, Channel.log, partition, record.offset) for record, envelope in segment]
        for index, (record, _) in enumerate(segment):
            answer = await _answer_of(waits[index])
            if not await self.handle_answer(record, answer):
                await _drain(waits[index + 1:])
                return False
        return True

    async def handle_answer(self, record: Any, answer: Answer) -> bool:
        """One record's answer; False when it was refused (503) and must be retried."""
        # ASSUMPTION: a reused request id on the log is dead-lettered so the checkpoint passes it.
        if answer.status == 409 and answer.body.get("error") == "fingerprint_mismatch":
            await self._dead_letter(record, "fingerprint_mismatch")
        elif answer.status == 422:
            await self._dead_letter(record, f"invalid_envelope: {answer.body.get('detail')}")
        elif answer.status < 500:
            self._faults.pop(record.offset, None)
            self.handled += 1
        else:
            if answer.body.get("error") == "evaluation_fault":
                return await self._count_fault(record, str(answer.body.get("detail", "")))
            return False
        return True

    async def _count_fault(self, record: Any, detail: str) -> bool:
        """A record whose evaluation keeps faulting is dead-lettered after a few tries."""
        tries = self._faults.get(record.offset, 0) + 1
        self._faults[record.offset] = tries
        if tries < EVALUATION_FAULT_RETRIES:
            return False
        self._faults.pop(record.offset, None)
        await self._dead_letter(record, f"evaluation_fault: {detail}")
        return True

    async def _dead_letter(self, record: Any, cause: str) -> None:
        log.warning("partition %d offset %d dead-lettered: %s", self.partition, record.offset, cause)
        await self.store.dead_letter(self.partition, record.offset, payload_digest(record.payload), cause)
        self.handled += 1


async def _answer_of(wait: Answer | Awaitable[Answer]) -> Answer:
    """The answer of one admission: given at once, or awaited."""
    if isinstance(wait, Answer):
        return wait
    return await wait


async def _drain(waits: list[Answer | Awaitable[Answer]]) -> None:
    """Let the dropped records of a window finish; one never admitted is not admitted now."""
    for wait in waits:
        if inspect.iscoroutine(wait):
            wait.close()  # a coroutine-style submit that had not queued it yet
        elif not isinstance(wait, Answer):
            await wait
