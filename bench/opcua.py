"""OPC UA benchmark: 10,000 monitored items at a 1 s publishing interval, every value
changing every second, from a local asyncua server (tests/opcua_server.py), read by the
real driver into the real agent pipeline (sequencer, salted leaves, SQLite on disk,
Merkle roots, COSE seals with a software key).

The server runs in a separate process pinned to another core, so its CPU is not the
agent's. Each configuration runs in a fresh process pinned to one core (its RSS is its
own); rounds are interleaved and medians shown. Measured in that process over a window of
whole publishing cycles, after the initial values and a warm-up: CPU time (getrusage
RUSAGE_SELF) as a share of one core and per notification, notifications/s (agent: every
notification becomes a reading, and every reading the driver submits is sealed into the
buffer before the process ends: checked), max and current RSS. Baselines in the same run:

  floor     a bare asyncua Client subscribing the same 10,000 items in iterator mode, with
            a queue that holds ten publishes (the default 1,000 drops silently), doing
            nothing with the values: no readings, no buffer, no sealing;
  callback  the same with asyncua's callback handler (a `datachange_notification` per
            value, each in a Task of its own), the way most Python gateways use asyncua;
  idle      the pipeline with no source: what it costs per second whatever the load.

    python bench/opcua.py [--rounds 3] [--warmup 2] [--window 6]
    python bench/opcua.py --quick

Goal (the driver's issue): the agent process, driver and pipeline together, at <= 25 % of
one core. Needs the test tools (bash scripts/setup.sh test): the server is the tests' own.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from asyncua import Client, ua  # noqa: E402
from asyncua.common.subscription import DataChangeEvent, DataChangeNotif  # noqa: E402

from agent.sequencer import Sequencer  # noqa: E402
from bench.pipeline import Pipeline, ProcessClock, in_fresh_process, met, process_cells, rss_mb  # noqa: E402
from drivers.api import DriverContext, Reading  # noqa: E402
from drivers.opcua.config import SourceConfig  # noqa: E402
from drivers.opcua.driver import create  # noqa: E402
from drivers.opcua.values import source_time  # noqa: E402

TAGS = 10_000
INTERVAL = 1.0  # seconds: the publishing interval and the server's change period
NAMESPACE = "urn:edgeseal-test:plant"  # the test server's first namespace (ServerSpec's default)
BULK_PARENT = "Plant/Bulk"  # and where it puts its Bulk variables
QUEUE = 10 * TAGS  # the floor's iterator queue: ten publishes
GOAL = 0.25  # share of one core, the agent process


@dataclass
class Figures:
    """One configuration's window, as measured in its own process."""

    notifications: int  # handled in the window (agent: submitted to the pipeline as readings)
    seconds: float  # on the server's clock: whole change periods (see Meter)
    cpu: float  # the process's user + system seconds
    max_rss_mb: float
    rss_mb: float
    server_cpu: float  # the server process's CPU seconds in the same window
    all_stored: bool  # agent: every reading submitted is sealed in the buffer, none dropped
    faults: int  # agent: sessions the driver gave up (each one reconnects)


def source_stamp(value: ua.DataValue) -> int:
    stamp = source_time(value.SourceTimestamp)
    assert stamp is not None, "the test server stamps every value"
    return stamp


def bulk_path(n: int) -> str:
    """The string id of the n-th Bulk variable (tests/opcua_server.py: 100 per object)."""
    return f"{BULK_PARENT}/G{n // 100:03d}/V{n:05d}"


# -- the server: tests/opcua_server.py in its own process ----------------------------


def start_server(directory: Path, core: int) -> Any:
    """The tests' asyncua server with 10,000 Double variables all changing every second,
    pinned to `core` once built. Imported here, not at the top: the configurations'
    processes import this module too, and pytest (which the tests' helper imports) must
    not weigh on their RSS."""
    sys.path.insert(0, str(ROOT / "tests"))
    from opcua_servers import Bulk, OpcUaServer, ServerSpec

    server = OpcUaServer(ServerSpec(bulk=Bulk(count=TAGS, period=INTERVAL, parent=BULK_PARENT)), directory).start()
    for thread in os.listdir(f"/proc/{server.pid}/task"):  # threads made later inherit the mask
        os.sched_setaffinity(int(thread), {core})
    return server


