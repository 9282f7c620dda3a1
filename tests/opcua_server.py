"""A real OPC UA server (asyncua) built from a JSON spec, for the OPC UA driver's integration,
restart and benchmark tests. Run as a subprocess:

    python tests/opcua_server.py SPEC.json

It prints one line, `READY opc.tcp://127.0.0.1:PORT/edgeseal-test/`, once it accepts
connections, and runs until killed; asyncua's warnings and errors go to stderr.

The spec is a `ServerSpec` (below) as JSON; tests build the dataclasses and
tests/opcua_servers.py writes them. The address space it builds:

    Objects
      Plant (folder)                      every `parent` path: folders, then an object
        Line1 (object)                    holding its variables
          Temp, Counter, ...
      TestControl (object)                when there are events or alarms
        EmitEvent(Message, Severity, BatchId, Quantity)
        SetAlarm(Name, Active)

Folders, objects, TestControl, the event type and the alarms' ConditionIds live in the
first namespace, with string ids (`s=Plant/Line1`, `s=TestControl`, `s=TestControl.SetAlarm`).
A variable's id defaults to `s=<parent>/<name>` in its namespace.

Events and alarm conditions fire at their source object and, with the same EventId, at the
Server object. ConditionRefresh (i=3875) replays the active alarms to event monitored items
on the Server object only, and asyncua filters its RefreshStart/RefreshEnd events by the
monitored item's where clause like any other event.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import gc
import json
import logging
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from asyncua import Node, Server, ua
from asyncua.common.callback import CallbackType, ServerItemCallback
from asyncua.common.methods import uamethod
from asyncua.common.utils import ServiceError
from asyncua.crypto import uacrypto
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.crypto.validator import CertificateValidatorMethod
from asyncua.server.event_generator import EventGenerator
from asyncua.server.internal_server import InternalServer
from asyncua.server.user_managers import UserManager
from cryptography import x509

APPLICATION_URI = "urn:edgeseal-test:server"
EVENT_TYPE = "EdgesealTestEventType"  # a subtype of BaseEventType with these fields:
EVENT_FIELDS = {"BatchId": ua.VariantType.String, "Quantity": ua.VariantType.Double}
SERVER_OBJECT = ua.NodeId(ua.ObjectIds.Server)


@dataclass(frozen=True)
class Variable:
    name: str  # browse name (in the variable's namespace) and display name
    type: str = "Double"  # a ua.VariantType name: Boolean, SByte..UInt64, Float, Double, String, DateTime, ...
    value: Any = 0.0  # DateTime: datetime or ISO text; ByteString: bytes or base64 text; LocalizedText: text
    array: bool = False  # then `value` is a list
    id: str | None = None  # "i=1001", "s=Temp", "g=<uuid>", "b=<base64>"; None: s=<parent>/<name>
    namespace: str | None = None  # a URI of the spec's namespaces; None: the first
    parent: str = "Plant/Line1"  # folders, then the object that holds the variable
    writable: bool = False
    readable: bool = True  # False: AccessLevel without CurrentRead, and reads answer BadNotReadable
    eu_range: tuple[float, float] | None = None  # an EURange property (low, high)
    period: float | None = None  # seconds between changes: numbers count up by 1, Booleans toggle


@dataclass(frozen=True)
class Bulk:
    """`count` Double variables `V00000`... that all change every `period` seconds (value
    `tick + n`), in objects `G000`, `G001`... of 100 each under `parent`."""

    count: int = 10_000
    period: float = 1.0
    namespace: str | None = None
    parent: str = "Plant/Bulk"


@dataclass(frozen=True)
class Alarm:
    """A condition on the object `source`, inactive until SetAlarm(name, True). Its
    ConditionId is `s=<source>/<name>` in the first namespace (an identity only: there is
    no condition node to browse)."""

    name: str
    source: str = "Plant/Line1"
    type: str = "AlarmConditionType"  # a ua.ObjectIds name: AlarmConditionType, OffNormalAlarmType, ...
    severity: int = 700


@dataclass(frozen=True)
class ServerSpec:
    namespaces: tuple[str, ...] = ("urn:edgeseal-test:plant",)
    shift: int = 0  # dummy namespaces registered first: every index moves by `shift`
    variables: tuple[Variable, ...] = ()
    bulk: Bulk | None = None
    events: str | None = None  # path of an object that emits EVENT_TYPE events (EmitEvent)
    alarms: tuple[Alarm, ...] = ()
    security: tuple[str, ...] = ("NoSecurity",)  # ua.SecurityPolicyType names, e.g. Basic256Sha256_Sign
    certificate: str | None = None  # server certificate (DER or PEM); needed by any policy but NoSecurity
    private_key: str | None = None
    trusted_clients: tuple[str, ...] | None = None  # client certificates; None: any client certificate
    users: dict[str, str] = field(default_factory=dict)  # name -> password; empty: anonymous only
    max_nodes_per_read: int | None = None  # published and enforced (BadTooManyOperations)
    stall_create_monitored_items: str | None = None  # marker file, see stall_first_create_monitored_items
    port: int = 4840

    @property
    def url(self) -> str:
        return f"opc.tcp://127.0.0.1:{self.port}/edgeseal-test/"

    def to_json(self) -> str:
        return json.dumps(_asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServerSpec:
        data = json.loads(text)
        return cls(
            **{
                **data,
                "namespaces": tuple(data["namespaces"]),
                "variables": tuple(Variable(**v) for v in data["variables"]),
                "bulk": Bulk(**data["bulk"]) if data["bulk"] else None,
                "alarms": tuple(Alarm(**a) for a in data["alarms"]),
                "security": tuple(data["security"]),
                "trusted_clients": None if data["trusted_clients"] is None else tuple(data["trusted_clients"]),
            }
        )


def _asdict(value: Any) -> Any:
    """JSON-ready form of a spec: dataclasses as objects, datetimes as ISO text, bytes as base64."""
    if hasattr(value, "__dataclass_fields__"):
        return {name: _asdict(getattr(value, name)) for name in value.__dataclass_fields__}
    if isinstance(value, list | tuple):
        return [_asdict(item) for item in value]
    if isinstance(value, dict):
        return {key: _asdict(item) for key, item in value.items()}
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return value


# JSON forms of the values whose Python type JSON lacks
_FROM_JSON = {
    ua.VariantType.DateTime: datetime.fromisoformat,
    ua.VariantType.ByteString: base64.b64decode,
    ua.VariantType.LocalizedText: ua.LocalizedText,
}


def variant(variable: Variable) -> ua.Variant:
    vtype = ua.VariantType[variable.type]
    convert = _FROM_JSON.get(vtype, lambda value: value)
    if variable.array:
        return ua.Variant([convert(item) for item in variable.value], vtype)
    return ua.Variant(convert(variable.value), vtype)


class Tree:
    """Folders and objects of the `parent` paths, made on first use in the first namespace."""

    def __init__(self, server: Server, namespace: int) -> None:
        self._server, self._namespace = server, namespace
        self._nodes: dict[str, Node] = {}

    async def object(self, path: str) -> Node:
        return await self._node(path, folder=False)

    async def _node(self, path: str, folder: bool) -> Node:
        if path not in self._nodes:
            head, _, name = path.rpartition("/")
            parent = await self._node(head, folder=True) if head else self._server.nodes.objects
            add = parent.add_folder if folder else parent.add_object
            self._nodes[path] = await add(ua.NodeId(path, self._namespace), ua.QualifiedName(name, self._namespace))
        return self._nodes[path]


class Passwords(UserManager):
    def __init__(self, users: dict[str, str]) -> None:
        self._users = users

    def get_user(
        self, iserver: InternalServer, username: str | None = None, password: str | None = None, certificate: Any = None
    ) -> User | None:
        if username in self._users and self._users[username] == password:
            return User(role=UserRole.User, name=username)
        return None


async def add_variable(server: Server, tree: Tree, namespaces: dict[str, int], variable: Variable) -> Node:
    if not variable.readable and (variable.writable or variable.period):
        raise ValueError(f"{variable.name}: an unreadable variable can be neither writable nor periodic")
    idx = namespaces[variable.namespace] if variable.namespace else next(iter(namespaces.values()))
    path = f"{variable.parent}/{variable.name}"
    nodeid = ua.NodeId.from_string(f"ns={idx};{variable.id or f's={path}'}")
    parent = await tree.object(variable.parent)
    node = await parent.add_variable(nodeid, ua.QualifiedName(variable.name, idx), variant(variable))
    if variable.array:
        await node.write_attribute(ua.AttributeIds.ValueRank, ua.DataValue(ua.Variant(1, ua.VariantType.Int32)))
        await node.write_attribute(
            ua.AttributeIds.ArrayDimensions, ua.DataValue(ua.Variant([0], ua.VariantType.UInt32))
        )
    if variable.writable:
        await node.set_writable()
    if not variable.readable:
        for attribute in (ua.AttributeIds.AccessLevel, ua.AttributeIds.UserAccessLevel):
            await node.write_attribute(attribute, ua.DataValue(ua.Variant(0, ua.VariantType.Byte)))
        # asyncua's Read ignores AccessLevel: answer every read (and subscription) of the value with the error
        not_readable = ua.DataValue(StatusCode=ua.StatusCode(ua.StatusCodes.BadNotReadable))
        server.set_attribute_value_callback(nodeid, lambda _nodeid, _attribute: not_readable)
    if variable.eu_range:
        low, high = variable.eu_range
        await node.add_property(
            ua.NodeId(f"{path}.EURange", idx),
            ua.QualifiedName("EURange", 0),
            ua.Range(Low=low, High=high),
            datatype=ua.NodeId(ua.ObjectIds.Range),
        )
    return node


async def count_up(server: Server, node: Node, period: float) -> None:
    """Changes the value every `period` seconds, stamped with the time of the change."""
    value = await node.read_data_value()
    vtype, current = value.Value.VariantType, value.Value.Value
    while True:
        await asyncio.sleep(period)
        current = not current if vtype == ua.VariantType.Boolean else current + 1
        now = datetime.now(UTC)
        await server.write_attribute_value(
            node.nodeid, ua.DataValue(ua.Variant(current, vtype), SourceTimestamp=now, ServerTimestamp=now)
        )


async def add_bulk(server: Server, tree: Tree, namespaces: dict[str, int], bulk: Bulk) -> list[ua.NodeId]:
    # 100 per object: asyncua checks a new node against all its siblings, so one object of
    # 10,000 would take a minute to fill
    nodes = []
    for n in range(bulk.count):
        variable = Variable(
            name=f"V{n:05d}", value=float(n), namespace=bulk.namespace, parent=f"{bulk.parent}/G{n // 100:03d}"
        )
        nodes.append((await add_variable(server, tree, namespaces, variable)).nodeid)
    return nodes


async def change_bulk(server: Server, nodes: list[ua.NodeId], period: float) -> None:
    """Every `period` seconds, every variable gets a new value, written straight into the
    address space (no service call) so that the server's own cost stays small."""
    aspace, loop = server.iserver.aspace, asyncio.get_running_loop()
    start, tick = loop.time(), 0
    while True:
        tick += 1
        await asyncio.sleep(max(0.0, start + tick * period - loop.time()))
        now = datetime.now(UTC)
        for n, nodeid in enumerate(nodes):
            value = ua.DataValue(
                ua.Variant(float(tick + n), ua.VariantType.Double), SourceTimestamp=now, ServerTimestamp=now
            )
            await aspace.write_attribute_value(nodeid, ua.AttributeIds.Value, value)


