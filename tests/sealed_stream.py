"""A device's stream as MQTT carries it, made by the real pipeline (Buffer, Sequencer,
Sealer under a demo identity): batch messages, checkpoints and the certificate message,
for the stream checker's and `edgeseal watch`'s tests. A plain module beside
tests/conftest.py:

    from sealed_stream import Device
    device = Device.make(tmp_path)
    device.boot(4)                  # one agent start: b 1..4 and a checkpoint
    device.cert_message, device.messages(), device.checkpoints()
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from fixtures import open_pipeline

from agent.buffer.store import Buffer
from agent.keys.software import SoftwareSigner
from agent.trust import cbor
from agent.trust.bundle import Batch
from drivers.api import Reading
from provisioning.devca import make_demo_identity

DEVICE = "stream-gw-1"


@dataclasses.dataclass
class Device:
    """A demo identity and the state directory its pipeline seals into."""

    directory: Path
    device_id: str
    signer: SoftwareSigner
    roots: list[x509.Certificate]
    seq: int = 0  # readings made so far

    @classmethod
    def make(cls, directory: Path, device_id: str = DEVICE) -> Device:
        identity = make_demo_identity(directory, device_id)
        assert identity.key_path is not None  # a software key: the demo identity without a TPM
        roots = x509.load_pem_x509_certificates(identity.ca_path.read_bytes())
        return cls(directory, device_id, SoftwareSigner.from_files(identity.key_path, identity.chain_path), roots)

    @property
    def cert_message(self) -> bytes:
        return cbor.encode([c.public_bytes(Encoding.DER) for c in self.signer.certificate_chain])

    def boot(self, batches: int, per_batch: int = 3) -> None:
        """One agent start that seals `batches` batches and a checkpoint."""

        async def run() -> None:
            buffer, sequencer, sealer = open_pipeline(self.directory / "state", self.signer, self.device_id)
            try:
                for _ in range(batches):
                    await sequencer.submit(self.readings(per_batch))
                    await sealer.seal_pending()
                await sealer.finish()
            finally:
                buffer.close()

        asyncio.run(run())

    def readings(self, count: int) -> list[Reading]:
        """The next `count` readings, seq numbers continuing."""
        now = time.time_ns()
        self.seq += count
        return [Reading(f"line.{i % 3}", now + i, float(i), 0) for i in range(self.seq - count, self.seq)]

    def messages(self) -> list[bytes]:
        """Every undelivered batch as its batch message, in b order."""
        with self.buffer() as buffer:
            return [Batch(o.cose, o.salt_key, o.readings).encode() for o in buffer.undelivered(0, 10_000)]

    def checkpoints(self) -> list[bytes]:
        with self.buffer() as buffer:
            return [data for _, data in buffer.checkpoints()]

    def buffer(self) -> contextlib.closing[Buffer]:
        return contextlib.closing(Buffer.open(self.directory / "state", create=False))
