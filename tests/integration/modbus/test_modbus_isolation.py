"""One failing device never stalls another: a dead source does not slow a live one, a
silent unit on a shared line is backed off so the live units keep their rate, and a
scan longer than its interval is skipped and counted, never overlapped. Rates are
compared with a run without the fault in the same test, as ratios, not absolute times."""

from __future__ import annotations

import asyncio

from driver_harness import Sink
from modbus_harness import Running, source
from modbus_servers import ServerFarm

from drivers.api import Quality

WARM_UP, WINDOW = 0.4, 1.0


def tag(name: str, unit: int = 1) -> dict:
    return {"unit": unit, "tags": [{"name": name, "table": "holding", "address": 0}]}


def cycles(sink: Sink, name: str, start: float, end: float) -> int:
    """Batches with a Good reading of `name` that arrived within [start, end]."""
    return sum(
        1 for at, batch in sink.batches if start <= at <= end and any(r.tag == name and not r.quality for r in batch)
    )


async def measure(*runs: Running, name: str) -> int:
    """Good cycles of `name` (read by runs[0]) in a window after a warm-up, while all run."""
    async with asyncio.TaskGroup() as group:
        for run in runs:
            group.create_task(run.__aenter__())
    try:
        loop = asyncio.get_running_loop()
        start = loop.time() + WARM_UP
        await asyncio.sleep(WARM_UP + WINDOW)
        return cycles(runs[0].sink, name, start, start + WINDOW)
    finally:
        for run in runs:
            await run.__aexit__(None, None, None)


def test_a_dead_source_does_not_slow_a_live_one(modbus_servers: ServerFarm) -> None:
    live = modbus_servers.tcp(1)
    blackhole = modbus_servers.proxy()  # accepts connections, never answers
    fast = {"interval": "20ms"}

    async def main() -> tuple[int, int, Running]:
        alone = await measure(Running(source(live.url, [tag("live")], **fast)), name="live")
        dead = Running(source(blackhole.url(), [tag("dead")], name="dead", **fast))
        beside = await measure(Running(source(live.url, [tag("live")], **fast)), dead, name="live")
        return alone, beside, dead

    alone, beside, dead = asyncio.run(main())
    assert alone >= 20
    assert beside / alone >= 0.8, (alone, beside)
    assert set(dead.sink.qualities("dead")) == {Quality.BAD_TIMEOUT}, "the dead source still yields readings"


def test_a_silent_unit_on_a_shared_line_is_backed_off(modbus_servers: ServerFarm) -> None:
    line = modbus_servers.rtu_over_tcp(1, 2)
    options = {"interval": "20ms", "timeout": "100ms", "reconnect_delay": "200ms", "reconnect_delay_max": "5s"}

    async def main() -> tuple[int, int, Running]:
        alone = await measure(Running(source(line.url, [tag("live"), tag("other", 2)], **options)), name="live")
        line.silent_units.add(2)  # unit 2 stops answering; both share one connection
        since = len(line.requests)
        shared = Running(source(line.url, [tag("live"), tag("other", 2)], **options))
        beside = await measure(shared, name="live")
        return alone, beside, shared, since

    alone, beside, shared, since = asyncio.run(main())
    assert alone >= 20
    assert beside / alone >= 0.7, (alone, beside)
    other = shared.sink.qualities("other")
    assert set(other) == {Quality.BAD_TIMEOUT} and len(other) >= 0.7 * beside, "backed off, yet never silent"
    asked = [u for u, *_ in line.requests[since:] if u == 2]
    assert len(asked) <= 6, "the silent unit is asked ever less often"


def test_a_scan_longer_than_its_interval_is_skipped_and_counted_never_overlapped(modbus_servers: ServerFarm) -> None:
    server = modbus_servers.tcp(1)
    proxy = modbus_servers.proxy(server)
    proxy.mode, proxy.delay = "delay", 0.1  # each scan takes ~100ms; the interval is 30ms

    async def main() -> Running:
        async with Running(source(proxy.url(), [tag("x")], interval="30ms", timeout="1s")) as run:
            await run.sink.wait(lambda sink: len(sink.batches) >= 6)
        return run

    run = asyncio.run(main())
    arrivals = [at for at, _ in run.sink.batches]
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    assert min(gaps) >= 0.09, gaps  # one scan at a time: none queued behind another
    assert run.count("scan_overruns") >= 2 * (len(arrivals) - 1)
    assert set(run.sink.qualities("x")) == {0}
