"""The agent publishing to a Mosquitto broker over mutual TLS with a user name: sealed
batches and checkpoints, the retained certificate chain and status, the unsigned live
mirror when enabled, and the last will when the agent goes away uncleanly."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from agent_harness import run_for, write_config
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from driver_harness import in_new_loop
from mqtt_broker import BrokerFarm, BrokerSpec

from agent import __version__
from agent.config import load_config
from agent.errors import UsageError
from agent.publish.mqtt import Message, MqttConnection, MqttSettings
from agent.runtime import run_agent
from agent.trust import cbor
from agent.trust.payloads import open_checkpoint, open_seal
from agent.trust.verify import check_full_batch

PREFIX = "plant7/edgeseal/test-gateway-1"
SOURCES = """  - name: line
    type: simulator
    interval: 50ms
    tags:
      - {name: press.force, type: float, pattern: sine, min: 0, max: 90, period: 2s}
      - {name: press.strokes, type: int, pattern: counter}"""


@in_new_loop
async def test_batches_checkpoints_cert_status_and_live_over_mutual_tls(
    tmp_path: Path, mqtt_brokers: BrokerFarm, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = mqtt_brokers.start(
        BrokerSpec(tls=True, require_certificate=True, allow_anonymous=False, users={"gw": "s3cret", "audit": "a"})
    )
    tls = broker.tls
    path = write_config(tmp_path, sources=SOURCES, seal="interval: 200ms\n  checkpoint_every: 2")
    path.write_text(
        path.read_text()
        + f"""mqtt:
  url: {broker.url}
  tls: {{ca_file: {tls.ca_file}, cert_file: {tls.client_cert}, key_file: {tls.client_key}}}
  username: gw
  password_env: EDGESEAL_TEST_MQTT_PASSWORD
  topic_prefix: plant7/edgeseal/{{device}}
  live: {{enabled: true}}
"""
    )
    monkeypatch.setenv("EDGESEAL_TEST_MQTT_PASSWORD", "s3cret")
    config = load_config(path)
    auditor = MqttConnection(
        MqttSettings(
            url=broker.url,
            client_id="auditor",
            ca_file=str(tls.ca_file),
            cert_file=str(tls.client_cert),
            key_file=str(tls.client_key),
            username="audit",
            password="a",
        )
    )
    seen: dict[str, list[Message]] = {}

    async def collect() -> None:
        async for message in auditor.subscribe(f"{PREFIX}/#"):
            seen.setdefault(message.topic, []).append(message)

    tasks = [asyncio.create_task(auditor.run()), asyncio.create_task(collect())]
    await asyncio.wait_for(auditor.connected.wait(), 10)
    stop = asyncio.Event()
    agent = asyncio.create_task(run_agent(config, stop))
    try:
        async with asyncio.timeout(20):
            while len(seen.get(f"{PREFIX}/checkpoint", [])) < 2 or f"{PREFIX}/live/press.force" not in seen:
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(agent, 20)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    batches = [cbor.decode(m.payload) for m in seen[f"{PREFIX}/batch"]]
    for batch in batches:
        assert set(batch) == {"seal", "salt_key", "readings"}
        seal = open_seal(batch["seal"])[1]
        assert check_full_batch(seal.s0, seal.n, seal.root, batch["salt_key"], batch["readings"]) is None
    assert [open_seal(b["seal"])[1].b for b in batches][:3] == [1, 2, 3]
    sizes = [open_checkpoint(m.payload)[1].size for m in seen[f"{PREFIX}/checkpoint"]]
    assert sizes == sorted(sizes) and sizes[0] >= 2
    [chain] = seen[f"{PREFIX}/cert"]
    device_der = x509.load_pem_x509_certificates((tmp_path / "device-chain.pem").read_bytes())[0]
    assert cbor.decode(chain.payload)[0] == device_der.public_bytes(Encoding.DER)
    status = json.loads(seen[f"{PREFIX}/status"][0].payload)
    assert (status["state"], status["device"], status["version"], status["boot"]) == (
        "online",
        "test-gateway-1",
        __version__,
        1,
    )
    live = json.loads(seen[f"{PREFIX}/live/press.force"][-1].payload)
    assert set(live) == {"value", "ts", "quality"} and live["quality"] == 0 and 0 <= live["value"] <= 90


def test_a_password_variable_that_is_not_set_stops_the_start_with_one_line(tmp_path: Path) -> None:
    path = write_config(tmp_path, sources=SOURCES)
    path.write_text(
        path.read_text() + "mqtt:\n  url: mqtt://127.0.0.1:1\n  username: gw\n  password_env: EDGESEAL_TEST_UNSET\n"
    )
    unset = "mqtt.password_env: EDGESEAL_TEST_UNSET is not set in the agent's environment"
    with pytest.raises(UsageError, match=unset):
        run_for(load_config(path), 1.0)
