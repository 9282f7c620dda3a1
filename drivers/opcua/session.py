"""One connected OPC UA session and what the driver learns from the server at each
connect: its namespaces (to turn configured node ids into wire NodeIds), its start time
(to notice a restart the session survived) and its operation limits (to size requests).

The only place the driver talks to asyncua's `Client`. Its own reconnection is off:
this driver reconnects itself, so that every connect re-resolves namespaces and
re-creates subscriptions from the configuration (FIELD-NOTES: asyncua's auto-reconnect
recreates monitored items with stale namespace indexes and never delivers again).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from asyncua import Client, ua

from drivers.opcua.nodeid import NodeRef
from drivers.opcua.pki import ClientCertificate
from drivers.opcua.security import SecuritySettings, configure, open_session

NAMESPACE_ARRAY = ua.NodeId(ua.ObjectIds.Server_NamespaceArray)
START_TIME = ua.NodeId(ua.ObjectIds.Server_ServerStatus_StartTime)
SERVER_STATE = ua.NodeId(ua.ObjectIds.Server_ServerStatus_State)
MAX_NODES_PER_READ = ua.NodeId(ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead)
MAX_ITEMS_PER_CALL = ua.NodeId(ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall)
HOUR = 3600.0
# Without a limit from the server, requests are still cut to a size every server takes.
DEFAULT_BATCH = 1000

# asyncua logs its own protocol steps (whole publish results at INFO, costly at volume)
# and each connection loss several times, with tracebacks. The driver reports every
# fault itself, once, in words an operator acts on; asyncua's lines stay for debugging.
logging.getLogger("asyncua").setLevel(logging.CRITICAL)


class UnknownNamespace(LookupError):
    """A configured namespace URI the server does not have (now)."""


class ServerChanged(Exception):
    """The server restarted, or changed its namespaces, under a live session."""


class Session:
    """A connected session. `lost` is set when the transport fails."""

    def __init__(self, client: Client, namespaces: list[str], start_time: datetime | None, limits: dict[str, int]):
        self.client = client
        self.namespaces = namespaces
        self.start_time = start_time
        self.max_nodes_per_read = limits["read"]
        self.max_items_per_call = limits["items"]
        self.lost = asyncio.Event()
        self.own_certificate: ClientCertificate | None = None  # this client's, with secure policies

    @classmethod
    async def open(cls, url: str, security: SecuritySettings, timeout: float, session_timeout: float) -> Session:
        # asyncua's own health probe is left to notice transport loss only: this driver
        # checks the server itself every check_interval (a 1 s probe under load drops
        # healthy sessions with BadShutdown)
        client = Client(url, timeout=timeout, watchdog_intervall=HOUR)
        client.session_timeout = int(session_timeout * 1000)
        own_certificate = await configure(client, security)
        await open_session(client)
        try:
            # the read limit first, alone: it sizes every later Read, these included
            (read_limit,) = await _read_values(client, [MAX_NODES_PER_READ], 1)
            namespaces, start, items_limit = await _read_values(
                client, [NAMESPACE_ARRAY, START_TIME, MAX_ITEMS_PER_CALL], _limit(read_limit)
            )
            limits = {"read": _limit(read_limit), "items": _limit(items_limit)}
            session = cls(client, list(namespaces or []), start, limits)
            session.own_certificate = own_certificate
        except BaseException:
            await _disconnect(client)
            raise

        async def on_lost(_: Exception) -> None:
            session.lost.set()

        client.connection_lost_callback = on_lost
        return session

    @property
    def ua(self) -> Any:
        """asyncua's session-level client, for the subscription services."""
        return self.client.uaclient

    def node_id(self, ref: NodeRef) -> ua.NodeId:
        """The wire NodeId of a configured node, in this session's namespaces. URIs are
        always resolved here: a `nsu=` NodeId sent as such is not understood by every
        server (FIELD-NOTES)."""
        index = ref.namespace if isinstance(ref.namespace, int) else self.namespace_index(ref.namespace)
        return ua.NodeId(ref.identifier, index)

    def namespace_index(self, uri: str) -> int:
        try:
            return self.namespaces.index(uri)
        except ValueError:
            raise UnknownNamespace(f"the server has no namespace {uri}") from None

    async def read(self, nodes: Sequence[ua.NodeId]) -> list[ua.DataValue]:
        """The Value attribute of each node, in as few Read requests as the server allows."""
        return await _read(self.client, nodes, self.max_nodes_per_read)

    async def exists(self, node: ua.NodeId) -> bool:
        """Whether the server has `node` (its NodeClass can be read)."""
        params = ua.ReadParameters(NodesToRead=[ua.ReadValueId(NodeId=node, AttributeId=ua.AttributeIds.NodeClass)])
        (result,) = await self.client.uaclient.read(params)
        return bool(result.StatusCode.is_good())

    async def check(self) -> None:
        """Raises ServerChanged when the server restarted or moved its namespaces since
        this session began; any failure to answer raises too."""
        namespaces, start, state = await _read_values(
            self.client, [NAMESPACE_ARRAY, START_TIME, SERVER_STATE], self.max_nodes_per_read
        )
        if start is not None and self.start_time is not None and start != self.start_time:
            raise ServerChanged(f"the server restarted (start time {self.start_time} -> {start})")
        if list(namespaces or []) != self.namespaces:
            raise ServerChanged("the server's namespace array changed")
        if state is not None and state != ua.ServerState.Running:
            raise ServerChanged(f"the server is {ua.ServerState(state).name}, not Running")

    async def close(self) -> None:
        self.client.connection_lost_callback = None
        await _disconnect(self.client)


async def _read_values(client: Client, nodes: list[ua.NodeId], limit: int) -> list[Any]:
    """Values of a few server nodes; a node the server lacks reads None."""
    results = await _read(client, nodes, limit)
    return [r.Value.Value if r.StatusCode.is_good() and r.Value is not None else None for r in results]


async def _read(client: Client, nodes: Sequence[ua.NodeId], limit: int) -> list[ua.DataValue]:
    """The nodes' Value attributes with their SourceTimestamps (the only time a reading
    takes; leaving out the server's saves decoding), `limit` nodes per Read request."""
    values: list[ua.DataValue] = []
    for start in range(0, len(nodes), limit):
        params = ua.ReadParameters(
            NodesToRead=[
                ua.ReadValueId(NodeId=n, AttributeId=ua.AttributeIds.Value) for n in nodes[start : start + limit]
            ],
            TimestampsToReturn=ua.TimestampsToReturn.Source,
        )
        values += await client.uaclient.read(params)
    return values


def _limit(value: Any) -> int:
    return int(value) if isinstance(value, int) and value > 0 else DEFAULT_BATCH


async def _disconnect(client: Client) -> None:
    """Close quietly and quickly: a dead server must not hold up the reconnect."""
    try:
        await asyncio.wait_for(client.disconnect(), timeout=2.0)
    except Exception:  # noqa: BLE001 - whatever closing a broken connection raises, it is closed
        client.disconnect_socket()
