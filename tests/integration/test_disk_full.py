"""The database cannot be written (SQLite reports SQLITE_FULL, as on a full disk):
reading goes on, the oldest readings beyond the memory bound are dropped, and the next
seal signs a gap saying which seqs were dropped and why."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from cryptography import x509
from fixtures import open_pipeline

from agent.buffer.store import Buffer
from agent.export import export_bundle
from agent.keys.software import SoftwareSigner
from agent.trust.verify import verify_bundle
from drivers.api import Reading
from provisioning.devca import make_demo_identity


def _readings(start: int, count: int) -> list[Reading]:
    now = time.time_ns()
    return [Reading(f"t{i % 7}", now + i, float(i), 0) for i in range(start, start + count)]


def test_full_disk_drops_oldest_and_seals_a_signed_gap(tmp_path: Path) -> None:
    identity = make_demo_identity(tmp_path, "full-disk-1")
    signer = SoftwareSigner.from_files(identity.key_path, identity.chain_path)

    async def scenario() -> None:
        buffer, sequencer, sealer = open_pipeline(tmp_path / "state", signer, "full-disk-1", max_pending=1_000)
        await sequencer.submit(_readings(0, 500))
        await sealer.seal_pending()  # b=1: seq 1..500

        conn = buffer._conn  # the test plays the full disk: SQLite's own page limit
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")
        await sequencer.submit(_readings(500, 600))
        assert await sequencer.drain() == 0 and sequencer.pending == 600
        await sequencer.submit(_readings(1100, 900))  # 1,500 queued: the 500 oldest go
        assert sequencer.pending == 1_000 and sequencer.dropped == 500

        conn.execute("PRAGMA max_page_count = 1073741823")  # space again
        await sealer.finish()
        buffer.close()

    asyncio.run(scenario())

    buffer = Buffer.open(tmp_path / "state")
    data = export_bundle(buffer)[0].encode()
    buffer.close()
    report = verify_bundle(data, x509.load_pem_x509_certificates(identity.ca_path.read_bytes()))
    assert report.valid, report.findings
    assert report.readings == 1_500
    [gap] = report.gaps
    assert (gap.first, gap.last, gap.signed, gap.b) == (501, 1000, True, 2)
    assert gap.why == "dropped from the full memory queue: the buffer could not be written"
    assert report.complete == [(1, 500), (1001, 2000)]
