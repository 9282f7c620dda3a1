"""The fault suite on the whole stack: one `edgeseal run` process reads two Modbus devices,
publishes to Mosquitto and anchors on anvil while the test breaks one thing after another:
a device goes down, answers too slowly, answers garbage, comes back; the broker is
killed; the chain node stops. Each fault has its observable outcome asserted from what the
agent stored and sent (DESIGN 5):

- a failing device reads Bad with the matching quality at its own rate, never silence, and
  the healthy device beside it keeps its rate with Good readings;
- while the broker is down batches wait in the buffer; when it returns they all arrive, in
  `b` order, copies recognisable by `b`;
- while the chain node is down sealing and delivery go on; when it returns anchoring
  resumes, with no alarm;
- at the end the export verifies, offline and on the chain.

The faults the agent's process cannot be put through here (disk budget, disk full, clock
steps, a stalled TPM, OPC UA restarts, chain reorgs) have suites of their own; see
docs/reliability.md.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from agent_harness import write_config
from anchor_harness import ChainAccount, Journal, anchor_section, deploy_registry, fund, wait_for
from anvil_chain import AnvilNode
from cli_runner import in_process
from modbus_servers import FaultProxy, ServerFarm, registers
from mqtt_auditor import Subscriber
from mqtt_broker import BrokerFarm, BrokerSpec

from agent.trust.leaf import decode_leaf
from drivers.api import Quality
from drivers.modbus.points import Table

DEVICE = "test-gateway-1"  # agent_harness.DEVICE_ID
INTERVAL = 0.1  # both devices are read every 100 ms
FAULT = 4.0  # seconds each fault lasts
SETTLE = 1.5  # seconds a driver may take to notice a fault or its end (timeout 300 ms, reconnect ≤ 500 ms)


def sources(healthy: str, faulty: str) -> str:
    def source(name: str, url: str) -> str:
        return f"""  - name: {name}
    type: modbus
    url: {url}
    interval: 100ms
    timeout: 300ms
    retries: 0
    reconnect_delay: 100ms
    reconnect_delay_max: 500ms
    devices:
      - unit: 1
        tags:
          - {{name: {name}.flow, address: 400001, type: float32}}"""

    return source("healthy", healthy) + "\n" + source("faulty", faulty)


@dataclass(frozen=True)
class Window:
    """A stretch of wall-clock time in which one condition held."""

    name: str
    start: int  # ns
    end: int

    def settled(self) -> Window:
        """The window without its first SETTLE seconds, when the drivers may still be noticing."""
        return Window(self.name, self.start + int(SETTLE * 1e9), self.end)

    @property
    def seconds(self) -> float:
        return (self.end - self.start) / 1e9


class Timeline:
    def __init__(self) -> None:
        self.windows: list[Window] = []

    def hold(self, name: str, seconds: float, during: Callable[[], None] = lambda: None) -> Window:
        start = time.time_ns()
        during()
        time.sleep(max(0.0, seconds - (time.time_ns() - start) / 1e9))
        window = Window(name, start, time.time_ns())
        self.windows.append(window)
        return window


def proxy_mode(proxy: FaultProxy, mode: str, delay: float = 0.0) -> None:
    proxy.delay, proxy.mode = delay, mode


def readings(journal: Journal, tag: str, window: Window) -> list[int]:
    """Qualities of `tag`'s readings stamped inside `window`, in order."""
    leaves = [decode_leaf(leaf) for (leaf,) in journal.rows("SELECT leaf FROM readings ORDER BY seq")]
    return [leaf.quality for leaf in leaves if leaf.tag == tag and window.start <= leaf.ts < window.end]


def sealed_and_delivered(journal: Journal) -> tuple[int, int]:
    rows = journal.rows("SELECT count(*), count(delivered) FROM seals")
    return rows[0] if rows else (0, 0)


def anchored_size(journal: Journal) -> int:
    rows = journal.rows("SELECT coalesce(max(size), 0) FROM anchors")
    return rows[0][0] if rows else 0


def assert_device_outcome(journal: Journal, window: Window, quality: int) -> str:
    """The faulty device reads `quality` at its rate; the healthy one keeps its rate, Good."""
    settled = window.settled()
    expected = settled.seconds / INTERVAL
    faulty, healthy = readings(journal, "faulty.flow", settled), readings(journal, "healthy.flow", settled)
    assert set(faulty) == {quality}, f"{window.name}: faulty device read {sorted(set(faulty))}, not {quality:#x}"
    assert len(faulty) >= 0.5 * expected, f"{window.name}: faulty device fell silent ({len(faulty)} readings)"
    assert set(healthy) == {Quality.GOOD}, f"{window.name}: the healthy device read {sorted(set(healthy))}"
    assert len(healthy) >= 0.8 * expected, f"{window.name}: the healthy device slowed to {len(healthy)} readings"
    return f"{window.name}: faulty {len(faulty)} x {quality:#x}, healthy {len(healthy)} Good of {expected:.0f} due"


