"""The complaint about every other gateway: after an OPC UA server restart the connection
"recovers" but data never comes back. Here the server is SIGKILLed and started again,
five times in a row, with its namespace indexes moved each time, once while the driver
is creating its subscription, and once frozen (no FIN, no answer): every time readings
resume from new subscriptions, and the time away shows as Bad readings, not silence."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

from driver_harness import Sink, in_new_loop
from opcua_harness import NS, Running, poll, source, subscribe
from opcua_servers import ServerFarm, ServerSpec, Variable

from drivers.api import Quality

COUNTER = Variable("Counter", period=0.1)  # counts up every 100 ms from 0
SETPOINT = Variable("Setpoint", value=42.0)
TAGS = (("counter", f"nsu={NS};s=Plant/Line1/Counter"),)
POLLED = (("setpoint", f"nsu={NS};s=Plant/Line1/Setpoint"),)


def spec(**changes: object) -> ServerSpec:
    return ServerSpec(variables=(COUNTER, SETPOINT), **changes)  # type: ignore[arg-type]


def fresh_good(sink: Sink, tag: str, after: int) -> bool:
    """A Good reading of `tag` with a value among the batches from index `after` on."""
    return any(
        r.tag == tag and r.quality == Quality.GOOD and r.value is not None for _, b in sink.batches[after:] for r in b
    )


def bad_since(sink: Sink, tag: str, after: int) -> list[int]:
    return [r.quality for _, b in sink.batches[after:] for r in b if r.tag == tag and r.quality != Quality.GOOD]


async def resumed(sink: Sink, after: int, timeout: float = 15.0) -> None:
    await sink.wait(lambda s: fresh_good(s, "counter", after) and fresh_good(s, "setpoint", after), timeout)


@in_new_loop
async def test_five_restarts_in_a_row_with_moving_namespaces(opcua_servers: ServerFarm, tmp_path: Path) -> None:
    server = opcua_servers.start(spec())
    config = source(server.url, groups=[subscribe(*TAGS), poll(*POLLED, interval="200ms")])
    async with Running(config, tmp_path) as run:
        await resumed(run.sink, 0)
        for shift in range(1, 6):
            server.kill()
            killed_at = len(run.sink.batches)
            await run.sink.wait(lambda s, since=killed_at: bool(bad_since(s, "counter", since)), timeout=10)
            await asyncio.sleep(0.5)  # down for a while: reconnects fail meanwhile
            server.restart(shift=shift)  # our namespace's index moves by one more each time
            restarted_at = len(run.sink.batches)
            await resumed(run.sink, restarted_at)
            assert Quality.BAD_COMMUNICATION_ERROR in bad_since(run.sink, "counter", killed_at)
            assert Quality.BAD_COMMUNICATION_ERROR in bad_since(run.sink, "setpoint", killed_at)
        # the counter keeps moving on the last server: the subscription is alive, not just the session
        seen = len(run.sink.batches)
        await run.sink.wait(lambda s: sum(r.tag == "counter" for _, b in s.batches[seen:] for r in b) >= 5)
    assert run.count("connects") == 6


@in_new_loop
async def test_restart_while_the_subscription_is_being_created(opcua_servers: ServerFarm, tmp_path: Path) -> None:
    """The server dies with the driver's CreateMonitoredItems unanswered, three times."""
    markers = [tmp_path / f"creating-{n}" for n in range(3)]
    server = opcua_servers.start(spec(stall_create_monitored_items=str(markers[0])))
    config = source(server.url, groups=[subscribe(*TAGS), poll(*POLLED)])
    async with Running(config, tmp_path / "state") as run:
        for n, marker in enumerate(markers):
            await _until(marker.exists, timeout=15)
            server.kill()
            following = str(markers[n + 1]) if n + 1 < len(markers) else None
            server.restart(shift=n + 1, stall_create_monitored_items=following)
        restarted_at = len(run.sink.batches)
        await resumed(run.sink, restarted_at)
        assert Quality.BAD_COMMUNICATION_ERROR in bad_since(run.sink, "counter", 0)


@in_new_loop
async def test_a_frozen_server_is_noticed_and_data_resumes_when_it_thaws(
    opcua_servers: ServerFarm, tmp_path: Path
) -> None:
    """SIGSTOP: the TCP connection stays open but nothing answers, as with a hung PLC or
    a cable pulled behind a switch. The health check notices; Bad readings follow."""
    server = opcua_servers.start(spec())
    config = source(server.url, timeout="1s", groups=[subscribe(*TAGS), poll(*POLLED)])
    async with Running(config, tmp_path) as run:
        await resumed(run.sink, 0)
        assert server.pid is not None
        os.kill(server.pid, signal.SIGSTOP)
        try:
            frozen_at = len(run.sink.batches)
            await run.sink.wait(lambda s: bool(bad_since(s, "counter", frozen_at)), timeout=10)
        finally:
            os.kill(server.pid, signal.SIGCONT)
        thawed_at = len(run.sink.batches)
        await resumed(run.sink, thawed_at)


async def _until(condition: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)
