"""The OPC UA test server (tests/opcua_server.py) does what the driver's tests rely on,
proven with a plain asyncua Client: its address space, value changes, events and alarms,
security, users, restarts and its fault hooks."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, Node, ua
from asyncua.crypto import security_policies
from cryptography import x509
from opcua_servers import (
    EVENT_TYPE,
    Alarm,
    Bulk,
    CertificateFiles,
    OpcUaServer,
    ServerFarm,
    ServerSpec,
    Variable,
    make_certificate,
)

NS = "urn:edgeseal-test:plant"
OTHER_NS = "urn:edgeseal-test:other"
CLIENT_URI = "urn:edgeseal-test:client"
GUID = uuid.UUID("6d4a6c2e-4c3b-4d2a-9a1e-0000000000a1")
STARTED = dt.datetime(2024, 5, 1, 6, 30, tzinfo=dt.UTC)

SCALARS: dict[str, Any] = {
    "Boolean": True,
    "SByte": -7,
    "Byte": 200,
    "Int16": -30000,
    "UInt16": 60000,
    "Int32": -2_000_000_000,
    "UInt32": 4_000_000_000,
    "Int64": -(2**62),
    "UInt64": 2**63,
    "Float": 1.5,
    "Double": 2.25,
    "String": "PVC-7",
    "DateTime": STARTED,
    "ByteString": b"\x00\x01\xff",
    "LocalizedText": "Line one",
}
ARRAYS = {name: [value, value] for name, value in SCALARS.items()}

PLANT = ServerSpec(
    namespaces=(NS, OTHER_NS),
    variables=(
        *(Variable(f"S_{name}", type=name, value=value, parent="Plant/Types") for name, value in SCALARS.items()),
        *(
            Variable(f"A_{name}", type=name, value=value, array=True, parent="Plant/Types")
            for name, value in ARRAYS.items()
        ),
        Variable("Temp", value=21.5, eu_range=(0.0, 150.0)),
        Variable("Setpoint", value=20.0, writable=True),
        Variable("Secret", readable=False),
        Variable("Counter", type="UInt32", value=0, id="i=1001", period=0.1),
        Variable("Running", type="Boolean", value=False, period=0.1),
        Variable("Recipe", type="String", value="PVC-7", id=f"g={GUID}"),
        Variable("Raw", type="ByteString", value=b"\x01", id="b=AQID"),
        Variable("Speed", value=3.0, id="i=7", namespace=OTHER_NS, parent="Plant/Line2"),
    ),
    events="Plant/Line1",
    alarms=(
        Alarm("HighTemp"),
        Alarm("DoorOpen", source="Plant/Line2", type="OffNormalAlarmType", severity=300),
    ),
    max_nodes_per_read=20,
)


@pytest.fixture(scope="module")
def plant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpcUaServer]:
    """One server for the tests that only read, browse and fire events: a start costs ~1.5 s."""
    farm = ServerFarm(tmp_path_factory.mktemp("plant"))
    try:
        yield farm.start(PLANT)
    finally:
        farm.close()


class Inbox:
    """An asyncua subscription handler that queues what arrives."""

    def __init__(self) -> None:
        self.values: asyncio.Queue[tuple[Node, ua.DataValue]] = asyncio.Queue()
        self.events: asyncio.Queue[Any] = asyncio.Queue()

    def datachange_notification(self, node: Node, _value: Any, data: Any) -> None:
        self.values.put_nowait((node, data.monitored_item.Value))

    def event_notification(self, event: Any) -> None:
        self.events.put_nowait(event)

    async def value(self) -> tuple[Node, ua.DataValue]:
        return await asyncio.wait_for(self.values.get(), 5)

    async def event(self) -> Any:
        return await asyncio.wait_for(self.events.get(), 5)


def run(coroutine: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coroutine, 20))


async def node(client: Client, identifier: str, namespace: str = NS) -> Node:
    return client.get_node(f"ns={await client.get_namespace_index(namespace)};{identifier}")


def test_every_type_reads_back_with_its_variant_type_datatype_and_rank(plant: OpcUaServer) -> None:
    async def main() -> None:
        async with Client(plant.url) as client:
            for prefix, values, rank in (("S", SCALARS, -1), ("A", ARRAYS, 1)):
                for name, expected in values.items():
                    variable = await node(client, f"s=Plant/Types/{prefix}_{name}")
                    value = (await variable.read_data_value()).Value
                    assert value.VariantType == ua.VariantType[name], name
                    if name == "LocalizedText":
                        expected = [ua.LocalizedText(t) for t in expected] if rank == 1 else ua.LocalizedText(expected)
                    assert value.Value == expected, name
                    assert await variable.read_data_type() == ua.NodeId(ua.VariantType[name].value)
                    assert (await variable.read_attribute(ua.AttributeIds.ValueRank)).Value.Value == rank

    run(main())


def test_every_identifier_kind_addresses_its_variable(plant: OpcUaServer) -> None:
    async def main() -> None:
        async with Client(plant.url) as client:
            assert await (await node(client, "i=1001")).read_browse_name() == ua.QualifiedName("Counter", 2)
            assert await (await node(client, f"g={GUID}")).read_value() == "PVC-7"
            assert await (await node(client, "b=AQID")).read_value() == b"\x01"
            assert await (await node(client, "s=Plant/Line1/Temp")).read_value() == 21.5
            assert await (await node(client, "i=7", OTHER_NS)).read_value() == 3.0
            # its own namespace's index, not the first's
            assert await (await node(client, "i=7", NS)).read_data_value(raise_on_bad_status=False) == ua.DataValue(
                StatusCode=ua.StatusCode(ua.StatusCodes.BadNodeIdUnknown)
            )

    run(main())


def test_browsing_finds_folder_then_objects_then_variables(plant: OpcUaServer) -> None:
    async def main() -> None:
        async with Client(plant.url) as client:
            ns = await client.get_namespace_index(NS)
            plant_folder = await client.nodes.objects.get_child(f"{ns}:Plant")
            assert await plant_folder.read_type_definition() == ua.NodeId(ua.ObjectIds.FolderType)
            objects = {(await child.read_browse_name()).Name: child for child in await plant_folder.get_children()}
            assert set(objects) == {"Types", "Line1", "Line2"}
            line1 = objects["Line1"]
            assert await line1.read_node_class() == ua.NodeClass.Object
            assert await line1.read_type_definition() == ua.NodeId(ua.ObjectIds.BaseObjectType)
            variables = await line1.get_children(refs=ua.ObjectIds.HasComponent, nodeclassmask=ua.NodeClass.Variable)
            names = {(await variable.read_browse_name()).Name for variable in variables}
            assert names == {"Temp", "Setpoint", "Secret", "Counter", "Running", "Recipe", "Raw"}

    run(main())


def test_writes_and_reads_obey_the_access_levels(plant: OpcUaServer) -> None:
    async def main() -> None:
        async with Client(plant.url) as client:
            setpoint = await node(client, "s=Plant/Line1/Setpoint")
            await setpoint.write_value(ua.Variant(42.0, ua.VariantType.Double))
            assert await setpoint.read_value() == 42.0
            with pytest.raises(ua.uaerrors.BadUserAccessDenied):  # asyncua's answer to a read-only variable
                await (await node(client, "s=Plant/Line1/Temp")).write_value(ua.Variant(1.0, ua.VariantType.Double))

            secret = await node(client, "s=Plant/Line1/Secret")
            assert await secret.read_attribute(ua.AttributeIds.AccessLevel) == ua.DataValue(
                ua.Variant(0, ua.VariantType.Byte)
            )
            with pytest.raises(ua.uaerrors.BadNotReadable):
                await secret.read_value()
            inbox = Inbox()
            subscription = await client.create_subscription(50, inbox)
            await subscription.subscribe_data_change(secret)
            _, value = await inbox.value()
            assert value.StatusCode == ua.StatusCode(ua.StatusCodes.BadNotReadable)

    run(main())


def test_eu_range_property(plant: OpcUaServer) -> None:
    async def main() -> None:
        async with Client(plant.url) as client:
            temp = await node(client, "s=Plant/Line1/Temp")
            eu_range = await temp.get_child("0:EURange")
            assert await eu_range.read_value() == ua.Range(Low=0.0, High=150.0)
            assert await eu_range.read_type_definition() == ua.NodeId(ua.ObjectIds.PropertyType)

    run(main())


def test_periodic_variables_change_with_a_source_timestamp_each_time(plant: OpcUaServer) -> None:
    async def main() -> None:
        async with Client(plant.url) as client:
            counter, running = await node(client, "i=1001"), await node(client, "s=Plant/Line1/Running")
            inbox = Inbox()
            subscription = await client.create_subscription(20, inbox)
            await subscription.subscribe_data_change([counter, running])
            seen: dict[str, list[ua.DataValue]] = {"Counter": [], "Running": []}
            while min(len(values) for values in seen.values()) < 4:
                changed, value = await inbox.value()
                seen["Counter" if changed == counter else "Running"].append(value)
            for name, values in seen.items():
                stamps = [value.SourceTimestamp for value in values]
                assert all(earlier < later for earlier, later in zip(stamps, stamps[1:])), name
            counts = [value.Value.Value for value in seen["Counter"]]
            assert counts == list(range(counts[0], counts[0] + len(counts)))
            states = [value.Value.Value for value in seen["Running"]]
            assert all(earlier != later for earlier, later in zip(states, states[1:]))

    run(main())


def test_max_nodes_per_read_is_published_and_enforced(plant: OpcUaServer) -> None:
    async def main() -> None:
        async with Client(plant.url) as client:
            limit = client.get_node(ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead)
            assert await limit.read_value() == 20
            nodes = [await node(client, f"s=Plant/Types/S_{name}") for name in SCALARS] * 2
            assert len(await client.read_values(nodes[:20])) == 20
            with pytest.raises(ua.uaerrors.BadTooManyOperations):
                await client.read_values(nodes[:21])

    run(main())


def test_custom_event_reaches_the_object_and_the_server_as_one_occurrence(plant: OpcUaServer) -> None:
    async def main() -> None:
        async with Client(plant.url) as client:
            ns = await client.get_namespace_index(NS)
            event_type = client.get_node(ua.NodeId(EVENT_TYPE, ns))
            assert await event_type.read_browse_name() == ua.QualifiedName(EVENT_TYPE, ns)
            line1 = await node(client, "s=Plant/Line1")
            assert ua.EventNotifier.SubscribeToEvents in await line1.read_event_notifier()
            at_object, at_server = Inbox(), Inbox()
            for inbox, source in ((at_object, line1), (at_server, client.nodes.server)):
                subscription = await client.create_subscription(20, inbox)
                await subscription.subscribe_events(source, event_type)

            await plant.emit_event(client, "batch done", severity=650, batch_id="B-17", quantity=12.5)
            first, second = await at_object.event(), await at_server.event()
            assert first.EventId == second.EventId
            assert (first.Message.Text, first.Severity, first.BatchId, first.Quantity) == (
                "batch done",
                650,
                "B-17",
                12.5,
            )
            assert (first.EventType, first.SourceNode, first.SourceName) == (event_type.nodeid, line1.nodeid, "Line1")

    run(main())


REFRESH_START, REFRESH_END = ua.NodeId(ua.ObjectIds.RefreshStartEventType), ua.NodeId(ua.ObjectIds.RefreshEndEventType)
# asyncua filters RefreshStart/RefreshEnd events like any other: the filter must admit them
ALARM_TYPES = [ua.ObjectIds.AlarmConditionType, ua.ObjectIds.RefreshStartEventType, ua.ObjectIds.RefreshEndEventType]


def test_alarm_activates_and_deactivates_on_demand_and_condition_refresh_replays_it(plant: OpcUaServer) -> None:
    async def main() -> None:
        async with Client(plant.url) as client:
            inbox = Inbox()
            subscription = await client.create_subscription(20, inbox)
            await subscription.subscribe_events(client.nodes.server, [client.get_node(t) for t in ALARM_TYPES])
            ns = await client.get_namespace_index(NS)

            async def refresh() -> list[Any]:
                await client.get_node(ua.ObjectIds.ConditionType).call_method(
                    ua.NodeId(ua.ObjectIds.ConditionType_ConditionRefresh),
                    ua.Variant(subscription.subscription_id, ua.VariantType.UInt32),
                )
                events = [await inbox.event()]
                while events[-1].EventType != REFRESH_END:
                    events.append(await inbox.event())
                assert events[0].EventType == REFRESH_START
                return events[1:-1]

            assert await refresh() == []
            await plant.set_alarm(client, "HighTemp", True)
            active = await inbox.event()
            assert (active.ConditionName, active.SourceName, active.Severity) == ("HighTemp", "Line1", 700)
            assert active.NodeId == ua.NodeId("Plant/Line1/HighTemp", ns)  # the ConditionId
            assert active.EventType == ua.NodeId(ua.ObjectIds.AlarmConditionType)
            assert (getattr(active, "ActiveState/Id"), getattr(active, "AckedState/Id"), active.Retain) == (
                True,
                False,
                True,
            )
            assert active.ActiveState.Text == "Active"

            (replayed,) = await refresh()
            assert (replayed.EventId, getattr(replayed, "ActiveState/Id")) == (active.EventId, True)

            await plant.set_alarm(client, "HighTemp", False)
            inactive = await inbox.event()
            assert (getattr(inactive, "ActiveState/Id"), inactive.Retain) == (False, False)
            assert await refresh() == []

    run(main())


def test_off_normal_alarm_reaches_its_source_object(plant: OpcUaServer) -> None:
    async def main() -> None:
        async with Client(plant.url) as client:
            inbox = Inbox()
            subscription = await client.create_subscription(20, inbox)
            off_normal = client.get_node(ua.ObjectIds.OffNormalAlarmType)
            await subscription.subscribe_events(await node(client, "s=Plant/Line2"), off_normal)
            await plant.set_alarm(client, "DoorOpen", True)
            event = await inbox.event()
            assert (event.EventType, event.ConditionName, event.Severity) == (off_normal.nodeid, "DoorOpen", 300)
            assert getattr(event, "ActiveState/Id") is True
            await plant.set_alarm(client, "DoorOpen", False)
            assert getattr(await inbox.event(), "ActiveState/Id") is False
            with pytest.raises(ua.uaerrors.BadInvalidArgument):
                await plant.set_alarm(client, "NoSuchAlarm", True)

    run(main())


def test_anonymous_only_without_users(plant: OpcUaServer) -> None:
    async def main() -> None:
        client = Client(plant.url)
        client.set_user("operator")
        client.set_password("secret")
        with pytest.raises(ua.uaerrors.BadIdentityTokenRejected):
            await client.connect()

    run(main())


def test_kill_and_restart_on_the_same_port_moves_namespaces_and_start_time(opcua_servers: ServerFarm) -> None:
    server = opcua_servers.start(ServerSpec(variables=(Variable("Counter", type="UInt32", value=5, id="i=1001"),)))

    async def connect_and_read() -> tuple[int, dt.datetime, ua.DataValue]:
        async with Client(server.url) as client:
            ns = await client.get_namespace_index(NS)
            start_time = await client.get_node(ua.ObjectIds.Server_ServerStatus_StartTime).read_value()
            return ns, start_time, await client.get_node(ua.NodeId(1001, 2)).read_data_value(raise_on_bad_status=False)

    ns, started, value = run(connect_and_read())
    assert (ns, value.Value.Value) == (2, 5)
    pid = server.pid
    assert pid is not None

    server.kill()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(OSError):
        run(Client(server.url).connect())

    server.restart(shift=3)
    ns, restarted, value = run(connect_and_read())
    assert ns == 5
    assert value.StatusCode == ua.StatusCode(ua.StatusCodes.BadNodeIdUnknown)  # the old index points nowhere
    assert restarted > started


def test_bulk_variables_all_change_every_period(opcua_servers: ServerFarm) -> None:
    count = 250
    server = opcua_servers.start(ServerSpec(bulk=Bulk(count=count, period=0.2)))

    async def main() -> None:
        async with Client(server.url) as client:
            ns = await client.get_namespace_index(NS)
            groups = await (await node(client, "s=Plant/Bulk")).get_children()
            assert sorted([(await group.read_browse_name()).Name for group in groups]) == ["G000", "G001", "G002"]
            nodes = [client.get_node(ua.NodeId(f"Plant/Bulk/G{n // 100:03d}/V{n:05d}", ns)) for n in range(count)]
            index = {variable.nodeid: n for n, variable in enumerate(nodes)}
            inbox = Inbox()
            subscription = await client.create_subscription(20, inbox)
            await subscription.subscribe_data_change(nodes)
            ticks: dict[int, list[int]] = {n: [] for n in range(count)}
            stamps: dict[int, set[dt.datetime]] = {}
            while min(len(seen) for seen in ticks.values()) < 3:
                variable, value = await inbox.value()
                n = index[variable.nodeid]
                tick = int(value.Value.Value) - n
                ticks[n].append(tick)
                stamps.setdefault(tick, set()).add(value.SourceTimestamp)
            for n, seen in ticks.items():
                assert seen == list(range(seen[0], seen[0] + len(seen))), n
            # one tick, one batch: every variable of a tick carries the same timestamp
            assert all(len(stamp) == 1 for tick, stamp in stamps.items() if tick > 0)

    run(main())


SECURED = [
    ("Basic256Sha256", ua.MessageSecurityMode.Sign),
    ("Basic256Sha256", ua.MessageSecurityMode.SignAndEncrypt),
    ("Aes128Sha256RsaOaep", ua.MessageSecurityMode.Sign),
    ("Aes128Sha256RsaOaep", ua.MessageSecurityMode.SignAndEncrypt),
    ("Aes256Sha256RsaPss", ua.MessageSecurityMode.Sign),
    ("Aes256Sha256RsaPss", ua.MessageSecurityMode.SignAndEncrypt),
]


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, CertificateFiles]:
    directory = tmp_path_factory.mktemp("certificates")
    return {
        "server": make_certificate(directory),
        "client": make_certificate(directory, "client", CLIENT_URI),
        "stranger": make_certificate(directory, "stranger", CLIENT_URI),
    }


@pytest.fixture(scope="module")
def secured(
    tmp_path_factory: pytest.TempPathFactory, certificates: dict[str, CertificateFiles]
) -> Iterator[OpcUaServer]:
    farm = ServerFarm(tmp_path_factory.mktemp("secured"))
    server = certificates["server"]
    spec = ServerSpec(
        variables=(Variable("Temp", value=21.5),),
        security=("NoSecurity", *(f"{policy}_{mode.name}" for policy, mode in SECURED)),
        certificate=str(server.certificate),
        private_key=str(server.private_key),
    )
    try:
        yield farm.start(spec)
    finally:
        farm.close()


def policy_class(name: str) -> type[security_policies.SecurityPolicy]:
    return getattr(security_policies, f"SecurityPolicy{name}")


async def secure_client(
    url: str, policy: str, mode: ua.MessageSecurityMode, ours: CertificateFiles, server: CertificateFiles
) -> Client:
    client = Client(url)
    client.application_uri = CLIENT_URI
    await client.set_security(
        policy_class(policy),
        certificate=str(ours.certificate),
        private_key=str(ours.private_key),
        server_certificate=str(server.certificate),
        mode=mode,
    )
    return client


def test_endpoints_offer_every_policy_and_mode_asked_for(
    secured: OpcUaServer, certificates: dict[str, CertificateFiles]
) -> None:
    async def main() -> None:
        async with Client(secured.url) as client:
            endpoints = await client.get_endpoints()
        offered = {(endpoint.SecurityPolicyUri, endpoint.SecurityMode) for endpoint in endpoints}
        assert offered == {
            (security_policies.SecurityPolicyNone.URI, ua.MessageSecurityMode.None_),
            *((policy_class(policy).URI, mode) for policy, mode in SECURED),
        }
        assert {endpoint.ServerCertificate for endpoint in endpoints} == {
            certificates["server"].certificate.read_bytes()
        }

    run(main())


@pytest.mark.parametrize(("policy", "mode"), SECURED, ids=[f"{policy}-{mode.name}" for policy, mode in SECURED])
def test_secured_channel_with_a_client_certificate_the_server_never_saw(
    secured: OpcUaServer, certificates: dict[str, CertificateFiles], policy: str, mode: ua.MessageSecurityMode
) -> None:
    async def main() -> None:
        client = await secure_client(secured.url, policy, mode, certificates["client"], certificates["server"])
        async with client:
            assert await (await node(client, "s=Plant/Line1/Temp")).read_value() == 21.5

    run(main())


def test_server_certificate_names_the_application_and_the_host(certificates: dict[str, CertificateFiles]) -> None:
    certificate = x509.load_der_x509_certificate(certificates["server"].certificate.read_bytes())
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.UniformResourceIdentifier) == ["urn:edgeseal-test:server"]
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert certificate.public_key().key_size == 2048
    assert certificate.signature_hash_algorithm is not None and certificate.signature_hash_algorithm.name == "sha256"


def test_trusted_clients_refuse_any_other_certificate(
    opcua_servers: ServerFarm, certificates: dict[str, CertificateFiles]
) -> None:
    server_files = certificates["server"]
    server = opcua_servers.start(
        ServerSpec(
            variables=(Variable("Temp", value=21.5),),
            security=("Basic256Sha256_SignAndEncrypt",),
            certificate=str(server_files.certificate),
            private_key=str(server_files.private_key),
            trusted_clients=(str(certificates["client"].certificate),),
        )
    )

    async def main() -> None:
        mode = ua.MessageSecurityMode.SignAndEncrypt
        async with await secure_client(server.url, "Basic256Sha256", mode, certificates["client"], server_files):
            pass
        stranger = await secure_client(server.url, "Basic256Sha256", mode, certificates["stranger"], server_files)
        with pytest.raises(ua.uaerrors.BadCertificateUntrusted):
            await stranger.connect()

    run(main())


def test_users_need_their_password_and_anonymous_is_refused(opcua_servers: ServerFarm) -> None:
    server = opcua_servers.start(ServerSpec(variables=(Variable("Temp", value=21.5),), users={"operator": "s3cret"}))

    async def connect(user: str | None, password: str | None) -> None:
        client = Client(server.url)
        if user is not None:
            client.set_user(user)
        if password is not None:
            client.set_password(password)
        async with client:
            assert await (await node(client, "s=Plant/Line1/Temp")).read_value() == 21.5

    async def main() -> None:
        await connect("operator", "s3cret")
        with pytest.raises(ua.uaerrors.BadUserAccessDenied):
            await connect("operator", "wrong")
        with pytest.raises(ua.uaerrors.BadUserAccessDenied):
            await connect("intruder", "s3cret")
        with pytest.raises(ua.uaerrors.BadIdentityTokenRejected):  # anonymous
            await connect(None, None)

    run(main())


def test_stall_hook_leaves_create_monitored_items_unanswered_until_killed(
    opcua_servers: ServerFarm, tmp_path: Path
) -> None:
    marker = tmp_path / "stalled"
    spec = ServerSpec(variables=(Variable("Temp", value=21.5),), stall_create_monitored_items=str(marker))
    server = opcua_servers.start(spec)

    async def subscribe() -> tuple[Client, asyncio.Future[Any], Inbox]:
        client = Client(server.url)
        await client.connect()
        inbox = Inbox()
        subscription = await client.create_subscription(20, inbox)
        pending = asyncio.ensure_future(subscription.subscribe_data_change(await node(client, "s=Plant/Line1/Temp")))
        return client, pending, inbox

    async def main() -> None:
        client, pending, _ = await subscribe()
        while not marker.exists():
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.5)
        assert not pending.done(), "the stalled request was answered"
        server.kill()
        with pytest.raises(ConnectionError):
            await pending
        await client.disconnect()

        server.start()  # same spec, but the marker exists: no stall this time
        client, pending, inbox = await subscribe()
        await pending
        _, value = await inbox.value()
        assert value.Value.Value == 21.5
        await client.disconnect()

    run(main())