def arguments(**types: ua.VariantType) -> list[ua.Argument]:
    """A method's named scalar arguments, in order."""
    return [ua.Argument(Name=name, DataType=ua.NodeId(vtype.value), ValueRank=-1) for name, vtype in types.items()]


async def fire(generator: EventGenerator, message: str) -> None:
    """Fires the event at its source object and, as the same occurrence (same EventId), at the
    Server object: asyncua delivers an event only to monitored items on its emitting node.
    The Server's copy is the one asyncua keeps for ConditionRefresh."""
    await generator.trigger(message=message)
    twin = copy.copy(generator.event)
    twin.emitting_node = SERVER_OBJECT
    await generator.isession.subscription_service.trigger_event(twin)


async def add_events(server: Server, tree: Tree, namespace: int, spec: ServerSpec) -> None:
    control = await server.nodes.objects.add_object(
        ua.NodeId("TestControl", namespace), ua.QualifiedName("TestControl", namespace)
    )
    if spec.events:
        event_type = await server.get_node(ua.ObjectIds.BaseEventType).add_object_type(
            ua.NodeId(EVENT_TYPE, namespace), ua.QualifiedName(EVENT_TYPE, namespace)
        )
        for name, vtype in EVENT_FIELDS.items():
            await event_type.add_property(
                ua.NodeId(f"{EVENT_TYPE}.{name}", namespace),
                ua.QualifiedName(name, namespace),
                ua.get_default_value(vtype),
                varianttype=vtype,
            )
        events = await server.get_event_generator(event_type, await tree.object(spec.events))

        @uamethod
        async def emit_event(_parent: ua.NodeId, message: str, severity: int, batch_id: str, quantity: float) -> None:
            events.event.Severity, events.event.BatchId, events.event.Quantity = severity, batch_id, quantity
            await fire(events, message)

        await control.add_method(
            ua.NodeId("TestControl.EmitEvent", namespace),
            ua.QualifiedName("EmitEvent", namespace),
            emit_event,
            arguments(
                Message=ua.VariantType.String,
                Severity=ua.VariantType.UInt16,
                BatchId=ua.VariantType.String,
                Quantity=ua.VariantType.Double,
            ),
            [],
        )
    alarms = {alarm.name: await alarm_generator(server, tree, namespace, alarm) for alarm in spec.alarms}

    @uamethod
    async def set_alarm(_parent: ua.NodeId, name: str, active: bool) -> ua.StatusCode | None:
        if name not in alarms:
            return ua.StatusCode(ua.StatusCodes.BadInvalidArgument)
        event = alarms[name].event
        # no acknowledgement model: an active alarm is unacknowledged, an inactive one acknowledged
        event.ActiveState = ua.LocalizedText("Active" if active else "Inactive")
        event.AckedState = ua.LocalizedText("Unacknowledged" if active else "Acknowledged")
        setattr(event, "ActiveState/Id", active)
        setattr(event, "AckedState/Id", not active)
        event.Retain = active
        await fire(alarms[name], f"{name} {'active' if active else 'inactive'}")
        return None

    await control.add_method(
        ua.NodeId("TestControl.SetAlarm", namespace),
        ua.QualifiedName("SetAlarm", namespace),
        set_alarm,
        arguments(Name=ua.VariantType.String, Active=ua.VariantType.Boolean),
        [],
    )


