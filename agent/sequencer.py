"""The sequencer: readings in, numbered leaves committed to the buffer, batches out.

Drivers submit readings; they wait in a bounded in-memory queue until the next flush
(every `flush_interval`, or sooner when many arrive). A flush gives each reading the
next device-wide seq, encodes its leaf, commits the rows in one transaction and adds
their salted leaf hashes to the open batch. The sealer takes batches as they close.

When the database cannot be written (disk full, I/O error), or readings arrive faster
than they can be stored, readings keep arriving; beyond `max_pending` the oldest are
dropped, and their seqs become a gap that the next seal signs with its reason: reading
never stops, and nothing is lost silently. While writes fail, only a small probe chunk
is tried, with backoff, so a full disk does not keep the event loop busy.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from agent.buffer.store import Buffer, BufferWriteError
from agent.trust.cbor import CborError
from agent.trust.leaf import SALT_KEY_SIZE, encode_leaf, is_leaf_time, leaf_hashes
from agent.trust.merkle import Frontier
from agent.trust.payloads import Gap
from drivers.api import Quality, Reading

log = logging.getLogger(__name__)

FLUSH_CHUNK = 20_000  # rows per transaction; the event loop runs between transactions
PROBE_CHUNK = 500  # rows tried per attempt while writes fail
RETRY_DELAYS = (0.1, 0.2, 0.5, 1.0, 2.0)  # between write attempts while they fail
BAD = 0x80000000  # StatusCode severity bit: a Bad reading carries no value (DESIGN 3.1)
ENCODE_ERRORS = (CborError, TypeError, ValueError, OverflowError)


@dataclass
class OpenBatch:
    """Readings s0.. committed but not yet sealed, optionally preceded by a gap.

    Only the right edge of the batch's Merkle tree is kept (O(log n) hashes), so a
    signer that stalls costs no memory however many readings wait, and the seal's root
    is ready at once."""

    s0: int
    gap: Gap | None = None
    salt_key: bytes = field(default_factory=lambda: os.urandom(SALT_KEY_SIZE))
    tree: Frontier = field(default_factory=Frontier)

    @property
    def n(self) -> int:
        return self.tree.size

    @property
    def empty(self) -> bool:
        return not self.tree.size and self.gap is None

    @property
    def first(self) -> int:
        """The first seq this batch accounts for: its gap's, else s0."""
        return self.gap.first if self.gap is not None else self.s0

    def add(self, first_seq: int, leaves: Sequence[bytes]) -> None:
        assert first_seq == self.s0 + self.n, "leaves must be contiguous"
        self.tree.extend(leaf_hashes(self.salt_key, first_seq, leaves))


