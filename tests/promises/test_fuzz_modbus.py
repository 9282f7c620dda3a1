"""Promise (DESIGN 3.1 and 5, "a failed read yields a reading with a Bad quality"): for
any tag the configuration accepts and anything a device answers, the Modbus codec gives
each tag a value of its type that a reading leaf can hold, or no value and a Bad
quality, never an exception; and a value a device encodes in any byte order reads back
as itself (float byte-order confusion is a known field failure).

How: devices of random tags (every type, table, order, count, bit, string length and
every text encoding the configuration accepts, scale and offset) validated by the real
configuration models, planned into requests by the real planner, decoded by the codec
from random registers and bits, answers of the wrong size and registers out of range;
each decoded value is sealed with the real leaf encoder. The round trip places values
encoded as the test servers encode them (tests/modbus_servers.py) at the tags' addresses.
"""

from __future__ import annotations

import encodings.aliases
import math
import struct
from typing import Any

import pytest
from fuzz_bytes import RARELY
from fuzz_tally import FUZZ, Tally, figures
from hypothesis import example, given
from hypothesis import strategies as st
from modbus_servers import registers
from pydantic import ValidationError

from agent.trust.leaf import encode_leaf
from drivers.api import Quality, is_bad
from drivers.modbus.codec import compile_request
from drivers.modbus.config import SourceConfig
from drivers.modbus.points import ORDERS, REGISTERS_PER_TYPE, Request

TALLY = Tally()
print_figures = figures(TALLY)
DECODING, ROUND_TRIP = "Modbus value decoding", "Modbus round trip"
TS = 1_700_000_000_000_000_000
NUMERIC = sorted(REGISTERS_PER_TYPE)
PYTHON_TYPES = {"bool": bool, "string": str} | {t: float if t.startswith("float") else int for t in NUMERIC}


def _accepted_encoding(name: str) -> bool:
    """Whether the configuration takes `name` as a string tag's encoding."""
    tag = {"name": "t", "address": 40001, "type": "string", "length": 1, "encoding": name}
    try:
        _source([tag])
    except ValidationError:
        return False
    return True


def _source(tags: list[dict[str, Any]], **device: Any) -> SourceConfig:
    return SourceConfig.model_validate(
        {"name": "plc", "type": "modbus", "url": "tcp://10.0.0.1", "devices": [{"unit": 1, **device, "tags": tags}]}
    )


# Every encoding Python knows by name that the configuration takes (codecs that map text
# to text, like rot13, it refuses), and a few that only exist under their own name.
_NAMES = {*encodings.aliases.aliases, *encodings.aliases.aliases.values()}
_NAMES |= {"undefined", "unicode_escape", "raw_unicode_escape", "punycode", "idna", "utf-7", "utf-8-sig"}
ENCODINGS = sorted(name for name in _NAMES if _accepted_encoding(name))


# -- tags as the configuration allows them -------------------------------------------


REGISTER_TABLES = st.sampled_from(["holding", "input"])


@st.composite
def _bool_fields(draw: st.DrawFn) -> dict[str, Any]:
    """A coil or discrete input (or `count` of them), or bit `bit` (and up) of a register."""
    table = draw(st.sampled_from(["coil", "discrete", "holding", "input"]))
    if table in ("coil", "discrete"):
        return draw(st.fixed_dictionaries({"table": st.just(table)}, optional={"count": st.integers(1, 2000)}))
    bit = draw(st.integers(0, 15))
    fields = {"table": st.just(table), "bit": st.just(bit)}
    return draw(st.fixed_dictionaries(fields, optional={"count": st.integers(1, 16 - bit)}))


def _string_fields() -> st.SearchStrategy[dict[str, Any]]:
    fields = {"table": REGISTER_TABLES, "length": st.integers(1, 125), "encoding": st.sampled_from(ENCODINGS)}
    return st.fixed_dictionaries(fields, optional={"trim": st.booleans(), "swap_string_bytes": st.booleans()})


