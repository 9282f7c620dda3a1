"""The soak (DESIGN 5, all promises at once, for as long as one likes): `edgeseal run` at a
steady, realistic rate against the real stack while the faults that make Python gateways
leak happen over and over, and its memory, file descriptors, threads and CPU per reading
must not grow.

The agent reads a Modbus TCP device whose registers change continuously, an OPC UA
server (subscriptions to variables it changes, and a poll) and a simulator; it seals with
its key in a TPM (swtpm), publishes to Mosquitto, where a subscriber counts the batches
by `b`, anchors on anvil every ANCHOR_EVERY, writes health.json and is scraped at every
sample. Delivered batches keep their readings for a sixth of the run, so the pruning of a
long-running gateway runs too. Every FAULT_EVERY seconds one fault, in turn: the broker
killed (SIGKILL) and started again, the Modbus server stopped and started, the OPC UA
server killed and started, a SIGHUP reload; each time the whole plant must flow again.

Every SAMPLE_EVERY seconds /proc gives the agent's RSS, open file descriptors, threads
and CPU time, with the readings sealed so far, so CPU is counted per reading. After the
warm-up (a quarter of the run, at least 30 s) the verdicts: RSS (its anonymous part, see
soak_probe) grows by less than a bound and its least-squares slope stays under a bound
in MB/h; the file descriptors and
threads of the last third are those of the first third; the CPU per reading of the last
third is at most 1.3 times that of the first.

At the end: SIGTERM, exit 0; every sealed batch reached the subscriber (copies allowed,
told apart by `b`) but those sealed by the stop itself, which wait in the buffer; each
device outage showed as Bad readings, not silence; no anchoring alarm and no restarted
part; the export verifies offline and on the chain.

EDGESEAL_SOAK_SECONDS sets the length: 120 s by default (CI); the full soak is an hour:

    EDGESEAL_SOAK_SECONDS=3600 python -m pytest tests/promises/test_soak.py -s
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import pytest
from anchor_harness import AgentProcess, ChainAccount, Journal, anchor_section, deploy_registry, fund
from anvil_chain import Anvil
from cli_runner import Result, in_process
from metrics_harness import Samples, scrape, value
from modbus_servers import ModbusServer, registers
from modbus_servers import ServerFarm as ModbusFarm
from mqtt_broker import Broker, BrokerFarm, BrokerSpec, free_port
from opcua_servers import Bulk, OpcUaServer, ServerSpec, Variable
from opcua_servers import ServerFarm as OpcUaFarm
from soak_probe import Sample, cpu_per_reading_us, sample, slope_per_hour, thirds, write_csv
from tpm_identity import tpm_agent_config, tpm_identity

from agent.health import WRITE_EVERY, read_health
from agent.publish.mqtt import MqttConnection, MqttSettings
from agent.trust import cbor
from agent.trust.payloads import open_seal
from drivers.modbus.points import Table
from provisioning.swtpm import SoftwareTpm

SECONDS_ = float(os.environ.get("EDGESEAL_SOAK_SECONDS", "120"))
WARM_UP = max(30.0, SECONDS_ / 4)
SAMPLE_EVERY = max(2.0, SECONDS_ / 600)  # after the warm-up: 45 samples in CI, 450 in an hour
# each of the four faults at least 3 times in CI, and 30 times in an hour
FAULT_EVERY = min(30.0, max(8.0, SECONDS_ / 30))
OUTAGE = 3.0  # seconds a device or the broker stays away
RECOVERY_WITHIN = 30.0
CHANGE_EVERY = 0.1  # seconds between two changes of the Modbus registers
KEEP_DELIVERED = max(30.0, SECONDS_ / 6)
ANCHOR_EVERY = "15s"

DEVICE = "soak-gateway-1"
SOURCES = ("press", "oven", "line")
NS = ServerSpec().namespaces[0]
MODBUS_TAGS = 40  # float32 holding registers, read every 100 ms: 400 readings/s
OPCUA_TAGS = 200  # variables the server changes every second, subscribed: 200 readings/s
SIM_TAGS = 200  # sampled every 50 ms: 4,000 readings/s

# The verdicts' bounds, from clean runs on a 2-core machine shared with other work, at
# 4,600 readings/s (8 % of a core). After the warm-up RSS still creeps up in steps, mostly
# as the backlog of a broker outage is sent: up to 1.4 MB each early on, less and less
# later (CI: 81.3 -> 84.4 MB, slope 110 to 118 MB/h over 90 s; an hour: under 1.5 MB/h
# from 15 minutes on). The slope may reach RSS_SLOPE_MB_PER_H plus RSS_NOISE_MB (twice
# CI's rise) spread over the hours measured: 12 MB/h in an hour, 244 MB/h in CI. So CI
# catches what is kept per reading (100 bytes a reading is 1.6 GB/h); the hour, 2 kB a
# batch or 100 kB a fault.
RSS_SLOPE_MB_PER_H = 4.0
RSS_NOISE_MB = 6.0
RSS_GROWTH_MB = 8.0  # max - start after the warm-up; clean runs: up to 3.1 MB
# Clean runs hold 13 to 15 descriptors (more while a connection is being opened or
# replaced) and 5 threads (6 once web3's HTTP provider added a second worker to its lock
# pool, which it does under back-to-back calls, up to 5 workers): the last third's
# median may pass the first's by one descriptor, and no thread; highest values by one.
# An fd or a thread left behind by each reconnect or reload is several by then.
FD_SLACK = 1
CPU_RATIO = 1.3  # clean runs: 0.85 to 1.14


@dataclass
class Plant:
    modbus: ModbusServer
    opcua: OpcUaServer
    broker: Broker
    tick: int = 0

    def change(self) -> None:
        """Every Modbus value moves; the OPC UA server moves its own."""
        self.tick += 1
        words = [w for i in range(MODBUS_TAGS) for w in registers("float32", 200 + (self.tick + i) % 100 / 4)]
        self.modbus.set(1, Table.HOLDING_REGISTERS, 100, words)
        self.modbus.set(1, Table.INPUT_REGISTERS, 10, registers("uint32", self.tick))


def start_plant(modbus_servers: ModbusFarm, opcua_servers: OpcUaFarm, mqtt_brokers: BrokerFarm) -> Plant:
    counter = Variable("Counter", type="UInt32", value=0, id="i=1001", period=0.1)
    recipe = Variable("Recipe", type="String", value="PVC-7")
    opcua = opcua_servers.start(ServerSpec(variables=(counter, recipe), bulk=Bulk(count=OPCUA_TAGS, period=1.0)))
    # persistence: the subscriber's session, saved once, survives every crash of the broker
    plant = Plant(modbus_servers.tcp(1), opcua, mqtt_brokers.start(BrokerSpec(persistence=True)))
    plant.change()
    return plant


def sources(plant: Plant) -> str:
    holding = [f"{{name: press.p{i:02d}, address: {400101 + 2 * i}, type: float32}}" for i in range(MODBUS_TAGS)]
    bulk = [
        f'{{name: oven.v{n:03d}, node: "nsu={NS};s=Plant/Bulk/G{n // 100:03d}/V{n:05d}"}}' for n in range(OPCUA_TAGS)
    ]
    return f"""  - name: press
    type: modbus
    url: {plant.modbus.url}
    interval: 100ms
    reconnect_delay: 500ms
    reconnect_delay_max: 2s
    devices:
      - unit: 1
        tags:
{_items(holding, 10)}
          - {{name: press.strokes, address: 300011, type: uint32}}
  - name: oven
    type: opcua
    url: {plant.opcua.url}
    reconnect_delay: 500ms
    reconnect_delay_max: 2s
    groups:
      - mode: subscribe
        publishing_interval: 500ms
        tags:
          - {{name: oven.counter, node: "nsu={NS};i=1001"}}
{_items(bulk, 10)}
      - mode: poll
        interval: 1s
        tags:
          - {{name: oven.recipe, node: "nsu={NS};s=Plant/Line1/Recipe"}}
  - name: line
    type: simulator
    interval: 50ms
    generate: {{count: {SIM_TAGS}, prefix: "sim.", pattern: random, max: 400}}"""


def _items(items: list[str], indent: int) -> str:
    return "\n".join(f"{' ' * indent}- {item}" for item in items)


def configure(
    tmp_path: Path, swtpm: SoftwareTpm, plant: Plant, anvil: Anvil, account: ChainAccount
) -> tuple[Path, str]:
    """The agent's configuration, with its TPM identity beside it, and its metrics' URL."""
    tpm_identity(swtpm, tmp_path, DEVICE)
    seal = "{interval: 500ms, checkpoint_every: 20, checkpoint_interval: 5s}"
    buffer = f"{{dir: state, keep_delivered: {KEEP_DELIVERED:.0f}s}}"
    config = tpm_agent_config(tmp_path, swtpm, DEVICE, sources(plant), seal=seal, buffer=buffer)
    contract = deploy_registry(anvil)
    fund(anvil, account.address)
    mqtt = f"mqtt:\n  url: {plant.broker.url}\n  keepalive: 5s\n  reconnect_delay: 200ms\n  reconnect_delay_max: 2s\n"
    listen = f"127.0.0.1:{free_port()}"
    metrics = f"metrics:\n  listen: {listen}\n"
    anchor = anchor_section(anvil.url, anvil.chain_id, contract, account, interval=ANCHOR_EVERY, poll_interval="1s")
    config.write_text(config.read_text() + mqtt + metrics + anchor)
    return config, f"http://{listen}/metrics"


class BatchCounter:
    """Counts the batches arriving on the device's batch topic, by `b`, through a
    persistent session: what the agent publishes while this subscriber reconnects after a
    crash of the broker waits for it there."""

    def __init__(self, broker: Broker) -> None:
        settings = MqttSettings(broker.url, "soak-auditor", keepalive=5, reconnect_delay=0.1, reconnect_delay_max=0.5)
        self._connection = MqttConnection(settings)
        self.arrivals: Counter[int] = Counter()
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> BatchCounter:
        self._tasks = [asyncio.create_task(self._connection.run()), asyncio.create_task(self._count())]
        await asyncio.wait_for(self._connection.connected.wait(), 10)
        await asyncio.sleep(0.5)  # the SUBACK: from now on the session holds the subscription
        return self

    async def __aexit__(self, *_exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _count(self) -> None:
        async for message in self._connection.subscribe(f"edgeseal/v1/{DEVICE}/batch"):
            self.arrivals[open_seal(cbor.decode(message.payload)["seal"])[1].b] += 1

    def missing(self, last: int) -> list[int]:
        return [b for b in range(1, last + 1) if b not in self.arrivals]


@dataclass(frozen=True)
class Fault:
    name: str
    down: Callable[[], Awaitable[None]]
    up: Callable[[], Awaitable[None]]
    source: str | None = None  # the source whose readings must read Bad while it is down
    outage: float = OUTAGE


@dataclass(frozen=True)
class FaultRecord:
    name: str
    down_at: float
    recovered_after: float  # seconds from the end of the outage until everything flowed again
    bad: int | None  # Bad readings of the fault's source during the outage


def at_once(call: Callable[[], object]) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        call()

    return run


def in_thread(call: Callable[[], object]) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        await asyncio.to_thread(call)

    return run


def faults(plant: Plant, agent_pid: int) -> list[Fault]:
    return [
        Fault("broker crash", at_once(plant.broker.kill), at_once(plant.broker.start)),
        Fault("Modbus device outage", at_once(plant.modbus.stop), at_once(plant.modbus.start), source="press"),
        # the OPC UA server is a process of its own that takes a second or two to start
        Fault("OPC UA server crash", at_once(plant.opcua.kill), in_thread(plant.opcua.start), source="oven"),
        Fault("SIGHUP reload", at_once(lambda: os.kill(agent_pid, signal.SIGHUP)), at_once(lambda: None), outage=0),
    ]


def count(samples: Samples, source: str, quality: str) -> float:
    return samples.get(("edgeseal_readings_total", frozenset({"source": source, "quality": quality}.items())), 0.0)


async def until(condition: Callable[[], bool], what: Callable[[], str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what()}")
        await asyncio.sleep(0.2)


async def started(agent: AgentProcess) -> None:
    """Until the agent published, anchored, and wrote health.json."""

    def up() -> bool:
        log = agent.log()
        return (
            "connected to" in log
            and "anchored checkpoint" in log
            and read_health(agent.config.parent / "state") is not None
        )

    await until(up, lambda: f"the agent's start; its log:\n{agent.log()[-3000:]}", 60)


class Soak:
    """Runs the load, the faults and the sampling side by side for a while."""

    def __init__(self, agent: AgentProcess, metrics_url: str, plant: Plant, subscriber: BatchCounter) -> None:
        assert agent.process is not None
        self._pid, self._url, self._plant, self.subscriber = agent.process.pid, metrics_url, plant, subscriber
        self._state = agent.config.parent / "state"
        self.journal = Journal(self._state)
        self.samples: list[Sample] = []
        self.records: list[FaultRecord] = []
        self._started = time.monotonic()

    async def run(self, seconds: float) -> None:
        deadline = self._started + seconds
        async with asyncio.TaskGroup() as group:
            group.create_task(self._every(SAMPLE_EVERY, deadline, self._sample))
            group.create_task(self._every(CHANGE_EVERY, deadline, self._plant.change))
            group.create_task(self._inject(faults(self._plant, self._pid), deadline))

    def last_b(self) -> int:
        return self.journal.rows("SELECT coalesce(max(b), 0) FROM seals")[0][0]

    async def delivered(self, last: int, after: str) -> None:
        """Until every batch up to `last` reached the subscriber."""

        def missing() -> list[int]:
            return self.subscriber.missing(last)

        await until(lambda: not missing(), lambda: f"batches {missing()[:20]} {after}", RECOVERY_WITHIN)

    def _elapsed(self) -> float:
        return time.monotonic() - self._started

    async def _every(self, period: float, deadline: float, action: Callable[[], None]) -> None:
        for tick in itertools.count(1):
            action()
            due = self._started + tick * period
            if due > deadline:
                return
            await asyncio.sleep(due - time.monotonic())

    def _sample(self) -> None:
        (sealed,) = self.journal.rows("SELECT coalesce(max(s0 + n - 1), 0) FROM seals")[0]
        self.samples.append(sample(self._pid, self._elapsed(), sealed))
        assert value(scrape(self._url), "edgeseal_anchor_alarms") == 0, "an anchoring alarm"
        health = read_health(self._state)
        assert health is not None and set(health["sources"]) == set(SOURCES), health
        assert time.time_ns() - health["t"] < 3 * WRITE_EVERY * 1e9, "health.json is not kept up to date"

    async def _inject(self, kinds: Sequence[Fault], deadline: float) -> None:
        """One fault every FAULT_EVERY seconds, the last one over before the deadline."""
        for n, fault in enumerate(itertools.cycle(kinds), start=1):
            due = self._started + n * FAULT_EVERY
            if due + FAULT_EVERY > deadline:
                return
            await asyncio.sleep(due - time.monotonic())
            self.records.append(await self._inject_one(fault))

    async def _inject_one(self, fault: Fault) -> FaultRecord:
        before, down_at = scrape(self._url), self._elapsed()
        await fault.down()
        await asyncio.sleep(fault.outage)
        during = scrape(self._url)
        await fault.up()
        up_at = self._elapsed()
        await self._flowing_again(during, fault.name)
        bad = int(count(during, fault.source, "bad") - count(before, fault.source, "bad")) if fault.source else None
        return FaultRecord(fault.name, down_at, self._elapsed() - up_at, bad)

    async def _flowing_again(self, then: Samples, what: str) -> None:
        """Every source reads Good values again, and every batch sealed by now reaches the subscriber."""
        last = self.last_b()

        def flowing() -> bool:
            now = scrape(self._url)
            return all(count(now, s, "good") > count(then, s, "good") for s in SOURCES)

        await until(flowing, lambda: f"Good readings of every source after the {what}", RECOVERY_WITHIN)
        await self.delivered(last, f"after the {what}")


class Spread(NamedTuple):
    """A figure's median and highest value in the first and the last third after the warm-up."""

    first: float
    last: float
    first_max: int
    last_max: int

    def back_to(self, slack: int) -> bool:
        """The last third's median within `slack` of the first's, its highest within one
        (a connection that happened to be open at a sample)."""
        return self.last <= self.first + slack and self.last_max <= self.first_max + 1


