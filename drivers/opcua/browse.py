"""`edgeseal browse`: walk an OPC UA server's address space and print what is there, as an
indented tree or as a ready-to-edit `sources:` item, for commissioning.

    walk     level by level from the start node (default the Objects folder, i=85): one
             Browse request per level (cut to the server's limits) and BrowseNext for the
             references that did not fit in one answer; then every variable's DataType,
             ValueRank and access levels in batched Reads. So thousands of variables take a
             handful of requests, not one per node. Each node is visited once, at its
             shallowest depth: address spaces have cycles.
    follows  HierarchicalReferences forward (Organizes, HasComponent, ...) to Objects and
             Variables, but not HasProperty: properties (EURange, EngineeringUnits) describe a
             variable, they are no tags. The standard Server object is left out unless the
             walk starts there: it is the server's own diagnostics, hundreds of nodes.
    render   pure, in drivers.opcua.browse_render: the tree, or tag YAML.

Usage errors raise BrowseUsage (exit 2); a server that cannot be reached, refuses this
client or lacks the start node raises BrowseFailed (exit 1).
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO, TypeVar

from asyncua import ua
from pydantic import TypeAdapter, ValidationError

from drivers.opcua.browse_render import OBJECTS_REF, Access, Found, printable, render_tree, render_yaml
from drivers.opcua.config import URL_TEXT, Url
from drivers.opcua.nodeid import IdentifierKind, NodeRef, parse_node_id
from drivers.opcua.pki import Pki, ServerCertificateRefused
from drivers.opcua.security import SecurityRefused, SecuritySettings
from drivers.opcua.session import DEFAULT_BATCH, Session, UnknownNamespace

T = TypeVar("T")

DEFAULT_DEPTH = 3
SESSION_TIMEOUT = 60.0
OBJECTS = ua.NodeId(ua.ObjectIds.ObjectsFolder)
SERVER = ua.NodeId(ua.ObjectIds.Server)
HIERARCHICAL = ua.NodeId(ua.ObjectIds.HierarchicalReferences)
HAS_PROPERTY = ua.NodeId(ua.ObjectIds.HasProperty)
PROPERTY_TYPE = ua.NodeId(ua.ObjectIds.PropertyType)
MAX_NODES_PER_BROWSE = ua.NodeId(ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerBrowse)
MAX_CONTINUATION_POINTS = ua.NodeId(ua.ObjectIds.Server_ServerCapabilities_MaxBrowseContinuationPoints)
# read for each variable, in this order
VARIABLE_ATTRIBUTES = (
    ua.AttributeIds.DataType,
    ua.AttributeIds.ValueRank,
    ua.AttributeIds.AccessLevel,
    ua.AttributeIds.UserAccessLevel,
)
CURRENT_READ = ua.AccessLevelType.CurrentRead
KINDS: dict[ua.NodeIdType, IdentifierKind] = {
    ua.NodeIdType.TwoByte: "i",
    ua.NodeIdType.FourByte: "i",
    ua.NodeIdType.Numeric: "i",
    ua.NodeIdType.String: "s",
    ua.NodeIdType.Guid: "g",
    ua.NodeIdType.ByteString: "b",
}


class BrowseUsage(ValueError):
    """Bad usage or unusable input (exit 2)."""


class BrowseFailed(Exception):
    """The server could not be browsed (exit 1); str() says why."""


class NoSuchNode(LookupError):
    """The start node is not in the server's address space."""


# what a server (or the way to it) can do to a browse: each becomes one line for the operator
FAILURES = (OSError, TimeoutError, ua.UaError, SecurityRefused, ServerCertificateRefused, UnknownNamespace, NoSuchNode)


def browse(
    url: str, *, node: str | None, depth: int, as_yaml: bool, access: Access, timeout: float, out: TextIO
) -> int:
    """Walks the server at `url` from `node` (default the Objects folder) down to `depth`
    levels and prints the tree, or with `as_yaml` a `sources:` item; returns 0."""
    _check_url(url)
    start = _start_node(node)
    settings = _settings(access)
    root = asyncio.run(_walk(url, settings, start, depth, timeout))
    if not as_yaml:
        out.write(render_tree(root))
    elif any(found.readable for found in root.walk()):
        out.write(render_yaml(root, url, access))
    else:
        raise BrowseFailed(
            f"no readable variable within {depth} levels below {printable('/'.join(root.path))}: no tags to configure "
            "(a larger --depth, or another --node?)"
        )
    return 0


# -- the walk (asyncua I/O) -------------------------------------------------------------


async def _walk(url: str, settings: SecuritySettings, start: NodeRef, depth: int, timeout: float) -> Found:
    session: Session | None = None
    try:
        session = await Session.open(url, settings, timeout, SESSION_TIMEOUT)
        return await Walker(session).walk(session.node_id(start), depth)
    except FAILURES as exc:
        raise BrowseFailed(f"{url}: {_reason(exc)}") from None
    finally:
        if session is not None:
            await session.close()


