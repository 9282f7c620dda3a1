"""The whole product as systemd would run it: `edgeseal run` as its own process on a full
configuration — a Modbus TCP device and an OPC UA server read by the real drivers, the
device key in a TPM (swtpm), MQTT to Mosquitto, anchoring on anvil with the keystore's
passphrase sealed to the TPM, metrics — then SIGHUP with a tag added, SIGTERM, and an
export that verifies offline and on chain."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from anchor_harness import ChainAccount, anchor_section, deploy_registry, fund, wait_for
from anvil_chain import Anvil
from cli_runner import in_process
from modbus_servers import ServerFarm as ModbusFarm
from modbus_servers import free_port, registers
from mqtt_broker import BrokerFarm
from opcua_servers import ServerFarm as OpcUaFarm
from opcua_servers import ServerSpec, Variable

from agent.anchor.keystore import keystore_address
from agent.buffer.store import Buffer
from agent.trust.leaf import decode_leaf
from drivers.modbus.points import Table
from provisioning import cli as provision
from provisioning.swtpm import SoftwareTpm
from tests.tpm_identity import tpm_agent_config, tpm_identity

DEVICE = "press-line-7"
NS = ServerSpec().namespaces[0]
ADDED_TAG = "          - {name: press.current, address: 400201, type: float32}\n"


def sources(modbus_url: str, opcua_url: str) -> str:
    return f"""  - name: press
    type: modbus
    url: {modbus_url}
    interval: 100ms
    devices:
      - unit: 1
        tags:
          - {{name: press.pressure, address: 400101, type: float32}}
          - {{name: press.strokes, address: 300011, type: uint32}}
  - name: oven
    type: opcua
    url: {opcua_url}
    groups:
      - mode: subscribe
        publishing_interval: 100ms
        tags:
          - {{name: oven.counter, node: "nsu={NS};i=1001"}}
      - mode: poll
        interval: 200ms
        tags:
          - {{name: oven.recipe, node: "nsu={NS};s=Plant/Line1/Recipe"}}"""


def scrape_when(port: int, line: str) -> str | None:
    """The agent's metrics once they hold `line`."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        metrics = response.read().decode()
    return metrics if line in metrics.splitlines() else None


def tags_read(state: Path) -> set[str]:
    buffer = Buffer.open(state, create=False)
    try:
        last = buffer.next_seq() - 1
        return {decode_leaf(leaf).tag for chunk in buffer.iter_readings(max(1, last - 2000), last) for _, leaf in chunk}
    finally:
        buffer.close()


def test_the_agent_as_a_service_end_to_end(
    tmp_path: Path,
    swtpm: SoftwareTpm,
    modbus_servers: ModbusFarm,
    opcua_servers: OpcUaFarm,
    mqtt_brokers: BrokerFarm,
    anvil: Anvil,
    capsys: pytest.CaptureFixture[str],
) -> None:
    modbus = modbus_servers.tcp(1)
    modbus.set(1, Table.HOLDING_REGISTERS, 100, registers("float32", 212.5))
    modbus.set(1, Table.HOLDING_REGISTERS, 200, registers("float32", 17.25))
    modbus.set(1, Table.INPUT_REGISTERS, 10, registers("uint32", 120_455))
    opcua = opcua_servers.start(
        ServerSpec(
            variables=(
                Variable("Counter", type="UInt32", value=0, id="i=1001", period=0.1),
                Variable("Recipe", type="String", value="PVC-7"),
            )
        )
    )
    broker = mqtt_brokers.start()
    tpm_identity(swtpm, tmp_path, DEVICE)
    config = tpm_agent_config(tmp_path, swtpm, DEVICE, sources(modbus.url, opcua.url))
    keystore = tmp_path / "chain-key.json"
    create = ["chain-key", "create", "--keystore", str(keystore), "--passphrase-secret", "chain-key"]
    assert provision.main([*create, "--secrets-dir", str(tmp_path / "secrets"), "--tcti", swtpm.tcti]) == 0
    account = ChainAccount(keystore, tmp_path / "unused", keystore_address(keystore))
    contract = deploy_registry(anvil)
    fund(anvil, account.address)
    metrics_port = free_port()
    config.write_text(
        config.read_text()
        + f"mqtt:\n  url: {broker.url}\nmetrics:\n  listen: 127.0.0.1:{metrics_port}\n"
        + anchor_section(anvil.url, anvil.chain_id, contract, account, passphrase_secret="chain-key")
    )
    log = tmp_path / "agent.log"
    with log.open("wb") as out:
        command = [sys.executable, "-m", "agent.cli", "run", "--config", str(config)]
        agent = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        expected = ("connected to", "anchored checkpoint")
        wait_for(lambda: all(text in log.read_text() for text in expected), "MQTT and a first anchor")
        wait_for(lambda: {"press.pressure", "oven.counter"} <= tags_read(tmp_path / "state"), "both sources")
        config.write_text(config.read_text().replace(
            "          - {name: press.strokes", ADDED_TAG + "          - {name: press.strokes"
        ))  # fmt: skip
        agent.send_signal(signal.SIGHUP)
        wait_for(lambda: "press.current" in tags_read(tmp_path / "state"), "the tag added by the reload")
        # the gauges read from the buffer are refreshed every few seconds
        metrics = wait_for(lambda: scrape_when(metrics_port, "edgeseal_mqtt_connected 1.0"), "the MQTT gauge up")
        assert 'edgeseal_readings_total{quality="good",source="press"}' in metrics
        assert 'edgeseal_readings_total{quality="good",source="oven"}' in metrics
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=30) == 0
    finally:
        agent.kill()
        agent.wait()

    conn = sqlite3.connect(f"file:{tmp_path / 'state' / 'buffer.db'}?mode=ro", uri=True)
    (delivered,) = conn.execute("SELECT count(*) FROM seals WHERE delivered IS NOT NULL").fetchone()
    conn.close()
    assert delivered > 0
    bundle = tmp_path / "bundle.cbor"
    assert in_process(capsys, "export")("--state-dir", str(tmp_path / "state"), "-o", str(bundle)).code == 0
    result = in_process(capsys, "verify")(str(bundle), "--ca", str(tmp_path / "ca.pem"), "--rpc", anvil.url)
    assert result.code == 0, result.out + result.err
    assert "boots 1;" in result.out  # the reload started no new boot
    assert "VERIFIED on chain" in result.out