@pytest.mark.timeout(240)
def test_one_agent_through_device_broker_and_chain_faults(
    tmp_path: Path,
    modbus_servers: ServerFarm,
    mqtt_brokers: BrokerFarm,
    anvil_node: Callable[..., AnvilNode],
    chain_keystore: ChainAccount,
    capsys: pytest.CaptureFixture[str],
) -> None:
    healthy, device = modbus_servers.tcp(1), modbus_servers.tcp(1)
    for server, flow in ((healthy, 12.5), (device, 7.25)):
        server.set(1, Table.HOLDING_REGISTERS, 0, registers("float32", flow))
    proxy = modbus_servers.proxy(device)
    broker = mqtt_brokers.start(BrokerSpec(persistence=True))
    subscriber = Subscriber(broker, DEVICE)
    broker.save()  # the subscriber's session survives the broker's crash
    node = anvil_node("--state", str(tmp_path / "chain-state.json"), "--state-interval", "1")
    contract = deploy_registry(node.chain)
    fund(node.chain, chain_keystore.address)
    time.sleep(1.5)  # the contract and the funds are in the state file
    config = write_config(
        tmp_path, sources=sources(healthy.url, proxy.url()), seal="interval: 200ms\n  checkpoint_every: 5"
    )
    config.write_text(
        config.read_text()
        + f"mqtt:\n  url: {broker.url}\n  keepalive: 2s\n"
        + anchor_section(node.chain.url, node.chain.chain_id, contract, chain_keystore)
    )
    log = tmp_path / "agent.log"
    journal = Journal(tmp_path / "state")
    with log.open("wb") as out:
        command = [sys.executable, "-m", "agent.cli", "run", "--config", str(config)]
        agent = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    figures = []
    try:
        wait_for(lambda: anchored_size(journal), "a first anchor")
        timeline = Timeline()
        figures.append(assert_device_outcome(journal, timeline.hold("both up", FAULT), Quality.GOOD))

        down = timeline.hold("device down", FAULT, proxy.stop)
        proxy.start()
        slow = timeline.hold("device slow", FAULT, lambda: proxy_mode(proxy, "delay", 0.6))  # timeout is 300 ms
        junk = timeline.hold("device answers garbage", FAULT, lambda: proxy_mode(proxy, "junk"))
        back = timeline.hold("device back", FAULT, lambda: proxy_mode(proxy, "pass"))
        for window, quality in (
            (down, Quality.BAD_COMMUNICATION_ERROR),
            (slow, Quality.BAD_TIMEOUT),
            (junk, Quality.BAD_COMMUNICATION_ERROR),
            (back, Quality.GOOD),
        ):
            figures.append(assert_device_outcome(journal, window, quality))

        sealed, delivered = sealed_and_delivered(journal)
        timeline.hold("broker down", FAULT, broker.kill)
        during = sealed_and_delivered(journal)
        assert during[0] >= sealed + 0.8 * FAULT / 0.2, "sealing slowed while the broker was down"
        assert during[1] <= delivered + 5, "batches were marked delivered to a dead broker"  # in flight at the kill
        broker.start()
        wait_for(lambda: (lambda s, d: s == d or None)(*sealed_and_delivered(journal)), "the backlog delivered", 60)
        wait_for(lambda: set(subscriber.numbers()) >= set(range(1, during[0] + 1)), "the subscriber has it all", 60)
        firsts = list(dict.fromkeys(subscriber.order))
        assert firsts == sorted(firsts), "first arrivals in b order"
        figures.append(f"broker down {FAULT:.0f} s: {during[0] - sealed} batches sealed meanwhile, all delivered after")

        anchored, (sealed, delivered) = anchored_size(journal), sealed_and_delivered(journal)
        timeline.hold("chain node down", FAULT, node.stop)
        during = sealed_and_delivered(journal)
        assert during[0] >= sealed + 0.8 * FAULT / 0.2 and during[1] >= delivered + 0.8 * FAULT / 0.2, (
            "sealing or delivery slowed while the chain node was down"
        )
        node.start()
        wait_for(lambda: anchored_size(journal) > max(anchored, during[0]), "a checkpoint made since anchored", 60)
        assert not journal.alarms(), journal.alarms()
        figures.append(f"chain node down {FAULT:.0f} s: sealing and delivery went on, anchoring resumed after")

        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=30) == 0, log.read_text()[-3000:]
    finally:
        agent.kill()
        agent.wait()
        subscriber.close()

    bundle = tmp_path / "bundle.cbor"
    assert in_process(capsys, "export")("--state-dir", tmp_path / "state", "-o", bundle).code == 0
    result = in_process(capsys, "verify")(bundle, "--ca", tmp_path / "ca.pem", "--rpc", node.chain.url)
    assert result.code == 0 and "VERIFIED on chain" in result.out, result.out + result.err
    for figure in figures:
        print(f"reliability: fault: {figure}")
