"""The planner: every point read once, within the limits, in the fewest requests."""

from __future__ import annotations

import math
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.modbus.planner import MAX_BIT_GAP, MAX_GAP, PlanError, plan, split
from drivers.modbus.points import Point, Request, Table

HOLDING, COILS = Table.HOLDING_REGISTERS, Table.COILS


def _p(address: int, width: int = 1, table: Table = HOLDING, tag: str | None = None) -> Point:
    value_type = "bool" if table.is_bits else {1: "uint16", 2: "float32", 4: "float64"}.get(width, "string")
    return Point(tag or f"{table.label}@{address}+{width}", table, address, width, value_type)


def _spans(requests: list[Request]) -> list[tuple[Table, int, int]]:
    return [(r.table, r.start, r.count) for r in requests]


# -- examples ------------------------------------------------------------------------------


def test_a_thousand_contiguous_floats() -> None:
    requests = plan([_p(2 * i, 2) for i in range(1000)])
    # 125 is odd: a request holds 62 whole floats (124 registers), never half of one
    assert len(requests) == math.ceil(1000 / 62) == 17
    assert all(r.count <= 124 for r in requests)


def test_gaps_up_to_max_gap_are_read_across() -> None:
    assert _spans(plan([_p(0), _p(1 + MAX_GAP)])) == [(HOLDING, 0, 2 + MAX_GAP)]
    assert _spans(plan([_p(0), _p(2 + MAX_GAP)])) == [(HOLDING, 0, 1), (HOLDING, 2 + MAX_GAP, 1)]
    assert len(plan([_p(0), _p(5)], max_gap=0)) == 2


def test_bit_gaps_have_their_own_limit() -> None:
    assert len(plan([_p(0, table=COILS), _p(1 + MAX_BIT_GAP, table=COILS)])) == 1
    assert len(plan([_p(0, table=COILS), _p(2 + MAX_BIT_GAP, table=COILS)])) == 2


def test_tables_are_planned_apart() -> None:
    points = [_p(0, table=table) for table in Table]
    assert [r.table for r in plan(points)] == list(Table)


def test_a_point_is_never_split_across_requests() -> None:
    requests = plan([_p(0, 100), _p(100, 50)])
    assert _spans(requests) == [(HOLDING, 0, 100), (HOLDING, 100, 50)]


def test_overlapping_points_are_read_once() -> None:
    points = [_p(10, 2, tag="float"), _p(10, 1, tag="bit 3 of its first register"), _p(11, 1, tag="low word")]
    [request] = plan(points)
    assert (request.start, request.count, len(request.points)) == (10, 2, 3)


def test_a_point_wider_than_a_request_is_a_configuration_error() -> None:
    with pytest.raises(PlanError, match="126 registers"):
        plan([_p(0, 126)])
    with pytest.raises(PlanError, match="11 registers"):
        plan([_p(0, 11)], max_registers=10)
    with pytest.raises(PlanError, match="end of the table"):
        plan([_p(65535, 2)])


def test_one_request_per_tag_still_reads_a_register_once() -> None:
    points = [_p(0, 2, tag="f"), _p(0, 1, tag="bit"), _p(1, 1, tag="low"), _p(2, 2, tag="g")]
    requests = plan(points, one_request_per_tag=True)
    assert _spans(requests) == [(HOLDING, 0, 2), (HOLDING, 2, 2)]
    assert [sorted(p.tag for p in r.points) for r in requests] == [["bit", "f", "low"], ["g"]]


def test_coils_from_zero() -> None:
    points = [_p(5, table=COILS), _p(1500, table=COILS), _p(3, table=HOLDING)]
    assert _spans(plan(points, coils_from_zero=True)) == [(COILS, 0, 1501), (HOLDING, 3, 1)]
    with pytest.raises(PlanError, match="beyond 100 bits"):
        plan([_p(100, table=COILS)], coils_from_zero=True, max_bits=100)


# -- split -----------------------------------------------------------------------------------


def test_split_halves_by_points_down_to_one() -> None:
    [request] = plan([_p(a) for a in (0, 10, 20, 30, 40)])
    left, right = split(request)
    assert _spans([left, right]) == [(HOLDING, 0, 11), (HOLDING, 20, 21)]
    assert [len(split(r)) for r in split(left)] == [1, 1]
    single = split(left)[0]
    assert split(single) == [single]


def test_split_keeps_points_that_share_registers_together() -> None:
    [request] = plan([_p(0, 2, tag="f"), _p(1, 1, tag="low"), _p(5, 1, tag="x")])
    assert [sorted(p.tag for p in r.points) for r in split(request)] == [["f", "low"], ["x"]]
    [overlapping] = plan([_p(0, 2, tag="f"), _p(1, 1, tag="low")])
    assert split(overlapping) == [overlapping]


# -- properties ------------------------------------------------------------------------------

LIMITS = st.fixed_dictionaries(
    {
        "max_registers": st.integers(4, 125),
        "max_bits": st.integers(4, 2000),
        "max_gap": st.integers(0, 60),
        "max_bit_gap": st.integers(0, 900),
        "one_request_per_tag": st.booleans(),
        "coils_from_zero": st.booleans(),
    }
)


