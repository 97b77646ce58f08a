"""contract VoteService: replica evaluation, signed ballots and the f + 1 tally.

@invariant SignedBallots: a ballot's signature is the lowercase hex
HMAC-SHA256, under the voter's key, of the canonical encoding of
(node_id, batch_id, epoch, digests).
@invariant SameInputsSameBallot: a correct replica runs the Arbiter over the
items in order, each against the reads updated by the accepted items before
it, so every correct replica computes the same digests.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from allium.verify import implements
from ledger.arbiter import AccountSnapshot, Decision, EvaluationFault, evaluate
from ledger.core import AccountStatus, OperationKind, Verdict, canonical_encoding, fingerprint, tagged_sha256
from ledger.core import Envelope
from ledger.node import Ballot, Fault
from ledger.node_wire import WireClient

log = logging.getLogger("ledger.node.votes")


# Signing -------------------------------------------------------------------------------------


def ballot_encoding(node_id: str, batch_id: str, epoch: int, digests: Sequence[str]) -> bytes:
    """Canonical encoding of (node_id, batch_id, epoch, digests); the count prefixes the list."""
    fields: list[tuple[Any, bool]] = [(node_id, False), (batch_id, False), (epoch, False), (len(digests), False)]
    fields += [(d, False) for d in digests]
    return canonical_encoding("Ballot", fields)


def sign_ballot(key: bytes, node_id: str, batch_id: str, epoch: int, digests: Sequence[str]) -> Ballot:
    """A Ballot signed under ``key`` (SignedBallots)."""
    mac = hmac.new(key, ballot_encoding(node_id, batch_id, epoch, digests), hashlib.sha256).hexdigest()
    return Ballot(node_id=node_id, batch_id=batch_id, epoch=epoch, digests=tuple(digests), signature=mac)


def ballot_is_signed(ballot: Ballot, keys: Mapping[str, bytes]) -> bool:
    """True when the signature is the voter's HMAC of the ballot's canonical encoding."""
    key = keys.get(ballot.node_id)
    if key is None:
        return False
    want = hmac.new(key, ballot_encoding(ballot.node_id, ballot.batch_id, ballot.epoch, ballot.digests),
                    hashlib.sha256).hexdigest()
    return hmac.compare_digest(want, ballot.signature)


def body_signature(key: bytes, body: bytes) -> str:
    """X-Ledger-Signature: lowercase hex HMAC-SHA256 of a request body (AuthenticatedPeers)."""
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def body_is_signed(keys: Mapping[str, bytes], node_id: str | None, signature: str | None, body: bytes) -> bool:
    """AuthenticatedPeers: the header names a configured node and the HMAC matches."""
    if not node_id or not signature or node_id not in keys:
        return False
    return hmac.compare_digest(body_signature(keys[node_id], body), signature)


# Replica evaluation --------------------------------------------------------------------------


# AgreeOnBatch: the digest a replica reports for an item whose evaluation raised the
# Arbiter's EvaluationFault. It is never a SHA-256 hex digest, so it can never be
# mistaken for a decision, and an item agreed as "fault" is never committed.
FAULT_DIGEST = "fault"


@dataclass(frozen=True)
class ItemDecision:
    """One item's decision with the versions it was evaluated against, and its digest.

    ``decision`` is None (and ``digest`` is FAULT_DIGEST) when evaluate raised
    EvaluationFault for the item; ``fault`` then holds its one-line cause.
    ``fingerprint`` is the envelope's fingerprint the digest was computed over (FormBatch's
    @guidance: the primary computes it once, at admission, and reuses it).
    """

    decision: Decision | None
    expected_primary_version: int
    expected_counter_version: int
    digest: str
    fault: str | None = None
    fingerprint: str | None = None

    @property
    def is_fault(self) -> bool:
        return self.decision is None

    def decided(self) -> Decision:
        """The Decision of an item that has one (only such items are ever committed)."""
        if self.decision is None:
            raise ValueError(f"no decision: the evaluation faulted ({self.fault})")
        return self.decision


@dataclass(slots=True)
class RunningReads:
    """The running reads after an evaluation: the accounts as its accepted items leave them.

    FormBatch's @guidance: while a batch commits, the next batch's reads are the store's
    rows overlaid with these (versions included).  ``changed`` names the accounts an
    accepted item changed; ``opened`` maps an account an accepted open created to its
    owner (what the store records: the envelope's owner, else its client).
    """

    state: dict[str, AccountSnapshot]
    changed: set[str]
    opened: dict[str, str]


def _snapshot(row: Any) -> AccountSnapshot:
    status = row.status if isinstance(row.status, AccountStatus) else AccountStatus(str(getattr(row.status, "value", row.status)))
    return AccountSnapshot(present=True, status=status, balance_minor=int(row.balance_minor), version=int(row.version))


def item_digest(envelope: Envelope, decision: Decision, primary_version: int, counter_version: int,
                fp: str | None = None) -> str:
    """SHA-256 over the canonical encoding of (fingerprint, verdict, reason, deltas, versions).

    ``fp`` is the envelope's fingerprint when the caller already has it (the primary
    computed it at admission); it is computed here otherwise.
    """
    return tagged_sha256(canonical_encoding("ItemDecision", (
        (fp if fp is not None else fingerprint(envelope), False), (decision.verdict, False),
        (decision.reason, True), (decision.account_delta_minor, False),
        (decision.counterparty_delta_minor, False), (primary_version, False), (counter_version, False))))


def _apply(running: RunningReads, envelope: Envelope, decision: Decision) -> None:
    """Update the running reads with an accepted item, as core's Apply rules would."""
    state = running.state
    if envelope.kind is OperationKind.open:
        state[envelope.account_id] = AccountSnapshot(present=True, status=AccountStatus.active,
                                                     balance_minor=0, version=1)
        running.changed.add(envelope.account_id)
        running.opened[envelope.account_id] = envelope.owner if envelope.owner is not None else envelope.client_id
        return
    before = state[envelope.account_id]
    status = AccountStatus.closed if envelope.kind is OperationKind.close else before.status
    state[envelope.account_id] = AccountSnapshot(
        present=True, status=status, balance_minor=before.balance_minor + decision.account_delta_minor,
        version=before.version + 1)
    running.changed.add(envelope.account_id)
    if envelope.kind is OperationKind.transfer and envelope.counterparty_id is not None:
        other = state[envelope.counterparty_id]
        state[envelope.counterparty_id] = AccountSnapshot(
            present=True, status=other.status,
            balance_minor=other.balance_minor + decision.counterparty_delta_minor, version=other.version + 1)
        running.changed.add(envelope.counterparty_id)


