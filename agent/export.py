"""Export a bundle (DESIGN 3.6) from a state directory, for auditors.

A full bundle holds every batch up to the latest checkpoint, and the anchor record of
every checkpoint it carries that is anchored on chain; a selective one (tags or a
time range chosen) holds only matching readings, each with its salt and its inclusion
path, so one value can be disclosed without its neighbours. Seals after the latest
checkpoint are left out: a bundle carries nothing that a signed checkpoint does not
cover. The agent may keep running: the export reads one snapshot of the WAL database.

The export holds the seal log's hashes (32 bytes a seal) and the chosen readings in
memory; a history of many millions of seals or readings is exported in parts with
--since/--until.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from agent.buffer.store import Buffer, SealRow
from agent.errors import EdgesealError
from agent.trust import merkle
from agent.trust.bundle import (
    Batch,
    Bundle,
    ConsistencyProof,
    Disclosed,
    InclusionProof,
    SelectiveBatch,
    decode_anchor,
)
from agent.trust.certs import parse_der_chain, valid_throughout
from agent.trust.leaf import decode_leaf, leaf_hashes, salt
from agent.trust.payloads import open_checkpoint, open_seal


class NothingToExport(EdgesealError):
    exit_code = 1


@dataclass(frozen=True)
class Selection:
    tags: frozenset[str] = frozenset()
    since_ns: int | None = None
    until_ns: int | None = None

    @property
    def selective(self) -> bool:
        return bool(self.tags) or self.since_ns is not None or self.until_ns is not None

    def matches(self, tag: str, ts: int) -> bool:
        return (
            (not self.tags or tag in self.tags)
            and (self.since_ns is None or ts >= self.since_ns)
            and (self.until_ns is None or ts < self.until_ns)
        )


@dataclass(frozen=True)
class ExportSummary:
    batches: int
    readings: int
    log_size: int
    left_out_unchecked: int  # seals newer than the latest checkpoint
    left_out_older_key: int  # seals made with an earlier device key (one key per bundle)


def export_bundle(buffer: Buffer, selection: Selection = Selection()) -> tuple[Bundle, ExportSummary]:
    """Every read happens in one snapshot, so an agent writing meanwhile cannot tear it."""
    with buffer.snapshot():
        return _export(buffer, selection)


def _export(buffer: Buffer, selection: Selection) -> tuple[Bundle, ExportSummary]:
    checkpoints = buffer.checkpoints()
    if not checkpoints:
        raise NothingToExport("no checkpoint yet: nothing is signed into the device log")
    size = checkpoints[-1][0]
    log = merkle.MerkleTree(buffer.seal_log_leaf_hashes(size))
    rows, older_key = _exportable(buffer, size)
    if selection.selective:
        picked = [(row, _disclose(buffer, row, selection)) for row in rows]
        chosen = [(row, batch) for row, batch in picked if batch.disclosed]
        readings = sum(len(batch.disclosed) for _, batch in chosen)
    else:
        chosen = [
            (row, Batch(row.cose, row.salt_key, [leaf for _, leaf in buffer.readings(row.s0, row.s0 + row.n - 1)]))
            for row in rows
        ]
        readings = sum(row.n for row in rows)
    if not chosen:
        raise NothingToExport("no sealed reading matches the selection")
    first_b = chosen[0][0].b
    covering = [(s, c) for s, c in checkpoints if s >= first_b]
    times = [row.t for row, _ in chosen] + [open_checkpoint(c)[1].t for _, c in covering]
    bundle = Bundle(
        certs=_certificates(buffer, open_seal(chosen[-1][0].cose)[0].kid, times),
        batches=[batch for _, batch in chosen],
        checkpoints=[c for _, c in covering],
        log_proofs=[InclusionProof(size, row.b - 1, log.inclusion_proof(row.b - 1)) for row, _ in chosen],
        consistency=[
            ConsistencyProof(a, b, log.consistency_proof(a, b)) for (a, _), (b, _) in zip(covering, covering[1:])
        ],
        anchors=[decode_anchor(a.record) for a in buffer.anchors.anchored() if a.size >= first_b],
    )
    summary = ExportSummary(len(chosen), readings, size, _count_after(buffer, size), older_key)
    return bundle, summary


def _exportable(buffer: Buffer, size: int) -> tuple[list[SealRow], int]:
    """Batches 1..size, from the oldest whose readings are all still in the buffer and
    that the newest device key signed; and how many older-key batches that leaves out."""
    rows = list(buffer.seals(1, size))
    start = 0
    for i, row in enumerate(rows):
        if row.n and len(buffer.readings(row.s0, row.s0)) == 0:
            start = i + 1
    kids = [open_seal(row.cose)[0].kid for row in rows]
    same_key = next((i for i in range(len(rows), 0, -1) if kids[i - 1] != kids[-1]), 0)
    return rows[max(start, same_key) :], max(0, same_key - start)


def _disclose(buffer: Buffer, row: SealRow, selection: Selection) -> SelectiveBatch:
    leaves = [leaf for _, leaf in buffer.readings(row.s0, row.s0 + row.n - 1)]
    tree: merkle.MerkleTree | None = None
    disclosed = []
    for index, leaf in enumerate(leaves):
        reading = decode_leaf(leaf)
        if not selection.matches(reading.tag, reading.ts):
            continue
        tree = tree or merkle.MerkleTree(leaf_hashes(row.salt_key, row.s0, leaves))
        proof = InclusionProof(row.n, index, tree.inclusion_proof(index))
        disclosed.append(Disclosed(salt(row.salt_key, reading.seq), leaf, proof))
    return SelectiveBatch(row.cose, disclosed)


def _certificates(buffer: Buffer, kid: bytes, times: list[int]) -> list[bytes]:
    """The newest chain recorded for `kid` that is valid whenever the bundle's data was
    signed (a renewed certificate may start after the older data); else the newest."""
    chains = buffer.identity_chains(kid)
    if not chains:
        raise NothingToExport(f"no certificate chain recorded for key id {kid.hex()}")
    moments = [dt.datetime.fromtimestamp(t / 1e9, dt.UTC) for t in (min(times), max(times))]
    return next((c for c in chains if valid_throughout(parse_der_chain(c), moments)), chains[0])


def _count_after(buffer: Buffer, size: int) -> int:
    last = buffer.last_seal()
    return (last.b - size) if last else 0