async def alarm_generator(server: Server, tree: Tree, namespace: int, alarm: Alarm) -> EventGenerator:
    generator = await server.get_event_generator(getattr(ua.ObjectIds, alarm.type), await tree.object(alarm.source))
    event = generator.event
    event.ConditionName = alarm.name
    event.NodeId = ua.NodeId(f"{alarm.source}/{alarm.name}", namespace)
    event.Severity = event.LastSeverity = alarm.severity
    event.Quality = ua.StatusCode()
    event.EnabledState = ua.LocalizedText("Enabled")
    setattr(event, "EnabledState/Id", True)
    return generator


async def limit_reads(server: Server, limit: int) -> None:
    """Publishes MaxNodesPerRead and answers a bigger Read with BadTooManyOperations
    (asyncua publishes a limit but enforces none)."""
    await server.get_node(ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead).write_value(
        ua.Variant(limit, ua.VariantType.UInt32)
    )

    def refuse_big_reads(event: ServerItemCallback, _dispatcher: Any) -> None:
        if event.is_external and len(event.request_params.NodesToRead) > limit:
            raise ServiceError(ua.StatusCodes.BadTooManyOperations)

    server.subscribe_server_callback(CallbackType.PreRead, refuse_big_reads)


def stall_first_create_monitored_items(server: Server, marker: Path) -> None:
    """The first CreateMonitoredItems request creates `marker` and is never answered, so that
    a test can kill the server in the middle of a client's subscription setup. Nothing
    stalls while the marker exists: a server restarted with the same spec answers."""
    service = server.iserver.subscription_service
    create = service.create_monitored_items

    async def stall_once(params: ua.CreateMonitoredItemsParameters) -> list[ua.MonitoredItemCreateResult]:
        if marker.exists():
            return await create(params)
        marker.touch()
        return await asyncio.Future()  # never done: no answer

    service.create_monitored_items = stall_once  # type: ignore[method-assign]


