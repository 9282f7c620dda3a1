"""The disk budget (buffer.max_bytes): the buffer never grows past it, and reading never
stops because of it.

Every CHECK_EVERY seconds: the readings of batches delivered longer than keep_delivered
ago are deleted. Then, while the buffer uses more than its budget: the readings of the
oldest delivered batches go first; when none is left, those of the oldest undelivered
batches, noted in the same transaction as a drop for the sealer to record in a signed
seal (a drop record, DESIGN 3.2), which is published like any batch. Seals and
checkpoints always stay: the seal log and its proofs need them, and they are small.
Deleting stops a little under the budget (LOW_WATER), so it does not run at every check.

A warning is logged once when the buffer passes warn_at percent of the budget, and again
each time it drops undelivered data.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from agent.buffer.store import Buffer, BufferWriteError

log = logging.getLogger(__name__)

CHECK_EVERY = 5.0  # seconds
LOW_WATER = 0.9  # of the budget, once deleting started
STEP = 10  # batches deleted per transaction: short write locks, fine-grained stops


@dataclass
class RetentionStats:
    pruned_batches: int = 0  # delivered batches whose readings were deleted
    drops: int = 0  # times undelivered batches were dropped for the budget (each a signed record)
    warned: bool = False


class Retention:
    def __init__(self, buffer: Buffer, *, max_bytes: int, keep_delivered: float, warn_at: int) -> None:
        self._buffer = buffer
        self._max_bytes, self._keep_delivered_ns = max_bytes, int(keep_delivered * 1e9)
        self._warn_bytes = max_bytes * warn_at // 100
        self.stats = RetentionStats()

    async def run(self) -> None:
        while True:
            try:
                self.enforce()
            except BufferWriteError as exc:  # a full disk: the next check tries again
                log.error("cannot keep the buffer within its budget now: %s", exc)
            await asyncio.sleep(CHECK_EVERY)

    def enforce(self, now_ns: int | None = None) -> None:
        now_ns = now_ns if now_ns is not None else time.time_ns()
        while pruned := self._buffer.prune_delivered(STEP, sealed_before=now_ns - self._keep_delivered_ns):
            self.stats.pruned_batches += pruned
        used = self._buffer.used_bytes()
        self._warn(used)
        if used <= self._max_bytes:
            return
        target = int(self._max_bytes * LOW_WATER)
        while used > target and (pruned := self._buffer.prune_delivered(STEP)):
            self.stats.pruned_batches += pruned
            used = self._buffer.used_bytes()
        while used > target:
            why = f"buffer full: {used} bytes in use, budget {self._max_bytes}; oldest undelivered batches dropped"
            gap = self._buffer.drop_undelivered(STEP, why)
            if gap is None:
                log.error(
                    "the buffer uses %d bytes, over its budget of %d, and holds nothing more to drop",
                    used,
                    self._max_bytes,
                )
                return
            self.stats.drops += 1
            log.warning("disk budget reached: readings seq %d..%d dropped undelivered (%s)", gap.first, gap.last, why)
            used = self._buffer.used_bytes()

    def _warn(self, used: int) -> None:
        if used >= self._warn_bytes and not self.stats.warned:
            self.stats.warned = True
            log.warning(
                "the buffer uses %d bytes, %d%% of its budget of %d: undelivered data will be dropped at 100%%",
                used, used * 100 // self._max_bytes, self._max_bytes,
            )  # fmt: skip
        elif used < self._warn_bytes * LOW_WATER:
            self.stats.warned = False
