"""The primary's pipeline: AdmitRequest, FormBatch, AgreeOnBatch, CommitBatch,
AnswerPending, RefusePending and FailBatch wired to the store and the voters.

FormBatch's @guidance: batches overlap, at most two in flight.  While one batch
commits, the next is formed, read and voted; commits are issued strictly in
batch order, each after the previous one returned.  The next batch's reads are
the store's rows overlaid with the accounts as the committing batch's accepted
items leave them (the running reads of the primary's own evaluation), so its
items are decided against the state they will be committed on.  No safety rests
on that overlay: the store checks every item's expected versions and every log
item's offset against what is really committed (version_conflict, re-queued once
with fresh reads; out_of_order, the consumer rewinds).  Nothing kept in memory is
trusted across epochs (ClaimPrimary's @guidance): a pipeline lives for one epoch.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ledger.core import Channel, Envelope, Rejected, Verdict, fingerprint
from ledger.node import (
    Batch, Config, NodeProcess, Pending, PendingStatus, VoteService, admit_request,
    agree_on_batch, answer_pending, commit_batch, fail_batch, form_batch, refuse_pending,
)
from ledger.node_ports import PortUnavailable, StorePort
from ledger.node_votes import FAULT_DIGEST, ItemDecision, LocalVoteService, RunningReads, Tally, evaluate_running

log = logging.getLogger("ledger.node.pipeline")


@dataclass(frozen=True)
class Answer:
    """What a waiter receives: an HTTP status, a JSON body and extra headers."""

    status: int
    body: dict[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)


def unavailable(cause: str, detail: str) -> Answer:
    """503 with Retry-After: 1 (settled decision): the request took no effect."""
    return Answer(503, {"error": cause, "detail": detail}, {"Retry-After": "1"})


def conflict(detail: str, cause: str = "fingerprint_mismatch") -> Answer:
    """409: the request id is already used for a different body."""
    return Answer(409, {"error": cause, "detail": detail})


def _text(value: Any) -> Any:
    return getattr(value, "value", value)


def outcome_answer(outcome: Any, replayed: bool) -> Answer:
    """200 with the ClientApi outcome body, from a core Outcome (or anything shaped like one)."""
    body = {name: _text(getattr(outcome, name, None)) for name in (
        "request_id", "client_id", "kind", "verdict", "reason", "account_id", "counterparty_id",
        "account_delta_minor", "counterparty_delta_minor", "sequence", "epoch")}
    body["replayed"] = replayed
    return Answer(200, body)


# What a submission's shared deadline timer settles a still-waiting waiter with
# (AdmitRequest: sync_wait_micros passed).  The caller that armed the deadline
# turns it into its 202; it is compared by identity, never sent to a client.
DEFERRED = Answer(202, {"status": "pending"})


@dataclass(eq=False, slots=True)
class Ticket:
    """A Pending and the future its waiter awaits; attempts counts version-conflict retries.

    ``key`` is (client_id, request_id) for a REST submission, which later submissions
    of the same request join while it is in flight; each of those waits on its own
    future in ``joined``, so a deadline that ends one wait ends no other.
    """

    pending: Pending
    future: asyncio.Future[Answer]
    fingerprint: str
    attempts: int = 1
    key: tuple[str, str] | None = None
    joined: list[asyncio.Future[Answer]] | None = None

    def settle(self, answer: Answer) -> None:
        """Answer every waiter still waiting (one whose deadline passed already has its 202)."""
        if not self.future.done():
            self.future.set_result(answer)
        if self.joined is not None:
            for waiter in self.joined:
                if not waiter.done():
                    waiter.set_result(answer)

    def join(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future[Answer]:
        """A waiter for a second submission of this request (AdmitRequest: not queued twice)."""
        waiter: asyncio.Future[Answer] = loop.create_future()
        if self.joined is None:
            self.joined = []
        self.joined.append(waiter)
        return waiter


def _defer(bucket: list[asyncio.Future[Answer]]) -> None:
    """The shared deadline fired: every waiter of its millisecond still waiting gets DEFERRED."""
    for waiter in bucket:
        if not waiter.done():
            waiter.set_result(DEFERRED)


class SharedDeadlines:
    """AdmitRequest's @guidance: bound each submission's wait for its answer with ONE
    deadline timer shared by the submissions admitted within the same millisecond.

    ``add`` files a waiter under the millisecond its deadline falls in; the first
    waiter of a millisecond arms one ``loop.call_at`` for the end of it, which settles
    every waiter of that millisecond still waiting with DEFERRED (its caller answers
    202).  Per submission this is one list append: no task (asyncio.wait_for), no
    Timeout object and timer handle (asyncio.timeout), no done-callback.  A deadline
    is rounded up to its millisecond, so a wait is at least the one asked for and at
    most 1 ms longer.  A waiter answered in time stays in its bucket until the timer
    fires (at most the wait), where it is skipped.
    """

    __slots__ = ("_slot", "_bucket")

    def __init__(self) -> None:
        self._slot = -1
        self._bucket: list[asyncio.Future[Answer]] = []

    def add(self, loop: asyncio.AbstractEventLoop, waiter: asyncio.Future[Answer], wait_seconds: float) -> None:
        """Settle ``waiter`` with DEFERRED once ``wait_seconds`` passed, unless answered before."""
        slot = int((loop.time() + wait_seconds) * 1000.0) + 1
        if slot != self._slot:
            self._slot, self._bucket = slot, []
            loop.call_at(slot / 1000.0, _defer, self._bucket)
        self._bucket.append(waiter)


@dataclass(eq=False, slots=True)
class _Prepared:
    """A batch that was formed, read, evaluated once and agreed on, ready for its commit.

    ``chosen`` are the indexes of the items to commit (f + 1 agreed on this replica's
    digest).  ``exact`` says every item whose effect ``running`` holds is among them,
    and ``base_ok`` that its reads were the store's alone or overlaid with a batch
    whose commit went through exactly as evaluated; only a batch with both is built on
    by the next one.  Once its commit returned, ``returned`` is set and ``clean`` says
    whether everything of it was committed exactly as evaluated.
    """

    batch: Batch
    tickets: list[Ticket]
    own: list[ItemDecision]
    agreed: list[str | None]
    chosen: list[int]
    running: RunningReads
    exact: bool
    base_ok: bool
    returned: bool = False
    clean: bool = False


def _trusted(prepared: _Prepared | None) -> bool:
    """Whether the next batch may be read on ``prepared``'s overlay while it commits.

    A batch read on a wrong overlay (its predecessor's commit refused or failed an
    item) has wrong running reads for what it touched; the next batch then waits for
    its commit and reads the store alone, so a re-queued item really gets fresh reads.

    ASSUMPTION: FormBatch's overlap may give way to reading the store alone when the
    in-flight batch's running reads are known or likely wrong (an accepted item of it
    will not be committed, or its own reads overlaid a batch whose commit refused or
    failed items).  That costs only overlap for one batch, never safety, and keeps
    CommitBatch's "re-queue once with fresh reads" true under overlap.
    """
    return prepared is not None and prepared.exact and prepared.base_ok


@dataclass(frozen=True)
class _Answered:
    """The part of an Outcome that AnswerPending reads."""

    request_id: str


class Pipeline:
    """The leader's batching pipeline for one epoch."""

    def __init__(self, process: NodeProcess, config: Config, store: StorePort,
                 voters: Mapping[str, VoteService], keys: Mapping[str, bytes],
                 clock: Callable[[], datetime], on_stale_epoch: Callable[[], None],
                 on_cut_off: Callable[[], None] | None = None) -> None:
        self.process = process
        self.epoch = process.epoch
        self.config = config
        self.store = store
        self.voters = dict(voters)
        self.keys = keys
        self.clock = clock
        self.on_stale_epoch = on_stale_epoch
        # StepDown's @guidance: called once stepdown_failed_rounds vote rounds in a row
        # ended without f + 1 valid ballots (this primary is cut off from its peers).
        self.on_cut_off = on_cut_off
        self.failed_rounds = 0
        self._queue: deque[Ticket] = deque()
        self._wakeup = asyncio.Event()
        self._inflight: dict[tuple[str, str], Ticket] = {}  # REST tickets queued or in flight
        self._batch_ids = itertools.count(1)
        self._requeued: list[Ticket] = []  # version conflicts of the commit being answered
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        self.faulty_voters: set[str] = set()

    # Lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"pipeline-{self.epoch}")

    async def close(self, detail: str) -> None:
        """StepDown / StopNode: refuse every queued request (503), let the in-flight batches finish.

        A batch being voted is still committed (after the one committing before it), as
        one in flight always was; nothing new is formed once closed.
        """
        self._closed = True
        self._refuse_queued(detail)
        self._wakeup.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        self._refuse_queued(detail)  # nothing can be re-queued once closed; be sure

    def _refuse_queued(self, detail: str) -> None:
        while self._queue:
            self._refuse(self._queue.popleft(), "unavailable", detail)

    @property
    def queued(self) -> int:
        return len(self._queue)

    # Admission --------------------------------------------------------------------------------

    async def submit(self, envelope: Envelope, channel: Channel, partition: int | None = None,
                     offset: int | None = None) -> Answer:
        """AdmitRequest, waiting for the answer however long it takes (the log consumer's way)."""
        waiter = self.admit(envelope, channel, partition, offset)
        if isinstance(waiter, Answer):
            return waiter
        return await waiter

    def admit(self, envelope: Envelope, channel: Channel, partition: int | None = None,
              offset: int | None = None) -> asyncio.Future[Answer] | Answer:
        """AdmitRequest's @guidance: join an in-flight twin, or queue (no store read first).

        Returns the future the submission's answer arrives on, or the answer itself when
        it is refused at once.  The caller may stop waiting (its deadline, its client
        gone): the request stays queued or in flight and is still decided, and any other
        waiter still gets the answer.  Replays and reused ids are found by the commit
        transaction itself (duplicate -> 200 replayed, fingerprint_mismatch -> 409), so
        admission costs no store round trip per request.
        """
        if self._closed:
            return unavailable("unavailable", "this node is no longer the primary")
        try:
            pending = admit_request(self.process, envelope, channel, self.clock(), partition, offset)
        except Rejected as exc:
            if exc.clause == 2:
                return Answer(422, {"error": "invalid_amount", "detail": exc.why})
            return unavailable("unavailable", exc.why)
        fp = fingerprint(envelope)
        loop = asyncio.get_running_loop()
        ticket = Ticket(pending, loop.create_future(), fp)
        if channel is Channel.rest:
            # ASSUMPTION: only REST submissions are joined to a twin: a log record's own
            # offset must reach the store so its checkpoint passes it.
            key = (envelope.client_id, envelope.request_id)
            twin = self._inflight.get(key)
            if twin is not None:
                if twin.fingerprint != fp:
                    return conflict("a different request with this id is in flight", "fingerprint_mismatch")
                return twin.join(loop)
            ticket.key = key
            self._inflight[key] = ticket
        self._queue.append(ticket)
        self._wakeup.set()
        return ticket.future

    def _release(self, ticket: Ticket) -> None:
        """A decided request is no longer in flight: a later submission is queued anew."""
        key = ticket.key
        if key is not None and self._inflight.get(key) is ticket:
            del self._inflight[key]

    # Batching ---------------------------------------------------------------------------------

    async def _run(self) -> None:
        """FormBatch's @guidance: batches overlap, at most two in flight.

        While one batch commits (``committing``: one task per batch, none per request)
        the next is formed, read and voted; its commit is issued only once the previous
        commit has returned, so commits reach the store strictly in batch order.
        """
        committing: asyncio.Task[None] | None = None
        in_flight: _Prepared | None = None  # the batch whose commit ``committing`` runs
        try:
            while not self._closed:
                if not self._queue:
                    await self._wakeup.wait()
                    self._wakeup.clear()
                    continue
                if len(self._queue) < self.config.batch_max:
                    await asyncio.sleep(self.config.batch_linger_micros / 1e6)
                if committing is not None and (committing.done() or in_flight is None or in_flight.returned
                                               or not _trusted(in_flight)):
                    # Read the store alone: the commit's results are in it already, or its
                    # overlay is not to be built on.  Items it re-queued join this batch.
                    await committing
                    committing, in_flight = None, None
                take = min(len(self._queue), self.config.batch_max)
                if take == 0 or self._closed:
                    continue
                tickets = [self._queue.popleft() for _ in range(take)]
                prepared = await self._guarded(tickets, self._prepare(tickets, in_flight), True)
                if committing is not None:
                    await committing  # commits in batch order, each after the previous returned
                if prepared is None:
                    committing, in_flight = None, None
                    continue
                # The base it was read on is known now: good unless it overlaid a batch
                # whose commit did not go through exactly as evaluated.
                prepared.base_ok = in_flight is None or in_flight.clean
                committing = asyncio.get_running_loop().create_task(
                    self._guarded(prepared.tickets, self._commit(prepared), False), name="pipeline-commit")
                in_flight = prepared
        finally:
            if committing is not None:
                await committing  # StopNode: wait for an in-flight commit to finish

    async def _guarded(self, tickets: Sequence[Ticket], step: Any, refuse_on_cancel: bool) -> Any:
        """Run a batch step; a bug must not strand waiters: those still voting get 503.

        A ticket re-queued for a version conflict is waiting for its next batch and is
        left alone.  A cancelled commit is not answered 503: it may have committed.
        """
        try:
            return await step
        except asyncio.CancelledError:
            if refuse_on_cancel:
                self._refuse_voting(tickets, "unavailable", "this node is stopping")
            raise
        except Exception:
            log.exception("batch failed unexpectedly")
            self._refuse_voting(tickets, "internal_error", "the batch failed; retry")
            return None

    def _refuse_voting(self, tickets: Sequence[Ticket], cause: str, detail: str) -> None:
        for t in tickets:
            if t.pending.status is PendingStatus.voting:
                self._refuse(t, cause, detail)

    async def process_batch(self, tickets: list[Ticket]) -> Batch | None:
        """FormBatch -> votes -> AgreeOnBatch / FailBatch -> CommitBatch -> answers.

        One batch on its own: read from the store alone and committed before it returns.
        """
        prepared = await self._prepare(tickets, None)
        if prepared is None:
            return None
        await self._commit(prepared)
        return prepared.batch

    async def _prepare(self, tickets: list[Ticket], in_flight: _Prepared | None) -> _Prepared | None:
        """FormBatch, the reads (overlaid with ``in_flight``'s results), one evaluation, the
        votes, then AgreeOnBatch or FailBatch.  None when nothing of it is to be committed."""
        try:
            batch = form_batch(self.process, f"{self.process.node_id}-{self.epoch}-{next(self._batch_ids)}",
                               [t.pending for t in tickets], self.config)
        except Rejected as exc:
            for t in tickets:
                self._refuse(t, "unavailable", exc.why)
            return None
        items = [t.pending.envelope for t in tickets]
        ids = _account_ids(items)
        try:
            reads = await self.store.accounts(ids)
        except PortUnavailable as exc:
            self._fail(batch, tickets, "store_unavailable", str(exc))
            return None
        if in_flight is not None:
            reads = self._overlay(reads, ids, in_flight.running)
        # AgreeOnBatch's @guidance: the batch is evaluated once here; this replica's
        # ballot is signed over this evaluation and the commit uses it too.  FormBatch's:
        # the digests reuse the fingerprints computed at admission.
        own, running = evaluate_running(items, reads, [t.fingerprint for t in tickets])
        tally = await self._collect(batch, items, reads, own)
        self._count_round(tally)
        agreed = tally.agreed()
        chosen: list[int] = []
        exact = True  # every item whose effect the running reads hold is to be committed
        for i, t in enumerate(tickets):
            mine = own[i]
            if _committable(agreed[i], mine):
                chosen.append(i)
                continue
            # Never committed, not even as a rejection (AgreeOnBatch's @guidance).
            self._refuse(t, *_not_committed(agreed[i], mine))
            if mine.decision is not None and mine.decision.verdict is Verdict.accepted:
                exact = False
        if not chosen:
            fail_batch(batch)
            return None
        agree_on_batch(batch, tally.supporters(agreed), self.config)
        return _Prepared(batch, tickets, own, agreed, chosen, running, exact, in_flight is None)

    def _overlay(self, rows: list[Any], ids: set[str], running: RunningReads) -> list[Any]:
        """FormBatch's @guidance: the store's rows overlaid with the accounts as the in-flight
        batch's accepted items leave them (its running reads, versions included).

        Rows are replaced, never adjusted, so a store read that already sees that batch's
        commit gives the same reads.  Only the accounts that batch changed are touched.
        """
        touched = running.changed & ids
        if not touched:
            return rows
        owners = {row.account_id: row.owner for row in rows if row.account_id in touched}
        out = [row for row in rows if row.account_id not in touched]
        for account_id in sorted(touched):
            snap = running.state[account_id]
            owner = owners.get(account_id) or running.opened.get(account_id, "")
            out.append(self.store.account_row(account_id=account_id, owner=owner, status=snap.status,
                                              balance_minor=snap.balance_minor, version=snap.version))
        return out

    async def _commit(self, prepared: _Prepared) -> None:
        """CommitBatch: one store.commit call with the agreed items, then every waiter's answer."""
        batch, tickets, own, chosen = prepared.batch, prepared.tickets, prepared.own, prepared.chosen
        agreed = prepared.agreed
        commit_items = [self._commit_item(tickets[i], own[i], agreed[i]) for i in chosen]
        try:
            results = await self.store.commit(batch.epoch, commit_items)
        except PortUnavailable as exc:
            prepared.returned = True
            self._fail(batch, [tickets[i] for i in chosen], "store_unavailable", str(exc))
            return
        commit_batch(batch)
        # ``clean`` is lowered at the first item not committed, before anything awaits, so
        # the loop forming the next batch never sees it raised for a batch that is not.
        prepared.clean, prepared.returned = prepared.exact, True
        try:
            for i, result in zip(chosen, results):
                if result.disposition == "committed":
                    self._settle(tickets[i], self._committed_answer(tickets[i], own[i], result, batch.epoch))
                    continue
                prepared.clean = False
                await self._answer(tickets[i], own[i], result, batch.epoch)
        finally:
            self._flush_requeued()

    async def _collect(self, batch: Batch, items: list[Envelope], reads: list[Any],
                       own: Sequence[ItemDecision]) -> Tally:
        """Ask every voter in parallel; stop at full f + 1 agreement or vote_timeout_micros.

        This node's own in-process replica signs ``own``, the evaluation the commit
        uses, instead of evaluating the same items a second time; every other voter
        evaluates for itself.
        """
        tally = Tally.open(batch.batch_id, batch.epoch, batch.size, self.config.faults_tolerated, self.keys)
        tasks = {asyncio.ensure_future(self._ballot_of(node_id, voter, batch, items, reads, own)): node_id
                 for node_id, voter in self.voters.items()}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.vote_timeout_micros / 1e6
        pending = set(tasks)
        try:
            while pending and not tally.complete():
                done, pending = await asyncio.wait(pending, timeout=max(0.0, deadline - loop.time()),
                                                   return_when=asyncio.FIRST_COMPLETED)
                if not done:
                    break
                for task in done:
                    sender = tasks[task]
                    if task.exception() is not None:
                        log.warning("no ballot from %s: %r", sender, task.exception())
                        continue
                    tally.add(sender, task.result())
        finally:
            # Late ballots are not needed, but cancelling a request mid-flight would close
            # its keep-alive connection; each voter bounds its own wait instead.
            for task in pending:
                task.add_done_callback(_drain)
        self.faulty_voters |= tally.faulty
        return tally

    def _ballot_of(self, node_id: str, voter: VoteService, batch: Batch, items: list[Envelope],
                   reads: list[Any], own: Sequence[ItemDecision]) -> Any:
        """The coroutine of one voter's ballot: the own replica's over ``own``."""
        if node_id == self.process.node_id and isinstance(voter, LocalVoteService):
            return voter.vote_evaluated(batch.batch_id, batch.epoch, items, own)
        return voter.vote(batch.batch_id, batch.epoch, items, reads)

    def _count_round(self, tally: Tally) -> None:
        """StepDown's @guidance: stepdown_failed_rounds rounds in a row without f + 1 valid
        ballots mean this primary is cut off from its peers; holding the lease would halt
        the cluster, so it steps down (once the limit is reached)."""
        if len(tally.valid) >= tally.needed:
            self.failed_rounds = 0
            return
        self.failed_rounds += 1
        log.warning("vote round %d in a row without f + 1 valid ballots", self.failed_rounds)
        if self.failed_rounds >= self.config.stepdown_failed_rounds and self.on_cut_off is not None:
            self.on_cut_off()

    def _commit_item(self, ticket: Ticket, own: ItemDecision, digest: str | None) -> Any:
        p, d = ticket.pending, own.decided()
        return self.store.commit_item(
            envelope=p.envelope, fingerprint=ticket.fingerprint, channel=p.channel, partition=p.partition,
            offset=p.offset, verdict=d.verdict, reason=d.reason, account_delta_minor=d.account_delta_minor,
            counterparty_delta_minor=d.counterparty_delta_minor, digest=digest,
            expected_primary_version=own.expected_primary_version,
            expected_counter_version=own.expected_counter_version)

    def _committed_answer(self, ticket: Ticket, own: ItemDecision, result: Any, epoch: int) -> Answer:
        """A committed item's 200: the agreed decision with the store's sequence.

        ASSUMPTION: the committed outcome is exactly the agreed item with the store's
        sequence, so it is answered without reading it back (duplicates are read back).
        """
        envelope, d = ticket.pending.envelope, own.decided()
        return Answer(200, {
            "request_id": envelope.request_id, "client_id": envelope.client_id, "kind": envelope.kind.value,
            "verdict": d.verdict.value, "reason": _text(d.reason), "account_id": envelope.account_id,
            "counterparty_id": envelope.counterparty_id, "account_delta_minor": d.account_delta_minor,
            "counterparty_delta_minor": d.counterparty_delta_minor, "sequence": result.sequence,
            "epoch": epoch, "replayed": False})

    async def _answer(self, ticket: Ticket, own: ItemDecision, result: Any, epoch: int) -> None:
        """CommitBatch's @guidance: map one CommitResult to the waiter's answer."""
        envelope = ticket.pending.envelope
        if result.disposition == "committed":
            return self._settle(ticket, self._committed_answer(ticket, own, result, epoch))
        if result.disposition in ("duplicate", "quarantined"):
            try:
                prior = await self.store.find_outcome(envelope.client_id, envelope.request_id)
            except PortUnavailable as exc:
                return self._refuse(ticket, "store_unavailable", str(exc))
            if prior is None:
                return self._refuse(ticket, "store_unavailable", "the prior outcome could not be read")
            return self._settle(ticket, outcome_answer(prior, replayed=True))
        refusal = result.refusal or "unknown"
        if refusal == "fingerprint_mismatch":
            return self._settle(ticket, conflict("this request id was used for a different request",
                                                 "fingerprint_mismatch"))
        if refusal == "position_taken":
            return self._settle(ticket, conflict("this log offset was already handled", "position_taken"))
        if refusal == "version_conflict" and ticket.attempts < 2 and not self._closed:
            return self._requeue(ticket)
        if refusal == "out_of_order":
            # A log record behind a refused one: its consumer rewinds and retries it.
            return self._refuse(ticket, "out_of_order", "an earlier record of this partition is not decided yet")
        if refusal == "stale_epoch":
            self._refuse(ticket, "stale_epoch", "this node lost its epoch; retry")
            self.on_stale_epoch()
            return None
        return self._refuse(ticket, refusal, f"the store refused the request: {refusal}")

    def _requeue(self, ticket: Ticket) -> None:
        """version_conflict: retry once with fresh reads in the next batch formed.

        Its reads are fresh: a batch formed after this commit returned reads the store
        alone, or overlaid with a batch that was read on a verified base (``_trusted``).

        ASSUMPTION: Pending has no voting -> queued edge, so the retry is a new
        Pending (attempt 2) that takes over the waiter; the first is superseded.
        """
        p = ticket.pending
        fresh = Pending(envelope=p.envelope, channel=p.channel, partition=p.partition, offset=p.offset,
                        received_at=self.clock())
        ticket.pending, ticket.attempts = fresh, ticket.attempts + 1
        self._requeued.append(ticket)

    def _flush_requeued(self) -> None:
        """Put a commit's re-queued items at the head of the queue in their batch order (a
        partition's log records stay in offset order)."""
        if self._requeued:
            self._queue.extendleft(reversed(self._requeued))
            self._requeued.clear()
            self._wakeup.set()

    # Settling ---------------------------------------------------------------------------------

    def _settle(self, ticket: Ticket, answer: Answer) -> None:
        answer_pending(ticket.pending, _Answered(ticket.pending.envelope.request_id))
        self._release(ticket)
        ticket.settle(answer)

    def _refuse(self, ticket: Ticket, cause: str, detail: str) -> None:
        if ticket.pending.status in (PendingStatus.queued, PendingStatus.voting):
            refuse_pending(ticket.pending)
        self._release(ticket)
        ticket.settle(unavailable(cause, detail))

    def _fail(self, batch: Batch, tickets: Sequence[Ticket], cause: str, detail: str) -> Batch:
        fail_batch(batch)
        for t in tickets:
            self._refuse(t, cause, detail)
        return batch


