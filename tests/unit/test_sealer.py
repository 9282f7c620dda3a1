"""The sealer against a real buffer: retries, checkpoints under a slow signer, and a
system clock that steps back."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from fixtures import open_pipeline

from agent.buffer.store import Buffer
from agent.errors import SigningError
from agent.keys.software import SoftwareSigner
from agent.sealer import ClockWatch, Sealer
from agent.sequencer import Sequencer
from drivers.api import Reading
from provisioning.devca import make_demo_identity

Pipeline = tuple[Buffer, Sequencer, Sealer]


def _pipeline(
    tmp_path: Path, signer: SoftwareSigner, checkpoint_every: int = 1_000
) -> tuple[Buffer, Sequencer, Sealer]:
    return open_pipeline(tmp_path / "state", signer, "sealer-1", interval=0.05, checkpoint_every=checkpoint_every)


def _readings(n: int) -> list[Reading]:
    return [Reading("t", time.time_ns(), i, 0) for i in range(n)]


class FlakySigner(SoftwareSigner):
    """Busy (like a TPM answering TPM_RC_RETRY) for its first two attempts."""

    attempts = 0

    async def sign_digest(self, digest: bytes) -> bytes:
        self.attempts += 1
        if self.attempts <= 2:
            raise SigningError("TPM busy")
        return await super().sign_digest(digest)


class SlowSigner(SoftwareSigner):
    async def sign_digest(self, digest: bytes) -> bytes:
        await asyncio.sleep(0.2)
        return await super().sign_digest(digest)


def test_a_transient_signing_failure_is_retried(tmp_path: Path) -> None:
    identity = make_demo_identity(tmp_path, "sealer-1")
    signer = FlakySigner.from_files(identity.key_path, identity.chain_path)
    buffer, sequencer, sealer = _pipeline(tmp_path, signer)

    async def scenario() -> None:
        await sequencer.submit(_readings(3))
        await sealer.finish()

    asyncio.run(scenario())
    assert signer.attempts == 4  # two refused, the seal, the checkpoint
    assert buffer.sealed_through() == 3 and buffer.last_checkpoint_size() == 1
    buffer.close()


def test_a_seal_that_cannot_be_stored_is_stored_later_with_the_same_bytes(tmp_path: Path) -> None:
    identity = make_demo_identity(tmp_path, "sealer-1")
    buffer, sequencer, sealer = _pipeline(tmp_path, SoftwareSigner.from_files(identity.key_path, identity.chain_path))
    conn = buffer._conn  # the test plays a file system remounted read-only after errors

    async def scenario() -> None:
        await sequencer.submit(_readings(3))
        await sequencer.drain()
        conn.execute("PRAGMA query_only = ON")
        asyncio.get_running_loop().call_later(0.5, conn.execute, "PRAGMA query_only = OFF")
        await sealer.seal_pending()

    started = time.monotonic()
    asyncio.run(scenario())
    assert time.monotonic() - started >= 0.5, "the seal was retried until the disk had room"
    assert [s.b for s in buffer.seals()] == [1] and buffer.sealed_through() == 3
    buffer.close()


def test_checkpoints_keep_coming_while_a_slow_signer_seals_a_busy_stream(tmp_path: Path) -> None:
    identity = make_demo_identity(tmp_path, "sealer-1")
    signer = SlowSigner.from_files(identity.key_path, identity.chain_path)
    buffer, sequencer, sealer = _pipeline(tmp_path, signer, checkpoint_every=2)

    async def scenario() -> int:
        stop = asyncio.Event()
        sealing = asyncio.create_task(sealer.run(stop))

        async def stream() -> None:
            while True:  # a new batch is always waiting by the time a signature is done
                await sequencer.submit(_readings(50))
                await asyncio.sleep(0.01)

        feeding = asyncio.create_task(stream())
        await asyncio.sleep(3.0)
        made_while_running = buffer.last_checkpoint_size()
        feeding.cancel()
        stop.set()
        await asyncio.gather(feeding, return_exceptions=True)
        await sealing
        return made_while_running

    checkpointed = asyncio.run(scenario())
    assert checkpointed >= 2, "no checkpoint while seals kept coming"
    assert len(buffer.checkpoints()) >= 3
    buffer.close()


class SteppedClock:
    """A wall clock that reads what the test set, in seconds, as the sealer's clock."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> int:
        return int(self.now * 1e9)


def test_a_clock_that_steps_back_is_kept_and_warned_of_once_per_step(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    identity = make_demo_identity(tmp_path, "sealer-1")
    signer = SoftwareSigner.from_files(identity.key_path, identity.chain_path)
    clock = SteppedClock(1_000.0)
    buffer, sequencer, sealer = open_pipeline(tmp_path / "state", signer, "sealer-1", clock=clock)
    times = [1_000.0, 1_001.0, 900.0, 901.0, 901.0, 5_000.0, 4_999.5]  # back, still, forward, back

    async def seal_one_batch_at_each_time() -> None:
        for now in times:
            clock.now = now
            await sequencer.submit(_readings(2))
            await sealer.seal_pending()

    with caplog.at_level(logging.WARNING, logger="agent.sealer"):
        asyncio.run(seal_one_batch_at_each_time())
    assert [s.t for s in buffer.seals()] == [int(now * 1e9) for now in times], "a seal time was not the clock's"
    warned = [r.getMessage() for r in caplog.records if "clock went back" in r.getMessage()]
    assert len(warned) == 2, warned
    assert "went back 101.000 s before seal b=3" in warned[0] and "went back 0.500 s before seal b=7" in warned[1]
    buffer.close()


def test_a_clock_outside_the_certificates_validity_is_an_error_once_until_it_is_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    valid = {"not_valid_before_utc": dt.datetime(2026, 1, 1, tzinfo=dt.UTC)}
    device = SimpleNamespace(**valid, not_valid_after_utc=dt.datetime(2036, 1, 1, tzinfo=dt.UTC))
    watch = ClockWatch(0, [device])  # type: ignore[list-item]
    start, end = (int(device.not_valid_before_utc.timestamp()), int(device.not_valid_after_utc.timestamp()))
    # inside; before it twice; inside again; after it twice; past year 9999
    times = [start + 60, start - 600, start - 599, start + 61, end + 1, end + 2, 300_000_000_000]
    with caplog.at_level(logging.WARNING, logger="agent.sealer"):
        for b, t in enumerate(times, 1):
            watch.seal_time(t * 1_000_000_000, b)
    said = [(r.levelname, r.getMessage()) for r in caplog.records if "validity" in r.getMessage()]
    assert [level for level, _ in said] == ["ERROR", "WARNING", "ERROR"], said
    assert "is before the device certificate's validity" in said[0][1] and "seal b=2" in said[0][1]
    assert "set the clock" in said[0][1] and "again from seal b=4" in said[1][1]
    assert "is after the device certificate's validity" in said[2][1] and "renew it" in said[2][1]
