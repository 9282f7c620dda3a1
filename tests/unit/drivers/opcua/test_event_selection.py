"""What an event group asks the server for and what each event becomes
(drivers/opcua/events.py), against a stand-in session that knows its namespaces: the
EventFilter's select and where clauses, and the reading of each event's field list."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from asyncua import ua
from asyncua.common.utils import Buffer
from asyncua.ua.ua_binary import variant_from_binary, variant_to_binary

from drivers.opcua.config import CONDITION_FIELDS, EventGroup
from drivers.opcua.events import EventSelection, UnknownEventType
from drivers.opcua.nodeid import NodeRef
from drivers.opcua.session import UnknownNamespace

NAMESPACES = ["http://opcfoundation.org/UA/", "urn:edgeseal:server", "urn:acme:press"]
ACME = 2
T_2024 = datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
T_2024_NS = 1_704_164_645_123_456_000
BASE_EVENT_TYPE = ua.NodeId(ua.ObjectIds.BaseEventType)
ALARM_CONDITION_TYPE = ua.NodeId(ua.ObjectIds.AlarmConditionType)
PRESS1 = ua.NodeId("Press1", ACME)
UNKNOWN_STRUCTURE = ua.ExtensionObject(TypeId=ua.NodeId(5001, ACME), Body=b"\x01")


class StubSession:
    """The two things an EventSelection asks of a session (drivers.opcua.session.Session)."""

    def __init__(self, namespaces: list[str] = NAMESPACES) -> None:
        self.namespaces = namespaces

    def namespace_index(self, uri: str) -> int:
        try:
            return self.namespaces.index(uri)
        except ValueError:
            raise UnknownNamespace(f"the server has no namespace {uri}") from None

    def node_id(self, ref: NodeRef) -> ua.NodeId:
        index = ref.namespace if isinstance(ref.namespace, int) else self.namespace_index(ref.namespace)
        return ua.NodeId(ref.identifier, index)


def _group(**fields: Any) -> EventGroup:
    return EventGroup.model_validate({"name": "press.alarms", **fields})


def _selection(subtypes: list[ua.NodeId] | None = None, **fields: Any) -> EventSelection:
    return EventSelection(_group(**fields), StubSession(), subtypes or [])  # type: ignore[arg-type]


def _wire(value: Any, variant_type: ua.VariantType | None = None) -> ua.Variant:
    """A Variant as asyncua decodes it from an EventFieldList."""
    return variant_from_binary(Buffer(variant_to_binary(ua.Variant(value, variant_type))))


def _event(
    *fields: Any,
    event_type: ua.NodeId = ALARM_CONDITION_TYPE,
    source: ua.NodeId = PRESS1,
    moment: Any = T_2024,
) -> list[ua.Variant]:
    """An EventFieldList: the configured fields, then EventType, SourceNode and Time
    (a Null Variant for a field the event does not have)."""
    hidden = [_wire(event_type, ua.VariantType.NodeId), _wire(source, ua.VariantType.NodeId)]
    time_field = _wire(moment, ua.VariantType.DateTime) if moment is not None else _wire(None)
    return [_wire(value) for value in fields] + hidden + [time_field]


def _paths(event_filter: ua.EventFilter) -> list[list[tuple[int, str]]]:
    return [[(q.NamespaceIndex, q.Name) for q in clause.BrowsePath] for clause in event_filter.SelectClauses]


# -- select clauses -------------------------------------------------------------------


def test_the_configured_fields_come_first_and_the_hidden_ones_last() -> None:
    assert _paths(_selection().event_filter()) == [
        [(0, "EventType")],
        [(0, "SourceName")],
        [(0, "Time")],
        [(0, "Severity")],
        [(0, "Message")],
        [(0, "EventType")],
        [(0, "SourceNode")],
        [(0, "Time")],
    ]


def test_every_clause_reads_the_value_of_a_base_event_type_path() -> None:
    for clause in _selection(fields=["Severity", "ActiveState/Id"]).event_filter().SelectClauses:
        assert clause.TypeDefinitionId == BASE_EVENT_TYPE
        assert clause.AttributeId == ua.AttributeIds.Value
        assert not clause.IndexRange


def test_vendor_fields_carry_the_namespace_index_of_this_session() -> None:
    selection = _selection(fields=["{urn:acme:press}Pressure/Value", "Severity/{urn:edgeseal:server}Raw"])
    assert _paths(selection.event_filter())[:2] == [[(ACME, "Pressure"), (0, "Value")], [(0, "Severity"), (1, "Raw")]]


def test_the_indexes_follow_the_server_namespace_array() -> None:
    moved = StubSession(["http://opcfoundation.org/UA/", "urn:acme:press"])
    selection = EventSelection(_group(fields=["{urn:acme:press}Pressure"]), moved, [])  # type: ignore[arg-type]
    assert _paths(selection.event_filter())[0] == [(1, "Pressure")]


def test_a_field_in_a_namespace_the_server_lacks_is_unknown() -> None:
    with pytest.raises(UnknownNamespace, match="urn:other"):
        _selection(fields=["{urn:other}Pressure"])


def test_a_source_in_a_namespace_the_server_lacks_is_unknown() -> None:
    with pytest.raises(UnknownNamespace, match="urn:other"):
        _selection(sources=["nsu=urn:other;s=Press1"])


def test_alarms_select_the_condition_fields_once() -> None:
    selection = _selection(alarms=True, fields=["Severity", "Retain"])
    assert selection.fields == ["Severity", "Retain", "ConditionName", "ActiveState/Id", "AckedState/Id"]
    assert set(CONDITION_FIELDS) <= set(selection.fields)
    assert _paths(selection.event_filter())[:5] == [
        [(0, "Severity")],
        [(0, "Retain")],
        [(0, "ConditionName")],
        [(0, "ActiveState"), (0, "Id")],
        [(0, "AckedState"), (0, "Id")],
    ]
    assert len(selection.event_filter().SelectClauses) == 8


# -- where clause ---------------------------------------------------------------------


def test_without_subtypes_there_is_no_where_clause() -> None:
    assert _selection().event_filter().WhereClause.Elements == []


def test_subtypes_are_kept_by_an_in_list_of_the_event_type() -> None:
    subtypes = [ALARM_CONDITION_TYPE, ua.NodeId(ua.ObjectIds.LimitAlarmType), ua.NodeId(7001, ACME)]
    [element] = _selection(subtypes, event_type="i=2915").event_filter().WhereClause.Elements
    assert element.FilterOperator == ua.FilterOperator.InList
    event_type, *listed = element.FilterOperands
    assert isinstance(event_type, ua.SimpleAttributeOperand)
    assert event_type.TypeDefinitionId == BASE_EVENT_TYPE
    assert [(q.NamespaceIndex, q.Name) for q in event_type.BrowsePath] == [(0, "EventType")]
    assert event_type.AttributeId == ua.AttributeIds.Value
    assert all(isinstance(operand, ua.LiteralOperand) for operand in listed)
    assert [operand.Value.Value for operand in listed] == subtypes
    assert {operand.Value.VariantType for operand in listed} == {ua.VariantType.NodeId}


# -- building -------------------------------------------------------------------------


@dataclass
class _Child:
    nodeid: ua.NodeId


class _TypeTree:
    """A server's HasSubtype references, as `session.client.get_node(n).get_children(refs=...)`."""

    def __init__(self, children: dict[ua.NodeId, list[ua.NodeId]]) -> None:
        self.children = children
        self.asked: list[tuple[ua.NodeId, int]] = []

    def get_node(self, node: ua.NodeId) -> _TypeTree._Node:
        return _TypeTree._Node(self, node)

    @dataclass
    class _Node:
        tree: _TypeTree
        node: ua.NodeId

        async def get_children(self, refs: int) -> list[_Child]:
            self.tree.asked.append((self.node, refs))
            return [_Child(child) for child in self.tree.children.get(self.node, [])]


