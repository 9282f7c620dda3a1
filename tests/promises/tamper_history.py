"""The device history that tests/promises/test_tamper_fields.py tampers with, made by the
real buffer, sequencer and sealer, so that every optional field of the formats occurs:

- three boots, the third under a renewed certificate: two chains of one key, each
  carried (x5chain) by the first seal of a boot;
- readings of every leaf value type (float, int, bool, text, bytes, null with a Bad
  quality, an array, a map with an Uncertain quality), tags taking turns;
- a signed gap: two readings the full memory queue dropped, in the seal of b 3;
- a drop record, b 7: the disk budget dropped b 1 before the broker acknowledged it;
- checkpoints of sizes 2, 4 and 8.

`History.stream` is what the device published over MQTT, as a subscriber from the start
received it (b 1 included: its acknowledgement was lost, not the message);
`anchor_checkpoints` anchors the exported checkpoints on a test chain.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anchor_harness import deploy_registry
from anvil_chain import Anvil
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from fixtures import open_pipeline

from agent.buffer.store import Buffer
from agent.export import Selection, export_bundle
from agent.keys.software import SoftwareSigner
from agent.sealer import Sealer
from agent.sequencer import Sequencer
from agent.trust import cbor
from agent.trust.anchors import anchor_calldata
from agent.trust.bundle import Anchor, Batch, decode_bundle
from agent.trust.payloads import open_checkpoint
from drivers.api import Reading
from provisioning.ca import build_csr, create_ca, issue_device_certificate

DEVICE_ID = "gw-tamper-1"
T0 = 1_700_000_000_000_000_000
BAD_COMMUNICATION, UNCERTAIN_LAST_USABLE = 0x80050000, 0x40900000
VALUES: list[tuple[Any, int]] = [
    (21.5, 0),
    (1001, 0),
    (True, 0),
    ("open", 0),
    (b"\x01\x02", 0),
    (None, BAD_COMMUNICATION),
    ([1, 2.5], 0),
    ({"state": "run"}, UNCERTAIN_LAST_USABLE),
]
TAGS = ("line.0", "line.1", "line.2")
DROP_WHY = "buffer full: disk budget reached; oldest undelivered batches dropped"
Stream = list[tuple[str, bytes]]  # (topic, payload): "batch" or "checkpoint"


@dataclass(frozen=True)
class History:
    state_dir: Path
    roots: list[x509.Certificate]
    cert_message: bytes  # the renewed chain, retained on PREFIX/cert
    stream: Stream  # every batch in b order, each checkpoint after the seal it ends with

    def export(self, selection: Selection = Selection()) -> bytes:
        buffer = Buffer.open(self.state_dir, create=False)
        try:
            return export_bundle(buffer, selection)[0].encode()
        finally:
            buffer.close()


def make_history(directory: Path) -> History:
    ca = create_ca("edgeseal tamper test")
    key = ec.generate_private_key(ec.SECP256R1())
    first, renewed = ([issue_device_certificate(ca, build_csr(key, DEVICE_ID)), ca.issuing_cert] for _ in range(2))
    state_dir, source = directory / "state", Source()
    _run(Boot.start(state_dir, SoftwareSigner(key, first), source), _first_boot)
    _run(Boot.start(state_dir, SoftwareSigner(key, first), source, max_pending=3), _second_boot)
    early, _ = _published(state_dir)  # b 1 as published, before the disk budget dropped it
    _run(Boot.start(state_dir, SoftwareSigner(key, renewed), source), _third_boot)
    later, checkpoints = _published(state_dir)
    batches = {**early, **later}
    stream = []
    for b in sorted(batches):
        stream.append(("batch", batches[b]))
        if b in checkpoints:
            stream.append(("checkpoint", checkpoints[b]))
    cert_message = cbor.encode([c.public_bytes(Encoding.DER) for c in renewed])
    return History(state_dir, [ca.root_cert], cert_message, stream)


class Source:
    """Readings of every value type, one a second."""

    def __init__(self) -> None:
        self.made = 0

    def take(self, count: int) -> list[Reading]:
        readings = []
        for i in range(self.made, self.made + count):
            value, quality = VALUES[i % len(VALUES)]
            readings.append(Reading(TAGS[i % len(TAGS)], T0 + i * 1_000_000_000, value, quality))
        self.made += count
        return readings


@dataclass
class Boot:
    """One agent start over the state directory."""

    source: Source
    buffer: Buffer
    sequencer: Sequencer
    sealer: Sealer

    @classmethod
    def start(cls, state_dir: Path, signer: SoftwareSigner, source: Source, max_pending: int = 10_000) -> Boot:
        return cls(source, *open_pipeline(state_dir, signer, DEVICE_ID, max_pending=max_pending))

    async def batch(self, readings: int) -> None:
        await self.sequencer.submit(self.source.take(readings))
        await self.sealer.seal_pending()


async def _first_boot(boot: Boot) -> None:
    await boot.batch(3)
    await boot.batch(3)
    await boot.sealer.finish()


async def _second_boot(boot: Boot) -> None:
    await boot.batch(5)  # two more than the memory queue holds: b 3 signs their gap
    await boot.batch(3)
    await boot.sealer.finish()


async def _third_boot(boot: Boot) -> None:
    await boot.batch(3)
    await boot.batch(3)
    assert boot.buffer.drop_undelivered(1, DROP_WHY) is not None
    await boot.sealer.seal_pending()  # the drop record
    await boot.batch(3)
    await boot.sealer.finish()


def _run(boot: Boot, steps: Callable[[Boot], Awaitable[None]]) -> None:
    async def run() -> None:
        try:
            await steps(boot)
        finally:
            boot.buffer.close()

    asyncio.run(run())


def _published(state_dir: Path) -> tuple[dict[int, bytes], dict[int, bytes]]:
    """The batch messages waiting for the broker, by b, and the checkpoints, by size."""
    buffer = Buffer.open(state_dir, create=False)
    try:
        batches = {o.b: Batch(o.cose, o.salt_key, o.readings).encode() for o in buffer.undelivered(0, 1_000)}
        return batches, dict(buffer.checkpoints())
    finally:
        buffer.close()


# -- on a chain -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Anchored:
    bundle: bytes  # the history's full bundle with the anchor records
    head: int  # the chain's head: each record claims every confirmation the chain has


def anchor_checkpoints(anvil: Anvil, history: History) -> Anchored:
    """Each checkpoint of the history's export anchored by a dev account of `anvil`, the
    first two in one block (which then holds two Anchored logs), and the records put into
    the bundle in the exporter's order."""
    contract = bytes.fromhex(deploy_registry(anvil)[2:])
    bundle = decode_bundle(history.export())
    anvil.rpc("evm_setAutomine", [False])
    sent = [_send_anchor(anvil, contract, c) for c in bundle.checkpoints[:2]]
    anvil.mine()
    anvil.rpc("evm_setAutomine", [True])
    sent += [_send_anchor(anvil, contract, c) for c in bundle.checkpoints[2:]]
    anvil.mine(2)
    head = anvil.block_number()
    records = [_record(anvil, contract, checkpoint, tx, head) for checkpoint, tx in zip(bundle.checkpoints, sent)]
    assert records[0].block == records[1].block != records[2].block
    return Anchored(dataclasses.replace(bundle, anchors=records).encode(), head)


def _send_anchor(anvil: Anvil, contract: bytes, checkpoint: bytes) -> str:
    msg, payload = open_checkpoint(checkpoint)
    call = anchor_calldata(msg.kid, payload.size, payload.root)
    tx = {"from": anvil.accounts[0], "to": "0x" + contract.hex(), "data": "0x" + call.hex(), "gas": hex(100_000)}
    return anvil.rpc("eth_sendTransaction", [tx])


def _record(anvil: Anvil, contract: bytes, checkpoint: bytes, tx: str, head: int) -> Anchor:
    receipt = anvil.rpc("eth_getTransactionReceipt", [tx])
    block, block_hash = int(receipt["blockNumber"], 16), bytes.fromhex(receipt["blockHash"][2:])
    return Anchor(checkpoint, anvil.chain_id, contract, bytes.fromhex(tx[2:]), block, block_hash, head - block)
