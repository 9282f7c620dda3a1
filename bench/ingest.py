"""Ingest benchmark: readings/s sealed and committed on one core, with the synthetic source.

Compared in the same run with the raw baseline: the same (seq, leaf) rows inserted with
executemany into an SQLite table of the same shape, same journal mode, same chunking.
Also run with a signer that sleeps 200-600 ms per signature (a hardware TPM's speed),
which must not slow ingest: seals simply grow.

    python bench/ingest.py [--seconds 10] [--tags 1000]

Targets (issue #2): >= 100,000 readings/s, >= 0.4 x the raw baseline, slow signer
within 10 % of the fast one.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

from agent.buffer.store import Buffer  # noqa: E402
from agent.keys.software import SoftwareSigner  # noqa: E402
from agent.sealer import Sealer  # noqa: E402
from agent.sequencer import FLUSH_CHUNK, Sequencer  # noqa: E402
from agent.trust.leaf import encode_leaf  # noqa: E402
from drivers.api import DriverContext  # noqa: E402
from drivers.simulator.config import SourceConfig  # noqa: E402
from drivers.simulator.driver import SimulatorDriver  # noqa: E402


class SlowSigner(SoftwareSigner):
    """Signs like a hardware TPM: 200-600 ms per signature."""

    async def sign_digest(self, digest: bytes) -> bytes:
        await asyncio.sleep(random.uniform(0.2, 0.6))
        return await super().sign_digest(digest)


async def run_pipeline(state_dir: Path, signer: SoftwareSigner, tags: int, seconds: float) -> tuple[int, float, float]:
    """Returns (readings sealed, wall seconds, process CPU seconds) of the ingest window.

    Everything read in the window is committed and sealed before this returns; the
    final seal after the window (up to 600 ms with the slow signer) is shutdown latency,
    not ingest time."""
    buffer = Buffer.open(state_dir)
    boot = buffer.start_boot(time.time_ns())
    sequencer = Sequencer(buffer, max_pending=1_000_000, flush_interval=0.02, max_batch=10_000)
    sealer = Sealer(
        buffer,
        sequencer,
        signer,
        device_id="bench",
        boot=boot,
        interval=1.0,
        checkpoint_every=60,
        checkpoint_interval=60.0,
    )
    source = SourceConfig.model_validate(
        {
            "name": "bench",
            "type": "simulator",
            "interval": 1e-5,
            "generate": {"count": tags, "pattern": "random", "type": "float"},
        }
    )
    context = DriverContext("bench", logging.getLogger("bench"))
    driver = SimulatorDriver(source, sequencer, context)
    stop = asyncio.Event()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    tasks = [asyncio.create_task(driver.run()), asyncio.create_task(sequencer.run())]
    sealing = asyncio.create_task(sealer.run(stop))
    await asyncio.sleep(seconds)
    tasks[0].cancel()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    stop.set()
    await sealing  # final flush and seal: everything read is sealed and committed
    tasks[1].cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    sealed = buffer.sealed_through()
    buffer.close()
    return sealed, wall, cpu


def raw_baseline(state_dir: Path, rows: int) -> tuple[int, float]:
    """executemany of the same rows, pre-encoded, in the same chunks; returns (rows, seconds)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(state_dir / "raw.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE readings (seq INTEGER PRIMARY KEY, leaf BLOB NOT NULL)")
    ts = time.time_ns()
    leaves = [(i, encode_leaf(i, ts, f"sim.{i % 1000:03d}", random.uniform(0, 100), 0)) for i in range(1, rows + 1)]
    started = time.perf_counter()
    for i in range(0, rows, FLUSH_CHUNK):
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO readings(seq, leaf) VALUES (?, ?)", leaves[i : i + FLUSH_CHUNK])
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return rows, elapsed


def source_baseline(tags: int, seconds: float) -> tuple[int, float]:
    """The same synthetic source, its readings turned into the same rows and inserted with
    executemany, with no trust work (no salts, hashes, Merkle roots or signatures) and
    no event loop: what storing readings costs without edgeseal's promises."""
    source = SourceConfig.model_validate(
        {
            "name": "bench",
            "type": "simulator",
            "interval": 1e-5,
            "generate": {"count": tags, "pattern": "random", "type": "float"},
        }
    )
    driver = SimulatorDriver(source, None, DriverContext("bench", logging.getLogger("bench")))  # type: ignore[arg-type]
    with tempfile.TemporaryDirectory() as tmp:
        conn = sqlite3.connect(Path(tmp, "source.db"), isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("CREATE TABLE readings (seq INTEGER PRIMARY KEY, leaf BLOB NOT NULL)")
        seq, started = 1, time.perf_counter()
        while time.perf_counter() - started < seconds:
            readings = [r for _ in range(FLUSH_CHUNK // tags or 1) for r in driver._sample()]
            rows = [(s, encode_leaf(s, r.ts, r.tag, r.value, r.quality)) for s, r in enumerate(readings, seq)]
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO readings(seq, leaf) VALUES (?, ?)", rows)
            conn.execute("COMMIT")
            seq += len(rows)
        elapsed = time.perf_counter() - started
        conn.close()
    return seq - 1, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--tags", type=int, default=1000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # "on one core", for every figure
    key = ec.generate_private_key(ec.SECP256R1())
    with tempfile.TemporaryDirectory() as tmp:
        fast = asyncio.run(run_pipeline(Path(tmp, "fast"), SoftwareSigner(key, []), args.tags, args.seconds))
        slow = asyncio.run(run_pipeline(Path(tmp, "slow"), SlowSigner(key, []), args.tags, args.seconds))
        raw_rows, raw_seconds = raw_baseline(Path(tmp, "raw"), 1_000_000)
    source_rows, source_seconds = source_baseline(args.tags, args.seconds)
    fast_rate, slow_rate, raw_rate = fast[0] / fast[1], slow[0] / slow[1], raw_rows / raw_seconds
    source_rate = source_rows / source_seconds
    print(f"edgeseal ingest, {args.tags} simulated tags, {args.seconds:g} s per run, pinned to one core")
    runs = {"software signer ": (fast_rate, fast), "200-600 ms signer": (slow_rate, slow)}
    for name, (rate, (count, wall, cpu)) in runs.items():
        print(f"  sealed+committed, {name}: {rate:>10,.0f} readings/s ({count:,} readings, CPU {cpu / wall:.0%})")
    print(f"  baseline: raw executemany          : {raw_rate:>10,.0f} rows/s ({raw_rows:,} pre-encoded rows)")
    print(f"  baseline: source + encode + insert : {source_rate:>10,.0f} rows/s (no trust work, no event loop)")
    print(f"  ratio to raw executemany           : {fast_rate / raw_rate:.2f} (target >= 0.40)")
    print(f"  ratio to source + encode + insert  : {fast_rate / source_rate:.2f} (the cost of sealing itself)")
    print(f"  slow signer / software signer      : {slow_rate / fast_rate:.2f} (target >= 0.90)")
    print(f"  absolute                           : {fast_rate:,.0f} readings/s (target >= 100,000)")


if __name__ == "__main__":
    main()
