"""Sealed device histories for tests: a demo identity and a state directory filled
through the real Buffer, Sequencer and Sealer (as bench/verify.py does), kept small so
that per-byte tests over an exported bundle stay fast.

A plain module beside tests/conftest.py, imported by the tests that need it:

    from fixtures import export, make_sealed_state, mutate_bundle
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from agent.buffer.store import Buffer
from agent.export import Selection, export_bundle
from agent.keys.software import SoftwareSigner
from agent.sealer import Sealer
from agent.sequencer import Sequencer
from agent.trust.bundle import Bundle, decode_bundle
from drivers.api import Reading
from provisioning.devca import make_demo_identity

DEVICE_ID = "test-press-1"
TAGS = ("press.temperature", "press.pressure", "press.running")
T0 = 1_700_000_000_000_000_000  # a fixed reading time: 2023-11-14T22:13:20Z
STEP = 1_000_000_000  # one second between readings


@dataclass(frozen=True)
class SealedState:
    """A state directory and the identity that signed it."""

    state_dir: Path
    ca_path: Path  # the demo root: what `edgeseal verify --ca` takes
    key_path: Path
    chain_path: Path
    device_id: str
    readings: int  # readings sealed, over all boots
    batches: int
    checkpoints: int
    boots: int

    def roots(self) -> list[x509.Certificate]:
        return x509.load_pem_x509_certificates(self.ca_path.read_bytes())

    def signer(self) -> SoftwareSigner:
        return SoftwareSigner.from_files(self.key_path, self.chain_path)


def make_sealed_state(
    directory: Path,
    *,
    device_id: str = DEVICE_ID,
    readings_per_batch: int = 3,
    batches_per_checkpoint: int = 2,
    checkpoints_per_boot: int = 2,
    boots: int = 1,
    checkpointed: bool = True,
) -> SealedState:
    """Create a demo identity in `directory` and a state directory `directory/state`.

    Each boot seals `checkpoints_per_boot * batches_per_checkpoint` batches of
    `readings_per_batch` readings (tags taking turns, values of several types) and
    signs a checkpoint after every `batches_per_checkpoint` batches. With
    `checkpointed=False` no checkpoint is signed at all: seals nothing yet covers, as
    after an agent stopped before its first checkpoint."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    identity = make_demo_identity(directory, device_id)
    state = SealedState(
        state_dir=directory / "state",
        ca_path=identity.ca_path,
        key_path=identity.key_path,
        chain_path=identity.chain_path,
        device_id=device_id,
        readings=boots * checkpoints_per_boot * batches_per_checkpoint * readings_per_batch,
        batches=boots * checkpoints_per_boot * batches_per_checkpoint,
        checkpoints=boots * checkpoints_per_boot if checkpointed else 0,
        boots=boots,
    )
    seq = 0
    for _ in range(boots):
        seq = asyncio.run(
            _one_boot(state, seq, readings_per_batch, batches_per_checkpoint, checkpoints_per_boot, checkpointed)
        )
    return state


async def _one_boot(
    state: SealedState, seq: int, per_batch: int, per_checkpoint: int, checkpoints: int, checkpointed: bool
) -> int:
    clock = _Clock(time.time_ns())  # seal times must fall within the certificate's validity
    buffer, sequencer, sealer = open_pipeline(state.state_dir, state.signer(), state.device_id, clock=clock)
    try:
        for _ in range(checkpoints):
            for _ in range(per_checkpoint):
                batch = [_reading(seq + i) for i in range(per_batch)]
                seq += per_batch
                await sequencer.submit(batch)
                await sealer.seal_pending()
            if checkpointed:
                await sealer.checkpoint()
        if checkpointed:
            await sealer.finish()
    finally:
        buffer.close()
    return seq


def open_pipeline(
    state_dir: Path,
    signer: SoftwareSigner,
    device_id: str,
    *,
    max_pending: int = 10_000,
    interval: float = 1.0,
    checkpoint_every: int = 10_000,
    clock: Callable[[], int] = time.time_ns,
) -> tuple[Buffer, Sequencer, Sealer]:
    """The agent's buffer, sequencer and sealer, started as a new boot, for tests that
    drive them by hand (submit, drain, seal_pending, finish)."""
    buffer = Buffer.open(state_dir)
    sequencer = Sequencer(buffer, max_pending=max_pending, flush_interval=0.01, max_batch=10_000)
    sealer = Sealer(
        buffer,
        sequencer,
        signer,
        device_id=device_id,
        boot=buffer.start_boot(clock()),
        interval=interval,
        checkpoint_every=checkpoint_every,
        checkpoint_interval=3600.0,
        clock=clock,
    )
    return buffer, sequencer, sealer


def _reading(i: int) -> Reading:
    tag = TAGS[i % len(TAGS)]
    value: float | int | bool = [20.5 + i / 4, 1000 + i, i % 2 == 0][i % len(TAGS)]
    return Reading(tag, T0 + i * STEP, value, 0)


class _Clock:
    """Seal and checkpoint times, strictly increasing."""

    def __init__(self, start: int) -> None:
        self._now = start

    def __call__(self) -> int:
        self._now += 1_000
        return self._now


def export(state: SealedState, selection: Selection = Selection()) -> bytes:
    """The encoded bundle `edgeseal export` would write for `selection`."""
    buffer = Buffer.open(state.state_dir, create=False)
    try:
        return export_bundle(buffer, selection)[0].encode()
    finally:
        buffer.close()


def mutate_bundle(data: bytes, change: Callable[[Bundle], Bundle]) -> bytes:
    """Decode a bundle, change it as a structure, encode it again: tampering that keeps
    the bundle well-formed."""
    return change(decode_bundle(data)).encode()


def replace(bundle: Bundle, **fields: object) -> Bundle:
    return dataclasses.replace(bundle, **fields)