class _BrowsingSession(StubSession):
    def __init__(self, tree: _TypeTree, missing: tuple[ua.NodeId, ...] = ()) -> None:
        super().__init__()
        self.client = tree
        self.missing = missing

    async def exists(self, node: ua.NodeId) -> bool:
        return node not in self.missing


def test_all_event_types_need_no_browsing() -> None:
    tree = _TypeTree({})
    selection = asyncio.run(EventSelection.build(_group(), _BrowsingSession(tree)))  # type: ignore[arg-type]
    assert (tree.asked, selection.event_filter().WhereClause.Elements) == ([], [])


def test_the_where_clause_lists_the_type_and_its_subtypes_breadth_first() -> None:
    a, b, c, d = (ua.NodeId(n, ACME) for n in (1, 2, 3, 4))
    tree = _TypeTree({ALARM_CONDITION_TYPE: [a, b], a: [c], b: [d]})
    selection = asyncio.run(EventSelection.build(_group(event_type="i=2915"), _BrowsingSession(tree)))  # type: ignore[arg-type]
    [element] = selection.event_filter().WhereClause.Elements
    assert [operand.Value.Value for operand in element.FilterOperands[1:]] == [ALARM_CONDITION_TYPE, a, b, c, d]
    assert {refs for _, refs in tree.asked} == {ua.ObjectIds.HasSubtype}


def test_no_subtype_of_the_configured_type_is_filtered_out() -> None:
    """A server with many alarm types: whatever the where clause looks like, it must not
    silently drop the events of subtypes beyond a cap (nothing else filters by type)."""
    children = [ua.NodeId(n, ACME) for n in range(1000, 1400)]
    grandchildren = [ua.NodeId(f"{child.Identifier}.Sub", ACME) for child in children]
    tree = _TypeTree({ALARM_CONDITION_TYPE: children, **{c: [g] for c, g in zip(children, grandchildren)}})
    subtypes = children + grandchildren
    selection = asyncio.run(EventSelection.build(_group(event_type="i=2915"), _BrowsingSession(tree)))  # type: ignore[arg-type]
    elements = selection.event_filter().WhereClause.Elements
    listed = {operand.Value.Value for element in elements for operand in element.FilterOperands[1:]}
    missing = {ALARM_CONDITION_TYPE, *subtypes} - listed if elements else set()
    assert not missing, f"the events of {len(missing)} of {len(subtypes) + 1} types would never arrive"