def _committable(agreed: str | None, own: ItemDecision) -> bool:
    """AgreeOnBatch: an item is committed only with an f + 1 agreed decision digest this
    replica computed too (so it holds the decision to commit); a "fault" never is."""
    return agreed is not None and agreed != FAULT_DIGEST and not own.is_fault and agreed == own.digest


def _not_committed(agreed: str | None, own: ItemDecision) -> tuple[str, str]:
    """The 503 cause of an item that is not committed: evaluation_fault or no_agreement."""
    if agreed == FAULT_DIGEST or (own.is_fault and agreed is not None):
        # ASSUMPTION: when f + 1 others agree on a decision this replica could not
        # evaluate, the leader has no decision to commit; that is its evaluation fault.
        return "evaluation_fault", f"evaluating this request failed; retry ({own.fault or 'replicas faulted'})"
    return "no_agreement", "replicas did not agree on this request in time"


def _drain(task: asyncio.Future[Any]) -> None:
    """Consume a late vote's result or error so asyncio does not report it as lost."""
    if not task.cancelled():
        task.exception()


def _account_ids(items: Sequence[Envelope]) -> set[str]:
    ids = {e.account_id for e in items}
    ids |= {e.counterparty_id for e in items if e.counterparty_id}
    return ids


__all__ = ["Answer", "DEFERRED", "Pipeline", "SharedDeadlines", "Ticket", "conflict", "outcome_answer",
           "unavailable", "Verdict"]