@dataclass(frozen=True)
class Verdicts:
    """What the samples after the warm-up say, in the figures the report prints."""

    measured: Sequence[Sample]

    @property
    def slope(self) -> float:
        return slope_per_hour(self.measured)

    @property
    def growth(self) -> float:
        return max(s.anon_mb for s in self.measured) - self.measured[0].anon_mb

    def spread(self, figure: str) -> Spread:
        first, _, last = thirds(self.measured)
        a, b = [getattr(s, figure) for s in first], [getattr(s, figure) for s in last]
        return Spread(statistics.median(a), statistics.median(b), max(a), max(b))

    def cpu(self) -> tuple[float, float]:
        first, _, last = thirds(self.measured)
        return cpu_per_reading_us(first), cpu_per_reading_us(last)


def figures(soak: Soak, verdicts: Verdicts) -> str:
    samples, measured = soak.samples, verdicts.measured
    readings = samples[-1].readings
    fds, threads, (p, q) = verdicts.spread("fds"), verdicts.spread("threads"), verdicts.cpu()
    return (
        f"reliability: soak: {SECONDS_:.0f} s, {readings} readings ({readings / samples[-1].t:.0f}/s),"
        f" RSS {measured[0].anon_mb:.1f}->{measured[-1].anon_mb:.1f} MB (anonymous; slope {verdicts.slope:.2f} MB/h),"
        f" fds {fds.first:.0f}->{fds.last:.0f}, threads {threads.first:.0f}->{threads.last:.0f},"
        f" CPU/reading {p:.1f} -> {q:.1f} µs, {len(soak.records)} faults injected"
    )