class Sequencer:
    def __init__(self, buffer: Buffer, *, max_pending: int, flush_interval: float, max_batch: int) -> None:
        self._buffer = buffer
        self._max_pending = max_pending
        self._max_batch = max_batch
        self._flush_interval = flush_interval
        self._flush_at = min(FLUSH_CHUNK, max(1, max_pending // 2))
        self._queue: deque[Reading] = deque()
        self._next_seq = buffer.next_seq()
        self._closed: deque[OpenBatch] = deque()
        self._flush_soon = asyncio.Event()
        self._failures = 0  # consecutive failed writes
        self._unencodable: set[str] = set()
        self.batch_full = asyncio.Event()
        self.dropped = 0
        self._open = OpenBatch(buffer.sealed_through() + 1)
        self._recover_unsealed()

    def _recover_unsealed(self) -> None:
        """Readings committed before a crash but never sealed are sealed now, in runs of
        consecutive seqs, max_batch to a batch; seqs missing between runs (dropped, and the
        process died before it could seal their gap) become a signed gap. Read in chunks:
        after a long signer outage there may be millions."""
        recovered = 0
        for rows in self._buffer.iter_readings(self._open.s0, self._next_seq - 1):
            start = 0
            while start < len(rows):
                expected = self._open.s0 + self._open.n
                if rows[start][0] != expected:
                    self._record_gap(expected, rows[start][0] - 1, "not in the buffer at restart")
                elif self._open.n >= self._max_batch:
                    self._closed.append(self._open)
                    self._open = OpenBatch(expected)
                end = _run_end(rows, start, self._max_batch - self._open.n)
                self._open.add(rows[start][0], [leaf for _, leaf in rows[start:end]])
                start = end
            recovered += len(rows)
        if recovered:
            log.info("recovered %d unsealed readings up to seq %d", recovered, self._next_seq - 1)

    # -- the ReadingSink drivers see ------------------------------------------------

    async def submit(self, readings: Sequence[Reading]) -> None:
        self._queue.extend(readings)
        excess = len(self._queue) - self._max_pending
        if excess > 0:
            self._drop_oldest(excess)
        if len(self._queue) >= self._flush_at:
            self._flush_soon.set()

    @property
    def pending(self) -> int:
        return len(self._queue)

    # -- flushing -------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            if self._failures:
                await asyncio.sleep(RETRY_DELAYS[min(self._failures, len(RETRY_DELAYS)) - 1])
            else:
                try:
                    await asyncio.wait_for(self._flush_soon.wait(), self._flush_interval)
                except TimeoutError:
                    pass
            self._flush_soon.clear()
            await self.drain()

    async def drain(self) -> int:
        """Commit what is queued now, a chunk per transaction, letting the event loop run
        between them; returns how many readings were committed."""
        todo, committed = len(self._queue), 0
        while committed < todo:
            done = self._commit_chunk()
            if not done:
                break
            committed += done
            await asyncio.sleep(0)
        if self._open.n >= self._max_batch or self._closed:
            self.batch_full.set()
        return committed

    def _commit_chunk(self) -> int:
        size = min(PROBE_CHUNK if self._failures else FLUSH_CHUNK, len(self._queue))
        chunk = [self._queue.popleft() for _ in range(size)]
        seq = self._next_seq
        try:
            leaves = [
                encode_leaf(s, r.ts, r.tag, None if r.quality & BAD else r.value, r.quality)
                for s, r in enumerate(chunk, seq)
            ]
        except ENCODE_ERRORS:
            leaves = [self._encode_or_mark(s, r) for s, r in enumerate(chunk, seq)]
        try:
            self._buffer.insert_readings(list(zip(range(seq, seq + len(leaves)), leaves)))
        except BufferWriteError as exc:
            self._queue.extendleft(reversed(chunk))
            if not self._failures:
                log.error("%s; holding up to %d readings in memory", exc, self._max_pending)
            self._failures += 1
            return 0
        if self._failures:
            log.warning("buffer writable again after %d failed attempts", self._failures)
            self._failures = 0
        self._open.add(seq, leaves)
        self._next_seq += len(leaves)
        return len(leaves)

    def _encode_or_mark(self, seq: int, r: Reading) -> bytes:
        """A value or time the leaf format cannot hold (a driver bug) must not stop the
        others: the reading is kept, with no value and Bad_EncodingError (and the time it
        is stored at, when its own cannot be held), and the tag logged once."""
        try:
            return encode_leaf(seq, r.ts, r.tag, None if r.quality & BAD else r.value, r.quality)
        except ENCODE_ERRORS as exc:
            if r.tag not in self._unencodable:
                self._unencodable.add(r.tag)
                log.error("tag %s: value %r cannot be encoded (%s); stored as Bad_EncodingError", r.tag, r.value, exc)
            ts = r.ts if is_leaf_time(r.ts) else time.time_ns()
            return encode_leaf(seq, ts, r.tag, None, Quality.BAD_ENCODING_ERROR)

    # -- drops and gaps -------------------------------------------------------------

    def _drop_oldest(self, count: int) -> None:
        for _ in range(count):
            self._queue.popleft()
        first = self._next_seq
        self._next_seq += count
        self.dropped += count
        cause = "the buffer could not be written" if self._failures else "readings came faster than they were stored"
        self._record_gap(first, first + count - 1, f"dropped from the full memory queue: {cause}")

    def _record_gap(self, first: int, last: int, why: str) -> None:
        """Seqs first..last will never be stored. A batch is an optional gap followed by
        consecutive readings, so a gap after readings starts a new batch; a gap right
        after a gap with the same reason extends it."""
        gap = self._open.gap
        if self._open.n or (gap is not None and gap.why != why):
            self._closed.append(self._open)
            self._open = OpenBatch(last + 1, Gap(first, last, why))
        else:
            self._open = OpenBatch(last + 1, Gap(gap.first if gap else first, last, why))
        self.batch_full.set()

    # -- batches for the sealer -----------------------------------------------------

    def ready(self) -> int:
        """How many batches could be sealed now."""
        return len(self._closed) + (0 if self._open.empty else 1)

    def unsealed_from(self) -> int:
        """The first seq no closed batch covers: where a seal made now must leave off."""
        return self._closed[0].first if self._closed else self._open.first

    def take_batch(self) -> OpenBatch | None:
        """The oldest batch ready to seal, closing the open one if it holds anything."""
        if self._closed:
            return self._closed.popleft()
        if self._open.empty:
            return None
        batch, self._open = self._open, OpenBatch(self._next_seq)
        self.batch_full.clear()
        return batch


def _run_end(rows: list[tuple[int, bytes]], start: int, room: int) -> int:
    """End of the run of consecutive seqs from rows[start], at most `room` long: hashed
    together, a run shares one set of HMAC states instead of deriving them per reading."""
    end = start + 1
    while end < len(rows) and end - start < room and rows[end][0] == rows[end - 1][0] + 1:
        end += 1
    return end
