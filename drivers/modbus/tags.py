"""One Modbus tag in the configuration: where it is, how its registers or bits become a
value, the rules that tie its fields together, and the `Point` it becomes. No I/O here."""

from __future__ import annotations

import codecs
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from drivers.config_types import Duration, Expected, SubPath, TagName, expected, findings
from drivers.modbus.addressing import MODICON, NOUNS, TABLE_SIZE, AddressError, describe, parse_address
from drivers.modbus.points import ORDERS, REGISTERS_PER_TYPE, VALUE_TYPES, Point, Table

TableName = Literal["holding", "input", "coil", "discrete"]
Order = Literal[ORDERS]  # type: ignore[valid-type]
ValueType = Literal[VALUE_TYPES]  # type: ignore[valid-type]

ENCODING_TEXT = "a text encoding such as ascii, utf-8, latin-1 or utf-16-be"


def _address_kind(value: Any) -> int | str:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise expected(MODICON)
    return value


def _encoding(value: str) -> str:
    try:
        b"\x00\x00".decode(value)  # refuses codecs that are not text encodings too (rot13, base64)
    except UnicodeError:
        pass  # a text encoding, in which these bytes mean nothing
    except LookupError:
        raise expected(ENCODING_TEXT) from None
    if codecs.lookup(value).name == "undefined":  # a codec that decodes nothing at all
        raise expected(ENCODING_TEXT)
    return value


Address = Annotated[
    int | str,
    PlainValidator(_address_kind),
    WithJsonSchema({"type": ["integer", "string"]}),
    Expected(MODICON),
]
Encoding = Annotated[str, AfterValidator(_encoding), Expected(ENCODING_TEXT)]


class StrictModel(BaseModel):
    """The Modbus models' base: unknown keys are errors, and values are not converted
    (a quoted "5" stays text and is reported, rather than silently becoming 5)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class ModbusTag(StrictModel):
    """One tag: where it is in the device and how its registers or bits become a value."""

    name: TagName = Field(description="Tag name written into every reading, e.g. meter.power; unique across sources.")
    table: TableName | None = Field(
        None,
        description="The data table, when `address` is zero-based: holding, input, coil or discrete. "
        "Leave it out for Modicon addresses (40001, 4x0001, 400001), which name the table themselves.",
    )
    address: Address = Field(
        description="Where the tag starts. Without `table`: a Modicon address, counting from 1 "
        "(40001, 400001 or 4x0001 are holding register 0; 30001 input registers; 10001 discrete "
        "inputs; coils as text, '00001' or '0x0001'). With `table`: the zero-based protocol address 0..65535."
    )
    type: ValueType | None = Field(
        None,
        description="bool, int16, uint16, int32, uint32, int64, uint64, float32, float64 or string. "
        "Default: bool for coils, discrete inputs and tags with `bit`; uint16 for other registers.",
    )
    order: Order | None = Field(
        None,
        description="Byte order of 32- and 64-bit values: ABCD, CDAB, BADC or DCBA. Default: the device's `order`.",
    )
    count: int | None = Field(None, ge=1, le=2000, description="Read this many values in a row as one list value.")
    bit: int | None = Field(
        None, ge=0, le=15, description="With type bool in a register: the bit to read, 0 (least significant) to 15."
    )
    length: int | None = Field(None, ge=1, description="With type string: its size in registers (2 characters each).")
    encoding: Encoding | None = Field(
        None, description="With type string: the text encoding, e.g. utf-8 or latin-1. Default: ascii."
    )
    trim: bool | None = Field(None, description="With type string: remove trailing NULs and spaces. Default: true.")
    swap_string_bytes: bool | None = Field(
        None,
        description="With type string: the two characters of each register are swapped. Default: the device's setting.",
    )
    scale: float | None = Field(None, description="Multiply the value by this, e.g. 0.1; the value becomes a number.")
    offset: float | None = Field(None, description="Add this after `scale`, e.g. -40; the value becomes a number.")
    unit: str | None = Field(None, description="Engineering unit, e.g. kW; for documentation only.")
    interval: Duration | None = Field(
        None,
        description="How often to read this tag, e.g. 100ms; default: the source's interval. "
        "Tags of one device with the same interval are read together.",
    )

    @field_validator("address")
    @classmethod
    def _known_address(cls, value: int | str, info: ValidationInfo) -> int | str:
        if "table" in info.data:  # else the table is wrong, and reported
            try:
                parse_address(value, info.data["table"])
            except AddressError as err:
                raise expected(str(err)) from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ModbusTag:
        table, address = self.location()
        found = _kind_problems(self, table)
        if not found and address + self.width(table) > TABLE_SIZE:
            span = f"{self.width(table)} {'bits' if table.is_bits else 'registers'} from {describe(table, address)}"
            found.append((("address",), f"expected the tag to end within its table (by address 65535), found {span}"))
        if found:
            raise findings(found)
        return self

    def location(self) -> tuple[Table, int]:
        """The table and the zero-based address of the tag's first register or bit."""
        return parse_address(self.address, self.table)

    def value_type(self, table: Table) -> str:
        if self.type is not None:
            return str(self.type)
        return "bool" if table.is_bits or self.bit is not None else "uint16"

    def width(self, table: Table) -> int:
        """Registers (or bits) the tag spans."""
        value_type = self.value_type(table)
        if value_type == "string":
            return self.length or 0
        if value_type == "bool":
            return (self.count or 1) if table.is_bits else 1
        return REGISTERS_PER_TYPE[value_type] * (self.count or 1)

    def point(self, order: str, swap_string_bytes: bool) -> Point:
        """The tag as the planner and codec see it; `order` and `swap_string_bytes` are
        the device's defaults."""
        table, address = self.location()
        return Point(
            tag=self.name,
            table=table,
            address=address,
            width=self.width(table),
            value_type=self.value_type(table),
            order=self.order or order,
            count=self.count,
            bit=self.bit,
            scale=self.scale,
            offset=self.offset,
            encoding=self.encoding or "ascii",
            swap_string_bytes=swap_string_bytes if self.swap_string_bytes is None else self.swap_string_bytes,
            trim=self.trim is not False,
        )