def evaluate_items(items: Sequence[Envelope], reads: Iterable[Any],
                   fingerprints: Sequence[str] | None = None) -> list[ItemDecision]:
    """SameInputsSameBallot: the Arbiter over the items in order, against the running reads.

    ``fingerprints`` are the items' fingerprints when the caller has them already.
    """
    return evaluate_running(items, reads, fingerprints)[0]


def evaluate_running(items: Sequence[Envelope], reads: Iterable[Any],
                     fingerprints: Sequence[str] | None = None) -> tuple[list[ItemDecision], RunningReads]:
    """evaluate_items, also returning the running reads the accepted items leave behind."""
    running = RunningReads({row.account_id: _snapshot(row) for row in reads}, set(), {})
    state = running.state
    absent = AccountSnapshot.absent()
    out: list[ItemDecision] = []
    for index, envelope in enumerate(items):
        primary = state.get(envelope.account_id, absent)
        counter = state.get(envelope.counterparty_id, absent) if envelope.counterparty_id else absent
        counter_version = counter.version if envelope.kind is OperationKind.transfer else 0
        fp = fingerprints[index] if fingerprints is not None else fingerprint(envelope)
        try:
            decision = evaluate(envelope, primary, counter)
        except EvaluationFault as exc:
            # No Decision for this item (arbiter's Totality): vote "fault" for it, keep the
            # running reads unchanged, and still decide the rest of the batch.
            log.warning("evaluation fault for %s/%s: %s", envelope.client_id, envelope.request_id, exc.cause)
            out.append(ItemDecision(None, primary.version, counter_version, FAULT_DIGEST, exc.cause, fp))
            continue
        out.append(ItemDecision(decision, primary.version, counter_version,
                                item_digest(envelope, decision, primary.version, counter_version, fp), None, fp))
        if decision.verdict is Verdict.accepted:
            _apply(running, envelope, decision)
    return out, running


def _faulty_digests(fault: Fault, items: Sequence[Envelope], decided: Sequence[ItemDecision]) -> list[str]:
    """The digests a replica with an injected fault reports (InjectFault's @guidance)."""
    if fault is Fault.lie_about_digests:
        return [secrets.token_hex(32) for _ in decided]
    if fault is Fault.corrupt_outcomes:
        # Honest evaluation, then the verdict of every accepted item flipped before hashing.
        flipped = []
        for envelope, item in zip(items, decided):
            d = item.decision
            if d is None:  # nothing to flip: a fault stays a fault
                flipped.append(item.digest)
                continue
            if d.verdict is Verdict.accepted:
                d = Decision(verdict=Verdict.rejected, reason=d.reason, account_delta_minor=d.account_delta_minor,
                             counterparty_delta_minor=d.counterparty_delta_minor)
            flipped.append(item_digest(envelope, d, item.expected_primary_version, item.expected_counter_version,
                                       item.fingerprint))
        return flipped
    return [item.digest for item in decided]


