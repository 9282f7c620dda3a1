"""The node-opcua interop server (tests/node_opcua.py, server.js) as a plain asyncua client
sees it: proof that the server the driver is tested against holds what it promises.

Node ids go on the wire with a namespace index resolved from the server's NamespaceArray,
never as nsu= strings: node-opcua cannot decode those and never answers.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, Node, ua
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from asyncua.ua.uaerrors import BadUserAccessDenied
from node_opcua import NodeOpcuaServer

TIMEOUT = 20.0

# identifier in our namespace -> (browse name, variant type, value)
VARIABLES: dict[str | int, tuple[str, ua.VariantType, Any]] = {
    101: ("Pressure", ua.VariantType.Double, 101.325),
    102: ("Offset", ua.VariantType.Int32, -42),
    "Press.Running": ("Running", ua.VariantType.Boolean, True),
    "Press.Recipe": ("Recipe", ua.VariantType.String, "Bracket-7 Ø12 µm"),
    103: ("Signature", ua.VariantType.ByteString, bytes.fromhex("deadbeef0001")),
    "Press.LastService": (
        "LastService",
        ua.VariantType.DateTime,
        datetime.datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=datetime.UTC),
    ),
    104: ("Profile", ua.VariantType.Double, [0.5, 1.5, -2.25, 1e10]),
}


def run(body: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(body, TIMEOUT))


async def nodes_of(client: Client, server: NodeOpcuaServer) -> Callable[[str | int], Node]:
    """Our namespace's nodes by identifier, its index resolved once through the NamespaceArray."""
    index = await client.get_namespace_index(server.namespace_uri)
    return lambda identifier: client.get_node(ua.NodeId(identifier, index))


class Inbox:
    """An asyncua subscription handler that queues what arrives."""

    def __init__(self) -> None:
        self.values: asyncio.Queue[Any] = asyncio.Queue()
        self.events: asyncio.Queue[Any] = asyncio.Queue()

    def datachange_notification(self, _node: Node, value: Any, _data: Any) -> None:
        self.values.put_nowait(value)

    def event_notification(self, event: Any) -> None:
        self.events.put_nowait(event)

    @staticmethod
    async def until(queue: asyncio.Queue[Any], condition: Callable[[Any], bool]) -> Any:
        while not condition(item := await queue.get()):
            pass
        return item


def test_our_namespace_comes_after_node_opcuas_own(node_opcua_server: NodeOpcuaServer) -> None:
    async def body() -> None:
        async with Client(node_opcua_server.url) as client:
            namespaces = await client.get_namespace_array()
            assert namespaces.index(node_opcua_server.namespace_uri) >= 2
            assert await client.get_namespace_index(node_opcua_server.namespace_uri) == namespaces.index(
                node_opcua_server.namespace_uri
            )

    run(body())


def test_every_variable_reads_with_its_type_and_value(node_opcua_server: NodeOpcuaServer) -> None:
    async def body() -> None:
        async with Client(node_opcua_server.url) as client:
            ours = await nodes_of(client, node_opcua_server)
            for identifier, (name, variant_type, value) in VARIABLES.items():
                variable = ours(identifier)
                data = await variable.read_data_value()
                assert (await variable.read_browse_name()).Name == name
                assert data.StatusCode.is_good(), identifier
                assert (data.Value.VariantType, data.Value.Value) == (variant_type, value), identifier
                assert data.Value.is_array == isinstance(value, list), identifier
                # the attributes a client reads to learn the type agree with the value
                assert await variable.read_data_type_as_variant_type() == variant_type, identifier
                assert await variable.read_value_rank() == (1 if isinstance(value, list) else -1), identifier

    run(body())


def test_pressure_is_an_analog_item_with_a_range_in_bar(node_opcua_server: NodeOpcuaServer) -> None:
    async def body() -> None:
        async with Client(node_opcua_server.url) as client:
            ours = await nodes_of(client, node_opcua_server)
            pressure = ours(101)
            eu_range = await (await pressure.get_child("0:EURange")).read_value()
            units = await (await pressure.get_child("0:EngineeringUnits")).read_value()
            assert (eu_range.Low, eu_range.High) == (0.0, 250.0)
            assert units.DisplayName.Text == "bar"

    run(body())


