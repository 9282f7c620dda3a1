"""The sequencer: readings in, numbered leaves committed to the buffer, batches out.

Drivers submit readings; they wait in a bounded in-memory queue until the next flush
(every `flush_interval`, or sooner when many arrive). A flush gives each reading the
next device-wide seq, encodes its leaf, commits the rows in one transaction and adds
their salted leaf hashes to the open batch. The sealer takes batches as they close.

When the database cannot be written (disk full, I/O error) readings keep arriving;
beyond `max_pending` the oldest are dropped, and their seqs become a gap that the next
seal signs with its reason: reading never stops, and nothing is lost silently.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from agent.buffer.store import Buffer, BufferWriteError
from agent.trust.cbor import CborError
from agent.trust.leaf import SALT_KEY_SIZE, encode_leaf, leaf_hashes
from agent.trust.merkle import Frontier
from agent.trust.payloads import Gap
from drivers.api import Quality, Reading

log = logging.getLogger(__name__)

FLUSH_CHUNK = 20_000  # rows per transaction: bounds one flush's stall of the event loop
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

    def add(self, first_seq: int, leaves: Sequence[bytes]) -> None:
        assert first_seq == self.s0 + self.n, "leaves must be contiguous"
        self.tree.extend(leaf_hashes(self.salt_key, first_seq, leaves))


class Sequencer:
    def __init__(self, buffer: Buffer, *, max_pending: int, flush_interval: float, max_batch: int) -> None:
        self._buffer = buffer
        self._max_pending = max_pending
        self._max_batch = max_batch
        self._flush_interval = flush_interval
        self._queue: deque[Reading] = deque()
        self._next_seq = buffer.next_seq()
        self._open = OpenBatch(self._next_seq)
        self._closed: deque[OpenBatch] = deque()
        self._flush_soon = asyncio.Event()
        self._write_failing = False
        self._unencodable: set[str] = set()
        self.batch_full = asyncio.Event()
        self.dropped = 0
        self._recover_unsealed()

    def _recover_unsealed(self) -> None:
        """Readings committed before a crash but never sealed go into the first batch."""
        first = self._buffer.sealed_through() + 1
        rows = self._buffer.readings(first, self._next_seq - 1)
        if rows:
            self._open = OpenBatch(rows[0][0])
            self._open.add(rows[0][0], [leaf for _, leaf in rows])
            log.info("recovered %d unsealed readings (seq %d..%d)", len(rows), rows[0][0], rows[-1][0])

    # -- the ReadingSink drivers see ------------------------------------------------

    async def submit(self, readings: Sequence[Reading]) -> None:
        self._queue.extend(readings)
        excess = len(self._queue) - self._max_pending
        if excess > 0:
            self._drop_oldest(excess)
        if len(self._queue) >= FLUSH_CHUNK:
            self._flush_soon.set()

    @property
    def pending(self) -> int:
        return len(self._queue)

    # -- flushing -------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._flush_soon.wait(), self._flush_interval)
            except TimeoutError:
                pass
            self._flush_soon.clear()
            self.flush()

    def flush(self) -> int:
        """Commit everything queued; returns how many readings were committed."""
        committed = 0
        while self._queue:
            chunk = [self._queue.popleft() for _ in range(min(FLUSH_CHUNK, len(self._queue)))]
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
                self._report_write_failure(exc)
                break
            self._write_recovered()
            self._open.add(seq, leaves)
            self._next_seq += len(leaves)
            committed += len(leaves)
        if self._open.n >= self._max_batch or self._closed:
            self.batch_full.set()
        return committed

    def _encode_or_mark(self, seq: int, r: Reading) -> bytes:
        """A value the leaf format cannot hold (a driver bug) must not stop the others:
        the reading is kept, with no value and Bad_EncodingError, and the tag logged once."""
        try:
            return encode_leaf(seq, r.ts, r.tag, None if r.quality & BAD else r.value, r.quality)
        except ENCODE_ERRORS as exc:
            if r.tag not in self._unencodable:
                self._unencodable.add(r.tag)
                log.error("tag %s: value %r cannot be encoded (%s); stored as Bad_EncodingError", r.tag, r.value, exc)
            return encode_leaf(seq, r.ts, r.tag, None, Quality.BAD_ENCODING_ERROR)

    def _drop_oldest(self, count: int) -> None:
        for _ in range(count):
            self._queue.popleft()
        first, last = self._next_seq, self._next_seq + count - 1
        self._next_seq += count
        self.dropped += count
        why = "buffer unwritable: readings dropped from the full memory queue"
        if self._open.n:
            self._closed.append(self._open)
            self._open = OpenBatch(last + 1, Gap(first, last, why))
        elif self._open.gap:
            self._open = OpenBatch(last + 1, Gap(self._open.gap.first, last, why))
        else:
            self._open = OpenBatch(last + 1, Gap(first, last, why))
        self.batch_full.set()

    def _report_write_failure(self, exc: BufferWriteError) -> None:
        if not self._write_failing:
            log.error("%s; holding up to %d readings in memory", exc, self._max_pending)
        self._write_failing = True

    def _write_recovered(self) -> None:
        if self._write_failing:
            log.warning("buffer writable again")
        self._write_failing = False

    # -- batches for the sealer -----------------------------------------------------

    def take_batch(self) -> OpenBatch | None:
        """The oldest batch ready to seal, closing the open one if it holds anything."""
        if self._closed:
            return self._closed.popleft()
        if self._open.empty:
            return None
        batch, self._open = self._open, OpenBatch(self._next_seq)
        self.batch_full.clear()
        return batch
