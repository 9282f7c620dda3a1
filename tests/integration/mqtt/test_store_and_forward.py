"""Store and forward across broker outages: the real agent streams sealed batches to a
real Mosquitto; the broker is SIGKILLed and comes back (and, in the second test, the
agent is restarted during the outage). Every batch the agent sealed reaches a subscriber
at least once, first arrivals in `b` order, copies recognisable by `b`, and each seal
chains to the one before."""

from __future__ import annotations

import asyncio
from pathlib import Path

from agent_harness import write_config
from driver_harness import in_new_loop
from mqtt_broker import Broker, BrokerFarm, BrokerSpec

from agent.buffer.store import Buffer
from agent.config import Config, load_config
from agent.publish.mqtt import MqttConnection, MqttSettings
from agent.runtime import run_agent
from agent.trust import cbor
from agent.trust.payloads import ZERO_HASH, open_seal, seal_digest

DEVICE = "test-gateway-1"  # agent_harness.DEVICE_ID
SOURCES = """  - name: line
    type: simulator
    interval: 20ms
    tags:
      - {name: temp, type: float, pattern: sine, min: 20, max: 80, period: 2s}
      - {name: strokes, type: int, pattern: counter}"""


def _config(tmp_path: Path, broker: Broker) -> Config:
    path = write_config(tmp_path, sources=SOURCES, seal="interval: 100ms\n  checkpoint_every: 5")
    path.write_text(
        path.read_text() + f"mqtt:\n  url: {broker.url}\n  keepalive: 2s\n  max_in_flight: 5\n  drain_rate: 200\n"
    )
    return load_config(path)


class Subscriber:
    """Collects every batch message, through a persistent session that the broker saved,
    so what the agent publishes right after a restart waits for it."""

    def __init__(self, broker: Broker) -> None:
        settings = MqttSettings(url=broker.url, client_id="auditor", keepalive=2, reconnect_delay=0.1)
        self.connection = MqttConnection(settings)
        self.batches: list[bytes] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Subscriber:
        self._tasks = [asyncio.create_task(self.connection.run()), asyncio.create_task(self._collect())]
        await asyncio.wait_for(self.connection.connected.wait(), 10)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _collect(self) -> None:
        async for message in self.connection.subscribe(f"edgeseal/v1/{DEVICE}/batch"):
            self.batches.append(message.payload)

    def numbers(self) -> list[int]:
        return [open_seal(cbor.decode(message)["seal"])[1].b for message in self.batches]

    async def until(self, b: int, timeout: float = 20) -> None:
        async with asyncio.timeout(timeout):
            while b not in self.numbers():
                await asyncio.sleep(0.05)


async def _run(config: Config, stop: asyncio.Event) -> None:
    await run_agent(config, stop)


def _nothing_lost(subscriber: Subscriber, config: Config) -> int:
    """Every batch the agent sealed reached the subscriber or still waits in the buffer:
    what arrived is batches 1..k with no hole, the very seals made, first arrivals in `b`
    order, each chained to the one before. Returns k."""
    buffer = Buffer.open(config.buffer.dir, create=False)
    try:
        sealed = [row.cose for row in buffer.seals()]
        waiting = {batch.b for batch in buffer.undelivered(0, 1_000_000)}
    finally:
        buffer.close()
    received: dict[int, bytes] = {}
    for message in subscriber.batches:
        seal = cbor.decode(message)["seal"]
        received.setdefault(open_seal(seal)[1].b, seal)
    k = len(received)
    assert sorted(received) == list(range(1, k + 1)), "what arrived has no hole"
    assert set(range(k + 1, len(sealed) + 1)) <= waiting, "the rest waits in the buffer"
    assert [received[b] for b in range(1, k + 1)] == sealed[:k], "the very seals the agent made"
    firsts = list(dict.fromkeys(subscriber.numbers()))
    assert firsts == sorted(firsts), "first arrivals in b order"
    prev = ZERO_HASH
    for cose in sealed:
        assert open_seal(cose)[1].prev == prev
        prev = seal_digest(cose)
    return k


@in_new_loop
async def test_a_broker_killed_for_a_while_loses_nothing(tmp_path: Path, mqtt_brokers: BrokerFarm) -> None:
    broker = mqtt_brokers.start(BrokerSpec(persistence=True))
    config = _config(tmp_path, broker)
    stop = asyncio.Event()
    async with Subscriber(broker) as subscriber:
        broker.save()  # the subscriber's session survives the crash
        agent = asyncio.create_task(_run(config, stop))
        await subscriber.until(3)
        broker.kill()
        await asyncio.sleep(2.0)  # the agent seals ~20 batches meanwhile
        broker.start()
        await subscriber.until(25)  # the backlog of the outage, and on
        stop.set()
        await asyncio.wait_for(agent, 20)
    assert _nothing_lost(subscriber, config) >= 25


@in_new_loop
async def test_the_agent_restarted_during_the_outage_delivers_both_runs(
    tmp_path: Path, mqtt_brokers: BrokerFarm
) -> None:
    broker = mqtt_brokers.start(BrokerSpec(persistence=True))
    config = _config(tmp_path, broker)
    async with Subscriber(broker) as subscriber:
        broker.save()
        stop = asyncio.Event()
        first = asyncio.create_task(_run(config, stop))
        await subscriber.until(2)
        broker.kill()
        await asyncio.sleep(1.0)
        stop.set()
        await asyncio.wait_for(first, 20)  # the agent stops with its backlog undelivered
        stop = asyncio.Event()
        second = asyncio.create_task(_run(config, stop))  # boot 2, still no broker
        await asyncio.sleep(1.0)
        broker.start()
        await subscriber.until(20)
        stop.set()
        await asyncio.wait_for(second, 20)
    delivered = _nothing_lost(subscriber, config)
    boots = {open_seal(cbor.decode(m)["seal"])[1].boot for m in subscriber.batches}
    assert delivered >= 20 and boots == {1, 2}, "the backlog of both runs"