def test_a_subscription_sees_the_temperature_change(node_opcua_server: NodeOpcuaServer) -> None:
    async def body() -> None:
        async with Client(node_opcua_server.url) as client:
            ours = await nodes_of(client, node_opcua_server)
            inbox = Inbox()
            subscription = await client.create_subscription(50, inbox)
            await subscription.subscribe_data_change(ours("Press.Temperature"))
            values = [await inbox.values.get() for _ in range(4)]  # the first is the current value
            assert all(isinstance(v, float) and 55.0 <= v <= 65.0 for v in values)
            assert len(set(values)) == 4
            await subscription.delete()

    run(body())


def test_writing_overheat_activates_then_clears_the_alarm(node_opcua_server: NodeOpcuaServer) -> None:
    async def body() -> None:
        async with Client(node_opcua_server.url) as client:
            ours = await nodes_of(client, node_opcua_server)
            inbox = Inbox()
            subscription = await client.create_subscription(50, inbox)
            # on the Server object, as a client that knows nothing of Press would subscribe
            await subscription.subscribe_events(client.nodes.server, ua.ObjectIds.OffNormalAlarmType, queuesize=10)
            overheat = ours("Press.Overheat")
            alarm = ours("Press.OverheatAlarm")

            await overheat.write_value(True)
            raised = await Inbox.until(inbox.events, lambda e: getattr(e, "ActiveState/Id") is True)
            await overheat.write_value(False)
            cleared = await Inbox.until(inbox.events, lambda e: getattr(e, "ActiveState/Id") is False)

            for event in (raised, cleared):
                assert event.NodeId == alarm.nodeid
                assert event.SourceNode == ours("Press").nodeid
                assert (event.ConditionName, event.Severity) == ("Overheat", 150)
            await subscription.delete()

    run(body())


def test_writing_announce_raises_a_press_event(node_opcua_server: NodeOpcuaServer) -> None:
    async def body() -> None:
        async with Client(node_opcua_server.url) as client:
            ours = await nodes_of(client, node_opcua_server)
            inbox = Inbox()
            subscription = await client.create_subscription(50, inbox)
            event_type = ours("PressEventType")
            # node-opcua revises an event queue size of 0 to 1: the second of two events in
            # one publishing interval would replace the first
            await subscription.subscribe_events(ours("Press"), event_type, queuesize=10)
            announce = ours("Press.Announce")

            for text in ("die changed", "shift end"):
                await announce.write_value(text)
            events = [await inbox.events.get() for _ in range(2)]

            assert [(e.Message.Text, e.CycleNumber, e.Severity) for e in events] == [
                ("die changed", 1, 500),
                ("shift end", 2, 500),
            ]
            assert all(e.EventType == event_type.nodeid for e in events)
            await subscription.delete()

    run(body())


@pytest.mark.parametrize(
    "mode", [ua.MessageSecurityMode.Sign, ua.MessageSecurityMode.SignAndEncrypt], ids=["Sign", "SignAndEncrypt"]
)
def test_basic256sha256_accepts_an_unknown_client_certificate(
    node_opcua_server: NodeOpcuaServer, tmp_path: Path, mode: ua.MessageSecurityMode
) -> None:
    async def body() -> None:
        client = Client(node_opcua_server.url)
        certificate, key = await client.setup_self_signed_certificate(tmp_path / "key.pem", tmp_path / "cert.der")
        await client.set_security(
            SecurityPolicyBasic256Sha256,
            certificate,
            key,
            server_certificate=str(node_opcua_server.certificate),
            mode=mode,
        )
        async with client:
            ours = await nodes_of(client, node_opcua_server)
            assert client.security_policy.Mode == mode
            assert await ours(102).read_value() == -42

    run(body())


def test_the_interop_user_logs_in_and_a_wrong_password_does_not(node_opcua_server: NodeOpcuaServer) -> None:
    async def login(password: str) -> None:
        client = Client(node_opcua_server.url)
        client.set_user(node_opcua_server.username)
        client.set_password(password)
        async with client:
            ours = await nodes_of(client, node_opcua_server)
            assert await ours("Press.Running").read_value() is True

    async def body() -> None:
        await login(node_opcua_server.password)
        with pytest.raises(BadUserAccessDenied):
            await login("wrong")

    run(body())
