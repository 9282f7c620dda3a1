"""Ingest benchmark: readings/s sealed and committed on one core, with the synthetic source.

Compared in the same run with the raw baseline: the same (seq, leaf) rows inserted with
executemany into an SQLite table of the same shape, same journal mode, same chunking.
Also run with a signer that sleeps 200-600 ms per signature (a hardware TPM's speed),
with the key in a software TPM (swtpm), and with that TPM slowed to hardware speed: none
may slow ingest, because the TPM signs once per seal and seals simply grow.

    python bench/ingest.py [--seconds 5] [--rounds 3] [--tags 1000]

Targets: >= 100,000 readings/s, >= 0.4 x the raw baseline, every other signer within
10 % of the software signer. Also prints swtpm's signatures/s through the agent's signer.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

from agent.buffer.store import Buffer  # noqa: E402
from agent.keys.signer import Signer  # noqa: E402
from agent.keys.software import SoftwareSigner  # noqa: E402
from agent.keys.tpm.handles import DEFAULT_HANDLE  # noqa: E402
from agent.keys.tpm.signer import TpmSigner  # noqa: E402
from agent.keys.tpm.tcti import parse_tcti  # noqa: E402
from agent.sealer import Sealer  # noqa: E402
from agent.sequencer import FLUSH_CHUNK, Sequencer  # noqa: E402
from agent.trust.leaf import encode_leaf  # noqa: E402
from drivers.api import DriverContext  # noqa: E402
from drivers.simulator.config import SourceConfig  # noqa: E402
from drivers.simulator.driver import SimulatorDriver  # noqa: E402
from provisioning.devca import make_demo_tpm_identity  # noqa: E402
from provisioning.swtpm import SoftwareTpm, manufacture  # noqa: E402


class HardwarePaced:
    """Wraps a signer so each signature takes 200-600 ms more: a hardware TPM's pace."""

    def __init__(self, signer: Signer) -> None:
        self._signer = signer
        self.public_key, self.certificate_chain = signer.public_key, signer.certificate_chain

    async def sign_digest(self, digest: bytes) -> bytes:
        await asyncio.sleep(random.uniform(0.2, 0.6))
        return await self._signer.sign_digest(digest)

    async def close(self) -> None:
        await self._signer.close()


async def run_pipeline(state_dir: Path, signer: Signer, tags: int, seconds: float) -> tuple[int, float, float]:
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


async def open_tpm_signer(tpm: SoftwareTpm, directory: Path) -> TpmSigner:
    identity = make_demo_tpm_identity(directory, "bench", parse_tcti(tpm.tcti), DEFAULT_HANDLE)
    return await TpmSigner.open(parse_tcti(tpm.tcti), DEFAULT_HANDLE, identity.chain_path)


async def signatures_per_second(tpm: SoftwareTpm, directory: Path, count: int = 500) -> float:
    signer = await open_tpm_signer(tpm, directory)
    try:
        started = time.perf_counter()
        for n in range(count):
            await signer.sign_digest(n.to_bytes(32, "big"))
        return count / (time.perf_counter() - started)
    finally:
        await signer.close()


async def ingest_with_tpm(
    tpm: SoftwareTpm, tmp: Path, tags: int, seconds: float, paced: bool
) -> tuple[int, float, float]:
    signer = await open_tpm_signer(tpm, tmp / ("paced-identity" if paced else "identity"))
    wrapped = HardwarePaced(signer) if paced else signer
    try:
        return await run_pipeline(tmp / ("tpm-paced" if paced else "tpm"), wrapped, tags, seconds)
    finally:
        await wrapped.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="ingest window of each run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every signer, interleaved; medians shown")
    parser.add_argument("--tags", type=int, default=1000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    key = ec.generate_private_key(ec.SECP256R1())
    with tempfile.TemporaryDirectory() as directory:
        tmp = Path(directory)
        # swtpm starts before the pinning below: it stands for a separate chip, not for
        # work on the agent's core.
        with SoftwareTpm(manufacture(tmp / "swtpm")) as tpm:
            os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # "on one core", for every figure
            signers = {
                "software signer      ": lambda run: run_pipeline(
                    run, SoftwareSigner(key, []), args.tags, args.seconds
                ),
                "200-600 ms signer    ": lambda run: run_pipeline(
                    run, HardwarePaced(SoftwareSigner(key, [])), args.tags, args.seconds
                ),
                "swtpm                ": lambda run: ingest_with_tpm(tpm, run, args.tags, args.seconds, paced=False),
                "swtpm + 200-600 ms   ": lambda run: ingest_with_tpm(tpm, run, args.tags, args.seconds, paced=True),
            }
            # Interleaved rounds: a drift of the machine's speed hits every signer alike.
            results: dict[str, list[tuple[int, float, float]]] = {name: [] for name in signers}
            for round_no in range(args.rounds):
                for n, (name, run) in enumerate(signers.items()):
                    results[name].append(asyncio.run(run(tmp / f"round{round_no}-{n}")))
            tpm_rate = asyncio.run(signatures_per_second(tpm, tmp / "rate"))
        raw_rows, raw_seconds = raw_baseline(tmp / "raw", 1_000_000)
    source_rows, source_seconds = source_baseline(args.tags, args.seconds)
    rates = {name: statistics.median(count / wall for count, wall, _ in runs) for name, runs in results.items()}
    fast_rate, raw_rate = next(iter(rates.values())), raw_rows / raw_seconds
    source_rate = source_rows / source_seconds
    print(
        f"edgeseal ingest, {args.tags} simulated tags, {args.rounds} interleaved rounds of {args.seconds:g} s"
        " per signer (median shown), pinned to one core"
    )
    for name, runs in results.items():
        cpu = statistics.median(cpu / wall for _, wall, cpu in runs)
        spread = ", ".join(f"{count / wall:,.0f}" for count, wall, _ in runs)
        print(f"  sealed+committed, {name}: {rates[name]:>10,.0f} readings/s (CPU {cpu:.0%}; rounds {spread})")
    print(f"  baseline: raw executemany              : {raw_rate:>10,.0f} rows/s ({raw_rows:,} pre-encoded rows)")
    print(f"  baseline: source + encode + insert     : {source_rate:>10,.0f} rows/s (no trust work, no event loop)")
    print(f"  ratio to raw executemany               : {fast_rate / raw_rate:.2f} (target >= 0.40)")
    print(f"  ratio to source + encode + insert      : {fast_rate / source_rate:.2f} (the cost of sealing itself)")
    for name, rate in list(rates.items())[1:]:
        print(f"  {name.strip():<21} / software signer: {rate / fast_rate:.2f} (target >= 0.90)")
    print(f"  swtpm signatures through the signer    : {tpm_rate:>10,.0f} /s (ECDSA P-256, no session)")
    print(f"  absolute                               : {fast_rate:,.0f} readings/s (target >= 100,000)")


if __name__ == "__main__":
    main()
