"""The sealer: closed batches -> signed seals -> the device seal log -> checkpoints.

Seals are made one at a time because each names the hash of the one before (`prev`).
While the device key signs (a hardware TPM takes 200-600 ms), readings keep flowing into
the next batch, which is then simply larger. A seal is committed with an fsync before
anything may publish it; a commit that fails (disk full) is retried with the same
signed bytes, so a seal never exists in two versions.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from agent.buffer.store import Buffer, BufferWriteError, SealRow
from agent.crashpoints import crash_point
from agent.errors import SigningError
from agent.keys.signer import Signer, key_id
from agent.sequencer import OpenBatch, Sequencer
from agent.trust import cose, merkle
from agent.trust.leaf import NO_READINGS_SALT_KEY
from agent.trust.payloads import (
    CHECKPOINT_CONTENT_TYPE,
    SEAL_CONTENT_TYPE,
    ZERO_HASH,
    CheckpointPayload,
    Gap,
    SealPayload,
    seal_digest,
)

log = logging.getLogger(__name__)

RETRY_DELAYS = (0.1, 0.5, 1.0, 2.0, 5.0)
T = TypeVar("T")


class SealObserver(Protocol):
    """Told of each signature and each committed seal (e.g. agent.metrics.Metrics)."""

    def signed(self, seconds: float) -> None: ...

    def sealed(self, seconds: float, log_size: int) -> None: ...


class Sealer:
    def __init__(
        self,
        buffer: Buffer,
        sequencer: Sequencer,
        signer: Signer,
        *,
        device_id: str,
        boot: int,
        interval: float,
        checkpoint_every: int,
        checkpoint_interval: float,
        clock: Callable[[], int] = time.time_ns,
        observer: SealObserver | None = None,
    ) -> None:
        self._buffer, self._sequencer, self._signer = buffer, sequencer, signer
        self._device_id, self._boot = device_id, boot
        self._interval = interval
        self._checkpoint_every, self._checkpoint_interval = checkpoint_every, checkpoint_interval
        self._clock, self._observer = clock, observer
        self._kid = key_id(signer.public_key)
        self._x5chain = [c.public_bytes(Encoding.DER) for c in signer.certificate_chain]
        self._send_chain = True  # the first seal after each start carries the chain
        buffer.remember_identity(self._kid, self._x5chain, boot)  # for exports
        self._log = _load_log(buffer)
        last = buffer.last_seal()
        self._prev = seal_digest(last.cose) if last else ZERO_HASH
        self._clock_watch = ClockWatch(last.t if last else 0, signer.certificate_chain)
        self._checkpointed = buffer.last_checkpoint_size()
        self._last_checkpoint_at = time.monotonic()
        self.seals_made = 0
        self.last_round = time.monotonic()  # when a round of sealing last completed: its health

    @property
    def log_size(self) -> int:
        return self._log.size

    @property
    def chain_der(self) -> list[bytes]:
        """The signer's certificate chain, device first, as DER."""
        return list(self._x5chain)

    async def run(self, stop: asyncio.Event) -> None:
        """Seal until `stop` is set, then finish: a seal being signed is never abandoned."""
        while not stop.is_set():
            await _wait_any((self._sequencer.batch_full, stop), self._interval)
            await self.seal_pending()
            if self._checkpoint_due():
                await self.checkpoint()
            self.last_round = time.monotonic()
        await self.finish()

    async def seal_pending(self) -> None:
        """Seal what is committed or queued now, oldest batch first, then record the
        batches the disk budget dropped. Batches that fill while the key signs wait for
        the next call, so checkpoints are made in between however slow the signer is."""
        await self._sequencer.drain()
        for _ in range(self._sequencer.ready()):
            batch = self._sequencer.take_batch()
            if batch is None:
                break
            await self._seal(batch)
            if self._checkpoint_due():
                await self.checkpoint()
        for drop in self._buffer.pending_drops():
            await self._seal_drop(drop)

    async def finish(self) -> None:
        """At shutdown (sources stopped): seal what is left and cover it with a checkpoint."""
        await self.seal_pending()
        if self._log.size > self._checkpointed:
            await self.checkpoint()

    async def _seal(self, batch: OpenBatch) -> None:
        salt_key = batch.salt_key if batch.n else NO_READINGS_SALT_KEY  # a batch that is only a gap
        b = await self._commit(batch.s0, batch.n, batch.tree.root(), salt_key, batch.gap)
        if batch.gap:
            g = batch.gap
            log.warning("sealed gap: seq %d..%d (%s) in batch %d", g.first, g.last, g.why, b)

    async def _seal_drop(self, drop: Gap) -> None:
        """A drop record: a seal of no readings whose gap names sealed batches that the
        disk budget dropped before delivery. It sits where the next batch will start."""
        s0 = self._sequencer.unsealed_from()
        b = await self._commit(s0, 0, merkle.EMPTY_ROOT, NO_READINGS_SALT_KEY, drop, records_drop=drop.first)
        log.warning("sealed drop record: seq %d..%d (%s) in batch %d", drop.first, drop.last, drop.why, b)

    async def _commit(
        self, s0: int, n: int, root: bytes, salt_key: bytes, gap: Gap | None, records_drop: int | None = None
    ) -> int:
        started = time.perf_counter()
        b = self._log.size + 1
        payload = SealPayload(self._device_id, self._boot, b, s0, n, root, self._prev, self._clock(), gap)
        self._clock_watch.seal_time(payload.t, b)
        cose_bytes = await self._sign(SEAL_CONTENT_TYPE, payload.encode(), self._send_chain)
        crash_point("seal.signed")
        log_after = self._log.copy()
        log_after.append(merkle.leaf_hash(cose_bytes))
        row = SealRow(b, s0, n, payload.t, salt_key, cose_bytes, log_after.nodes)
        commit = self._buffer.commit_seal
        await _persistently(lambda: _now(commit, row, records_drop), BufferWriteError, f"storing seal b={b}")
        self._send_chain = False
        self._prev = seal_digest(cose_bytes)
        self._log = log_after
        self.seals_made += 1
        if self._observer is not None:
            self._observer.sealed(time.perf_counter() - started, self._log.size)
        return b

    def _checkpoint_due(self) -> bool:
        fresh = self._log.size - self._checkpointed
        elapsed = time.monotonic() - self._last_checkpoint_at
        return fresh >= self._checkpoint_every or (fresh > 0 and elapsed >= self._checkpoint_interval)

    async def checkpoint(self) -> None:
        size = self._log.size
        payload = CheckpointPayload(self._device_id, size, self._log.root(), self._clock())
        cose_bytes = await self._sign(CHECKPOINT_CONTENT_TYPE, payload.encode(), False)
        crash_point("checkpoint.signed")
        commit = self._buffer.commit_checkpoint
        what = f"storing checkpoint {size}"
        await _persistently(lambda: _now(commit, size, payload.t, cose_bytes), BufferWriteError, what)
        self._checkpointed = size
        self._last_checkpoint_at = time.monotonic()

    async def _sign(self, content_type: str, payload: bytes, with_chain: bool) -> bytes:
        protected = cose.protected_header(content_type, self._kid)
        digest = cose.digest_to_sign(protected, payload)
        signature = await _persistently(lambda: self._timed_sign(digest), SigningError, "signing")
        return cose.assemble(protected, payload, signature, self._x5chain if with_chain else None)

    async def _timed_sign(self, digest: bytes) -> bytes:
        started = time.perf_counter()
        signature = await self._signer.sign_digest(digest)
        if self._observer is not None:
            self._observer.signed(time.perf_counter() - started)
        return signature


