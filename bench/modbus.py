"""Modbus benchmark: 1,000 contiguous float32 tags (CDAB) polled every 100 ms from local
pymodbus servers, read by the real driver into the real agent pipeline (sequencer, salted
leaves, SQLite on disk, Merkle roots, COSE seals with a software key), with 1, 4, 8, ...
such devices in parallel, one source each.

The servers run in a separate process pinned to another core, so their CPU is not the
agent's. Each configuration runs in a fresh agent process pinned to one core (its RSS is
its own); rounds are interleaved and medians shown. Measured in the agent process over a
fixed window after a warm-up: CPU time (getrusage RUSAGE_SELF) per point delivered (every
point delivered is sealed into the buffer before the process ends: checked), points/s,
scans that overran their 100 ms, requests per scan, max and current RSS. Baselines in
the same run:

  floor     a bare AsyncModbusTcpClient reading the same 17 requests every 100 ms and
            decoding each with one struct.unpack: no readings, no buffer, no sealing;
  per tag   the same pipeline polling one request per tag (the driver's
            `one_request_per_tag: true`), the way the closest Python peer polls;
  idle      the pipeline with no source: what it costs per second whatever the load.

    python bench/modbus.py [--rounds 3] [--warmup 1.5] [--window 4] [--devices 1,4,8,12,16]
    python bench/modbus.py --quick

Targets: <= 10 us agent CPU per point from the wire through sealing into the buffer,
RSS <= 150 MB, requests per scan = the protocol minimum (17 for 1,000 float32: 62 values
of 2 registers per request, a value never split).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import multiprocessing
import os
import socket
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pymodbus.client import AsyncModbusTcpClient  # noqa: E402

from agent.sequencer import Sequencer  # noqa: E402
from bench.pipeline import Pipeline, ProcessClock, in_fresh_process, met, process_cells, rss_mb  # noqa: E402
from drivers.api import DriverContext, Reading  # noqa: E402
from drivers.modbus.config import SourceConfig  # noqa: E402
from drivers.modbus.driver import create  # noqa: E402
from drivers.modbus.planner import MAX_REGISTERS  # noqa: E402

TAGS = 1000
INTERVAL = 0.1
PER_REQUEST = MAX_REGISTERS // 2  # 62 float32 values: 124 registers, a value never split
MINIMUM_REQUESTS = math.ceil(TAGS / PER_REQUEST)  # 17


@dataclass
class Figures:
    """One configuration's window, as measured in the agent process."""

    points: int  # delivered to the pipeline, all sealed into the buffer by the end (floor: decoded)
    seconds: float
    cpu: float  # agent process user + system seconds
    scans: int
    requests: int
    overruns: int
    failures: int
    max_rss_mb: float
    rss_mb: float
    server_cpu: float  # the server process's CPU seconds in the same window
    all_sealed: bool


# -- the devices: pymodbus servers in their own process --------------------------------


def float_registers(count: int) -> list[int]:
    """`count` float32 values in CDAB order: packing little-endian and reading the bytes
    as little-endian 16-bit words gives [C D] [A B]."""
    values = [20.0 + n * 0.25 for n in range(count)]
    return list(struct.unpack(f"<{2 * count}H", struct.pack(f"<{count}f", *values)))


def serve(ports: list[int], core: int) -> None:
    """The servers' process: one pymodbus TCP server per port, until terminated."""
    os.sched_setaffinity(0, {core})
    quiet_pymodbus()
    asyncio.run(_serve(ports))


async def _serve(ports: list[int]) -> None:
    from pymodbus.server import ModbusTcpServer
    from pymodbus.simulator import DataType, SimData, SimDevice

    words = float_registers(TAGS)
    for port in ports:
        device = SimDevice(1, simdata=[SimData(0, values=words, datatype=DataType.REGISTERS)])
        await ModbusTcpServer([device], address=("127.0.0.1", port)).serve_forever(background=True)
    await asyncio.Event().wait()


