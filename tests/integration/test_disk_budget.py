"""The disk budget (buffer.max_bytes): delivered readings go first, then the oldest
undelivered batches, recorded by a signed drop record that verifies; reading never stops."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from agent_harness import export_and_verify, run_for, write_config
from cryptography import x509
from fixtures import open_pipeline

import agent.export
import agent.retention
from agent.buffer.store import Buffer, SealRow
from agent.config import load_config
from agent.export import export_bundle
from agent.keys.software import SoftwareSigner
from agent.retention import Retention
from agent.trust.payloads import open_seal
from agent.trust.verify import verify_bundle
from drivers.api import Reading
from provisioning.devca import make_demo_identity

DEVICE = "budget-gw-1"


def _readings(start: int, count: int) -> list[Reading]:
    now = time.time_ns()
    return [Reading(f"meter.{i % 13}", now + i, float(i), 0) for i in range(start, start + count)]


def test_delivered_readings_go_first_then_the_oldest_undelivered_with_a_signed_record(tmp_path: Path) -> None:
    identity = make_demo_identity(tmp_path, DEVICE)
    signer = SoftwareSigner.from_files(identity.key_path, identity.chain_path)

    async def scenario() -> None:
        buffer, sequencer, sealer = open_pipeline(tmp_path / "state", signer, DEVICE)
        for start in range(0, 6000, 1000):  # six batches of 1,000 readings: b 1..6
            await sequencer.submit(_readings(start, 1000))
            await sealer.seal_pending()
        for b in (1, 2):
            buffer.mark_delivered(b, time.time_ns())
        full = buffer.used_bytes()
        # a budget that the two delivered batches cannot free alone
        retention = Retention(buffer, max_bytes=full * 6 // 10, keep_delivered=86400, warn_at=80)
        retention.enforce()
        assert buffer.used_bytes() <= full * 6 // 10
        assert retention.stats.pruned_batches == 2 and retention.stats.drops >= 1
        [drop] = buffer.pending_drops()
        assert drop.first == 2001 and drop.why.startswith("buffer full")
        await sequencer.submit(_readings(6000, 10))  # reading goes on
        await sealer.finish()  # seals b=7 (10 readings), then the drop record, then a checkpoint
        assert buffer.pending_drops() == []
        outgoing = buffer.undelivered(0, 100)
        assert [len(batch.readings) for batch in outgoing][-2:] == [10, 0], "the record is published like a batch"
        record = open_seal(outgoing[-1].cose)[1]
        assert (
            record.drop_record
            and record.gap is not None
            and (record.gap.first, record.gap.last)
            == (
                drop.first,
                drop.last,
            )
        )
        buffer.close()

    asyncio.run(scenario())

    buffer = Buffer.open(tmp_path / "state")
    data = export_bundle(buffer)[0].encode()
    buffer.close()
    report = verify_bundle(data, x509.load_pem_x509_certificates(identity.ca_path.read_bytes()))
    assert report.valid, report.findings
    [gap] = [g for g in report.gaps if g.signed]
    assert gap.first == 2001 and gap.why.startswith("buffer full") and gap.b == 8


def test_the_agent_keeps_reading_within_a_small_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """1 MB and a broker that is not there: the readings of 20,000 a second outgrow it
    within a second; the agent drops the oldest, records it, and everything it exports
    verifies."""
    monkeypatch.setattr(agent.retention, "CHECK_EVERY", 0.2)
    sources = """  - name: meters
    type: simulator
    interval: 10ms
    generate: {count: 200, prefix: "meter.", pattern: random, max: 400}"""
    path = write_config(
        tmp_path, sources=sources, seal="interval: 100ms\n  checkpoint_every: 5\n  checkpoint_interval: 500ms"
    )
    path.write_text(
        path.read_text().replace(
            "buffer:\n  dir: state", "buffer:\n  dir: state\n  max_bytes: 1MB\nmqtt:\n  url: mqtt://127.0.0.1:1\n"
        )
    )
    config = load_config(path)
    assert config.buffer.max_bytes == 1_000_000

    stats = run_for(config, 4.0)

    buffer = Buffer.open(config.buffer.dir, create=False)
    try:
        used, backlog = buffer.used_bytes(), buffer.backlog()
    finally:
        buffer.close()
    assert stats.seals > 20 and backlog.dropped_batches > 0
    assert used < 1_300_000, "within the budget, give or take what the last check found"
    report, _ = export_and_verify(path)
    assert report.valid, report.findings
    assert any(g.signed and g.why.startswith("buffer full") for g in report.gaps)
    assert report.readings > 1000, "recent readings are kept"


def test_a_hole_in_the_middle_verifies_only_with_the_drop_records_that_tile_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a consumer holds after a drop: batches 1-2 (delivered before the outage), then
    3-25 dropped undelivered in three drops (at most ten batches each; the newest batch, 26,
    is never dropped), then 26 and the three records. Assembled as a bundle, it verifies;
    without one record, the hole is a finding."""
    identity = make_demo_identity(tmp_path, DEVICE)
    signer = SoftwareSigner.from_files(identity.key_path, identity.chain_path)

    async def scenario() -> None:
        buffer, sequencer, sealer = open_pipeline(tmp_path / "state", signer, DEVICE)
        for start in range(0, 2600, 100):  # b 1..26
            await sequencer.submit(_readings(start, 100))
            await sealer.seal_pending()
        for b in (1, 2):
            buffer.mark_delivered(b, time.time_ns())
        for _ in range(3):  # 10 + 10 + 3 batches: b 3..25
            assert buffer.drop_undelivered(10, "buffer full: test") is not None
        assert buffer.drop_undelivered(10, "buffer full: test") is None, "the newest batch stays"
        await sealer.finish()  # three drop records, b 27..29, and a checkpoint
        buffer.close()

    asyncio.run(scenario())
    roots = x509.load_pem_x509_certificates(identity.ca_path.read_bytes())

    def exported(leave_out: int | None = None) -> bytes:
        def every_batch_with_its_readings(buffer: Buffer, size: int) -> tuple[list[SealRow], int]:
            rows = [row for row in buffer.seals(1, size) if row.n == 0 or buffer.readings(row.s0, row.s0)]
            return [row for row in rows if row.b != leave_out], 0

        monkeypatch.setattr(agent.export, "_exportable", every_batch_with_its_readings)
        buffer = Buffer.open(tmp_path / "state")
        try:
            return export_bundle(buffer)[0].encode()
        finally:
            buffer.close()

    report = verify_bundle(exported(), roots)
    assert report.valid, report.findings
    drops = sorted((g.first, g.last, g.b) for g in report.gaps if g.signed)
    assert drops == [(201, 1200, 27), (1201, 2200, 28), (2201, 2500, 29)]
    assert report.complete == [(1, 200), (2501, 2600)]

    broken = verify_bundle(exported(leave_out=28), roots)
    assert not broken.valid
    assert any("batch(es) 3..25 missing" in finding.message for finding in broken.findings)


