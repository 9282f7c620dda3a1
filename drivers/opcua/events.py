"""What an event group asks the server for, and what each event becomes.

The EventFilter selects the configured fields (browse paths from BaseEventType, their
namespace URIs resolved in the current session: indexes move across restarts) and,
hidden after them, EventType, SourceNode and Time: the type to skip ConditionRefresh's
start and end markers, the source for the `sources` filter, the time for the reading's
timestamp. The where clause keeps the configured event type and its subtypes, listed
from the server at each connect (InList is understood more widely than OfType).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from asyncua import ua

from drivers.opcua.config import BASE_EVENT_TYPE, EventGroup, FieldPath
from drivers.opcua.session import Session
from drivers.opcua.values import arrival_time, event_value

_HIDDEN = ("EventType", "SourceNode", "Time")
_REFRESH_MARKERS = {
    ua.NodeId(ua.ObjectIds.RefreshStartEventType),
    ua.NodeId(ua.ObjectIds.RefreshEndEventType),
}


class UnknownEventType(LookupError):
    """The configured event type is not a node of the server."""


class EventSelection:
    """The filter of one event group in one session, and its decoder."""

    def __init__(self, group: EventGroup, session: Session, subtypes: list[ua.NodeId]) -> None:
        paths = group.field_paths()
        self.fields = [path.text for path in paths]
        self._clauses = [_clause(session, path) for path in paths] + [
            _clause(session, FieldPath(name, ((None, name),))) for name in _HIDDEN
        ]
        self._subtypes = subtypes
        self._sources = {session.node_id(ref) for ref in group.source_refs()}

    @classmethod
    async def build(cls, group: EventGroup, session: Session) -> EventSelection:
        """Raises UnknownNamespace when a field, type or source names a namespace the server lacks."""
        subtypes = [] if group.event_type == BASE_EVENT_TYPE else await _subtypes(session, group)
        return cls(group, session, subtypes)

    def event_filter(self) -> ua.EventFilter:
        where = ua.ContentFilter()
        if self._subtypes:
            event_type = ua.SimpleAttributeOperand(
                TypeDefinitionId=ua.NodeId(ua.ObjectIds.BaseEventType),
                BrowsePath=[ua.QualifiedName("EventType", 0)],
                AttributeId=ua.AttributeIds.Value,
            )
            operands = [event_type] + [ua.LiteralOperand(Value=ua.Variant(node)) for node in self._subtypes]
            where.Elements = [ua.ContentFilterElement(FilterOperator=ua.FilterOperator.InList, FilterOperands=operands)]
        return ua.EventFilter(SelectClauses=self._clauses, WhereClause=where)

    def reading(self, values: Sequence[Any]) -> tuple[int, dict[str, Any] | None]:
        """(timestamp, the event as a map of its fields), or a None map for an event to
        skip: a refresh marker, or one from a source not asked for."""
        event_type, source, moment = (_plain(value) for value in values[len(self.fields) :])
        ts = arrival_time(moment)
        if event_type in _REFRESH_MARKERS or (self._sources and source not in self._sources):
            return ts, None
        return ts, event_value(self.fields, values[: len(self.fields)])


def _clause(session: Session, path: FieldPath) -> ua.SimpleAttributeOperand:
    steps = [ua.QualifiedName(name, 0 if uri is None else session.namespace_index(uri)) for uri, name in path.steps]
    return ua.SimpleAttributeOperand(
        TypeDefinitionId=ua.NodeId(ua.ObjectIds.BaseEventType), BrowsePath=steps, AttributeId=ua.AttributeIds.Value
    )


def _plain(value: Any) -> Any:
    return value.Value if isinstance(value, ua.Variant) else value


async def _subtypes(session: Session, group: EventGroup) -> list[ua.NodeId]:
    """The event type and every subtype the server defines, breadth first."""
    root = session.node_id(group.type_ref())
    if not await session.exists(root):  # else its events would be awaited in silence
        raise UnknownEventType(f"the server has no event type {group.event_type}")
    found, frontier = [root], [root]
    while frontier:
        node = frontier.pop(0)
        children = await session.client.get_node(node).get_children(refs=ua.ObjectIds.HasSubtype)
        fresh = [child.nodeid for child in children if child.nodeid not in found]
        found += fresh
        frontier += fresh
    return found
