"""The agent's Prometheus endpoint, scraped while the agent runs: the key series move
between two scrapes, and a port in use stops the start with one line."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_harness import SIMULATED, run_for, write_config
from anchor_harness import ChainAccount, anchor_section, deploy_registry, fund
from anvil_chain import Anvil
from metrics_harness import Samples, scrape, value
from modbus_servers import ServerFarm, free_port
from mqtt_broker import BrokerFarm

import agent.metrics
from agent.config import Config, load_config
from agent.errors import UsageError
from agent.runtime import run_agent
from drivers.modbus.points import Table


@pytest.fixture(autouse=True)
def fast_refresh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agent.metrics, "REFRESH_EVERY", 0.2)


def configured(tmp_path: Path, sources: str, extra: str = "") -> tuple[Config, str]:
    port = free_port()
    path = write_config(tmp_path, sources=sources)
    path.write_text(path.read_text() + extra + f"metrics:\n  listen: 127.0.0.1:{port}\n")
    return load_config(path), f"http://127.0.0.1:{port}/metrics"


def scrapes_while_running(config: Config, url: str, at: tuple[float, ...]) -> list[Samples]:
    """Runs the agent in this thread's loop and scrapes it from another thread `at` these
    seconds after the start, then stops it."""

    async def main() -> list[Samples]:
        stop = asyncio.Event()
        running = asyncio.create_task(run_agent(config, stop))
        taken: list[Samples] = []
        elapsed = 0.0
        for moment in at:
            await asyncio.wait({running}, timeout=moment - elapsed)
            elapsed = moment
            assert not running.done(), running.result()
            taken.append(await asyncio.to_thread(scrape, url))
        stop.set()
        await running
        leftovers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert not leftovers, f"agent left tasks behind: {leftovers}"
        return taken

    return asyncio.run(main())


def moved(before: Samples, after: Samples, name: str, **labels: str) -> bool:
    return value(after, name, **labels) > value(before, name, **labels)


def test_readings_seals_signatures_and_the_buffer_move_between_scrapes(tmp_path: Path) -> None:
    config, url = configured(tmp_path, SIMULATED)

    first, second = scrapes_while_running(config, url, (1.5, 3.0))

    for quality in ("good", "bad"):  # `flaky` reads Bad_Timeout 200 ms in every 500 ms
        assert moved(first, second, "edgeseal_readings_total", source="line", quality=quality)
    assert moved(first, second, "edgeseal_readings_total", source="meters", quality="good")
    assert value(second, "edgeseal_readings_total", source="meters", quality="bad") == 0
    for name in ("edgeseal_seals_total", "edgeseal_log_size", "edgeseal_buffer_bytes", "edgeseal_undelivered_batches"):
        assert moved(first, second, name), name
    for name in ("edgeseal_seal_seconds_count", "edgeseal_sign_seconds_count"):
        assert moved(first, second, name), name
    assert moved(first, second, "edgeseal_source_read_seconds_count", source="line")
    assert value(second, "edgeseal_source_read_errors_total", source="line") == 0
    assert value(second, "edgeseal_mqtt_connected") == 0  # no mqtt section
    assert value(second, "edgeseal_boot") == 1
    assert value(second, "edgeseal_build_info", version=agent.__version__) == 1
    assert not any(name.startswith("edgeseal_anchor") for name, _ in second)  # no anchor section


def test_modbus_read_latency_and_errors_per_source(tmp_path: Path, modbus_servers: ServerFarm) -> None:
    server = modbus_servers.tcp(1)
    server.set(1, Table.HOLDING_REGISTERS, 0, [7])
    device = "devices: [{unit: 1, tags: [{name: NAME, address: 400001, type: uint16}]}]"
    sources = "\n".join(
        f"  - {{name: {name}, type: modbus, url: {url}, interval: 50ms, timeout: 200ms, "
        f"reconnect_delay: 100ms, reconnect_delay_max: 200ms, {device.replace('NAME', name + '.value')}}}"
        for name, url in (("meter", server.url), ("gone", f"tcp://127.0.0.1:{free_port()}"))
    )
    config, url = configured(tmp_path, sources)

    first, second = scrapes_while_running(config, url, (1.0, 2.0))

    assert moved(first, second, "edgeseal_source_read_seconds_count", source="meter")
    assert value(second, "edgeseal_source_read_errors_total", source="meter") == 0
    assert moved(first, second, "edgeseal_source_read_errors_total", source="gone")
    assert value(second, "edgeseal_source_read_seconds_count", source="gone") == 0
    assert moved(first, second, "edgeseal_readings_total", source="gone", quality="bad")


def test_mqtt_connected_while_the_broker_is_there(tmp_path: Path, mqtt_brokers: BrokerFarm) -> None:
    broker = mqtt_brokers.start()
    config, url = configured(tmp_path, SIMULATED, f"mqtt:\n  url: {broker.url}\n")

    (samples,) = scrapes_while_running(config, url, (1.5,))

    assert value(samples, "edgeseal_mqtt_connected") == 1


def test_anchoring_lag_and_the_age_of_the_last_anchor(
    tmp_path: Path, anvil: Anvil, chain_keystore: ChainAccount
) -> None:
    contract = deploy_registry(anvil)
    fund(anvil, chain_keystore.address)
    section = anchor_section(anvil.url, anvil.chain_id, contract, chain_keystore)
    config, url = configured(tmp_path, SIMULATED, section)

    first, second = scrapes_while_running(config, url, (0.5, 4.0))

    assert value(first, "edgeseal_anchor_last_confirmed_timestamp_seconds") == 0  # nothing anchored yet
    assert value(second, "edgeseal_anchor_last_confirmed_timestamp_seconds") > 0
    log_size = value(second, "edgeseal_log_size")
    assert 0 <= value(second, "edgeseal_anchor_lag_seals") < log_size
    assert value(second, "edgeseal_anchor_alarms") == 0
    assert value(second, "edgeseal_anchor_pending_transactions") in (0, 1)


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def test_a_port_in_use_stops_the_start_with_one_line(tmp_path: Path, taken_port: int) -> None:
    path = write_config(tmp_path, sources=SIMULATED)
    path.write_text(path.read_text() + f"metrics:\n  listen: 127.0.0.1:{taken_port}\n")

    with pytest.raises(UsageError) as raised:
        run_for(load_config(path), 5.0)

    message = raised.value.diagnostics()
    assert message.startswith(f"metrics.listen 127.0.0.1:{taken_port}: cannot listen there: ")
    assert "\n" not in message