def test_a_drop_never_spans_a_delivered_batch_or_an_earlier_drop_record(tmp_path: Path) -> None:
    """Each drop record names one run of consecutive batches, so its gap is exactly the
    hole a consumer sees between the seals it received."""
    identity = make_demo_identity(tmp_path, DEVICE)
    signer = SoftwareSigner.from_files(identity.key_path, identity.chain_path)

    async def scenario() -> list[tuple[int, int]]:
        buffer, sequencer, sealer = open_pipeline(tmp_path / "state", signer, DEVICE)
        for start in range(0, 400, 100):  # b 1..4, seqs 1..400
            await sequencer.submit(_readings(start, 100))
            await sealer.seal_pending()
        buffer.mark_delivered(2, time.time_ns())
        first = buffer.drop_undelivered(10, "buffer full: test")  # b 1 only: b 2 was delivered
        await sealer.seal_pending()  # its drop record: b 5
        for start in range(400, 600, 100):  # b 6, 7
            await sequencer.submit(_readings(start, 100))
            await sealer.seal_pending()
        second = buffer.drop_undelivered(10, "buffer full: test")  # b 3, 4: not b 6, past the record
        third = buffer.drop_undelivered(10, "buffer full: test")  # b 6; b 7 is the newest
        buffer.close()
        return [(g.first, g.last) for g in (first, second, third) if g is not None]

    assert asyncio.run(scenario()) == [(1, 100), (201, 400), (401, 500)]