@st.composite
def _layouts(draw: st.DrawFn) -> tuple[list[Point], dict[str, object]]:
    """Any points, overlapping or not, that fit the drawn limits."""
    limits = draw(LIMITS)
    points = []
    for index in range(draw(st.integers(1, 60))):
        table = draw(st.sampled_from(list(Table)))
        limit = limits["max_bits"] if table.is_bits else limits["max_registers"]
        width = draw(st.integers(1, min(limit, 8)))
        top = limit - width if table.is_bits and limits["coils_from_zero"] else 3000
        points.append(Point(f"t{index}", table, draw(st.integers(0, top)), width, "x"))
    return points, limits


@given(_layouts())
def test_every_point_is_read_once_within_the_limits(layout: tuple[list[Point], dict[str, object]]) -> None:
    points, limits = layout
    requests = plan(points, **limits)  # type: ignore[arg-type]
    assert Counter(p for r in requests for p in r.points) == Counter(points)
    for request in requests:
        bits = request.table.is_bits
        assert request.count <= (limits["max_bits"] if bits else limits["max_registers"])
        assert all(
            p.table is request.table and request.start <= p.address and p.end <= request.end for p in request.points
        )
        assert request.end == max(p.end for p in request.points)
        if bits and limits["coils_from_zero"]:
            assert request.start == 0
            continue
        assert request.start == min(p.address for p in request.points)
        gap = limits["max_bit_gap"] if bits else limits["max_gap"]
        assert max(_unread_gaps(request.points)) <= (-1 if limits["one_request_per_tag"] else gap)


def _unread_gaps(points: tuple[Point, ...]) -> list[int]:
    """Addresses left unread before each point, walking the points in address order
    (negative: it overlaps what is read already)."""
    ordered = sorted(points, key=lambda p: (p.address, -p.end))
    end, gaps = ordered[0].end, [-1]
    for point in ordered[1:]:
        gaps.append(point.address - end)
        end = max(end, point.end)
    return gaps


@st.composite
def _apart(draw: st.DrawFn) -> tuple[list[Point], int, int]:
    """Points of one table that do not overlap, with gaps from none to a little more
    than max_gap; and the limits."""
    limit, max_gap = draw(st.integers(2, 30)), draw(st.integers(0, 8))
    points, address = [], 0
    for index in range(draw(st.integers(1, 40))):
        address += draw(st.integers(0, max_gap + 2))
        width = draw(st.integers(1, limit))
        points.append(Point(f"t{index}", HOLDING, address, width, "x"))
        address += width
    return points, limit, max_gap


def _fewest(points: list[Point], limit: int, max_gap: int) -> int:
    """The true minimum, by dynamic programming over runs of consecutive points."""
    best = [0] + [len(points) + 1] * len(points)
    for stop in range(1, len(points) + 1):
        for begin in range(stop - 1, -1, -1):
            run = points[begin:stop]
            gaps = [b.address - a.end for a, b in zip(run, run[1:])]
            if run[-1].end - run[0].address > limit or any(g > max_gap for g in gaps):
                break
            best[stop] = min(best[stop], best[begin] + 1)
    return best[-1]


@given(_apart())
def test_the_request_count_is_the_minimum(layout: tuple[list[Point], int, int]) -> None:
    points, limit, max_gap = layout
    requests = plan(points, max_registers=limit, max_gap=max_gap)
    assert len(requests) == _fewest(points, limit, max_gap)
    total = sum(p.width for p in points)
    assert len(requests) >= math.ceil(total / limit)


@given(st.integers(1, 3000), st.sampled_from([1, 2, 4]), st.integers(4, 125))
def test_contiguous_points_take_the_fewest_requests(n: int, width: int, limit: int) -> None:
    requests = plan([_p(i * width, width) for i in range(n)], max_registers=limit)
    assert len(requests) == math.ceil(n / (limit // width))
    if width == 1:
        assert len(requests) == math.ceil(n / limit)


@given(st.lists(st.integers(0, 2000), min_size=1, max_size=300, unique=True), st.integers(8, 2000))
def test_contiguous_coils_take_the_fewest_requests(addresses: list[int], limit: int) -> None:
    first = min(addresses)
    points = [_p(first + i, table=COILS) for i in range(len(addresses))]
    assert len(plan(points, max_bits=limit)) == math.ceil(len(points) / limit)


@given(_layouts())
def test_splitting_partitions_a_request_until_it_cannot(layout: tuple[list[Point], dict[str, object]]) -> None:
    points, _ = layout
    for request in plan(points, max_gap=60):
        pending, done = [request], []
        while pending:
            whole = pending.pop()
            parts = split(whole)
            if len(parts) == 1:
                done.append(parts[0])
            else:
                assert all(len(part.points) < len(whole.points) for part in parts)
                pending += parts
        assert Counter(p for r in done for p in r.points) == Counter(request.points)
        assert all(request.start <= r.start and r.end <= request.end for r in done)
