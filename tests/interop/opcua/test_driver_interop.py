"""The OPC UA driver against an independent implementation: a node-opcua server
(tests/interop/opcua/server.js), not the asyncua library the driver is built on.
Subscribed and polled values of every type, the alarm and the custom event arrive as
readings; a user name and a Basic256Sha256 session work too."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pytest
from asyncua import Client, ua
from driver_harness import Running, in_new_loop
from node_opcua import NodeOpcuaServer

from drivers.opcua.config import SourceConfig
from drivers.opcua.driver import create
from drivers.opcua.pki import Pki
from drivers.opcua.security import server_certificates

NS = "urn:edgeseal:interop"
TAGS = {
    "temperature": f"nsu={NS};s=Press.Temperature",
    "pressure": f"nsu={NS};i=101",
    "offset": f"nsu={NS};i=102",
    "running": f"nsu={NS};s=Press.Running",
    "recipe": f"nsu={NS};s=Press.Recipe",
    "signature": f"nsu={NS};i=103",
    "last_service": f"nsu={NS};s=Press.LastService",
    "profile": f"nsu={NS};i=104",
}
EXPECTED = {
    "pressure": 101.325,
    "offset": -42,
    "running": True,
    "recipe": "Bracket-7 Ø12 µm",
    "signature": bytes.fromhex("deadbeef0001"),
    "last_service": int(dt.datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=dt.UTC).timestamp() * 1000) * 1_000_000,
    "profile": [0.5, 1.5, -2.25, 1e10],
}


def _source(server: NodeOpcuaServer, **options: object) -> SourceConfig:
    tags = [{"name": name, "node": node} for name, node in TAGS.items()]
    return SourceConfig.model_validate(
        {
            "name": "press",
            "type": "opcua",
            "url": server.url,
            "check_interval": "1s",
            "reconnect_delay": "200ms",
            "groups": [
                {"mode": "subscribe", "publishing_interval": "100ms", "tags": tags},
                {"mode": "poll", "interval": "200ms", "tags": [{"name": "polled.offset", "node": TAGS["offset"]}]},
            ],
            "events": [
                {
                    "name": "press.alarms",
                    "event_type": "i=2915",
                    "alarms": True,
                    "fields": ["SourceName", "Severity", "Message"],
                },
                {"name": "press.events", "event_type": f"nsu={NS};s=PressEventType", "fields": ["Message", "Severity"]},
            ],
            **options,
        }
    )


def _values(run: Running) -> dict[str, object]:
    return {r.tag: r.value for _, batch in run.sink.batches for r in batch if r.quality == 0}


@in_new_loop
async def test_values_alarms_and_events_from_node_opcua(node_opcua_server: NodeOpcuaServer, tmp_path: Path) -> None:
    async with Running(create, _source(node_opcua_server), str(tmp_path)) as run:
        await run.sink.wait(lambda _: EXPECTED.items() <= _values(run).items() and "polled.offset" in _values(run), 20)
        await run.sink.wait(lambda _: sum(r.tag == "temperature" for _, b in run.sink.batches for r in b) >= 3)
        async with Client(node_opcua_server.url) as client:
            ns = await client.get_namespace_index(NS)
            await client.get_node(ua.NodeId("Press.Overheat", ns)).write_value(True)
            await client.get_node(ua.NodeId("Press.Announce", ns)).write_value("die change")
        await run.sink.wait(lambda _: _values(run).get("press.events") is not None, 10)
        await run.sink.wait(lambda _: (_values(run).get("press.alarms") or {}).get("ActiveState/Id") is True, 10)
    alarm = _values(run)["press.alarms"]
    assert isinstance(alarm, dict) and alarm["ConditionName"] == "Overheat"
    # node-opcua's SourceName is the source's browse name with its namespace index, "2:Press":
    # kept as the server sent it, since that is what was signed for
    assert alarm["SourceName"].endswith("Press")
    event = _values(run)["press.events"]
    assert event == {"Message": "die change", "Severity": 500}
    temperatures = [r.value for _, b in run.sink.batches for r in b if r.tag == "temperature" and r.quality == 0]
    assert len(set(temperatures)) >= 3 and all(isinstance(t, float) for t in temperatures)


@in_new_loop
async def test_a_secure_session_with_a_user(
    node_opcua_server: NodeOpcuaServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Basic256Sha256 SignAndEncrypt, user and password: node-opcua's certificate is
    trusted first, as an operator would with `edgeseal opcua trust`."""
    pki = Pki(tmp_path / "pki")
    (server_cert,) = await asyncio.wait_for(server_certificates(node_opcua_server.url, timeout=5), 10)
    pki.trust(server_cert)
    config = _source(
        node_opcua_server,
        security={"policy": "Basic256Sha256", "mode": "SignAndEncrypt"},
        auth={"username": node_opcua_server.username, "password_env": "EDGESEAL_TEST_OPCUA_PASSWORD"},
    )
    monkeypatch.setenv("EDGESEAL_TEST_OPCUA_PASSWORD", node_opcua_server.password)
    async with Running(create, config, str(tmp_path)) as run:
        await run.sink.wait(lambda _: EXPECTED.items() <= _values(run).items(), 20)
    assert run.count("connects") == 1


@in_new_loop
async def test_percent_deadband(node_opcua_server: NodeOpcuaServer, tmp_path: Path) -> None:
    """10 % of Pressure's EURange (0..250 bar) is 25 bar: node-opcua filters on the server
    (the asyncua test server does not implement percent deadbands)."""
    config = SourceConfig.model_validate(
        {
            "name": "press",
            "type": "opcua",
            "url": node_opcua_server.url,
            "groups": [
                {
                    "mode": "subscribe",
                    "publishing_interval": "100ms",
                    "deadband": {"type": "percent", "value": 10},
                    "tags": [{"name": "pressure", "node": TAGS["pressure"]}],
                }
            ],
        }
    )
    async with Running(create, config, str(tmp_path)) as run, Client(node_opcua_server.url) as client:
        await run.sink.wait(lambda _: _values(run).get("pressure") == 101.325, 20)
        pressure = client.get_node(ua.NodeId(101, await client.get_namespace_index(NS)))
        for value in (110.0, 120.0, 140.0, 150.0, 170.0):  # +8.7 +18.7 +38.7 (sent) +10 +30 (sent)
            await pressure.write_value(ua.Variant(value, ua.VariantType.Double))
            await asyncio.sleep(0.3)
        await run.sink.wait(lambda _: _values(run).get("pressure") == 170.0, 10)
    reported = [r.value for _, batch in run.sink.batches for r in batch if r.tag == "pressure"]
    assert reported == [101.325, 140.0, 170.0]