@implements("CastBallot")
class LocalVoteService:
    """This replica's VoteService, in process: evaluate, (maybe) misbehave, sign."""

    def __init__(self, node_id: str, key: bytes, fault: Fault = Fault.none, slow_seconds: float = 2.0) -> None:
        self.node_id = node_id
        self._key = key
        self.fault = fault
        self.slow_seconds = slow_seconds

    async def vote(self, batch_id: str, epoch: int, items: Sequence[Envelope], reads: Sequence[Any]) -> Ballot:
        """VoteService.vote: a signed ballot with one digest per item."""
        if self.fault is Fault.slow_votes:
            await asyncio.sleep(self.slow_seconds)
        return self.ballot(batch_id, epoch, items, evaluate_items(items, reads))

    async def vote_evaluated(self, batch_id: str, epoch: int, items: Sequence[Envelope],
                             decided: Sequence[ItemDecision]) -> Ballot:
        """VoteService.vote for the primary's own replica, over an evaluation already made.

        AgreeOnBatch's @guidance: the primary evaluates a batch once; its own ballot is
        signed over the same evaluation its commit uses (``decided`` is
        ``evaluate_items(items, reads)``), not a second evaluate of the same items.  An
        injected fault still applies (a slow vote still sleeps first).
        """
        if self.fault is Fault.slow_votes:
            await asyncio.sleep(self.slow_seconds)
        return self.ballot(batch_id, epoch, items, decided)

    def ballot(self, batch_id: str, epoch: int, items: Sequence[Envelope],
               decided: Sequence[ItemDecision]) -> Ballot:
        """Sign (after this replica's injected fault, if any) the digests of ``decided``."""
        digests = _faulty_digests(self.fault, items, decided)
        return sign_ballot(self._key, self.node_id, batch_id, epoch, digests)


# Tally ---------------------------------------------------------------------------------------


@dataclass
class Tally:
    """AgreeOnBatch's count: the valid ballots and, per item, the digest f + 1 agree on.

    AgreeOnBatch's @guidance: tallying costs per item only where ballots differ.  Valid
    ballots are grouped by equal digest lists (one tuple comparison per ballot and
    group); when one list is carried by f + 1 of them and too few others remain to make
    f + 1 for anything else, that list is agreed for every item at once.  Otherwise
    only the items on which some ballot differs are counted one by one.  The result is
    cached until the next valid ballot arrives (``complete`` asks after every ballot).
    """

    batch_id: str
    epoch: int
    size: int
    needed: int
    keys: Mapping[str, bytes]
    valid: dict[str, Ballot]
    faulty: set[str]
    _agreed: list[str | None] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def open(cls, batch_id: str, epoch: int, size: int, faults_tolerated: int, keys: Mapping[str, bytes]) -> Tally:
        return cls(batch_id, epoch, size, faults_tolerated + 1, keys, {}, set())

    def add(self, sender: str, ballot: Ballot | None) -> bool:
        """Count a ballot; a bad signature, epoch, batch id or digest count marks the sender faulty."""
        if ballot is None:
            return False
        problem = None
        if ballot.node_id != sender or not ballot_is_signed(ballot, self.keys):
            problem = "bad signature"
        elif ballot.epoch != self.epoch or ballot.batch_id != self.batch_id:
            problem = "wrong epoch or batch id"
        elif len(ballot.digests) != self.size:
            problem = "wrong number of digests"
        if problem:
            self.faulty.add(sender)
            log.warning("discarding ballot from %s for batch %s: %s", sender, self.batch_id, problem)
            return False
        self.valid[sender] = ballot
        self._agreed = None
        return True

    def _groups(self) -> list[tuple[tuple[str, ...], int]]:
        """The distinct digest lists of the valid ballots with how many carry each, most first."""
        lists: list[tuple[str, ...]] = []
        counts: list[int] = []
        for ballot in self.valid.values():
            digests = ballot.digests
            for g, seen in enumerate(lists):
                if seen == digests:
                    counts[g] += 1
                    break
            else:
                lists.append(digests)
                counts.append(1)
        order = sorted(range(len(lists)), key=counts.__getitem__, reverse=True)
        return [(lists[g], counts[g]) for g in order]

    def agreed(self) -> list[str | None]:
        """Per item, the digest that at least f + 1 valid ballots carry, else None."""
        if self._agreed is None:
            self._agreed = self._count()
        return list(self._agreed)

    def _count(self) -> list[str | None]:
        total = len(self.valid)
        if total < self.needed:
            return [None] * self.size
        groups = self._groups()
        top, top_count = groups[0]
        if top_count >= self.needed and total - top_count < self.needed:
            # f + 1 equal lists agree on every item; the rest cannot reach f + 1 anywhere.
            return list(top)
        # Some ballots differ: an item on which every list agrees has all the ballots
        # behind it; only the other items are counted.
        out: list[str | None] = list(top)
        others = [digests for digests, _ in groups[1:]]
        for i in range(self.size):
            digest = top[i]
            if all(other[i] == digest for other in others):
                continue  # total >= needed valid ballots carry it
            counts: Counter[str] = Counter()
            for digests, count in groups:
                counts[digests[i]] += count
            best, votes = counts.most_common(1)[0]
            out[i] = best if votes >= self.needed else None
        return out

    def complete(self) -> bool:
        """Every item has its f + 1 agreement (more ballots cannot change a settled item)."""
        total = len(self.valid)
        if total < self.needed:
            return False
        if self._agreed is None:
            if total == self.needed:
                # Every item needs every ballot: complete exactly when the lists are equal
                # (asked after each ballot, so nothing is counted while one still differs).
                lists = iter(self.valid.values())
                first = next(lists).digests
                return all(b.digests == first for b in lists)
            self._agreed = self._count()
        return None not in self._agreed

    def supporters(self, agreed: Sequence[str | None]) -> list[Ballot]:
        """The valid ballots that match every agreed digest they could (AgreeOnBatch's ballots)."""
        whole = tuple(agreed)
        return [b for b in self.valid.values()
                if b.digests == whole or any(a is not None and b.digests[i] == a for i, a in enumerate(agreed))]