# -- the window: whole publishing cycles -----------------------------------------------


class Meter:
    """Counts notifications and snapshots the process at two publish boundaries: after
    `skip` publishes (the initial values, then the warm-up) and `window` publishes later.

    A window of whole publishing cycles holds exactly `window` publishes' work. One of
    fixed seconds would not: the server's answers land up to ~0.2 s off their schedule
    (its change loop and its publish loop share one event loop), so such a window would
    gain or lose a whole publish now and then. For the same reason the window's length
    is the number of the server's changes between the two boundary publishes, in
    periods: from the SourceTimestamp of their values (every value of one change carries
    the same), rounded to whole periods, because a change runs late when the server is
    busy (the first ones, while it creates the 10,000 items) though the next is on
    schedule. A change the server lost (with queue size 1, two changes between two
    publishes keep only the last) shows as fewer notifications/s than 10,000."""

    def __init__(self, clock: ProcessClock, skip: int, window: int) -> None:
        self.notifications = 0
        self._clock, self._skip, self._window = clock, skip, window
        self._publishes = 0
        self._snapshots: list[dict[str, float]] = []
        self._done = asyncio.Event()

    def published(self, notifications: int, stamp: Callable[[], int]) -> None:
        """A publish's `notifications` were handled; `stamp()` is their SourceTimestamp, in ns
        (called at the two boundaries only: the hot path does not pay for it)."""
        self.notifications += notifications
        self._publishes += 1
        if self._publishes in (self._skip, self._skip + self._window):
            self._snapshots.append(
                {**self._clock.snapshot(), "notifications": self.notifications, "server_time": stamp() / 1e9}
            )
            if len(self._snapshots) == 2:
                self._done.set()

    def notified(self, data: DataChangeNotif) -> None:
        """One of asyncua's notifications handled; every TAGS-th ends a publish, which
        carries all items."""
        if (self.notifications + 1) % TAGS:
            self.notifications += 1
        else:
            self.published(1, lambda: source_stamp(data.monitored_item.Value))

    async def wait(self) -> None:
        timeout = 60 + 2 * (self._skip + self._window) * INTERVAL
        try:
            await asyncio.wait_for(self._done.wait(), timeout)
        except TimeoutError:
            raise TimeoutError(f"fewer than {self._skip + self._window} publishes in {timeout:.0f} s") from None

    def figures(self, all_stored: bool = True, faults: int = 0) -> Figures:
        before, after = self._snapshots
        max_rss, rss = rss_mb()
        return Figures(
            notifications=int(after["notifications"] - before["notifications"]),
            seconds=round((after["server_time"] - before["server_time"]) / INTERVAL) * INTERVAL,
            cpu=after["cpu"] - before["cpu"],
            max_rss_mb=max_rss,
            rss_mb=rss,
            server_cpu=after["server_cpu"] - before["server_cpu"],
            all_stored=all_stored,
            faults=faults,
        )


async def measure(meter: Meter, *tasks: Coroutine[Any, Any, None]) -> None:
    """Runs `tasks` until the meter has its window, then stops them."""
    running = [asyncio.create_task(task) for task in tasks]
    try:
        await meter.wait()
    finally:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)


# -- the configurations, each in a fresh process ------------------------------------


def run_config(kind: str, url: str, server_pid: int, warmup: int, window: int, core: int) -> Figures:
    """In a fresh process: one configuration, pinned to `core`."""
    os.sched_setaffinity(0, {core})
    logging.basicConfig(level=logging.WARNING)
    meter = Meter(ProcessClock(server_pid), 1 + warmup, window)
    return asyncio.run(CONFIGURATIONS[kind](url, meter))


class MeteredSink:
    """The driver's sink: forwards to the sequencer; one submit per PublishResult."""

    def __init__(self, sink: Sequencer, meter: Meter) -> None:
        self._sink, self._meter = sink, meter

    async def submit(self, readings: Sequence[Reading]) -> None:
        self._meter.published(len(readings), lambda: readings[0].ts)  # the SourceTimestamp
        await self._sink.submit(readings)


