"""The consumer-side check of a live stream: batch messages, checkpoints and the
certificate as they arrive over MQTT (docs/mqtt.md), judged one message at a time by the
bundle verifier's rules (docs/formats.md §8, steps 1 to 5).

Pure: bytes in, typed events out (agent.trust.stream_events); `edgeseal watch` does the
I/O. A stream differs from a bundle in three ways, and the checker follows them:
- it is delivered at least once, so a batch may come again: the same bytes are a
  duplicate; other bytes under one batch number are a finding;
- it has holes while it runs: batches skipped over are missing until drop records name
  exactly the seqs they held (then they were dropped undelivered, and the device signed
  that), and a finding if the stream ends first;
- the certificate is a message of its own, which may come after the first batches: what
  no certificate has named yet is held until one arrives (or a seal carries its chain).

    checker = StreamChecker(roots)
    for event in checker.feed_cert(cert_message) + checker.feed_batch(batch_message):
        print(event.text())
    events = checker.finish()  # findings for what is still missing or held, then a Summary
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509

from agent.trust import cose, merkle
from agent.trust.bundle import BundleFormatError, decode_batch, decode_certificates
from agent.trust.chain import Link, drop_tiling, first_seal_problems, link_seals
from agent.trust.identities import Identities
from agent.trust.payloads import Gap, PayloadError, SealPayload, open_checkpoint, open_seal, seal_digest
from agent.trust.seal_log import SealLog
from agent.trust.stream_events import (
    BatchVerified,
    Dropped,
    Duplicate,
    Event,
    Finding,
    Held,
    Missing,
    Restart,
    Seqs,
    SignedGap,
    Summary,
    b_range,
)
from agent.trust.verify import check_full_batch

REMEMBERED = 100_000  # batches kept for duplicate and chain checks; redeliveries are of recent ones
MAX_HELD = 1_000  # messages held while no certificate has arrived

Feed = Callable[[bytes, str], list[Event]]


@dataclass(frozen=True)
class _Seen:
    """What is kept of a verified batch."""

    payload: SealPayload
    seal_digest: bytes  # what the next seal's prev holds
    message_digest: bytes  # tells a duplicate from a second, different message
    log_leaf: bytes  # its leaf hash in the device seal log


@dataclass(frozen=True)
class _Held:
    feed: Feed
    data: bytes
    where: str  # the message, for problems found in it
    what: str  # the batch or checkpoint it turned out to be


@dataclass(frozen=True)
class _Run:
    """Consecutive missing batches and the seqs between their received neighbours."""

    first_b: int
    last_b: int
    seqs: Seqs | None


class StreamChecker:
    def __init__(self, roots: list[x509.Certificate]) -> None:
        self._identities = Identities(roots)
        self._held: list[_Held] = []
        self._seen: dict[int, _Seen] = {}
        self._first_b: int | None = None
        self._last_b: int | None = None
        self._missing: list[tuple[int, int]] = []  # runs of missing b: first, last; ascending
        self._drops: list[tuple[Gap, int]] = []  # drop records no hole has used yet: gap, b
        self._dropped_runs: list[tuple[int, int]] = []  # first and last b of batches dropped undelivered
        self._log = SealLog()
        self._checkpoints: dict[int, bytes] = {}  # size -> digest of the checkpoint's bytes
        self._messages = self._checkpoint_messages = 0
        self._batches = self._readings = self._duplicates = self._dropped = self._findings = 0
        self._boots: set[int] = set()

    # One method per topic; findings are counted here, where events leave the checker.

    def feed_cert(self, data: bytes) -> list[Event]:
        try:
            ders = decode_certificates(data)
        except BundleFormatError as exc:
            return self._counted([Finding("certificate message", str(exc))])
        return self._counted(self._add_chain(ders, "the certificate message"))

    def feed_batch(self, data: bytes) -> list[Event]:
        self._messages += 1
        return self._counted(self._batch(data, f"batch message {self._messages}"))

    def feed_checkpoint(self, data: bytes) -> list[Event]:
        self._checkpoint_messages += 1
        return self._counted(self._checkpoint(data, f"checkpoint message {self._checkpoint_messages}"))

    def finish(self) -> list[Event]:
        """The end of the stream: what is still held or missing is a finding; then the Summary."""
        events: list[Event] = [
            Finding(held.what, "not verified: no certificate for its key arrived") for held in self._held
        ]
        for run in self._runs():
            named = f"; no drop record names their seqs {run.seqs[0]}..{run.seqs[1]}" if run.seqs else ""
            events.append(Finding(b_range(run.first_b, run.last_b), f"missing: never received{named}"))
        events += self._missing_tail()
        self._held, self._missing = [], []
        return [*self._counted(events), self.summary()]

    def _missing_tail(self) -> list[Event]:
        """Seals that a checkpoint covers, newer than every batch received: the device
        published them before that checkpoint, and this watch had begun."""
        newest = max(self._checkpoints, default=0)
        if self._last_b is None or newest <= self._last_b:
            return []
        covers = "it" if newest == self._last_b + 1 else "them"
        missing = b_range(self._last_b + 1, newest)
        return [Finding(missing, f"missing: never received; checkpoint size={newest} covers {covers}")]

    def summary(self) -> Summary:
        return Summary(
            valid=self._findings == 0,
            batches=self._batches,
            readings=self._readings,
            first_b=self._first_b,
            last_b=self._last_b,
            boots=sorted(self._boots),
            duplicates=self._duplicates,
            dropped=self._dropped,
            checkpoints=len(self._checkpoints),
            findings=self._findings,
        )

    def _counted(self, events: list[Event]) -> list[Event]:
        self._findings += sum(event.is_finding for event in events)
        return events

    # Certificates, and messages waiting for one

    def _add_chain(self, ders: list[bytes], source: str) -> list[Event]:
        events = self._identities.add(ders, source)
        if self._identities.any_judged and self._held:
            held, self._held = self._held, []
            for message in held:
                events += message.feed(message.data, message.where)
        return events

    def _unknown_key(self, msg: cose.Sign1, feed: Feed, data: bytes, where: str, what: str) -> list[Event]:
        if self._identities.any_judged:
            return [Finding(what, f"signed by key id {msg.kid.hex()}, which no certificate received names")]
        if len(self._held) >= MAX_HELD:
            return [Finding(what, f"not verified: no certificate arrived with the first {MAX_HELD} messages")]
        self._held.append(_Held(feed, data, where, what))
        return [Held(what)]

    # Batches

    def _batch(self, data: bytes, where: str) -> list[Event]:
        try:
            batch = decode_batch(data)
            msg, p = open_seal(batch.seal)
        except (BundleFormatError, cose.CoseError, PayloadError) as exc:
            return [Finding(where, str(exc))]
        digest = hashlib.sha256(data).digest()
        seen = self._seen.get(p.b)
        if seen is not None and seen.message_digest == digest:
            self._duplicates += 1
            return [Duplicate(p.b)]
        what = f"b={p.b}"
        events = self._add_chain(msg.x5chain(), f"the seal of {what}") if msg.x5chain() else []
        if not self._identities.knows(msg.kid):
            return events + self._unknown_key(msg, self._batch, data, where, what)
        problem = self._identities.problem(msg, p.dev, p.t) or check_full_batch(
            p.s0, p.n, p.root, batch.salt_key, batch.readings
        )
        if seen is not None:
            return [*events, Finding(what, _second_copy(seen, batch.seal, problem))]
        if problem:
            return [*events, Finding(what, problem)]
        return events + self._accept(_Seen(p, seal_digest(batch.seal), digest, merkle.leaf_hash(batch.seal)))

    def _accept(self, seen: _Seen) -> list[Event]:
        p = seen.payload
        last_boot = max(self._boots, default=p.boot)
        self._remember(seen)
        events: list[Event] = [BatchVerified(p.b, p.boot, (p.s0, p.last_seq) if p.n else None, p.n)]
        if p.b == 1:
            events += [Finding("b=1", problem) for problem in first_seal_problems(p)]
        before, after = self._link(p.b - 1), self._link(p.b)
        events += [
            Finding(f"b={b}", problem) for b, link in ((p.b, before), (p.b + 1, after)) for problem in link.problems
        ]
        if p.boot > last_boot:  # the first batch of a newer boot than any before
            gap = before.restart_gap
            events.append(Restart(p.b, last_boot, p.boot, (gap.first, gap.last) if gap else None))
        if p.gap is not None and not p.drop_record:
            events.append(SignedGap(p.b, (p.gap.first, p.gap.last), p.gap.why))
        if p.gap is not None and p.drop_record:
            self._drops.append((p.gap, p.b))
        events += self._holes(p.b)
        if p.gap is not None and (p.gap, p.b) in self._drops:
            # a drop record that explains no hole seen here (yet): say what it records
            events.append(SignedGap(p.b, (p.gap.first, p.gap.last), p.gap.why))
        return events + self._log.grow(self._log_leaf)

    def _remember(self, seen: _Seen) -> None:
        p = seen.payload
        self._seen[p.b] = seen
        if len(self._seen) > REMEMBERED:
            del self._seen[next(iter(self._seen))]  # the first kept, nearly always the lowest b
        self._batches += 1
        self._readings += p.n
        self._boots.add(p.boot)
        self._first_b = min(p.b, self._first_b or p.b)

    def _link(self, b: int) -> Link:
        """Verifier step 5 between batches b and b + 1, once both are here."""
        prev, cur = self._seen.get(b), self._seen.get(b + 1)
        if prev is None or cur is None:
            return Link([])
        return link_seals(prev.payload, prev.seal_digest, cur.payload)

    def _log_leaf(self, b: int) -> bytes | None:
        seen = self._seen.get(b)
        return seen.log_leaf if seen else None

    # Missing batches and drop records

    def _holes(self, b: int) -> list[Event]:
        """Batches that b skips over become missing; missing ones that drop records now
        account for exactly were dropped undelivered. Runs, not sets of b: a seal with a
        huge b must not cost a huge set."""
        self._missing = [part for run in self._missing for part in _without(run, b)]
        skipped = None
        if self._last_b is not None and b > self._last_b + 1:
            skipped = (self._last_b + 1, b - 1)
            self._missing.append(skipped)  # above every other run: the list stays in order
        self._last_b = max(b, self._last_b or b)
        events: list[Event] = []
        for run in self._runs():
            records = drop_tiling(run.seqs, self._drops) if run.seqs else None
            if run.seqs is not None and records is not None:
                self._missing.remove((run.first_b, run.last_b))
                self._drops = [d for d in self._drops if d not in records]
                self._dropped += run.last_b - run.first_b + 1
                self._dropped_runs.append((run.first_b, run.last_b))
                signed_in = [record_b for _, record_b in records]
                events.append(Dropped(run.first_b, run.last_b, run.seqs, records[0][0].why, signed_in))
            elif (run.first_b, run.last_b) == skipped:
                events.append(Missing(run.first_b, run.last_b, run.seqs))
        return events

    def _runs(self) -> list[_Run]:
        return [_Run(first, last, self._seqs_between(first - 1, last + 1)) for first, last in self._missing]

    def _seqs_between(self, before: int, after: int) -> Seqs | None:
        """The seqs that the batches strictly between two received ones would hold: None
        when one of those is not known, or when they would hold none (drop records)."""
        prev, cur = self._seen.get(before), self._seen.get(after)
        if prev is None or cur is None or prev.payload.last_seq + 1 > cur.payload.first_seq - 1:
            return None
        return prev.payload.last_seq + 1, cur.payload.first_seq - 1

    # Checkpoints

    def _checkpoint(self, data: bytes, where: str) -> list[Event]:
        try:
            msg, c = open_checkpoint(data)
        except (cose.CoseError, PayloadError) as exc:
            return [Finding(where, str(exc))]
        digest = hashlib.sha256(data).digest()
        what = f"checkpoint size={c.size}"
        earlier = self._checkpoints.get(c.size)
        if earlier == digest:
            return []  # delivered again: nothing new
        if not self._identities.knows(msg.kid):
            return self._unknown_key(msg, self._checkpoint, data, where, what)
        problem = self._identities.problem(msg, c.dev, c.t)
        if problem:
            return [Finding(what, problem)]
        if earlier is not None:
            return [Finding(what, "a second, different checkpoint of the same log size")]
        self._checkpoints[c.size] = digest
        return [self._log.check(c.size, c.root, self._may_arrive(self._log.size + 1))]

    def _may_arrive(self, b: int) -> bool:
        """Whether batch b may still come: not dropped undelivered, nor older than the
        first batch of this watch."""
        if self._first_b is not None and b < self._first_b:
            return False
        return not any(first <= b <= last for first, last in self._dropped_runs)


def _second_copy(seen: _Seen, seal: bytes, problem: str | None) -> str:
    if seal_digest(seal) == seen.seal_digest:
        return f"arrived again with the same seal but other contents: {problem or 'another encoding'}"
    if problem:
        return f"arrived again with a different seal, which does not verify: {problem}"
    return "two different seals with one batch number, both signed by the device"


def _without(run: tuple[int, int], b: int) -> list[tuple[int, int]]:
    """A run of missing batches once b has arrived: itself, shorter, split, or gone."""
    first, last = run
    if not first <= b <= last:
        return [run]
    return [part for part in ((first, b - 1), (b + 1, last)) if part[0] <= part[1]]