class Walker:
    """Walks one session's address space. `max_references` per node in one answer: 0 lets
    the server choose; BrowseNext fetches the rest either way."""

    def __init__(self, session: Session, max_references: int = 0) -> None:
        self._session = session
        self._max_references = max_references
        self._visited: set[ua.NodeId] = set()

    async def walk(self, start: ua.NodeId, depth: int) -> Found:
        root = await self._start(start)
        self._visited = {start}
        level = [(start, root)]
        per_browse = await self._browse_limit()
        for _ in range(depth):
            next_level = []
            for chunk in _chunks(level, per_browse):
                next_level += await self._expand(chunk)
            level = next_level
        await self._describe([found for found in root.walk() if found.is_variable])
        return root

    async def _expand(self, level: Sequence[tuple[ua.NodeId, Found]]) -> list[tuple[ua.NodeId, Found]]:
        """Browses the nodes of `level`; returns their children not seen before."""
        children = []
        answers = await self._browse([node for node, _ in level])
        for (_, parent), (references, problem) in zip(level, answers):
            parent.problem = problem
            for reference in references:
                node = self._local(reference.NodeId)
                if node is None or node in self._visited or not _followed(reference, node):
                    continue
                self._visited.add(node)
                is_variable = reference.NodeClass == ua.NodeClass.Variable
                found = Found((*parent.path, reference.BrowseName.Name or ""), self._ref(node), is_variable)
                parent.children.append(found)
                children.append((node, found))
        return children

    async def _start(self, start: ua.NodeId) -> Found:
        name, node_class = await self._read([(start, ua.AttributeIds.BrowseName), (start, ua.AttributeIds.NodeClass)])
        if not name.StatusCode.is_good():
            raise NoSuchNode(f"no node {self._ref(start).text()} on the server ({name.StatusCode.name})")
        return Found((name.Value.Value.Name or "",), self._ref(start), _value(node_class) == ua.NodeClass.Variable)

    async def _browse_limit(self) -> int:
        """Nodes per Browse request: the server's MaxNodesPerBrowse, and no more than the
        continuation points it keeps per session, since each node may need one."""
        limits = [_value(value) for value in await self._session.read([MAX_NODES_PER_BROWSE, MAX_CONTINUATION_POINTS])]
        return min((limit for limit in limits if isinstance(limit, int) and limit > 0), default=DEFAULT_BATCH)

    async def _browse(self, nodes: list[ua.NodeId]) -> list[tuple[list[ua.ReferenceDescription], str | None]]:
        """Each node's references, all of them, or a problem. Continuation points are
        followed before the next Browse, so the server never holds more than one request's."""
        results = await self._session.ua.browse(
            ua.BrowseParameters(
                RequestedMaxReferencesPerNode=self._max_references,
                NodesToBrowse=[_description(node) for node in nodes],
            )
        )
        references = [list(result.References or []) for result in results]
        problems = [_problem(result.StatusCode) for result in results]
        pending = {index: result.ContinuationPoint for index, result in enumerate(results) if result.ContinuationPoint}
        while pending:
            results = await self._session.ua.browse_next(
                ua.BrowseNextParameters(ReleaseContinuationPoints=False, ContinuationPoints=list(pending.values()))
            )
            indexes, pending = list(pending), {}
            for index, result in zip(indexes, results):
                references[index] += result.References or []
                problems[index] = _problem(result.StatusCode)
                if result.ContinuationPoint:
                    pending[index] = result.ContinuationPoint
        return list(zip(references, problems))

    async def _describe(self, variables: list[Found]) -> None:
        """Sets each variable's data type and whether it is readable."""
        nodes = [self._session.node_id(found.node) for found in variables]
        values = await self._read([(node, attribute) for node in nodes for attribute in VARIABLE_ATTRIBUTES])
        width = len(VARIABLE_ATTRIBUTES)
        rows = [[_value(value) for value in values[k : k + width]] for k in range(0, len(values), width)]
        type_ids = list({data_type for data_type, *_ in rows if isinstance(data_type, ua.NodeId)})
        names = [_value(name) for name in await self._read([(i, ua.AttributeIds.BrowseName) for i in type_ids])]
        type_names = {type_id: name.Name for type_id, name in zip(type_ids, names) if name is not None}
        for found, (data_type, rank, access, user_access) in zip(variables, rows):
            type_name = type_names.get(data_type) or (self._ref(data_type).text() if data_type else "unknown type")
            found.data_type = type_name + ("[]" if isinstance(rank, int) and rank >= 0 else "")
            # a server without user access levels leaves the decision to AccessLevel
            found.readable = _allows_read(access) and (user_access is None or _allows_read(user_access))

    async def _read(self, items: Sequence[tuple[ua.NodeId, ua.AttributeIds]]) -> list[ua.DataValue]:
        values: list[ua.DataValue] = []
        for chunk in _chunks(items, self._session.max_nodes_per_read):
            values += await self._session.ua.read(
                ua.ReadParameters(NodesToRead=[ua.ReadValueId(NodeId=node, AttributeId=a) for node, a in chunk])
            )
        return values

    def _local(self, node: ua.NodeId) -> ua.NodeId | None:
        """The NodeId of a reference's target in this server, None for one in another
        server. (asyncua decodes an ExpandedNodeId without URI or server as a NodeId.)"""
        if not isinstance(node, ua.ExpandedNodeId):
            return node
        if node.ServerIndex:
            return None
        index = node.NamespaceIndex
        if node.NamespaceUri:
            try:
                index = self._session.namespace_index(node.NamespaceUri)
            except UnknownNamespace:
                return None
        return ua.NodeId(node.Identifier, index, node.NodeIdType)

    def _ref(self, node: ua.NodeId) -> NodeRef:
        """The node id with its namespace URI (an index stays only where the server has no URI)."""
        namespaces = self._session.namespaces
        index = node.NamespaceIndex
        namespace: int | str = namespaces[index] if 0 < index < len(namespaces) else index
        return NodeRef(namespace, KINDS[node.NodeIdType], node.Identifier)