# Wire format of POST /internal/votes ---------------------------------------------------------

ROW_FIELDS = ("account_id", "owner", "status", "balance_minor", "version")
ENVELOPE_FIELDS = ("request_id", "client_id", "kind", "account_id", "counterparty_id", "owner", "amount_minor")


def envelope_to_wire(envelope: Envelope) -> dict[str, Any]:
    """An Envelope as a JSON object (the same shape POST /v1/requests takes)."""
    return {name: (getattr(envelope, name).value if name == "kind" else getattr(envelope, name))
            for name in ENVELOPE_FIELDS}


def row_to_wire(row: Any) -> dict[str, Any]:
    """An AccountRow as a JSON object."""
    return {name: (str(getattr(row.status, "value", row.status)) if name == "status" else getattr(row, name))
            for name in ROW_FIELDS}


def vote_request_body(batch_id: str, epoch: int, items: Sequence[Envelope], reads: Sequence[Any]) -> bytes:
    """The body the primary signs and sends to every replica."""
    return msgspec.json.encode({"batch_id": batch_id, "epoch": epoch,
                                "items": [envelope_to_wire(e) for e in items],
                                "reads": [row_to_wire(r) for r in reads]})


def ballot_to_wire(ballot: Ballot) -> dict[str, Any]:
    return {"node_id": ballot.node_id, "batch_id": ballot.batch_id, "epoch": ballot.epoch,
            "digests": list(ballot.digests), "signature": ballot.signature}


def ballot_from_wire(data: Any) -> Ballot | None:
    """A Ballot from JSON, or None when the shape is wrong (the sender is then faulty)."""
    try:
        if not isinstance(data, dict) or not isinstance(data.get("digests"), list):
            return None
        if not all(isinstance(d, str) for d in data["digests"]) or not isinstance(data.get("epoch"), int):
            return None
        return Ballot(node_id=str(data["node_id"]), batch_id=str(data["batch_id"]), epoch=data["epoch"],
                      digests=tuple(data["digests"]), signature=str(data["signature"]))
    except (KeyError, TypeError):
        return None


class PeerVoteClient:
    """VoteService of a remote replica: one signed POST /internal/votes per batch.

    AgreeOnBatch's @guidance: it goes over the lean keep-alive ``WireClient`` (asyncio
    streams, httptools, msgspec bodies), a few connections per peer.
    """

    def __init__(self, sender_id: str, sender_key: bytes, peer_id: str, base_url: str,
                 client: WireClient, timeout_seconds: float = 1.0) -> None:
        self.sender_id = sender_id
        self.timeout_seconds = timeout_seconds  # vote_timeout_micros: a late ballot is useless
        self._key = sender_key
        self.peer_id = peer_id
        self.base_url = base_url
        self._client = client

    async def vote(self, batch_id: str, epoch: int, items: Sequence[Envelope], reads: Sequence[Any]) -> Ballot:
        """VoteService.vote over HTTP; raises on transport errors or a non-200 answer."""
        body = vote_request_body(batch_id, epoch, items, reads)
        response = await self._client.request(
            "POST", "/internal/votes", body,
            {"Content-Type": "application/json", "X-Ledger-Node": self.sender_id,
             "X-Ledger-Signature": body_signature(self._key, body)},
            timeout=self.timeout_seconds)
        if response.status != 200:
            raise RuntimeError(f"{self.peer_id} answered {response.status}")
        ballot = ballot_from_wire(response.json())
        if ballot is None:
            raise RuntimeError(f"{self.peer_id} sent a malformed ballot")
        return ballot
