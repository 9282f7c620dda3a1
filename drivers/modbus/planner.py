"""Points -> the fewest read requests. Pure: no I/O.

`plan` groups points by table, sorts them by address and sweeps once, adding each point
to the current request while the request stays within the size limit and the unread
addresses before the point are at most the gap limit; otherwise the point starts the
next request. Sweeping in address order is optimal for points that do not overlap:
a request's points can always be taken as a run of consecutive points (a point lying
inside another request's span can join it without changing any span), a run that fits
stays fitting when it loses points at either end, and so the sweep, which makes every
request as long as it can, never ends its k-th request before any other plan does.
Overlapping points (a float and a bit of its first register) land in the same request
when it can hold both, so their shared registers are read once.

Defaults, and why:
- max_registers 125 and max_bits 2000: the protocol's limits for one read
  (function codes 3/4 and 1/2).
- max_gap 50 registers: reading 50 unwanted registers costs 100 bytes, far less on
  Modbus TCP than another round trip (one request ~12 bytes each way plus the device's
  turnaround, typically milliseconds); 50 is also what the best existing optimizer
  (Telegraf's max_insert) bridges. On a slow serial line 100 bytes take ~115 ms at
  9600 baud, more than a request's overhead: use a smaller gap there.
- max_bit_gap 800 bits: the same 100 bytes on the wire as 50 registers.
Reading across gaps may touch addresses a device does not have; it answers "illegal
data address" (exception 2), and the driver then `split`s that request.
"""

from __future__ import annotations

from collections.abc import Iterable

from drivers.modbus.points import Point, Request, Table

MAX_REGISTERS = 125
MAX_BITS = 2000
MAX_GAP = 50
MAX_BIT_GAP = 800
TABLE_SIZE = 65536


class PlanError(ValueError):
    """A point no request can read within the limits (a configuration error)."""


def plan(
    points: Iterable[Point],
    *,
    max_registers: int = MAX_REGISTERS,
    max_bits: int = MAX_BITS,
    max_gap: int = MAX_GAP,
    max_bit_gap: int = MAX_BIT_GAP,
    one_request_per_tag: bool = False,
    coils_from_zero: bool = False,
) -> list[Request]:
    """The fewest requests that read every point once, table by table (coils, discrete
    inputs, holding, input registers), each in address order.

    - `max_registers` / `max_bits`: most registers / bits one request reads.
    - `max_gap` / `max_bit_gap`: most unread registers / bits between two points of a request.
    - `one_request_per_tag`: a request per point, for devices that refuse reads across
      their variables; a point lying within another's registers still shares its request.
    - `coils_from_zero`: coil and discrete-input requests start at address 0 (a quirk
      of some devices); their points must then end within `max_bits`.

    Raises PlanError for a point wider than a request may be, or beyond the table."""
    by_table: dict[Table, list[Point]] = {}
    for point in points:
        by_table.setdefault(point.table, []).append(point)
    requests: list[Request] = []
    for table in Table:
        from_zero = coils_from_zero and table.is_bits
        limit = max_bits if table.is_bits else max_registers
        gap = limit if from_zero else max_bit_gap if table.is_bits else max_gap
        ordered = sorted(by_table.get(table, ()), key=lambda p: (p.address, -p.end))
        _check(ordered, limit, from_zero)
        for run in _runs(ordered, limit, gap, one_request_per_tag):
            requests.append(_request(table, run, start=0 if from_zero else None))
    return requests


def split(request: Request) -> list[Request]:
    """`request` in two halves by its points (points sharing registers stay together),
    each as tight as its points: what to try when a device refuses a merged request with
    "illegal data address". Splitting the halves again ends at one point per request; a
    request that cannot be split comes back alone, `[request]`."""
    clusters = _clusters(sorted(request.points, key=lambda p: (p.address, -p.end)))
    if len(clusters) < 2:
        return [request]
    half = len(clusters) // 2
    return [_request(request.table, [p for c in part for p in c]) for part in (clusters[:half], clusters[half:])]


def _check(points: list[Point], limit: int, from_zero: bool) -> None:
    unit = "bits" if points and points[0].table.is_bits else "registers"
    for point in points:
        if point.address < 0 or point.end > TABLE_SIZE:
            raise PlanError(f"{point.tag}: {unit} {point.address}..{point.end - 1} pass the end of the table")
        if point.width > limit:
            raise PlanError(f"{point.tag}: {point.width} {unit}, more than one request reads ({limit})")
        if from_zero and point.end > limit:
            raise PlanError(f"{point.tag}: ends at bit {point.end - 1}, beyond {limit} bits read from 0")


def _runs(points: list[Point], limit: int, max_gap: int, nested_only: bool) -> list[list[Point]]:
    """Consecutive points (sorted by address, widest first) cut into requests, greedily."""
    runs: list[list[Point]] = []
    start = end = 0
    for point in points:
        if runs and _fits(point, start, end, limit, max_gap, nested_only):
            runs[-1].append(point)
            end = max(end, point.end)
        else:
            runs.append([point])
            start, end = point.address, point.end
    return runs


def _fits(point: Point, start: int, end: int, limit: int, max_gap: int, nested_only: bool) -> bool:
    """Whether `point` joins the request spanning [start, end)."""
    if nested_only:
        return point.end <= end
    return point.address - end <= max_gap and max(end, point.end) - start <= limit


def _clusters(points: list[Point]) -> list[list[Point]]:
    """Sorted points grouped where they share registers (or bits)."""
    clusters: list[list[Point]] = []
    end = 0
    for point in points:
        if clusters and point.address < end:
            clusters[-1].append(point)
            end = max(end, point.end)
        else:
            clusters.append([point])
            end = point.end
    return clusters


def _request(table: Table, points: list[Point], start: int | None = None) -> Request:
    first = min(p.address for p in points) if start is None else start
    return Request(table, first, max(p.end for p in points) - first, tuple(points))