def _description(node: ua.NodeId) -> ua.BrowseDescription:
    return ua.BrowseDescription(
        NodeId=node,
        BrowseDirection=ua.BrowseDirection.Forward,
        ReferenceTypeId=HIERARCHICAL,
        IncludeSubtypes=True,
        NodeClassMask=ua.NodeClass.Object | ua.NodeClass.Variable,
        ResultMask=ua.BrowseResultMask.ReferenceTypeId | ua.BrowseResultMask.TargetInfo,
    )


def _followed(reference: ua.ReferenceDescription, node: ua.NodeId) -> bool:
    if reference.ReferenceTypeId == HAS_PROPERTY or reference.TypeDefinition == PROPERTY_TYPE:
        return False
    return node != SERVER


def _problem(status: ua.StatusCode) -> str | None:
    return None if status.is_good() else f"not browsed: {status.name}"


def _value(value: ua.DataValue) -> Any:
    return value.Value.Value if value.StatusCode.is_good() and value.Value is not None else None


def _allows_read(access: Any) -> bool:
    return isinstance(access, int) and bool(access & CURRENT_READ)


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, ua.UaStatusCodeError):
        return f"the server answered {ua.StatusCode(exc.code).name}"
    if isinstance(exc, socket.gaierror):
        return exc.strerror or str(exc)
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)  # asyncio's own text names only the call that failed
    return str(exc) or type(exc).__name__


# -- command-line input -----------------------------------------------------------------


def _check_url(url: str) -> None:
    """The check the configuration makes, so that the printed YAML loads."""
    try:
        TypeAdapter(Url).validate_python(url)
    except ValidationError:
        raise BrowseUsage(f"expected {URL_TEXT}, found {url!r}") from None


def _start_node(text: str | None) -> NodeRef:
    if text is None:
        return OBJECTS_REF
    try:
        return parse_node_id(text)
    except ValueError as exc:
        raise BrowseUsage(f"--node: expected {exc}, found {text!r}") from None


def _settings(access: Access) -> SecuritySettings:
    if access.policy != "None" and access.state_dir is None:
        raise BrowseUsage(
            f"--policy {access.policy} needs --state-dir: STATE_DIR/pki holds this client's certificate "
            "and the servers it trusts"
        )
    if access.state_dir is not None and not access.state_dir.is_dir():
        raise BrowseUsage(f"--state-dir {access.state_dir}: not a directory")
    if (access.username is None) != (access.password_env is None):
        raise BrowseUsage("--username and --password-env go together")
    password = None
    if access.password_env is not None:
        password = os.environ.get(access.password_env)
        if password is None:
            raise BrowseUsage(f"--password-env: the variable {access.password_env} is not set")
    pki_dir = (access.state_dir or Path(".")) / "pki"  # only read with a secure policy
    try:
        return SecuritySettings(
            policy=access.policy,
            mode=access.mode or ("None" if access.policy == "None" else "SignAndEncrypt"),
            application_uri=_application_uri(access.state_dir),
            pki_dir=pki_dir,
            username=access.username,
            password=password,
        )
    except ValueError as exc:
        raise BrowseUsage(f"--mode: {exc}") from None


def _application_uri(state_dir: Path | None) -> str:
    """The URI of the client certificate the agent already has: another URI would make the
    PKI replace that certificate, which every server would then have to trust again."""
    own = Pki(state_dir / "pki").listing().own if state_dir is not None else None
    if own is not None and own.application_uri:
        return own.application_uri
    return f"urn:edgeseal:{socket.gethostname()}"  # SourceConfig.app_uri's default


# -- rendering (pure) -------------------------------------------------------------------