_STRING_ONLY = ("length", "encoding", "trim", "swap_string_bytes")


def _kind_problems(tag: ModbusTag, table: Table) -> list[tuple[SubPath, str]]:
    """Fields that do not go with the tag's type and table."""
    value_type = tag.value_type(table)
    if table.is_bits:
        return _bit_table_problems(tag, value_type, NOUNS[table])
    found: list[tuple[SubPath, str]] = []
    if value_type == "bool" and tag.bit is None:
        found.append((("bit",), "expected a bit number 0..15 for a bool in a register, found none"))
    if value_type != "bool" and tag.bit is not None:
        found.append((("bit",), f"expected bit only with type bool, found it with {value_type}"))
    if value_type == "bool" and tag.bit is not None and tag.count and tag.bit + tag.count > 16:
        found.append((("count",), f"expected at most {16 - tag.bit} bools from bit {tag.bit}, found {tag.count}"))
    if value_type == "string" and tag.length is None:
        found.append((("length",), "expected the length of the string in registers, found none"))
    if value_type == "string" and tag.count is not None:
        found.append((("count",), f"expected no count with type string (length sets its size), found {tag.count}"))
    if value_type != "string":
        found += _misplaced(tag, _STRING_ONLY, f"type {value_type}")
    if value_type in ("bool", "string"):
        found += _misplaced(tag, ("scale", "offset"), f"type {value_type}")
    return found


def _bit_table_problems(tag: ModbusTag, value_type: str, noun: str) -> list[tuple[SubPath, str]]:
    found: list[tuple[SubPath, str]] = []
    if value_type != "bool":
        found.append((("type",), f"expected bool for a {noun} (one bit), found {value_type}"))
    if tag.bit is not None:
        found.append((("bit",), f"expected no bit for a {noun} (it is one bit already), found {tag.bit}"))
    return found + _misplaced(tag, (*_STRING_ONLY, "scale", "offset"), f"a {noun}")


def _misplaced(tag: ModbusTag, fields: tuple[str, ...], what: str) -> list[tuple[SubPath, str]]:
    """Fields written that mean nothing for `what`: said, rather than silently ignored."""
    values = [(name, getattr(tag, name)) for name in fields]
    return [
        ((name,), f"expected no {name} with {what}, found {_shown(value)}")
        for name, value in values
        if value is not None
    ]


def _shown(value: object) -> str:
    """A value as YAML writes it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"'{value}'"
    return f"{value:g}" if isinstance(value, float) else str(value)