def details(soak: Soak, verdicts: Verdicts, anchors: int) -> str:
    slowest = max(soak.records, key=lambda r: r.recovered_after)
    kinds = Counter(r.name for r in soak.records)
    measured = verdicts.measured
    first, last = measured[0], measured[-1]
    copies = sum(soak.subscriber.arrivals.values()) - len(soak.subscriber.arrivals)
    fewest_bad: dict[str, int] = {}
    for record in soak.records:
        if record.bad is not None:
            fewest_bad[record.name] = min(record.bad, fewest_bad.get(record.name, record.bad))
    return (
        f"reliability: soak: faults {dict(kinds)}; fewest Bad readings in one outage {fewest_bad};"
        f" slowest recovery {slowest.recovered_after:.1f} s"
        f" ({slowest.name} at {slowest.down_at:.0f} s); {(last.cpu_s - first.cpu_s) / (last.t - first.t):.0%}"
        f" of a core; VmRSS {first.rss_mb:.1f}->{last.rss_mb:.1f} MB (at most {max(s.rss_mb for s in measured):.1f});"
        f" {anchors} anchors; {copies} duplicate deliveries by b"
    )


def assert_steady(verdicts: Verdicts) -> None:
    hours = (verdicts.measured[-1].t - verdicts.measured[0].t) / 3600
    # a slope fitted over a short run is mostly noise: the bound grows as the run shortens
    assert verdicts.slope < RSS_SLOPE_MB_PER_H + RSS_NOISE_MB / hours, f"RSS grows {verdicts.slope:.2f} MB/h"
    assert verdicts.growth < RSS_GROWTH_MB, f"RSS grew {verdicts.growth:.1f} MB after the warm-up"
    fds, threads = verdicts.spread("fds"), verdicts.spread("threads")
    assert fds.back_to(FD_SLACK), f"file descriptors: {fds}"
    assert threads.back_to(0), f"threads: {threads}"
    first, last = verdicts.cpu()
    assert last <= CPU_RATIO * first, f"CPU per reading {first:.1f} -> {last:.1f} µs"


