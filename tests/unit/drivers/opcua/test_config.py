"""The OPC UA source model (drivers/opcua/config.py): the defaults the driver gets, and
which rule refuses what, at which field. The messages as an operator reads them, with
file:line:col, are checked by the configuration cases (tests/config/cases/opcua-*)."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from pydantic import ValidationError

from drivers.config_types import FINDINGS
from drivers.opcua.config import (
    CONDITION_FIELDS,
    DEFAULT_EVENT_FIELDS,
    EventGroup,
    FieldPath,
    SourceConfig,
    parse_field_path,
)
from drivers.opcua.nodeid import NodeRef

TAG = {"name": "press1.force", "node": "nsu=urn:acme:press;s=Press1.Force"}


def _source(**fields: Any) -> SourceConfig:
    data = {"name": "press", "type": "opcua", "url": "opc.tcp://plc:4840", **fields}
    if "groups" not in fields and "events" not in fields:
        data["groups"] = [{"mode": "subscribe", "tags": [TAG]}]
    return SourceConfig.model_validate(data)


def _subscribe(**fields: Any) -> Any:
    return _source(groups=[{"mode": "subscribe", "tags": [TAG], **fields}]).groups[0]


def _events(**fields: Any) -> EventGroup:
    return _source(events=[{"name": "press.alarms", **fields}]).events[0]


def _problems(**fields: Any) -> list[tuple[tuple[str | int, ...], str]]:
    """Each problem at its full field path, findings spread to the field they blame."""
    with pytest.raises(ValidationError) as caught:
        _source(**fields)
    found = []
    for error in caught.value.errors():
        if error["type"] == FINDINGS:
            found += [(error["loc"] + sub, message) for sub, message in error["ctx"]["findings"]]
        else:
            found.append((error["loc"], error["msg"]))
    return found


def _paths(**fields: Any) -> list[tuple[str | int, ...]]:
    return [path for path, _ in _problems(**fields)]


# -- security and user ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("security", "mode"),
    [
        ({}, "None"),
        ({"policy": "None"}, "None"),
        ({"policy": "None", "mode": "None"}, "None"),
        ({"policy": "Basic256Sha256"}, "SignAndEncrypt"),
        ({"policy": "Aes128_Sha256_RsaOaep"}, "SignAndEncrypt"),
        ({"policy": "Aes256_Sha256_RsaPss", "mode": "Sign"}, "Sign"),
        ({"policy": "Basic256Sha256", "mode": "SignAndEncrypt"}, "SignAndEncrypt"),
    ],
)
def test_the_message_mode_defaults_by_policy(security: dict[str, str], mode: str) -> None:
    assert _source(security=security).security.message_mode() == mode


@pytest.mark.parametrize(
    ("security", "message"),
    [
        ({"mode": "Sign"}, "expected mode None with policy None, found Sign"),
        ({"policy": "None", "mode": "SignAndEncrypt"}, "expected mode None with policy None, found SignAndEncrypt"),
        (
            {"policy": "Basic256Sha256", "mode": "None"},
            "expected Sign or SignAndEncrypt with policy Basic256Sha256, found None",
        ),
    ],
)
def test_a_mode_that_does_not_fit_the_policy_is_blamed_on_the_mode(security: dict[str, str], message: str) -> None:
    assert _problems(security=security) == [(("security", "mode"), message)]


def test_the_application_uri_defaults_to_the_host_name() -> None:
    assert _source().app_uri() == f"urn:edgeseal:{socket.gethostname()}"
    assert _source(security={"application_uri": "urn:acme:gw-1"}).app_uri() == "urn:acme:gw-1"


@pytest.mark.parametrize("source", [{"password_env": "PLC_PASSWORD"}, {"password_secret": "plc.password"}])
def test_a_user_has_exactly_one_password_source(source: dict[str, str]) -> None:
    auth = _source(auth={"username": "operator", **source}).auth
    assert auth is not None
    assert (auth.password_env, auth.password_secret) == (source.get("password_env"), source.get("password_secret"))


@pytest.mark.parametrize(
    ("auth", "found"),
    [
        ({"username": "operator"}, "neither"),
        ({"username": "operator", "password_env": "PLC_PASSWORD", "password_secret": "plc"}, "both"),
    ],
)
def test_no_or_two_password_sources_are_refused(auth: dict[str, str], found: str) -> None:
    assert _problems(auth=auth) == [(("auth",), f"expected one of password_env or password_secret, found {found}")]


def test_anonymous_is_the_default() -> None:
    assert _source().auth is None


# -- groups ---------------------------------------------------------------------------


def test_subscription_defaults_sample_at_the_publishing_interval_with_one_slot() -> None:
    group = _subscribe()
    assert (group.publishing_interval, group.sampling(), group.queue(), group.deadband) == (1.0, 1.0, 1, None)


@pytest.mark.parametrize(
    ("publishing", "sampling", "queue"),
    [
        ("1s", "100ms", 10),
        ("1s", "300ms", 4),
        ("1s", "1s", 1),
        ("500ms", "2s", 1),
        ("2s", None, 1),
        ("700ms", "100ms", 7),
        ("1100ms", "100ms", 11),
        ("70ms", "10ms", 7),
        ("270ms", "30ms", 9),
        ("1m", "1s", 60),
    ],
)
def test_the_queue_holds_every_sample_of_one_publishing_interval(
    publishing: str, sampling: str | None, queue: int
) -> None:
    """ceil(publishing / sampling) of the durations as written: 70ms / 10ms is 7, though
    0.07 / 0.01 in floats is 7.000000000000001."""
    fields = {"publishing_interval": publishing} | ({"sampling_interval": sampling} if sampling else {})
    assert _subscribe(**fields).queue() == queue


def test_a_configured_sampling_interval_and_queue_size_win() -> None:
    group = _subscribe(publishing_interval="1s", sampling_interval="250ms", queue_size=2)
    assert (group.sampling(), group.queue()) == (0.25, 2)


def test_tags_give_their_node_refs() -> None:
    group = _source(
        groups=[
            {
                "mode": "poll",
                "interval": "5s",
                "tags": [TAG, {"name": "count", "node": "ns=3;i=5001"}],
            }
        ]
    ).groups[0]
    assert group.interval == 5.0
    assert [tag.ref() for tag in group.tags] == [
        NodeRef("urn:acme:press", "s", "Press1.Force"),
        NodeRef(3, "i", 5001),
    ]


@pytest.mark.parametrize("deadband", [{"type": "percent", "value": 100}, {"type": "absolute", "value": 1e6}])
def test_deadbands_within_their_range_are_kept(deadband: dict[str, Any]) -> None:
    group = _subscribe(deadband=deadband)
    assert group.deadband is not None
    assert (group.deadband.type, group.deadband.value) == (deadband["type"], deadband["value"])


def test_a_percent_deadband_above_100_is_refused_at_its_value() -> None:
    assert _problems(
        groups=[{"mode": "subscribe", "deadband": {"type": "percent", "value": 100.5}, "tags": [TAG]}]
    ) == [(("groups", 0, "subscribe", "deadband", "value"), "expected a percentage 0..100, found 100.5")]


def test_a_deadband_in_a_poll_group_is_refused_at_each_tag() -> None:
    tags = [TAG, {"name": "b", "node": "i=1", "deadband": {"type": "absolute", "value": 1}}]
    tags.append({"name": "c", "node": "i=2", "deadband": {"type": "percent", "value": 5}})
    assert _problems(groups=[{"mode": "poll", "tags": tags}]) == [
        (
            ("groups", 0, "poll", "tags", i, "deadband"),
            "expected no deadband in a poll group (a deadband filters subscriptions)",
        )
        for i in (1, 2)
    ]


def test_a_source_without_groups_or_events_is_refused() -> None:
    assert _problems(groups=[], events=[]) == [((), "expected at least one entry in groups or events, found neither")]


def test_events_alone_are_enough() -> None:
    assert _source(events=[{"name": "server.events"}]).groups == []


# -- connection -----------------------------------------------------------------------


def test_connection_defaults() -> None:
    source = _source()
    timings = (source.timeout, source.session_timeout, source.check_interval)
    assert timings + (source.reconnect_delay, source.reconnect_delay_max) == (5.0, 60.0, 5.0, 1.0, 60.0)


def test_the_longest_reconnect_delay_may_equal_the_first() -> None:
    assert _source(reconnect_delay="2s", reconnect_delay_max="2s").reconnect_delay_max == 2.0


def test_a_longest_reconnect_delay_below_the_first_is_refused() -> None:
    assert _problems(reconnect_delay="10s", reconnect_delay_max="2500ms") == [
        (("reconnect_delay_max",), "expected a duration >= reconnect_delay (10s), found 2.5s")
    ]


@pytest.mark.parametrize(
    "url",
    [
        "opc.tcp://plc:4840",
        "opc.tcp://plc.plant.local:4840/UA/Server",
        "opc.tcp://10.0.0.5:4840",
        "opc.tcp://[fd00::5]:48010",
        "opc.tcp://plc",
        "opc.tcp://plc:65535/",
    ],
)
def test_endpoint_urls(url: str) -> None:
    assert _source(url=url).url == url


@pytest.mark.parametrize(
    "url",
    ["http://plc:4840", "opc.tcp://", "plc:4840", "opc.tcp://plc:4840 ", "opc.tcp://user@plc:4840", "opc.tcp://plc:"],
)
def test_what_is_not_an_endpoint_url_is_refused(url: str) -> None:
    assert _paths(url=url) == [("url",)]


@pytest.mark.parametrize("url", ["opc.tcp://plc:65536", "opc.tcp://plc:99999/path"])
def test_a_port_beyond_65535_is_refused(url: str) -> None:
    """check-config must catch what the first connect would fail on."""
    assert _paths(url=url) == [("url",)]


def test_node_ids_are_checked_where_they_are_written() -> None:
    problems = _problems(
        groups=[{"mode": "subscribe", "tags": [TAG, {"name": "b", "node": "ns=70000;i=1"}]}],
        events=[{"name": "ev", "notifier": "garbage", "event_type": "i=x", "sources": ["i=1", "g=1"]}],
    )
    assert problems == [
        (("groups", 0, "subscribe", "tags", 1, "node"), "expected a namespace index 0..65535"),
        (("events", 0, "notifier"), "expected a node id like ns=2;s=Line1.Speed, nsu=urn:plant:line;i=1001 or i=2253"),
        (("events", 0, "event_type"), "expected a numeric identifier 0..4294967295 after i="),
        (("events", 0, "sources", 1), "expected a GUID like 09087e75-8e5e-499b-954f-f2a9603db28a after g="),
    ]


@pytest.mark.parametrize("field", [{"queue_size": "5"}, {"publishing_interval": True}, {"unknown": 1}])
def test_values_are_not_converted_and_unknown_keys_are_errors(field: dict[str, Any]) -> None:
    assert len(_paths(groups=[{"mode": "subscribe", "tags": [TAG], **field}])) == 1


# -- events ---------------------------------------------------------------------------


def test_event_group_defaults_take_every_event_of_the_server() -> None:
    group = _events()
    assert group.notifier_ref() == NodeRef(0, "i", 2253)
    assert group.type_ref() == NodeRef(0, "i", 2041)
    assert (group.source_refs(), group.alarms, group.publishing_interval, group.queue_size) == ([], False, 1.0, 1000)
    assert [path.text for path in group.field_paths()] == list(DEFAULT_EVENT_FIELDS)


def test_event_group_refs() -> None:
    group = _events(notifier="nsu=urn:acme:press;s=PressLine", event_type="i=2915", sources=["ns=2;i=7"])
    assert group.notifier_ref() == NodeRef("urn:acme:press", "s", "PressLine")
    assert group.type_ref() == NodeRef(0, "i", 2915)
    assert group.source_refs() == [NodeRef(2, "i", 7)]


def test_alarms_add_the_condition_fields_after_the_configured_ones() -> None:
    group = _events(alarms=True, fields=["Time", "Severity"])
    assert [path.text for path in group.field_paths()] == ["Time", "Severity", *CONDITION_FIELDS]


def test_condition_fields_already_configured_are_read_once() -> None:
    group = _events(alarms=True, fields=["Retain", "Severity", "ActiveState/Id", "Severity"])
    texts = [path.text for path in group.field_paths()]
    assert texts == ["Retain", "Severity", "ActiveState/Id", "ConditionName", "AckedState/Id"]


def test_without_alarms_the_fields_are_those_configured() -> None:
    assert [path.text for path in _events(fields=["Message"]).field_paths()] == ["Message"]


@pytest.mark.parametrize(
    ("text", "steps"),
    [
        ("Severity", ((None, "Severity"),)),
        ("ActiveState/Id", ((None, "ActiveState"), (None, "Id"))),
        ("{urn:acme:press}Pressure", (("urn:acme:press", "Pressure"),)),
        ("{urn:acme:press}Name/Sub", (("urn:acme:press", "Name"), (None, "Sub"))),
        ("Name/{urn:acme:press}Sub", ((None, "Name"), ("urn:acme:press", "Sub"))),
        (
            "{http://acme.com/UA/}Tool/{http://acme.com/UA/}Id",
            (("http://acme.com/UA/", "Tool"), ("http://acme.com/UA/", "Id")),
        ),
    ],
)
def test_field_paths_are_browse_paths_with_their_namespace_uris(text: str, steps: tuple[Any, ...]) -> None:
    assert parse_field_path(text) == FieldPath(text, steps)
    assert _events(fields=[text]).field_paths() == [FieldPath(text, steps)]


@pytest.mark.parametrize(
    "field", ["Active State", "ActiveState//Id", "/Severity", "Severity/", "{urn:acme}", "{}Pressure", "{urn:a{b}X"]
)
def test_a_field_that_is_not_a_browse_path_is_refused(field: str) -> None:
    assert _paths(events=[{"name": "ev", "fields": ["Severity", field]}]) == [("events", 0, "fields", 1)]


# -- tag names ------------------------------------------------------------------------


def test_tag_names_name_the_field_to_blame_for_a_duplicate() -> None:
    source = _source(
        groups=[
            {"mode": "subscribe", "tags": [TAG, {"name": "b", "node": "i=1"}]},
            {"mode": "poll", "tags": [{"name": "c", "node": "i=2"}]},
        ],
        events=[{"name": "press.alarms"}, {"name": "press.events"}],
    )
    assert list(source.tag_names()) == [
        (("groups", 0, "tags", 0, "name"), "press1.force"),
        (("groups", 0, "tags", 1, "name"), "b"),
        (("groups", 1, "tags", 0, "name"), "c"),
        (("events", 0, "name"), "press.alarms"),
        (("events", 1, "name"), "press.events"),
    ]