def quiet_pymodbus() -> None:
    """pymodbus logs its last frames at ERROR when a benchmark process goes away in the
    middle of a request: noise here. Failed requests are counted and shown instead."""
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def wait_for(ports: list[int], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    for port in ports:
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


# -- the agent side: one configuration per fresh process -------------------------------


class CountingSink:
    """Forwards one source's readings to the sequencer. Counts the points delivered, the
    scans (one submit per scan) and the requests sent up to the last scan: requests per
    scan, exactly, without a scan cut in two by the window's edges."""

    def __init__(self, sink: Sequencer, context: DriverContext) -> None:
        self._sink, self._context = sink, context
        self.points = self.scans = self.requests = 0

    async def submit(self, readings: Sequence[Reading]) -> None:
        self.points += len(readings)
        self.scans += 1
        self.requests = self._context.counters.get("requests", 0)
        await self._sink.submit(readings)


def source(index: int, port: int, per_tag: bool) -> SourceConfig:
    tags = [
        {"name": f"dev{index}.t{n:04d}", "table": "holding", "address": 2 * n, "type": "float32"} for n in range(TAGS)
    ]
    device = {"unit": 1, "order": "CDAB", "one_request_per_tag": per_tag, "tags": tags}
    fields = {"name": f"dev{index}", "type": "modbus", "url": f"tcp://127.0.0.1:{port}", "interval": "100ms"}
    return SourceConfig.model_validate({**fields, "timeout": "1s", "devices": [device]})


def run_config(kind: str, ports: list[int], server_pid: int, warmup: float, window: float, core: int) -> Figures:
    """In a fresh process: one configuration, pinned to `core`."""
    os.sched_setaffinity(0, {core})
    logging.basicConfig(level=logging.WARNING)
    quiet_pymodbus()
    if kind == "floor":
        return asyncio.run(floor(ports[0], ProcessClock(server_pid), warmup, window))
    with tempfile.TemporaryDirectory() as state:
        configs = [source(i, port, per_tag=kind == "per tag") for i, port in enumerate(ports)]
        return asyncio.run(pipeline(Path(state), configs, ProcessClock(server_pid), warmup, window))


async def pipeline(
    state: Path, configs: list[SourceConfig], clock: ProcessClock, warmup: float, window: float
) -> Figures:
    """The drivers into the agent's pipeline (see bench.pipeline)."""
    agent = Pipeline(state)
    contexts = [DriverContext(c.name, logging.getLogger(c.name)) for c in configs]
    sinks = [CountingSink(agent.sequencer, context) for context in contexts]
    drivers = [create(config, sink, context) for config, sink, context in zip(configs, sinks, contexts)]
    agent.start()
    polling = [asyncio.create_task(driver.run()) for driver in drivers]

    def counters() -> dict[str, float]:
        totals = {name: sum(c.counters.get(name, 0) for c in contexts) for name in _COUNTERS}
        delivered = {name: sum(getattr(s, name) for s in sinks) for name in ("points", "scans", "requests")}
        return {**clock.snapshot(), **totals, **delivered}

    await asyncio.sleep(warmup)
    before = counters()
    await asyncio.sleep(window)
    after = counters()
    for task in polling:
        task.cancel()
    await asyncio.gather(*polling, return_exceptions=True)
    all_sealed = await agent.close(sum(s.points for s in sinks))  # everything read, sealed, none dropped
    return _figures(before, after, all_sealed)


_COUNTERS = ("scan_overruns", "request_failures")


async def floor(port: int, clock: ProcessClock, warmup: float, window: float) -> Figures:
    """The cost floor: the same 17 requests every 100 ms with a bare pymodbus client,
    each answer decoded by one struct.unpack (after packing the registers to bytes,
    which is how pymodbus hands them over). No readings, no buffer, no sealing."""
    client = AsyncModbusTcpClient("127.0.0.1", port=port)
    await client.connect()
    spans = [(start, min(PER_REQUEST, TAGS - start)) for start in range(0, TAGS, PER_REQUEST)]
    counts = {"points": 0, "scans": 0, "requests": 0}
    loop, stop = asyncio.get_running_loop(), asyncio.Event()

    async def scans() -> None:
        next_at = loop.time()
        while not stop.is_set():
            for start, values in spans:
                answer = await client.read_holding_registers(2 * start, count=2 * values, device_id=1)
                decoded = struct.unpack(f"<{values}f", struct.pack(f"<{2 * values}H", *answer.registers))
                counts["points"] += len(decoded)
                counts["requests"] += 1
            counts["scans"] += 1
            next_at += INTERVAL
            await asyncio.sleep(max(0.0, next_at - loop.time()))

    task = asyncio.create_task(scans())
    await asyncio.sleep(warmup)
    before = {**clock.snapshot(), **counts}
    await asyncio.sleep(window)
    after = {**clock.snapshot(), **counts}
    stop.set()  # not task.cancel(): pymodbus on Python 3.11 may swallow it (see drivers.modbus.client)
    await task
    client.close()
    return _figures(before, after, all_sealed=True)


def _figures(before: dict[str, float], after: dict[str, float], all_sealed: bool) -> Figures:
    def delta(name: str) -> float:
        return after.get(name, 0) - before.get(name, 0)

    max_rss, rss = rss_mb()
    return Figures(
        points=int(delta("points")),
        seconds=delta("wall"),
        cpu=delta("cpu"),
        scans=int(delta("scans")),
        requests=int(delta("requests")),
        overruns=int(delta("scan_overruns")),
        failures=int(delta("request_failures")),
        max_rss_mb=max_rss,
        rss_mb=rss,
        server_cpu=delta("server_cpu"),
        all_sealed=all_sealed,
    )


# -- the run: interleaved rounds, medians ------------------------------------------


HEADER = (
    "| configuration | requests / scan | points/s delivered (of nominal) | scan overruns/s | agent CPU / point "
    "| agent CPU | max RSS | RSS at end | server CPU |\n|---|---|---|---|---|---|---|---|---|"
)


def report(kind: str, devices: int, runs: list[Figures]) -> str:
    """One line of the table: medians of the rounds."""

    def median(value: Callable[[Figures], float]) -> float:
        return statistics.median(value(f) for f in runs)

    failures = sum(f.failures for f in runs)
    notes = f"; {failures} failed requests" if failures else ""
    notes += "" if all(f.all_sealed for f in runs) else "; NOT ALL SEALED"
    cells = [f"{kind}, {devices} x 1,000 tags{notes}" if devices else "pipeline with no source"]
    if devices:
        rate = median(lambda f: f.points / f.seconds)
        cells += [
            f"{median(requests_per_scan):,.1f}",
            f"{rate:,.0f} ({rate / (devices * TAGS / INTERVAL):.0%})",
            f"{median(lambda f: f.overruns / f.seconds):.1f}",
            f"{median(cpu_per_point):.2f} µs",
        ]
    else:
        cells += ["", "", "", ""]
    return "| " + " | ".join(cells + process_cells(runs)) + " |"


def cpu_per_point(f: Figures) -> float:
    return f.cpu / f.points * 1e6 if f.points else math.inf


def requests_per_scan(f: Figures) -> float:
    return f.requests / f.scans if f.scans else math.inf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians shown")
    parser.add_argument("--warmup", type=float, default=1.5, help="seconds before each window")
    parser.add_argument("--window", type=float, default=4.0, help="measured seconds per configuration")
    parser.add_argument("--devices", default="1,4,8,12,16", help="devices in parallel, one source each")
    parser.add_argument("--quick", action="store_true", help="1 round, 1 s warm-up, 2 s windows, 1 and 2 devices")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.warmup, args.window, args.devices = 1, 1.0, 2.0, "1,2"
    counts = [int(n) for n in args.devices.split(",")]
    cores = sorted(os.sched_getaffinity(0))
    agent_core, server_core = cores[0], cores[-1]
    configs = [("floor", 1), ("per tag", 1), ("idle", 0)] + [("edgeseal", n) for n in counts]
    ports = free_ports(max(counts))
    server = multiprocessing.get_context("spawn").Process(target=serve, args=(ports, server_core), daemon=True)
    server.start()
    try:
        wait_for(ports)
        results: dict[tuple[str, int], list[Figures]] = {config: [] for config in configs}
        for _ in range(args.rounds):
            for kind, n in configs:
                figures = in_fresh_process(
                    run_config, kind, ports[:n], server.pid, args.warmup, args.window, agent_core
                )
                results[(kind, n)].append(figures)
    finally:
        server.terminate()
        server.join()
    print_results(args, results, agent_core, server_core)


def print_results(
    args: argparse.Namespace, results: dict[tuple[str, int], list[Figures]], agent_core: int, server_core: int
) -> None:
    print(
        f"edgeseal Modbus: {TAGS:,} float32 tags (CDAB) per device every {INTERVAL * 1000:.0f} ms; "
        f"{args.rounds} interleaved rounds of {args.warmup:g} s warm-up + {args.window:g} s window, medians; "
        f"agent on core {agent_core}, servers on core {server_core}"
    )
    print(HEADER)
    for (kind, n), runs in results.items():
        print(report(kind, n, runs))
    ours = {n: runs for (kind, n), runs in results.items() if kind == "edgeseal"}
    worst_cpu = max(statistics.median(map(cpu_per_point, runs)) for runs in ours.values())
    worst_rss = max(f.max_rss_mb for runs in ours.values() for f in runs)
    per_scan = sorted({requests_per_scan(f) for runs in ours.values() for f in runs})
    floor_cpu = statistics.median(map(cpu_per_point, results[("floor", 1)]))
    per_tag_cpu = statistics.median(map(cpu_per_point, results[("per tag", 1)]))
    print(f"target: agent CPU per point <= 10 µs: worst median {worst_cpu:.2f} µs, {met(worst_cpu <= 10)}")
    print(f"target: RSS <= 150 MB: worst {worst_rss:.0f} MB, {met(worst_rss <= 150)}")
    print(f"target: requests per scan = {MINIMUM_REQUESTS}: {per_scan}, {met(per_scan == [MINIMUM_REQUESTS])}")
    print(f"worst CPU per point / floor: {worst_cpu / floor_cpu:.1f}; per tag / worst: {per_tag_cpu / worst_cpu:.1f}")
    held = {n: runs for n, runs in ours.items() if all(sustained(n, f) for f in runs)}
    for n in ours:
        verdict = "sustained" if n in held else "NOT sustained"
        print(f"{n} device(s), {n * TAGS / INTERVAL:,.0f} points/s nominal: {verdict}")
    if len(held) >= 2:
        rates = [statistics.median(f.points / f.seconds for f in runs) for runs in held.values()]
        loads = [statistics.median(f.cpu / f.seconds for f in runs) for runs in held.values()]
        fit = statistics.linear_regression(rates, loads)
        print(
            f"linear fit over the sustained configurations: agent CPU = {fit.intercept * 1000:.1f} ms/s"
            f" + {fit.slope * 1e6:.2f} µs x points/s"
        )


def sustained(devices: int, f: Figures) -> bool:
    """Every scan on time, and every scan of every device delivered in the window but
    one, which the window's edges may cut off."""
    return f.overruns == 0 and f.points >= devices * TAGS * (f.seconds / INTERVAL - 1)


if __name__ == "__main__":
    main()