def assert_never_silent(records: Sequence[FaultRecord]) -> None:
    for record in records:
        assert record.bad is None or record.bad > 0, f"no Bad reading during the {record.name} at {record.down_at} s"


def assert_every_batch_arrived(soak: Soak, last_before_stop: int) -> None:
    """Batches sealed while the agent stopped may wait in the buffer for the next start; no other."""
    undelivered = {b for (b,) in soak.journal.rows("SELECT b FROM seals WHERE delivered IS NULL")}
    missing = soak.subscriber.missing(soak.last_b())
    assert all(b > last_before_stop and b in undelivered for b in missing), f"batches never delivered: {missing[:20]}"


def assert_clean_log(agent: AgentProcess, reloads: int) -> None:
    text = agent.log()
    for sign_of_a_bug in ("Traceback", "failed; restarting", "stopped by itself"):
        assert sign_of_a_bug not in text, f"the agent logged {sign_of_a_bug!r}"
    assert text.count("reloaded: 3 sources") == reloads


@pytest.mark.timeout(SECONDS_ * 1.2 + 300)
def test_a_long_run_with_faults_grows_nothing(
    tmp_path: Path,
    swtpm: SoftwareTpm,
    chain_keystore: ChainAccount,
    modbus_servers: ModbusFarm,
    opcua_servers: OpcUaFarm,
    mqtt_brokers: BrokerFarm,
    anvil: Anvil,
    capsys: pytest.CaptureFixture[str],
) -> None:
    plant = start_plant(modbus_servers, opcua_servers, mqtt_brokers)
    config, metrics_url = configure(tmp_path, swtpm, plant, anvil, chain_keystore)
    agent = AgentProcess(config)
    soak, code, last_before_stop = asyncio.run(soak_then_stop(agent, metrics_url, plant))
    write_csv(soak.samples, tmp_path / "soak-samples.csv")
    verdicts = Verdicts([s for s in soak.samples if s.t >= WARM_UP])
    offline, on_chain = export_and_verify(tmp_path, anvil, capsys)
    anchors = len(soak.journal.records())
    print(f"\n{figures(soak, verdicts)}\n{details(soak, verdicts, anchors)}\nsamples: {tmp_path / 'soak-samples.csv'}")

    assert code == 0, agent.log()[-3000:]
    assert_steady(verdicts)
    assert_never_silent(soak.records)
    assert_every_batch_arrived(soak, last_before_stop)
    assert_clean_log(agent, sum(r.name == "SIGHUP reload" for r in soak.records))
    assert not soak.journal.alarms()
    assert anchors >= SECONDS_ / 30, "anchored less than half as often as configured"
    assert offline.code == 0, offline.out + offline.err
    assert on_chain.code == 0 and "VERIFIED on chain" in on_chain.out, on_chain.out + on_chain.err
    assert "boots 1;" in on_chain.out