def source(url: str) -> SourceConfig:
    tags = [{"name": f"bulk.v{n:05d}", "node": f"nsu={NAMESPACE};s={bulk_path(n)}"} for n in range(TAGS)]
    group = {"mode": "subscribe", "publishing_interval": f"{INTERVAL:g}s", "tags": tags}
    return SourceConfig.model_validate({"name": "bench", "type": "opcua", "url": url, "groups": [group]})


async def edgeseal(url: str, meter: Meter) -> Figures:
    """The driver (one subscribe group, its defaults: sampling = publishing interval,
    queue 1) into the agent's pipeline (see bench.pipeline)."""
    with tempfile.TemporaryDirectory() as state:
        pipeline = Pipeline(Path(state))
        context = DriverContext("bench", logging.getLogger("bench"), state_dir=state)
        driver = create(source(url), MeteredSink(pipeline.sequencer, meter), context)
        pipeline.start()
        await measure(meter, driver.run())
        all_stored = await pipeline.close(meter.notifications)
    return meter.figures(all_stored, context.counters.get("faults", 0))


async def idle(_url: str, meter: Meter) -> Figures:
    """The pipeline with no source; a timer stands in for the publishes."""

    async def tick() -> None:
        while True:
            await asyncio.sleep(INTERVAL)
            meter.published(0, time.time_ns)

    with tempfile.TemporaryDirectory() as state:
        pipeline = Pipeline(Path(state))
        pipeline.start()
        await measure(meter, tick())
        all_stored = await pipeline.close(0)
    return meter.figures(all_stored)


class Handler:
    """asyncua's callback style: asyncua calls this once per value, in a Task of its own."""

    def __init__(self, meter: Meter) -> None:
        self._meter = meter

    def datachange_notification(self, node: Any, val: Any, data: DataChangeNotif) -> None:
        self._meter.notified(data)


async def floor(url: str, meter: Meter) -> Figures:
    return await bare_client(url, meter, None)


async def callback(url: str, meter: Meter) -> Figures:
    return await bare_client(url, meter, Handler(meter))


async def bare_client(url: str, meter: Meter, handler: Handler | None) -> Figures:
    """A bare asyncua Client on the same 10,000 items, same sampling, same queue on the
    server; with no handler, iterator mode (a large queue: the default drops silently).
    Its timeouts are the driver's (drivers.opcua.session): with asyncua's default 1 s
    watchdog, the server-state probe times out while either side works through a publish
    of 10,000 values, and the client drops its connection within seconds."""
    client = Client(url, timeout=5.0, watchdog_intervall=5.0)
    client.session_timeout = 60_000
    async with client:
        subscription = await client.create_subscription(INTERVAL * 1000, handler, queue_maxsize=QUEUE)
        ns = await client.get_namespace_index(NAMESPACE)
        nodes = [client.get_node(f"ns={ns};s={bulk_path(n)}") for n in range(TAGS)]
        sampling = ua.Double(INTERVAL * 1000)
        handles = await subscription.subscribe_data_change(nodes, queuesize=1, sampling_interval=sampling)
        refused = [handle for handle in handles if not isinstance(handle, int)]  # not raised (FIELD-NOTES)
        if refused:
            raise RuntimeError(f"the server refused {len(refused)} items, e.g. {refused[0]}")

        async def consume() -> None:
            async for event in subscription:
                if isinstance(event, DataChangeEvent):  # not the StatusChange of a closing subscription
                    meter.notified(event.data)

        await measure(meter, *([] if handler else [consume()]))
    return meter.figures()


CONFIGURATIONS: dict[str, Callable[[str, Meter], Coroutine[Any, Any, Figures]]] = {
    "floor": floor,
    "callback": callback,
    "idle": idle,
    "edgeseal": edgeseal,
}
LABELS = {
    "floor": "floor: bare client, iterator mode",
    "callback": "asyncua callback handler",
    "idle": "pipeline with no source",
    "edgeseal": "**edgeseal: driver + pipeline**",
}


