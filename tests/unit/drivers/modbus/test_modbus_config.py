"""The Modbus source model: what the driver gets from it. Messages at file:line:col are
checked by the configuration cases (tests/config/cases/modbus-*)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from drivers.modbus.config import SourceConfig
from drivers.modbus.endpoint import Endpoint, parse_url
from drivers.modbus.points import Point, Table

HOLDING = Table.HOLDING_REGISTERS


def _source(*tags: dict[str, Any], url: str = "tcp://10.0.0.5", **device: Any) -> SourceConfig:
    return SourceConfig.model_validate(
        {"name": "plc", "type": "modbus", "url": url, "devices": [{"tags": list(tags), **device}]}
    )


def _points(*tags: dict[str, Any], **device: Any) -> list[Point]:
    [group] = _source(*tags, **device).poll_groups()
    return list(group.points)


def test_every_address_form_gives_the_same_zero_based_point() -> None:
    forms = [{"address": 40011}, {"address": 400011}, {"address": "4x0011"}, {"table": "holding", "address": 10}]
    points = _points(*({"name": f"t{i}", "type": "float32", **form} for i, form in enumerate(forms)))
    assert {(p.table, p.address, p.width) for p in points} == {(HOLDING, 10, 2)}


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ({"address": 40001}, ("uint16", 1, None)),
        ({"address": 40001, "bit": 3}, ("bool", 1, 3)),
        ({"address": "00001"}, ("bool", 1, None)),
        ({"address": 10001, "count": 16}, ("bool", 16, None)),
        ({"address": 40001, "type": "float64", "count": 3}, ("float64", 12, None)),
        ({"address": 40001, "type": "string", "length": 10}, ("string", 10, None)),
        ({"address": 40001, "bit": 4, "count": 12}, ("bool", 1, 4)),
    ],
)
def test_types_default_by_table_and_widths_follow_them(tag: dict[str, Any], expected: tuple[Any, ...]) -> None:
    [point] = _points({"name": "t", **tag})
    assert (point.value_type, point.width, point.bit) == expected


def test_device_defaults_reach_the_points_unless_a_tag_overrides_them() -> None:
    tags = [
        {"name": "a", "address": 40001, "type": "float32"},
        {"name": "b", "address": 40003, "type": "float32", "order": "ABCD"},
        {"name": "s", "address": 40005, "type": "string", "length": 2},
        {"name": "r", "address": 40007, "type": "string", "length": 2, "swap_string_bytes": False},
    ]
    points = _points(*tags, order="CDAB", swap_string_bytes=True)
    assert [p.order for p in points[:2]] == ["CDAB", "ABCD"]
    assert [p.swap_string_bytes for p in points[2:]] == [True, False]


def test_tags_of_a_device_with_one_interval_form_a_poll_group() -> None:
    source = SourceConfig.model_validate(
        {
            "name": "plc",
            "type": "modbus",
            "url": "tcp://10.0.0.5",
            "interval": "2s",
            "devices": [
                {
                    "unit": 3,
                    "request_pause": "20ms",
                    "max_gap": 7,
                    "tags": [
                        {"name": "a", "address": 40001},
                        {"name": "fast", "address": 40002, "interval": "100ms"},
                        {"name": "b", "address": 40003},
                    ],
                },
                {"unit": 4, "coils_from_zero": True, "tags": [{"name": "c", "address": "00010"}]},
            ],
        }
    )
    groups = source.poll_groups()
    assert [(g.unit, g.interval, [p.tag for p in g.points]) for g in groups] == [
        (3, 2.0, ["a", "b"]),
        (3, 0.1, ["fast"]),
        (4, 2.0, ["c"]),
    ]
    assert (groups[0].request_pause, groups[0].max_gap, groups[2].request_pause) == (0.02, 7, 0.0)
    assert [(r.table, r.start, r.count) for r in groups[2].requests()] == [(Table.COILS, 0, 10)]
    assert [(r.start, r.count) for r in groups[0].requests()] == [(0, 3)]


def test_tag_names_name_the_field_to_blame() -> None:
    source = _source({"name": "a", "address": 40001}, {"name": "b", "address": 40002})
    assert list(source.tag_names()) == [
        (("devices", 0, "tags", 0, "name"), "a"),
        (("devices", 0, "tags", 1, "name"), "b"),
    ]


@pytest.mark.parametrize(
    ("serial", "frame_pause", "byte_timeout"),
    [
        ({}, 3.5 * 11 / 9600, 1.5 * 11 / 9600),  # 8E1: start, 8 data, parity, stop
        ({"parity": "none"}, 3.5 * 11 / 9600, 1.5 * 11 / 9600),  # 8N2: no parity, two stop bits
        ({"parity": "none", "stopbits": 1}, 3.5 * 10 / 9600, 1.5 * 10 / 9600),
        ({"baudrate": 38400}, 0.00175, 0.00075),  # fixed above 19200 baud
        ({"byte_timeout": "3ms"}, 3.5 * 11 / 9600, 0.003),
    ],
)
def test_serial_timings(serial: dict[str, Any], frame_pause: float, byte_timeout: float) -> None:
    source = _source({"name": "t", "address": 40001}, url="rtu:///dev/ttyUSB0")
    source = SourceConfig.model_validate({**source.model_dump(), "serial": serial})  # a dump validates again
    assert source.frame_pause() == pytest.approx(frame_pause)
    assert source.serial_line().inter_byte_timeout() == pytest.approx(byte_timeout)


def test_frame_delay_is_none_over_tcp_unless_set() -> None:
    assert _source({"name": "t", "address": 40001}).frame_pause() == 0.0
    source = SourceConfig.model_validate(
        {
            "name": "p",
            "type": "modbus",
            "url": "tcp://x",
            "frame_delay": "5ms",
            "devices": [{"tags": [{"name": "t", "address": 40001}]}],
        }
    )
    assert source.frame_pause() == 0.005


@pytest.mark.parametrize(
    ("url", "endpoint"),
    [
        ("tcp://10.0.0.5", Endpoint("tcp", "10.0.0.5", 502)),
        ("tcp://plc-7:1502", Endpoint("tcp", "plc-7", 1502)),
        ("tcp://[fd00::5]:502", Endpoint("tcp", "fd00::5", 502)),
        ("rtu-over-tcp://10.0.0.9:4001", Endpoint("rtu-over-tcp", "10.0.0.9", 4001)),
        ("rtu:///dev/ttyUSB0", Endpoint("rtu", path="/dev/ttyUSB0")),
    ],
)
def test_urls(url: str, endpoint: Endpoint) -> None:
    assert parse_url(url) == endpoint


@pytest.mark.parametrize(
    "url",
    [
        "10.0.0.5",
        "udp://x",
        "tcp://",
        "tcp://x:0",
        "tcp://x:70000",
        "tcp://x/path",
        "tcp://u@x",
        "rtu-over-tcp://x",
        "rtu://ttyUSB0",
    ],
)
def test_bad_urls(url: str) -> None:
    with pytest.raises(ValueError):
        parse_url(url)


@pytest.mark.parametrize(
    ("url", "unit", "valid"),
    [
        ("tcp://x", 0, True),
        ("tcp://x", 255, True),
        ("tcp://x", 248, False),
        ("rtu:///dev/ttyS0", 0, False),
        ("rtu:///dev/ttyS0", 247, True),
        ("rtu-over-tcp://x:4001", 0, False),
    ],
)
def test_unit_ranges_depend_on_the_connection(url: str, unit: int, valid: bool) -> None:
    if valid:
        _source({"name": "t", "address": 40001}, url=url, unit=unit)
    else:
        with pytest.raises(ValidationError, match="expected a unit"):
            _source({"name": "t", "address": 40001}, url=url, unit=unit)


@pytest.mark.parametrize(
    ("tag", "message"),
    [
        ({"address": 40001, "type": "bool"}, "expected a bit number 0..15 for a bool in a register"),
        ({"address": "00001", "bit": 1}, "expected no bit for a coil"),
        ({"address": 40001, "type": "int16", "bit": 1}, "expected bit only with type bool"),
        ({"address": 40001, "bit": 10, "count": 7}, "expected at most 6 bools from bit 10"),
        ({"address": 40001, "type": "string"}, "expected the length of the string in registers"),
        ({"address": 40001, "type": "string", "length": 2, "count": 2}, "expected no count with type string"),
        ({"address": 40001, "encoding": "utf-8"}, "expected no encoding with type uint16"),
        ({"address": 40001, "type": "bool", "bit": 0, "scale": 2.0}, "expected no scale with type bool"),
        ({"address": 10001, "type": "int16"}, "expected bool for a discrete input"),
        ({"address": 465535, "type": "float64"}, "expected the tag to end within its table"),
        ({"address": 40001, "type": "string", "length": 126}, "expected at most 125 registers per tag"),
        ({"address": 40001, "type": "string", "length": 2, "encoding": "rot13"}, "expected a text encoding"),
    ],
)
def test_inconsistent_tags_are_refused(tag: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _source({"name": "t", **tag})


def test_serial_settings_only_with_rtu() -> None:
    with pytest.raises(ValidationError, match="expected serial settings only with rtu://"):
        SourceConfig.model_validate(
            {
                "name": "p",
                "type": "modbus",
                "url": "tcp://x",
                "serial": {},
                "devices": [{"tags": [{"name": "t", "address": 40001}]}],
            }
        )