async def soak_then_stop(agent: AgentProcess, metrics_url: str, plant: Plant) -> tuple[Soak, int | None, int]:
    """The soak, then SIGTERM once every batch sealed reached the subscriber: the soak,
    the agent's exit code, and the last batch sealed before the stop."""
    async with BatchCounter(plant.broker) as subscriber:
        plant.broker.save()
        agent.start()
        try:
            await started(agent)
            soak = Soak(agent, metrics_url, plant, subscriber)
            await soak.run(SECONDS_)
            last = soak.last_b()
            await soak.delivered(last, "before the stop")
            return soak, await asyncio.to_thread(agent.stop), last
        finally:
            agent.stop(signal.SIGKILL)


def export_and_verify(tmp_path: Path, anvil: Anvil, capsys: pytest.CaptureFixture[str]) -> tuple[Result, Result]:
    """The export of what the buffer still holds, verified offline and against the chain."""
    bundle = tmp_path / "bundle.cbor"
    exported = in_process(capsys, "export")("--state-dir", tmp_path / "state", "-o", bundle)
    assert exported.code == 0, exported.out + exported.err
    verify = in_process(capsys, "verify")
    ca = tmp_path / "ca.pem"
    return verify(bundle, "--ca", ca), verify(bundle, "--ca", ca, "--rpc", anvil.url)