# -- readings -------------------------------------------------------------------------


def test_an_event_is_a_map_of_its_fields_at_its_time() -> None:
    selection = _selection(fields=["Severity", "Message", "SourceName"])
    values = _event(
        ua.Variant(700, ua.VariantType.UInt16), ua.LocalizedText("Overpressure", "en"), "Press1", source=PRESS1
    )
    assert selection.reading(values) == (
        T_2024_NS,
        {"Severity": 700, "Message": "Overpressure", "SourceName": "Press1"},
    )


def test_the_hidden_fields_are_not_in_the_map() -> None:
    _, event = _selection(fields=["Severity"]).reading(_event(ua.Variant(1, ua.VariantType.UInt16)))
    assert event == {"Severity": 1}


def test_condition_fields_of_an_alarm_are_in_the_map() -> None:
    selection = _selection(alarms=True, fields=["Severity"])
    values = _event(ua.Variant(900, ua.VariantType.UInt16), "HighPressure", True, False, True)
    _, event = selection.reading(values)
    assert event == {
        "Severity": 900,
        "ConditionName": "HighPressure",
        "ActiveState/Id": True,
        "AckedState/Id": False,
        "Retain": True,
    }


@pytest.mark.parametrize("marker", [ua.ObjectIds.RefreshStartEventType, ua.ObjectIds.RefreshEndEventType])
def test_condition_refresh_markers_are_skipped(marker: int) -> None:
    ts, event = _selection(alarms=True).reading(_event(*[None] * 9, event_type=ua.NodeId(marker)))
    assert (ts, event) == (T_2024_NS, None)


def test_a_vendor_event_type_numbered_like_a_marker_is_kept() -> None:
    _, event = _selection(fields=["Severity"]).reading(_event(None, event_type=ua.NodeId(2787, ACME)))
    assert event == {"Severity": None}


def test_only_the_listed_sources_are_kept() -> None:
    selection = _selection(fields=["Severity"], sources=["nsu=urn:acme:press;s=Press1", "ns=2;i=7"])
    assert selection.reading(_event(ua.Variant(1, ua.VariantType.UInt16), source=PRESS1))[1] == {"Severity": 1}
    assert selection.reading(_event(ua.Variant(2, ua.VariantType.UInt16), source=ua.NodeId(7, ACME)))[1] == {
        "Severity": 2
    }
    assert selection.reading(_event(ua.Variant(3, ua.VariantType.UInt16), source=ua.NodeId("Press2", ACME))) == (
        T_2024_NS,
        None,
    )
    assert selection.reading(_event(ua.Variant(4, ua.VariantType.UInt16), source=ua.NodeId(7, 1)))[1] is None


def test_without_sources_every_source_is_kept() -> None:
    _, event = _selection(fields=["Severity"]).reading(_event(ua.Variant(5, ua.VariantType.UInt16), source=ua.NodeId()))
    assert event == {"Severity": 5}


def test_a_field_value_without_a_reading_value_is_null() -> None:
    _, event = _selection(fields=["Severity", "{urn:acme:press}Recipe"]).reading(
        _event(ua.Variant(1, ua.VariantType.UInt16), UNKNOWN_STRUCTURE)
    )
    assert event == {"Severity": 1, "{urn:acme:press}Recipe": None}


def test_a_field_the_event_does_not_have_is_null() -> None:
    _, event = _selection(fields=["Severity", "ActiveState/Id"]).reading(
        _event(ua.Variant(1, ua.VariantType.UInt16), None)
    )
    assert event == {"Severity": 1, "ActiveState/Id": None}


@pytest.mark.parametrize("moment", [None, datetime(1601, 1, 1, tzinfo=UTC)], ids=["missing", "MinDateTime"])
def test_an_event_without_a_time_is_stamped_when_it_arrived(moment: datetime | None) -> None:
    before = time.time_ns()
    ts, event = _selection(fields=["Severity"]).reading(_event(ua.Variant(1, ua.VariantType.UInt16), moment=moment))
    assert before <= ts <= time.time_ns()
    assert event == {"Severity": 1}


def test_an_event_at_the_epoch_keeps_its_time() -> None:
    ts, _ = _selection(fields=["Severity"]).reading(_event(None, moment=datetime(1970, 1, 1, tzinfo=UTC)))
    assert ts == 0


def test_plain_python_values_are_read_like_variants() -> None:
    selection = _selection(fields=["Severity"])
    ts, event = selection.reading([500, ALARM_CONDITION_TYPE, PRESS1, T_2024])
    assert (ts, event) == (T_2024_NS, {"Severity": 500})


def test_an_event_type_the_server_lacks_is_refused_not_awaited() -> None:
    missing = ua.NodeId(99, ACME)
    session = _BrowsingSession(_TypeTree({}), missing=(missing,))
    group = _group(event_type="nsu=urn:acme:press;i=99")
    with pytest.raises(UnknownEventType):
        asyncio.run(EventSelection.build(group, session))  # type: ignore[arg-type]
