"""Verify benchmark: readings/s verified from a full bundle (every step of the verifier:
signatures, leaf decoding, salted leaf hashes, batch roots, seal chain, log proofs).

Baseline in the same run: the least any verifier of these formats must do, one
SHA-256 over each reading's leaf bytes and nothing else.

    python bench/verify.py [--readings 1000000]

Target (issue #2): >= 300,000 readings/s verified.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography import x509  # noqa: E402

from agent.buffer.store import Buffer  # noqa: E402
from agent.export import export_bundle  # noqa: E402
from agent.keys.software import SoftwareSigner  # noqa: E402
from agent.sealer import Sealer  # noqa: E402
from agent.sequencer import Sequencer  # noqa: E402
from agent.trust.bundle import decode_bundle  # noqa: E402
from agent.trust.verify import verify_bundle  # noqa: E402
from drivers.api import Reading  # noqa: E402
from provisioning.devca import make_demo_identity  # noqa: E402


async def make_state(state_dir: Path, signer: SoftwareSigner, readings: int) -> None:
    buffer = Buffer.open(state_dir)
    sequencer = Sequencer(buffer, max_pending=2 * readings, flush_interval=0.02, max_batch=10_000)
    sealer = Sealer(
        buffer,
        sequencer,
        signer,
        device_id="bench",
        boot=buffer.start_boot(time.time_ns()),
        interval=1.0,
        checkpoint_every=50,
        checkpoint_interval=60.0,
    )
    ts = time.time_ns()
    for start in range(0, readings, 10_000):
        await sequencer.submit(
            [Reading(f"tag.{i % 1000:03d}", ts + i, i * 0.25, 0) for i in range(start, start + 10_000)]
        )
        await sealer.seal_pending()
    await sealer.finish()
    buffer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        identity = make_demo_identity(Path(tmp), "bench")
        signer = SoftwareSigner.from_files(identity.key_path, identity.chain_path)
        asyncio.run(make_state(Path(tmp, "state"), signer, args.readings))
        buffer = Buffer.open(Path(tmp, "state"), create=False)
        data = export_bundle(buffer)[0].encode()
        buffer.close()
        roots = x509.load_pem_x509_certificates(identity.ca_path.read_bytes())

    started = time.perf_counter()
    report = verify_bundle(data, roots)
    verify_seconds = time.perf_counter() - started
    assert report.valid and report.readings == args.readings, report.findings
    jobs = os.cpu_count() or 1
    started = time.perf_counter()
    with ProcessPoolExecutor(jobs) as pool:
        parallel = verify_bundle(data, roots, pool.map)
    parallel_seconds = time.perf_counter() - started
    assert parallel.valid and parallel.readings == args.readings, parallel.findings

    leaves = [leaf for batch in decode_bundle(data).batches for leaf in batch.readings]
    started = time.perf_counter()
    for leaf in leaves:
        hashlib.sha256(leaf).digest()
    baseline_seconds = time.perf_counter() - started

    rate, parallel_rate = report.readings / verify_seconds, report.readings / parallel_seconds
    print(f"edgeseal verify, full bundle of {report.readings:,} readings", end=" ")
    print(f"in {report.batches} batches ({len(data) / 1e6:.1f} MB)")
    print(f"  verified, one process            : {rate:>12,.0f} readings/s ({verify_seconds:.2f} s)")
    print(f"  verified, {jobs} processes (--jobs) : {parallel_rate:>12,.0f} readings/s", end=" ")
    print(f"({parallel_seconds:.2f} s, pool start included)")
    print(f"  baseline: one SHA-256 per leaf   : {len(leaves) / baseline_seconds:>12,.0f} leaves/s")
    print(f"  ratio to baseline, one process   : {rate * baseline_seconds / len(leaves):.2f}")
    print("  target                           : >= 300,000 readings/s")


if __name__ == "__main__":
    main()
