"""What the driver benchmarks (bench/modbus.py, bench/opcua.py) share: the agent's pipeline
as agent.runtime assembles it, with its default settings; a fresh process per measured
configuration; and snapshots of that process's CPU, wall time and RSS, and of the CPU of
the server process it reads from.

Importing this module needs the repository's root on sys.path, as the benchmarks put it.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Protocol, TypeVar

from cryptography.hazmat.primitives.asymmetric import ec

from agent.buffer.store import Buffer
from agent.keys.software import SoftwareSigner
from agent.sealer import Sealer
from agent.sequencer import Sequencer

T = TypeVar("T")
TICKS = os.sysconf("SC_CLK_TCK")


class Pipeline:
    """The sequencer (seq, leaves, salts, leaf hashes, SQLite on disk) and the sealer
    (Merkle roots, COSE_Sign1 with a software key, fsync'd seal commits) on a new buffer
    in `state`, with the agent's default settings. Drivers submit to `sequencer`."""

    def __init__(self, state: Path) -> None:
        self.buffer = Buffer.open(state)
        self.sequencer = Sequencer(self.buffer, max_pending=100_000, flush_interval=0.02, max_batch=10_000)
        signer = SoftwareSigner(ec.generate_private_key(ec.SECP256R1()), [])
        self._sealer = Sealer(
            self.buffer, self.sequencer, signer, device_id="bench", boot=self.buffer.start_boot(time.time_ns()),
            interval=1.0, checkpoint_every=60, checkpoint_interval=60.0,
        )  # fmt: skip
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self.sequencer.run()), asyncio.create_task(self._sealer.run(self._stop))]

    async def close(self, submitted: int) -> bool:
        """Seals everything submitted (stop the sources first), closes the buffer, and says
        whether it holds exactly the `submitted` readings, all sealed. A dropped reading
        still takes a seq (its gap is sealed), so the rows are counted too."""
        flusher, sealing = self._tasks
        self._stop.set()
        await sealing
        flusher.cancel()
        await asyncio.gather(flusher, return_exceptions=True)
        sealed = self.buffer.sealed_through()
        stored = sum(len(rows) for rows in self.buffer.iter_readings(1, sealed))
        self.buffer.close()
        return sealed == stored == submitted and self.sequencer.dropped == 0


class ProcessClock:
    """Snapshots of this process's CPU and wall time, and of the server process's CPU:
    the difference of two is one measured window."""

    def __init__(self, server_pid: int) -> None:
        self._server_pid = server_pid

    def snapshot(self) -> dict[str, float]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        with open(f"/proc/{self._server_pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return {
            "wall": time.perf_counter(),
            "cpu": usage.ru_utime + usage.ru_stime,
            "server_cpu": (int(fields[11]) + int(fields[12])) / TICKS,  # utime, stime: all its threads
        }


class Measured(Protocol):
    """What every driver benchmark measures of a configuration's process in its window."""

    seconds: float
    cpu: float  # user + system seconds
    max_rss_mb: float
    rss_mb: float  # at the end
    server_cpu: float  # the server process's CPU seconds


def process_cells(runs: Sequence[Measured]) -> list[str]:
    """The last cells of a benchmark's table row, medians of the rounds: the process's
    share of its core, its max RSS and RSS at the end, the server's share of its core."""

    def median(value: Callable[[Measured], float]) -> float:
        return statistics.median(value(f) for f in runs)

    return [
        f"{median(lambda f: f.cpu / f.seconds):.1%}",
        f"{median(lambda f: f.max_rss_mb):.0f} MB",
        f"{median(lambda f: f.rss_mb):.0f} MB",
        f"{median(lambda f: f.server_cpu / f.seconds):.0%}",
    ]


def rss_mb() -> tuple[float, float]:
    """This process's max RSS and its RSS now, in MB."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith("VmRSS:"))
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, int(line.split()[1]) / 1024


def in_fresh_process(call: Callable[..., T], *args: Any) -> T:
    """`call(*args)` in a new interpreter: its RSS and its imports are its own."""
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=spawn) as pool:
        return pool.submit(call, *args).result(timeout=600)


def met(ok: bool) -> str:
    return "met" if ok else "NOT met"