def _number_fields(value_type: str) -> st.SearchStrategy[dict[str, Any]]:
    numbers = st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from([0.1, -1.0, 1e308, 1e-308, 0.0])
    optional = {
        "count": st.integers(1, 125 // REGISTERS_PER_TYPE[value_type]),
        "order": st.sampled_from(ORDERS),
        "scale": numbers,
        "offset": numbers,
    }
    return st.fixed_dictionaries({"table": REGISTER_TABLES}, optional=optional)


@st.composite
def tag_configs(draw: st.DrawFn, name: str) -> dict[str, Any]:
    """One tag's configuration that the model accepts, of any type in any table."""
    value_type = draw(st.sampled_from(["bool", "string", *NUMERIC]))
    kinds = {"bool": _bool_fields(), "string": _string_fields()}
    fields = kinds[value_type] if value_type in kinds else _number_fields(value_type)
    tag = {"name": name, "type": value_type, **draw(fields)}
    tag["address"] = draw(st.integers(0, 65536 - _width(tag)))
    return tag


@st.composite
def devices(draw: st.DrawFn) -> SourceConfig:
    """A device of 1 to 8 tags, some sharing registers, read with random planner options."""
    tags = [draw(tag_configs(f"t{i}")) for i in range(draw(st.integers(1, 8)))]
    if draw(st.booleans()):  # crowd the tags into 200 addresses, so that requests hold several
        base = draw(st.integers(0, 65536 - 200))
        for tag in tags:
            if _width(tag) <= 200:
                tag["address"] = base + draw(st.integers(0, 200 - _width(tag)))
    options = st.fixed_dictionaries(
        {},
        optional={
            "order": st.sampled_from(ORDERS),
            "max_gap": st.integers(0, 60),
            "one_request_per_tag": st.booleans(),
            "swap_string_bytes": st.booleans(),
        },
    )
    return _source(tags, **draw(options))


def _width(tag: dict[str, Any]) -> int:
    """Registers (or bits) a tag's configuration spans."""
    if tag["type"] == "string":
        return tag["length"]
    if tag["type"] == "bool":
        return tag.get("count", 1) if tag["table"] in ("coil", "discrete") else 1
    return REGISTERS_PER_TYPE[tag["type"]] * tag.get("count", 1)


@st.composite
def answers(draw: st.DrawFn, request: Request) -> list[Any]:
    """What a device may answer: the right number of registers (or at least enough bits,
    padded to whole bytes as pymodbus does), sometimes too few or too many, sometimes a
    register outside 0..65535."""
    size = request.count + draw(st.sampled_from([0, 0, 0, 0, 0, -1, 1]))
    if request.table.is_bits:
        return draw(st.lists(st.booleans(), min_size=max(size, 0), max_size=max(size, 0) + 7))
    word = st.integers(0, 0xFFFF) | st.sampled_from([0x0000, 0xFFFF, 0x7FC0, 0x7F80, 0xFF80, 0x8000, 0x00FF])
    if draw(RARELY):
        word = word | st.sampled_from([-1, 0x10000, 2**40])
    return draw(st.lists(word, min_size=max(size, 0), max_size=max(size, 0)))


# -- the judgement --------------------------------------------------------------------


def assert_sealable(tag: str, value: Any, quality: int, value_type: str) -> None:
    """A Good reading has a value of the tag's type; a Bad one has none; a leaf holds it."""
    if is_bad(quality):
        assert value is None, (tag, value, quality)
    else:
        assert quality == Quality.GOOD, (tag, quality)
        for item in value if isinstance(value, list) else [value]:
            assert type(item) is value_type, (tag, item, value_type)
    encode_leaf(1, TS, tag, value, quality)


@FUZZ
@given(devices(), st.data())
def test_any_answer_decodes_to_sealable_values_or_bad_quality(source: SourceConfig, data: st.DataObject) -> None:
    for group in source.poll_groups():
        types = {p.tag: _python_type(p.value_type, p.scale, p.offset) for p in group.points}
        for request in group.requests():
            decode = compile_request(request)
            words = data.draw(answers(request))
            TALLY.judged(DECODING)
            decoded = decode(words)
            assert sorted(tag for tag, _, _ in decoded) == sorted(p.tag for p in request.points)
            for tag, value, quality in decoded:
                assert_sealable(tag, value, quality, types[tag])
            _tally(decoded)


STRINGS_OF_NO_TEXT = {
    "a lone surrogate in UTF-7": ("utf-7", b"+2AA-"),
    "a lone surrogate escaped": ("unicode_escape", b"\\ud800"),
    "an invalid punycode digit": ("punycode", b"a-\x7f"),
    "an unfinished IDNA label": ("idna", b"xn--zzzzzz"),
}


@pytest.mark.parametrize("case", STRINGS_OF_NO_TEXT)
def test_a_string_that_decodes_to_no_sealable_text_reads_bad_encoding_error(case: str) -> None:
    """Regressions: these raised UnicodeError (not UnicodeDecodeError) out of the codec,
    or gave text with lone surrogates, which no reading leaf can hold."""
    encoding, raw = STRINGS_OF_NO_TEXT[case]
    length = (len(raw) + 1) // 2
    source = _source([{"name": "t", "address": 40001, "type": "string", "length": length, "encoding": encoding}])
    [request] = source.poll_groups()[0].requests()
    words = list(struct.unpack(f">{length}H", raw.ljust(2 * length, b"\x00")))
    assert compile_request(request)(words) == [("t", None, Quality.BAD_ENCODING_ERROR)]


def test_the_undefined_codec_is_no_encoding() -> None:
    """Regression: the configuration took "undefined", a codec that decodes nothing, and
    every read of the tag raised UnicodeError."""
    assert not _accepted_encoding("undefined")
    assert _accepted_encoding("utf-16-be")


def _python_type(value_type: str, scale: float | None, offset: float | None) -> type:
    """The type of a Good value: a number scaled or offset is a float."""
    if scale is not None or offset is not None:
        return float
    return PYTHON_TYPES[value_type]


def _tally(decoded: list[tuple[str, Any, int]]) -> None:
    if any(is_bad(quality) for _, _, quality in decoded):
        TALLY.rejected(DECODING)
    else:
        TALLY.accepted(DECODING)


# -- the round trip ---------------------------------------------------------------------

# The types the test servers' encoder writes, with the values each holds.
ENCODED = {
    "int16": st.integers(-(2**15), 2**15 - 1),
    "uint16": st.integers(0, 2**16 - 1),
    "int32": st.integers(-(2**31), 2**31 - 1),
    "uint32": st.integers(0, 2**32 - 1),
    "float32": st.floats(width=32),
    "float64": st.floats(),
}


@st.composite
def placed_values(draw: st.DrawFn) -> tuple[SourceConfig, dict[str, Any], list[int]]:
    """Tags of random types and orders side by side in holding registers from a random
    address, the registers a device holds for random values of them, and the values."""
    start = draw(st.integers(0, 65536 - 125))
    tags, values, words = [], {}, []
    for i in range(draw(st.integers(1, 12))):
        value_type, order = draw(st.sampled_from(sorted(ENCODED))), draw(st.sampled_from(ORDERS))
        # `order` does not apply to 16-bit values (drivers/modbus/README.md): one register,
        # high byte first, whatever the tag says
        sent_as = order if REGISTERS_PER_TYPE[value_type] > 1 else "ABCD"
        encoded = registers(value_type, value := draw(ENCODED[value_type]), sent_as)
        if len(words) + len(encoded) > 125:
            break
        tags.append(
            {"name": f"t{i}", "table": "holding", "address": start + len(words), "type": value_type, "order": order}
        )
        values[f"t{i}"] = value
        words += encoded
    return _source(tags), values, [0] * start + words


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b) and struct.pack(">d", a) == struct.pack(">d", b)
    return type(a) is type(b) and a == b


@FUZZ
@given(placed_values())
@example(
    (
        _source([{"name": "t0", "table": "holding", "address": 0, "type": "float32", "order": "CDAB"}]),
        {"t0": 123.456},
        [0xE979, 0x42F6],
    )
)
def test_every_order_reads_back_what_a_device_encodes(case: tuple[SourceConfig, dict[str, Any], list[int]]) -> None:
    source, values, memory = case
    decoded: dict[str, Any] = {}
    for group in source.poll_groups():
        for request in group.requests():
            TALLY.judged(ROUND_TRIP)
            for tag, value, quality in compile_request(request)(memory[request.start : request.end]):
                assert quality == Quality.GOOD, (tag, quality)
                decoded[tag] = value
            TALLY.accepted(ROUND_TRIP)
    for tag, value in values.items():
        expected = struct.unpack(">f", struct.pack(">f", value))[0] if _is_float32(source, tag) else value
        assert _same(decoded[tag], expected), f"{tag}: read {decoded[tag]!r}, the device holds {expected!r}"


def _is_float32(source: SourceConfig, tag: str) -> bool:
    return any(p.tag == tag and p.value_type == "float32" for group in source.poll_groups() for p in group.points)