# -- the run: interleaved rounds, medians ------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians shown")
    parser.add_argument(
        "--warmup", type=int, default=2, help="publishes after the initial values, before the window (at least 2)"
    )
    parser.add_argument("--window", type=int, default=6, help="publishes measured per configuration")
    parser.add_argument("--quick", action="store_true", help="1 round, 3-publish windows")
    args = parser.parse_args()
    if args.warmup < 2:  # the first change comes late: the server is still busy creating the items
        parser.error("--warmup must be at least 2 publishes")
    if args.quick:
        args.rounds, args.window = 1, 3
    cores = sorted(os.sched_getaffinity(0))
    agent_core, server_core = cores[0], cores[-1]
    results: dict[str, list[Figures]] = {kind: [] for kind in CONFIGURATIONS}
    with tempfile.TemporaryDirectory() as directory:
        server = start_server(Path(directory), server_core)
        try:
            for _ in range(args.rounds):
                for kind in CONFIGURATIONS:
                    figures = in_fresh_process(
                        run_config, kind, server.url, server.pid, args.warmup, args.window, agent_core
                    )
                    results[kind].append(figures)
        finally:
            server.kill()
    print_results(args, results, agent_core, server_core)


HEADER = (
    "| configuration | notifications/s (of 10,000) | CPU / notification | CPU (share of one core) "
    "| max RSS | RSS at end | server CPU |\n|---|---|---|---|---|---|---|"
)


def median(runs: list[Figures], value: Callable[[Figures], float]) -> float:
    return statistics.median(value(f) for f in runs)


def cpu_share(f: Figures) -> float:
    return f.cpu / f.seconds


def cpu_per_notification(f: Figures) -> float:
    """µs of the process's CPU per notification."""
    return f.cpu / f.notifications * 1e6 if f.notifications else float("inf")


def rate(f: Figures) -> float:
    return f.notifications / f.seconds


def report(kind: str, runs: list[Figures]) -> str:
    """One line of the table: medians of the rounds."""
    notes = "" if all(f.all_stored for f in runs) else "; NOT ALL STORED"
    faults = sum(f.faults for f in runs)
    notes += f"; {faults} driver faults" if faults else ""
    cells = [LABELS[kind] + notes]
    if kind == "idle":
        cells += ["", ""]
    else:
        cells += [f"{median(runs, rate):,.0f}", f"{median(runs, cpu_per_notification):.2f} µs"]
    return "| " + " | ".join(cells + process_cells(runs)) + " |"


def print_results(
    args: argparse.Namespace, results: dict[str, list[Figures]], agent_core: int, server_core: int
) -> None:
    print(
        f"edgeseal OPC UA: {TAGS:,} monitored items (Double, all changing every {INTERVAL:g} s), one subscription "
        f"at a {INTERVAL:g} s publishing interval; {args.rounds} interleaved rounds of the initial values + "
        f"{args.warmup} warm-up publishes + a {args.window}-publish window, medians; "
        f"agent on core {agent_core}, server on core {server_core}"
    )
    print(HEADER)
    for kind, runs in results.items():
        print(report(kind, runs))
    ours, floor_runs, callback_runs = results["edgeseal"], results["floor"], results["callback"]
    share, delivered = median(ours, cpu_share), median(ours, rate)
    lighter = delivered < 0.99 * TAGS / INTERVAL  # the server lost changes: less work than the goal's
    short = " (BELOW the nominal rate: a lighter load than the goal's)" if lighter else ""
    print(
        f"goal: the agent process (driver + sequencer + buffer + sealer) <= {GOAL:.0%} of one core "
        f"at {TAGS:,} notifications/s: {share:.1%} at {delivered:,.0f} notifications/s{short}, {met(share <= GOAL)}"
    )
    ours_cpu = median(ours, cpu_per_notification)
    floor_cpu, callback_cpu = median(floor_runs, cpu_per_notification), median(callback_runs, cpu_per_notification)
    print(
        f"CPU per notification: edgeseal / floor {ours_cpu / floor_cpu:.2f}; callback handler / floor "
        f"{callback_cpu / floor_cpu:.2f}; edgeseal / callback handler {ours_cpu / callback_cpu:.2f}"
    )
    stored = sum(f.all_stored for f in ours)
    print(f"every reading the driver submitted is sealed in the buffer, none dropped: {stored} of {len(ours)} runs")


if __name__ == "__main__":
    main()
