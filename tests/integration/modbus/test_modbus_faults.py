"""Device faults become Bad readings with the matching quality, never silence, and the
driver recovers by itself when the fault goes away."""

from __future__ import annotations

import asyncio
import logging

import pytest
from driver_harness import all_good
from modbus_harness import Running, source
from modbus_servers import ServerFarm, free_port

from drivers.api import Quality
from drivers.modbus.points import Table

ONE_TAG = [{"unit": 1, "tags": [{"name": "x", "table": "holding", "address": 0}]}]


def quality_of(tag: str, quality: int):
    return lambda readings: tag in readings and readings[tag].quality == quality


def test_stopped_server_reads_bad_communication_error_then_recovers(
    modbus_servers: ServerFarm, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    server = modbus_servers.tcp(1)
    server.set(1, Table.HOLDING_REGISTERS, 0, [7])

    async def main() -> Running:
        async with Running(source(server.url, ONE_TAG)) as run:
            await run.sink.wait_batch(all_good)
            server.stop()
            await run.sink.wait_batch(quality_of("x", Quality.BAD_COMMUNICATION_ERROR))
            outage = len(run.sink.batches)
            await asyncio.sleep(0.3)
            assert len(run.sink.batches) - outage >= 3, "a dead device still yields readings"
            server.start()
            await run.sink.wait_batch(all_good)
        return run

    run = asyncio.run(main())
    assert run.sink.latest()["x"].value == 7
    assert {q for q in run.sink.qualities("x")} == {0, Quality.BAD_COMMUNICATION_ERROR}
    assert all(r.value is None for _, batch in run.sink.batches for r in batch if r.quality)
    assert run.count("reconnects") >= 1
    said = [(r.name, r.levelname, r.getMessage()) for r in caplog.records if r.levelno >= logging.INFO]
    assert [(name, level) for name, level, _ in said] == [("test.modbus.plc", "WARNING"), ("test.modbus.plc", "INFO")]
    assert "unavailable: connection closed by the device" in said[0][2] and "available again" in said[1][2]


def test_a_refused_connection_is_retried_ever_less_often_up_to_the_cap() -> None:
    nobody = f"tcp://127.0.0.1:{free_port()}"
    options = {"reconnect_delay": "50ms", "reconnect_delay_max": "200ms", "interval": "20ms"}

    async def main() -> Running:
        async with Running(source(nobody, ONE_TAG, **options)) as run:
            await asyncio.sleep(1.5)
        return run

    run = asyncio.run(main())
    # attempts at about 0, 0.05, 0.15, 0.35, 0.55, ... 1.35 s: 8 of them; every 20 ms would be 75
    assert 5 <= run.count("reconnects") + 1 <= 12, run.context.counters
    assert set(run.sink.qualities("x")) == {Quality.BAD_COMMUNICATION_ERROR}
    assert len(run.sink.batches) >= 50, "never silent while disconnected"


def test_answers_slower_than_the_timeout_read_bad_timeout(modbus_servers: ServerFarm) -> None:
    server = modbus_servers.tcp(1)
    proxy = modbus_servers.proxy(server)

    async def main() -> Running:
        async with Running(source(proxy.url(), ONE_TAG)) as run:
            await run.sink.wait_batch(all_good)
            proxy.mode, proxy.delay = "delay", 0.35  # timeout is 200ms
            await run.sink.wait(lambda sink: sink.qualities("x").count(Quality.BAD_TIMEOUT) >= 3)
            proxy.mode = "pass"
            await run.sink.wait_batch(all_good)
        return run

    run = asyncio.run(main())
    assert set(run.sink.qualities("x")) == {0, Quality.BAD_TIMEOUT}


def test_garbage_answers_read_bad_communication_error_then_recover(modbus_servers: ServerFarm) -> None:
    server = modbus_servers.tcp(1)
    proxy = modbus_servers.proxy(server)

    async def main() -> Running:
        async with Running(source(proxy.url(), ONE_TAG)) as run:
            await run.sink.wait_batch(all_good)
            proxy.mode = "junk"
            await run.sink.wait_batch(quality_of("x", Quality.BAD_COMMUNICATION_ERROR))
            proxy.mode = "pass"
            await run.sink.wait_batch(all_good)
        return run

    run = asyncio.run(main())
    assert run.count("reconnects") >= 1, "a garbled connection is made again"


def test_illegal_address_inside_a_merged_request_fails_only_that_tag_and_the_split_is_kept(
    modbus_servers: ServerFarm,
) -> None:
    server = modbus_servers.tcp(1)
    server.set(1, Table.HOLDING_REGISTERS, 0, [10, 11, 12, 13, 14])
    server.fail(1, 2)  # holding register 2 does not exist on this device
    tags = [{"name": f"r{i}", "table": "holding", "address": i} for i in range(5)]

    async def main() -> Running:
        async with Running(source(server.url, [{"unit": 1, "tags": tags}])) as run:
            await run.sink.wait(lambda sink: len(sink.batches) >= 1)
            first_cycle = len(server.requests)
            await run.sink.wait(lambda sink: len(sink.batches) >= 4)
        return run, server.requests[:first_cycle], server.requests[first_cycle:]

    run, first, later = asyncio.run(main())
    for _, batch in run.sink.batches:
        readings = {r.tag: r for r in batch}
        assert readings.pop("r2").quality == Quality.BAD_CONFIGURATION_ERROR
        assert {tag: r.value for tag, r in readings.items()} == {"r0": 10, "r1": 11, "r3": 13, "r4": 14}
        assert all(r.quality == 0 for r in readings.values())
    assert first[0] == (1, 3, 0, 5), "the planner merged the five registers"
    assert later, "the device is still polled"
    assert all(not address <= 2 < address + count for _, _, address, count in later), "no failing request again"
    assert run.count("request_splits") >= 1


@pytest.mark.parametrize(
    ("code", "quality"),
    [
        pytest.param(0x01, Quality.BAD_CONFIGURATION_ERROR, id="illegal-function"),
        pytest.param(0x02, Quality.BAD_CONFIGURATION_ERROR, id="illegal-address-single-tag"),
        pytest.param(0x03, Quality.BAD_CONFIGURATION_ERROR, id="illegal-value"),
        pytest.param(0x04, Quality.BAD_DEVICE_FAILURE, id="device-failure"),
        pytest.param(0x06, Quality.BAD_TIMEOUT, id="busy-retried-then-given-up"),
        pytest.param(0x0A, Quality.BAD_COMMUNICATION_ERROR, id="gateway-path-unavailable"),
        pytest.param(0x0B, Quality.BAD_TIMEOUT, id="gateway-target-silent"),
    ],
)
def test_exception_responses_read_with_their_quality(modbus_servers: ServerFarm, code: int, quality: int) -> None:
    server = modbus_servers.tcp(1)
    server.fail(1, 0, code)

    async def main() -> Running:
        async with Running(source(server.url, ONE_TAG, retries=1)) as run:
            await run.sink.wait(lambda sink: len(sink.batches) >= 1)
        return run

    run = asyncio.run(main())
    first = run.sink.batches[0][1]
    assert [(r.tag, r.value, r.quality) for r in first] == [("x", None, quality)]
    retried = code in (0x06, 0x0B)
    assert len(server.requests_for(1)) >= (2 if retried else 1)


def test_a_silent_unit_on_a_serial_line_reads_bad_timeout_beside_a_good_one(modbus_servers: ServerFarm) -> None:
    line = modbus_servers.serial(1, 2)
    line.set(1, Table.HOLDING_REGISTERS, 0, [5])
    line.silent_units.add(2)
    devices = [
        {"unit": 1, "tags": [{"name": "live", "table": "holding", "address": 0}]},
        {"unit": 2, "tags": [{"name": "dead", "table": "holding", "address": 0}]},
    ]
    serial = {"baudrate": 115200, "parity": "none"}  # ptys refuse parity

    async def main() -> Running:
        async with Running(source(line.url, devices, serial=serial)) as run:
            await run.sink.wait(lambda sink: sink.qualities("dead").count(Quality.BAD_TIMEOUT) >= 3)
            await run.sink.wait_batch(all_good)
        return run

    run = asyncio.run(main())
    assert set(run.sink.qualities("dead")) == {Quality.BAD_TIMEOUT}
    assert run.sink.latest()["live"].value == 5
