"""Registers and bits -> tag values, compiled once per request. Pure: no I/O, no pymodbus.

    decode = compile_request(request)          # once, when the request is planned
    for tag, value, quality in decode(words):  # every poll, with what the device answered
        ...

`words` is what the device answered for the request: `request.count` registers (ints
0..65535) for register tables, or at least `request.count` bits (bools) for coils and
discrete inputs. The decoder returns one (tag, value, quality) per point of the request,
in an order fixed at compile time. Quality is 0 (Good) with a value, or Bad with None:
Bad_EncodingError for a string whose bytes are not valid in its encoding (or decode to
text no reading can hold: lone surrogates), and
Bad_CommunicationError for every point when `words` is not the size the request asked
for (an answer that does not fit the request is no answer).

Values: ints for integer types, floats for float types (NaN and infinities included, as
the device sent them: a leaf holds them), floats for any type with `scale` or `offset`
(value * scale + offset), bools, text, and lists of these for points with `count`.

How it stays cheap (a few hundred nanoseconds per request plus tens per point): byte
orders are not shuffled value by value. The block is packed into bytes once or twice
(`struct.pack(">125H")` and/or `"<125H"`, which swaps the two bytes of every register),
and each order reads one of those buffers with big- or little-endian formats:

    order   registers hold (value bytes A B C D)   packed     unpacked
    ABCD    [A B] [C D]                            >  A B C D  >
    CDAB    [C D] [A B]                            <  D C B A  <
    BADC    [B A] [D C]                            <  A B C D  >
    DCBA    [D C] [B A]                            >  D C B A  <

(the same pairs hold for 64-bit values in the word-pair orders of drivers.modbus.points).
Scalar points sharing a (packed, unpacked) pair are read by ONE precompiled
`Struct.unpack_from` whose format skips the unread registers ("4xf2xf..."), and zipped
with their tag names in C; overlapping points (a float and a bit of its first register)
go to another such layer. Arrays, strings and bits in registers take one small step each.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import Any

from drivers.api import Quality, Value
from drivers.modbus.points import REGISTERS_PER_TYPE, Point, Request

GOOD = int(Quality.GOOD)
BAD_ENCODING = int(Quality.BAD_ENCODING_ERROR)
BAD_ANSWER = int(Quality.BAD_COMMUNICATION_ERROR)

Decoded = tuple[str, Value, int]
Decoder = Callable[[Sequence[Any]], list[Decoded]]
# One step of the decoder for a point that is not a plain scalar: (packed buffers, words) -> result;
# with the index of the buffer it reads, or None when it reads the words themselves.
_Step = Callable[[list[bytes], Sequence[int]], Decoded]
_Steps = list[tuple[int | None, _Step]]

_CODES = {
    "int16": "h", "uint16": "H", "int32": "i", "uint32": "I",
    "int64": "q", "uint64": "Q", "float32": "f", "float64": "d",
}  # fmt: skip
_ENDIANS = {"ABCD": (">", ">"), "CDAB": ("<", "<"), "BADC": ("<", ">"), "DCBA": (">", "<")}
_BUFFER = {">": 0, "<": 1}  # index of the packed buffer in the decoder's list
_ALWAYS_GOOD = itertools.repeat(GOOD)  # infinite, so sharing it between decoders is safe


def compile_request(request: Request) -> Decoder:
    """The decoder of `request`'s answer (see the module docstring). Raises ValueError
    for a point that this request cannot decode (outside it, or of a kind its table does
    not hold); a validated configuration never produces one."""
    for point in request.points:
        if point.table is not request.table or point.address < request.start or point.end > request.end:
            raise ValueError(f"{point.tag}: not within the request")
    if request.table.is_bits:
        return _bits_decoder(request)
    return _registers_decoder(request)


def _failed(request: Request) -> Callable[[], list[Decoded]]:
    answer = [(point.tag, None, BAD_ANSWER) for point in request.points]
    return lambda: list(answer)


# -- coils and discrete inputs ------------------------------------------------------


def _bits_decoder(request: Request) -> Decoder:
    for point in request.points:
        if point.value_type != "bool":
            raise ValueError(f"{point.tag}: a bit table holds bools, not {point.value_type}")
    singles = [p for p in request.points if p.count is None]
    arrays = [(p.tag, p.address - request.start, p.end - request.start) for p in request.points if p.count is not None]
    tags = tuple(p.tag for p in singles)
    pick = _picker([p.address - request.start for p in singles])
    count, failed = request.count, _failed(request)

    def decode(bits: Sequence[Any]) -> list[Decoded]:
        if len(bits) < count:  # pymodbus pads bits to whole bytes: more is fine
            return failed()
        out: list[Decoded] = list(zip(tags, map(bool, pick(bits)), _ALWAYS_GOOD))
        for tag, lo, hi in arrays:
            out.append((tag, [bool(bit) for bit in bits[lo:hi]], GOOD))
        return out

    return decode


def _picker(indices: list[int]) -> Callable[[Sequence[Any]], Sequence[Any]]:
    """The items at `indices`, as a tuple, in one C call (itemgetter of one index
    returns the item itself, of none fails: both are wrapped)."""
    if len(indices) > 1:
        return itemgetter(*indices)
    if indices:
        index = indices[0]
        return lambda items: (items[index],)
    return lambda _items: ()


# -- registers ----------------------------------------------------------------------


class _Layer:
    """Non-overlapping scalar points read by one unpack_from from one packed buffer."""

    __slots__ = ("buffer", "unpack_from", "tags", "scales", "offsets")

    def __init__(self, endians: tuple[str, str], points: list[Point], start: int) -> None:
        self.buffer = _BUFFER[endians[0]]
        self.unpack_from = struct.Struct(_layout(endians[1], points, start)).unpack_from
        self.tags = tuple(p.tag for p in points)
        self.scales = tuple(_scale(p) for p in points)
        self.offsets = tuple(_offset(p) for p in points)


def _registers_decoder(request: Request) -> Decoder:
    start, count, failed = request.start, request.count, _failed(request)
    plain, scaled, steps, bits = _sort_points(request)
    needed = {layer.buffer for layer in plain + scaled} | {buffer for buffer, _ in steps if buffer is not None}
    packs = [struct.Struct(f"{endian}{count}H").pack if _BUFFER[endian] in needed else None for endian in "><"]
    step_calls = [step for _, step in steps]
    bit_reads = [(p.tag, p.address - start, 1 << p.bit) for p in bits if p.bit is not None]

    def decode(words: Sequence[int]) -> list[Decoded]:
        if len(words) != count:
            return failed()
        try:
            buffers = [pack(*words) if pack else b"" for pack in packs]
        except struct.error:  # a register outside 0..65535
            return failed()
        out: list[Decoded] = []
        for layer in plain:
            out += zip(layer.tags, layer.unpack_from(buffers[layer.buffer]), _ALWAYS_GOOD)
        for layer in scaled:
            values = layer.unpack_from(buffers[layer.buffer])
            out += [(t, v * s + o, GOOD) for t, v, s, o in zip(layer.tags, values, layer.scales, layer.offsets)]
        out += [(tag, words[index] & mask != 0, GOOD) for tag, index, mask in bit_reads]
        for step in step_calls:
            out.append(step(buffers, words))
        return out

    return decode


def _sort_points(request: Request) -> tuple[list[_Layer], list[_Layer], _Steps, list[Point]]:
    """(plain scalar layers, scaled scalar layers, (buffer, step) per other point, bools
    in single bits): how each point of the request is read."""
    scalars: dict[tuple[tuple[str, str], bool], list[Point]] = {}
    steps: _Steps = []
    bits: list[Point] = []
    neutral = _neutral_endians(request.points)
    for point in request.points:
        if point.value_type == "bool":
            if point.bit is None:
                raise ValueError(f"{point.tag}: a bool in a register needs a bit")
            if point.count is None:
                bits.append(point)
            else:
                steps.append((None, _bit_array(point, request.start)))
        elif point.value_type == "string":
            steps.append(_string(point, request.start))
        else:
            endians = _ENDIANS[point.order] if REGISTERS_PER_TYPE[point.value_type] > 1 else neutral
            if point.count is None:
                scalars.setdefault((endians, _is_scaled(point)), []).append(point)
            else:
                steps.append(_array(point, endians, request.start))
    plain = [_Layer(e, layer, request.start) for (e, s), group in scalars.items() if not s for layer in _layers(group)]
    scaled = [_Layer(e, layer, request.start) for (e, s), group in scalars.items() if s for layer in _layers(group)]
    return plain, scaled, steps, bits


def _neutral_endians(points: Sequence[Point]) -> tuple[str, str]:
    """16-bit values read alike from either buffer (same endianness for packing and
    unpacking): use the little-endian one when only it is needed anyway."""
    packed = {_ENDIANS[p.order][0] for p in points if REGISTERS_PER_TYPE.get(p.value_type, 1) > 1}
    packed |= {"<" if p.swap_string_bytes else ">" for p in points if p.value_type == "string"}
    return ("<", "<") if packed == {"<"} else (">", ">")


def _layers(points: list[Point]) -> list[list[Point]]:
    """Points split into lists without overlaps, each sorted by address (one struct
    format reads its fields in order, so two fields cannot share bytes)."""
    layers: list[list[Point]] = []
    for point in sorted(points, key=lambda p: (p.address, p.end)):
        layer = next((layer for layer in layers if layer[-1].end <= point.address), None)
        if layer is None:
            layers.append([point])
        else:
            layer.append(point)
    return layers


def _layout(unpack: str, points: list[Point], start: int) -> str:
    """A struct format reading `points` in one pass: pad bytes over unread registers."""
    parts, cursor = [unpack], start
    for point in points:
        if point.address > cursor:
            parts.append(f"{2 * (point.address - cursor)}x")
        parts.append(_CODES[point.value_type])
        cursor = point.end
    return "".join(parts)


def _is_scaled(point: Point) -> bool:
    return point.scale is not None or point.offset is not None


def _scale(point: Point) -> float:
    return 1.0 if point.scale is None else float(point.scale)


def _offset(point: Point) -> float:
    return 0.0 if point.offset is None else float(point.offset)


def _array(point: Point, endians: tuple[str, str], start: int) -> tuple[int, _Step]:
    unpack_from = struct.Struct(f"{endians[1]}{point.count}{_CODES[point.value_type]}").unpack_from
    buffer, at, tag = _BUFFER[endians[0]], 2 * (point.address - start), point.tag
    if not _is_scaled(point):
        return buffer, lambda buffers, _words: (tag, list(unpack_from(buffers[buffer], at)), GOOD)
    scale, offset = _scale(point), _offset(point)

    def scaled(buffers: list[bytes], _words: Sequence[int]) -> Decoded:
        return tag, [v * scale + offset for v in unpack_from(buffers[buffer], at)], GOOD

    return buffer, scaled


def _string(point: Point, start: int) -> tuple[int, _Step]:
    """Two characters per register, the first in the high byte unless swapped (then
    the little-endian buffer has them in order). Trimmed after decoding, so that
    trimming never cuts a multi-byte character."""
    buffer = _BUFFER["<" if point.swap_string_bytes else ">"]
    lo, hi = 2 * (point.address - start), 2 * (point.end - start)
    tag, encoding, trim = point.tag, point.encoding, point.trim

    def text(buffers: list[bytes], _words: Sequence[int]) -> Decoded:
        try:
            value = buffers[buffer][lo:hi].decode(encoding)
            value.encode("utf-8")  # utf-7 and unicode_escape can give lone surrogates, which no leaf holds
        except UnicodeError:  # idna and punycode raise UnicodeError itself, not UnicodeDecodeError
            return tag, None, BAD_ENCODING
        return tag, value.rstrip("\x00 ") if trim else value, GOOD

    return buffer, text


def _bit_array(point: Point, start: int) -> _Step:
    """`count` bools from bit `bit` of one register upwards."""
    index, tag = point.address - start, point.tag
    shifts = range(point.bit or 0, (point.bit or 0) + (point.count or 1))
    return lambda _buffers, words: (tag, [words[index] >> n & 1 == 1 for n in shifts], GOOD)
