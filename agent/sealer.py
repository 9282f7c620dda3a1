"""The sealer: closed batches -> signed seals -> the device seal log -> checkpoints.

Seals are made one at a time because each names the hash of the one before (`prev`).
While the device key signs (a hardware TPM takes 200-600 ms), readings keep flowing into
the next batch, which is then simply larger. A seal is committed with an fsync before
anything may publish it; a commit that fails (disk full) is retried with the same
signed bytes, so a seal never exists in two versions.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from cryptography.hazmat.primitives.serialization import Encoding

from agent.buffer.store import Buffer, BufferWriteError, SealRow
from agent.keys.signer import Signer, key_id
from agent.sequencer import OpenBatch, Sequencer
from agent.trust import cose, merkle
from agent.trust.payloads import (
    CHECKPOINT_CONTENT_TYPE,
    SEAL_CONTENT_TYPE,
    ZERO_HASH,
    CheckpointPayload,
    SealPayload,
    seal_digest,
)

log = logging.getLogger(__name__)

RETRY_DELAYS = (0.1, 0.5, 1.0, 2.0, 5.0)


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
    ) -> None:
        self._buffer, self._sequencer, self._signer = buffer, sequencer, signer
        self._device_id, self._boot = device_id, boot
        self._interval = interval
        self._checkpoint_every, self._checkpoint_interval = checkpoint_every, checkpoint_interval
        self._clock = clock
        self._kid = key_id(signer.public_key)
        self._x5chain = [c.public_bytes(Encoding.DER) for c in signer.certificate_chain]
        self._send_chain = True  # the first seal after each start carries the chain
        buffer.remember_identity(self._kid, self._x5chain, boot)  # for exports
        self._log = merkle.Frontier()
        self._log.extend(buffer.seal_log_leaf_hashes())
        last = buffer.last_seal()
        self._prev = seal_digest(last.cose) if last else ZERO_HASH
        self._checkpointed = buffer.last_checkpoint_size()
        self._last_checkpoint_at = time.monotonic()
        self.seals_made = 0

    @property
    def log_size(self) -> int:
        return self._log.size

    async def run(self, stop: asyncio.Event) -> None:
        """Seal until `stop` is set, then finish: a seal being signed is never abandoned."""
        while not stop.is_set():
            await _wait_any((self._sequencer.batch_full, stop), self._interval)
            await self.seal_pending()
            if self._checkpoint_due():
                await self.checkpoint()
        await self.finish()

    async def seal_pending(self) -> None:
        """Seal everything committed so far, oldest batch first."""
        self._sequencer.flush()
        while (batch := self._sequencer.take_batch()) is not None:
            await self._seal(batch)

    async def finish(self) -> None:
        """At shutdown: seal what is left and cover it with a checkpoint."""
        await self.seal_pending()
        if self._log.size > self._checkpointed:
            await self.checkpoint()

    async def _seal(self, batch: OpenBatch) -> None:
        b = self._log.size + 1
        payload = SealPayload(
            dev=self._device_id,
            boot=self._boot,
            b=b,
            s0=batch.s0,
            n=batch.n,
            root=batch.tree.root(),
            prev=self._prev,
            t=self._clock(),
            gap=batch.gap,
        )
        cose_bytes = await self._sign(SEAL_CONTENT_TYPE, payload.encode(), self._send_chain)
        row = SealRow(b, batch.s0, batch.n, payload.t, batch.salt_key, cose_bytes)
        await _retrying(lambda: self._buffer.commit_seal(row), f"seal b={b}")
        self._send_chain = False
        self._prev = seal_digest(cose_bytes)
        self._log.append(merkle.leaf_hash(cose_bytes))
        self.seals_made += 1
        if batch.gap:
            g = batch.gap
            log.warning("sealed gap: seq %d..%d dropped (%s) in batch %d", g.first, g.last, g.why, b)

    def _checkpoint_due(self) -> bool:
        fresh = self._log.size - self._checkpointed
        elapsed = time.monotonic() - self._last_checkpoint_at
        return fresh >= self._checkpoint_every or (fresh > 0 and elapsed >= self._checkpoint_interval)

    async def checkpoint(self) -> None:
        size = self._log.size
        payload = CheckpointPayload(self._device_id, size, self._log.root(), self._clock())
        cose_bytes = await self._sign(CHECKPOINT_CONTENT_TYPE, payload.encode(), False)
        await _retrying(lambda: self._buffer.commit_checkpoint(size, payload.t, cose_bytes), f"checkpoint {size}")
        self._checkpointed = size
        self._last_checkpoint_at = time.monotonic()

    async def _sign(self, content_type: str, payload: bytes, with_chain: bool) -> bytes:
        protected = cose.protected_header(content_type, self._kid)
        signature = await self._signer.sign_digest(cose.digest_to_sign(protected, payload))
        return cose.assemble(protected, payload, signature, self._x5chain if with_chain else None)


async def _wait_any(events: tuple[asyncio.Event, ...], timeout: float) -> None:
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


async def _retrying(commit: Callable[[], None], what: str) -> None:
    """Retry a durable commit until it succeeds; the data is already signed and must
    not be re-made differently. Reading goes on meanwhile (the sequencer drops with a
    signed gap once its memory queue is full)."""
    attempt = 0
    while True:
        try:
            commit()
            if attempt:
                log.warning("%s stored after %d retries", what, attempt)
            return
        except BufferWriteError as exc:
            delay = RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)]
            if attempt == 0:
                log.error("%s; retrying", exc)
            attempt += 1
            await asyncio.sleep(delay)