class ClockWatch:
    """Order is b and seq, never time: a seal keeps the clock's time, whatever it is. The
    log says when that time goes back, and when it leaves the device certificate's
    validity, since verifiers reject what is signed outside it."""

    def __init__(self, last_t: int, chain: Sequence[x509.Certificate]) -> None:
        self._last_t = last_t
        self._valid_from = max((c.not_valid_before_utc for c in chain), default=None)
        self._valid_until = min((c.not_valid_after_utc for c in chain), default=None)
        self._outside: str | None = None  # "before" or "after" the validity, as last seen

    def seal_time(self, t: int, b: int) -> None:
        if t < self._last_t:
            back = (self._last_t - t) / 1e9
            log.warning("the system clock went back %.3f s before seal b=%d; times are as the clock gave them", back, b)
        self._last_t = t
        outside = None  # compared in ns: a clock set past year 9999 is no datetime
        if self._valid_from and t < _ns(self._valid_from):
            outside = "before"
        elif self._valid_until and t > _ns(self._valid_until):
            outside = "after"
        if outside and outside != self._outside:
            bound, remedy = (
                (self._valid_from, "set the clock") if outside == "before" else (self._valid_until, "renew it")
            )
            log.error(
                "the system clock is %s the device certificate's validity (%s) at seal b=%d: verifiers reject"
                " what is signed meanwhile; %s",
                outside,
                bound,
                b,
                remedy,
            )
        elif self._outside and not outside:
            log.warning("the system clock is within the device certificate's validity again from seal b=%d", b)
        self._outside = outside


def _ns(at: dt.datetime) -> int:
    return int(at.timestamp()) * 1_000_000_000


def _load_log(buffer: Buffer) -> merkle.Frontier:
    """The seal log's right edge as stored with the last seal: O(log n) to load."""
    last = buffer.last_seal()
    return merkle.Frontier.restore(last.b, last.log_frontier) if last else merkle.Frontier()


async def _wait_any(events: tuple[asyncio.Event, ...], timeout: float) -> None:
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


async def _now(action: Callable[..., None], *args: Any) -> None:
    action(*args)


async def _persistently(attempt: Callable[[], Awaitable[T]], transient: type[Exception], what: str) -> T:
    """Retry until it succeeds. A signed seal or checkpoint is stored with the same bytes,
    never re-made differently; reading goes on meanwhile (the sequencer drops with a
    signed gap once its memory queue is full)."""
    failures = 0
    while True:
        try:
            result = await attempt()
        except transient as exc:
            if not failures:
                log.error("%s failed: %s; retrying", what, exc)
            failures += 1
            await asyncio.sleep(RETRY_DELAYS[min(failures, len(RETRY_DELAYS)) - 1])
            continue
        if failures:
            log.warning("%s succeeded after %d retries", what, failures)
        return result