async def trust_only(paths: tuple[str, ...]) -> CertificateValidatorMethod:
    """Refuses, at CreateSession, any client certificate but those at `paths`."""
    trusted = {uacrypto.der_from_x509(await uacrypto.load_certificate(path)) for path in paths}

    async def validate(certificate: x509.Certificate, _description: ua.ApplicationDescription) -> None:
        if uacrypto.der_from_x509(certificate) not in trusted:
            raise ServiceError(ua.StatusCodes.BadCertificateUntrusted)

    return validate


async def serve(spec: ServerSpec) -> None:
    server = Server(user_manager=Passwords(spec.users) if spec.users else None)
    server.iserver.bind_condition_methods = True  # ConditionRefresh (i=3875) and ConditionRefresh2
    await server.init()
    await server.set_application_uri(APPLICATION_URI)
    server.set_server_name("edgeseal test server")
    server.set_endpoint(spec.url)
    server.set_security_policy([ua.SecurityPolicyType[name] for name in spec.security])
    server.set_identity_tokens([ua.UserNameIdentityToken if spec.users else ua.AnonymousIdentityToken])
    if spec.certificate and spec.private_key:
        await server.load_certificate(spec.certificate)
        await server.load_private_key(spec.private_key)
    elif any(name != "NoSecurity" for name in spec.security):
        raise ValueError("a secured endpoint needs a certificate and a private key")
    if spec.trusted_clients is not None:
        server.set_certificate_validator(await trust_only(spec.trusted_clients))

    for k in range(spec.shift):
        await server.register_namespace(f"urn:edgeseal-test:shift:{k}")
    namespaces = {uri: await server.register_namespace(uri) for uri in spec.namespaces}
    first = namespaces[spec.namespaces[0]]
    tree = Tree(server, first)
    changing = [
        (await add_variable(server, tree, namespaces, variable), variable.period) for variable in spec.variables
    ]
    bulk = await add_bulk(server, tree, namespaces, spec.bulk) if spec.bulk else []
    if spec.events or spec.alarms:
        await add_events(server, tree, first, spec)
    if spec.max_nodes_per_read is not None:
        await limit_reads(server, spec.max_nodes_per_read)
    if spec.stall_create_monitored_items:
        stall_first_create_monitored_items(server, Path(spec.stall_create_monitored_items))

    await server.start()
    # The address space is built and lives as long as the server. Out of the collector's
    # sight, a full collection no longer walks it: with a Bulk of 10,000 variables each one
    # took ~0.5 s every few seconds, held up publishes, and (queue size 1) lost changes.
    gc.freeze()
    tasks = [asyncio.create_task(count_up(server, node, period)) for node, period in changing if period]
    if spec.bulk:
        tasks.append(asyncio.create_task(change_bulk(server, bulk, spec.bulk.period)))
    print(f"READY {spec.url}", flush=True)
    await asyncio.gather(*tasks, asyncio.Future())  # runs until killed


def main() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(serve(ServerSpec.from_json(Path(sys.argv[1]).read_text())))


if __name__ == "__main__":
    main()
