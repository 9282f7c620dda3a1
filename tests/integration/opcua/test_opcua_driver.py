"""The OPC UA driver's features against a real server (tests/opcua_server.py, asyncua):
every value type and node id form, with the server's SourceTimestamp as the reading
time; polling within the server's MaxNodesPerRead; absolute deadbands; nodes the server
lacks or will not read, as Bad readings beside Good ones; events with custom fields,
filtered by type and source; alarms, including one already active at connect
(ConditionRefresh); user names and passwords; a secured channel to a server trusted
while the driver runs; bad groups beside good ones; a prompt stop.

Most tests share one server (a start costs ~1.5 s); a test that changes its alarms
leaves them inactive. Waits are on conditions (Sink.wait), not on time."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, ua
from cryptography import x509
from driver_harness import Sink, in_new_loop
from opcua_harness import NS, Running, poll, source, subscribe
from opcua_servers import EVENT_TYPE, Alarm, OpcUaServer, ServerFarm, ServerSpec, Variable, make_certificate

from drivers.api import Quality, Reading
from drivers.opcua import driver as opcua_driver
from drivers.opcua.pki import Pki, thumbprint

OTHER_NS = "urn:edgeseal-test:other"
ABSENT_NS = "urn:edgeseal-test:not-on-this-server"
GUID = uuid.UUID("6d4a6c2e-4c3b-4d2a-9a1e-0000000000a1")
ODD_ID = "s=Line 1;Temp=°C"  # a string identifier with a space, ';', '=' and non-ASCII
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
STARTED = dt.datetime(2024, 5, 1, 6, 30, 15, 123456, tzinfo=dt.UTC)
# SourceTimestamps written before the driver starts: long past, so never an arrival time
STAMPED_AT = dt.datetime(2023, 11, 2, 8, 0, 0, 250000, tzinfo=dt.UTC)
GOOD = Quality.GOOD
BAD_NODE_ID_UNKNOWN = Quality.BAD_NODE_ID_UNKNOWN
BAD_NOT_READABLE = ua.StatusCodes.BadNotReadable  # 0x803A0000 (OPC 10000-4; 0x803E0000 is BadNotFound)
BAD_COMMUNICATION_ERROR = Quality.BAD_COMMUNICATION_ERROR
ALARM_CONDITION = f"i={ua.ObjectIds.AlarmConditionType}"
OFF_NORMAL_ALARM = f"i={ua.ObjectIds.OffNormalAlarmType}"
LOGGER = "test.opcua.plc"  # the driver's logger in driver_harness.Running

SCALARS: dict[str, Any] = {
    "Boolean": True,
    "SByte": -7,
    "Byte": 200,
    "Int16": -30000,
    "UInt16": 60000,
    "Int32": -2_000_000_000,
    "UInt32": 4_000_000_000,
    "Int64": -(2**62),
    "UInt64": 2**64 - 1,
    "Float": 1.5,
    "Double": -2.25e-300,
    "String": "Presse 7 – Kraft ✓",
    "DateTime": STARTED,
    "ByteString": b"\x00\x01\xff",
    "LocalizedText": "Line one",
}
ARRAYS: dict[str, list[Any]] = {name: [value, value] for name, value in SCALARS.items()}
ARRAYS["Boolean"] = [True, False, True]
ARRAYS["Double"] = [0.5, -1.0, 1e300]

COUNTER = Variable("Counter", type="UInt32", value=0, id="i=1001", period=0.05)
PLANT = ServerSpec(
    namespaces=(NS, OTHER_NS),
    shift=3,  # our namespaces are not at the first free index: ns= tags must name the real one
    variables=(
        *(
            Variable(f"S_{name}", type=name, value=value, parent="Plant/Types", writable=True)
            for name, value in SCALARS.items()
        ),
        *(
            Variable(f"A_{name}", type=name, value=value, array=True, parent="Plant/Types", writable=True)
            for name, value in ARRAYS.items()
        ),
        Variable("Batch", type="UInt32", value=17, id="i=1002", writable=True),
        Variable("Recipe", type="String", value="PVC-7", id=f"g={GUID}", writable=True),
        Variable("Raw", type="ByteString", value=b"\x01\x02\x03", id="b=AQID", writable=True),
        Variable("Odd", type="Int16", value=-5, id=ODD_ID, writable=True),
        Variable("Speed", value=3.0, id="i=7", namespace=OTHER_NS, parent="Plant/Line2", writable=True),
        Variable("Temp", value=21.5),
        Variable("Level", value=10.0, writable=True),
        Variable("Secret", readable=False),
        COUNTER,
    ),
    events="Plant/Line1",
    alarms=(
        Alarm("HighTemp"),
        Alarm("DoorOpen", source="Plant/Line2", type="OffNormalAlarmType", severity=300),
    ),
)
ALARMS = [alarm.name for alarm in PLANT.alarms]
COUNTER_NODE = f"nsu={NS};i=1001"
TEMP_NODE = f"nsu={NS};s=Plant/Line1/Temp"

# (namespace URI, identifier, expected reading value) of every node whose value and
# SourceTimestamp the types test checks
TYPED = [
    *((NS, f"s=Plant/Types/S_{name}", value) for name, value in SCALARS.items()),
    *((NS, f"s=Plant/Types/A_{name}", value) for name, value in ARRAYS.items()),
    (NS, "i=1002", 17),
    (NS, f"g={GUID}", "PVC-7"),
    (NS, "b=AQID", b"\x01\x02\x03"),
    (NS, ODD_ID, -5),
    (OTHER_NS, "i=7", 3.0),
]


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpcUaServer]:
    farm = ServerFarm(tmp_path_factory.mktemp("plant"))
    try:
        yield farm.start(PLANT)
    finally:
        farm.close()


@pytest.fixture
def plant(shared: OpcUaServer) -> Iterator[OpcUaServer]:
    """The shared server; its alarms are inactive again after the test."""
    yield shared

    async def clear() -> None:
        async with control(shared) as client:
            for name in ALARMS:
                await shared.set_alarm(client, name, False)

    asyncio.run(clear())


@asynccontextmanager
async def control(server: OpcUaServer) -> AsyncIterator[Client]:
    """A plain asyncua client, as an HMI beside the gateway: writes, events, alarms."""
    async with Client(server.url, timeout=5) as client:
        yield client


async def index_of(server: OpcUaServer, uri: str) -> int:
    async with control(server) as client:
        return await client.get_namespace_index(uri)


def ns_time(moment: dt.datetime) -> int:
    return (moment - EPOCH) // dt.timedelta(microseconds=1) * 1000


def as_reading_value(value: Any) -> Any:
    """What a reading holds for a value of the server (DESIGN 3.1): DateTime as ns."""
    if isinstance(value, list):
        return [as_reading_value(item) for item in value]
    return ns_time(value) if isinstance(value, dt.datetime) else value


def of(sink: Sink, tag: str, since: int = 0) -> list[Reading]:
    """The readings of `tag`, from the batch at index `since` on."""
    return [r for _, batch in sink.batches[since:] for r in batch if r.tag == tag]


def good_values(sink: Sink, tag: str) -> list[Any]:
    return [r.value for r in of(sink, tag) if r.quality == GOOD]


def has(tag: str, count: int = 1, quality: int = GOOD, since: int = 0) -> Callable[[Sink], bool]:
    """A Sink.wait condition: `count` readings of `tag` with `quality` (from batch `since`)."""
    return lambda sink: sum(r.quality == quality for r in of(sink, tag, since)) >= count


def every(*conditions: Callable[[Sink], bool]) -> Callable[[Sink], bool]:
    return lambda sink: all(condition(sink) for condition in conditions)


async def until(sink: Sink, condition: Callable[[Sink], bool], what: str, timeout: float = 5.0) -> None:
    """Sink.wait, failing with what was awaited and the last reading of each tag."""
    try:
        await sink.wait(condition, timeout)
    except TimeoutError:
        latest = {tag: (hex(r.quality), r.value) for tag, r in sink.latest().items()}
        raise AssertionError(f"no {what} within {timeout} s; last readings: {latest}") from None


def events(name: str, **group: Any) -> dict[str, Any]:
    return {"name": name, "publishing_interval": "100ms", **group}


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING]


# -- 1. every type, every node id form, the server's SourceTimestamp ----------------------


async def stamp_typed_variables(server: OpcUaServer) -> dict[str, int]:
    """Writes each TYPED variable's value back with a SourceTimestamp of its own
    (STAMPED_AT + n s); returns them in ns by the node's nsu= text."""
    stamps: dict[str, int] = {}
    async with control(server) as client:
        for n, (uri, ident, _) in enumerate(TYPED):
            node = client.get_node(f"ns={await client.get_namespace_index(uri)};{ident}")
            at = STAMPED_AT + dt.timedelta(seconds=n)
            await node.write_value(ua.DataValue((await node.read_data_value()).Value, SourceTimestamp=at))
            stamps[f"nsu={uri};{ident}"] = ns_time(at)
    return stamps


def typed_tags(prefix: str, indexes: dict[str, int]) -> list[tuple[str, str, str, Any]]:
    """(tag, node as configured, the node in nsu= form, expected value): every TYPED
    node by namespace URI, and the four identifier kinds by namespace index too."""
    tags = []
    for uri, ident, value in TYPED:
        canonical, kind = f"nsu={uri};{ident}", ident.split("=", 1)[0]
        if ident.startswith("s=Plant/Types/"):
            name = f"{prefix}.{ident.rpartition('/')[2]}"  # sub.S_Int32
        else:
            name = f"{prefix}.{uri.rpartition(':')[2]}.{'odd' if ident == ODD_ID else kind}"  # sub.plant.g
        tags.append((name, canonical, canonical, as_reading_value(value)))
        if not ident.startswith("s=Plant/Types/") or ident.endswith("S_Int32"):
            tags.append((f"{name}.by-index", f"ns={indexes[uri]};{ident}", canonical, as_reading_value(value)))
    return tags


@in_new_loop
async def test_every_type_and_node_id_form_with_the_source_timestamp(plant: OpcUaServer, tmp_path: Path) -> None:
    """Subscribed and polled: each value as the server holds it, in its reading type
    (bool is bool, not 1; DateTime as ns), with the SourceTimestamp the server holds,
    not the time it arrived."""
    stamps = await stamp_typed_variables(plant)
    indexes = {uri: await index_of(plant, uri) for uri in (NS, OTHER_NS)}
    assert indexes == {NS: 5, OTHER_NS: 6}  # 3 dummies first: index 2 would be wrong
    expected: dict[str, tuple[Any, int]] = {}
    groups = []
    for prefix, make_group in (("sub", subscribe), ("poll", poll)):
        tags = typed_tags(prefix, indexes)
        assert len({tag for tag, *_ in tags}) == len(tags) == len(TYPED) + 6
        groups.append(make_group(*((tag, node) for tag, node, _, _ in tags)))
        expected |= {tag: (value, stamps[canonical]) for tag, _, canonical, value in tags}

    async with Running(source(plant.url, groups=groups), tmp_path) as run:
        await until(run.sink, lambda s: set(expected) <= set(s.latest()), "reading of every tag")
    latest = run.sink.latest()
    for tag, (value, ts) in expected.items():
        got = latest[tag]
        assert (got.quality, type(got.value), got.value) == (GOOD, type(value), value), tag
        if isinstance(value, list):
            assert [type(item) for item in got.value] == [type(item) for item in value], tag
        assert got.ts == ts, f"{tag}: the reading's ts is not the SourceTimestamp the server holds"


@in_new_loop
async def test_changing_values_carry_the_time_of_each_change(plant: OpcUaServer, tmp_path: Path) -> None:
    """The counter moves every 50 ms, stamped by the server at each change, and is
    published every 200 ms: several readings per publication, successive values, each
    with its own, strictly increasing SourceTimestamp, none later than its arrival."""
    counter = subscribe(("counter", COUNTER_NODE), publishing_interval="200ms", sampling_interval="25ms")
    loop = asyncio.get_running_loop()
    async with Running(source(plant.url, groups=[counter]), tmp_path) as run:
        await until(run.sink, has("counter", 12), "12 counter readings")
        to_wall_clock = time.time() - loop.time()  # the sink records loop time
    arrivals = [
        (round((at + to_wall_clock) * 1e9), r)
        for at, batch in run.sink.batches
        for r in batch
        if r.tag == "counter" and r.quality == GOOD
    ]
    values = [r.value for _, r in arrivals]
    stamps = [r.ts for _, r in arrivals]
    assert values == list(range(values[0], values[0] + len(values))), "a change was lost or repeated"
    assert all(earlier < later for earlier, later in zip(stamps, stamps[1:]))
    assert len({at for at, _ in arrivals}) < len(arrivals), "one reading per publication: not the change times"
    for _, batch in run.sink.batches:  # one publication: its changes 50 ms apart, as the server made them
        times = [r.ts for r in batch if r.tag == "counter"]
        assert all(later - earlier > 30_000_000 for earlier, later in zip(times, times[1:])), times
    assert all(r.ts <= at + 5_000_000 for at, r in arrivals)  # 5 ms for the clocks' rounding


# -- 2. polling within MaxNodesPerRead ------------------------------------------------------

LIMITED = tuple(Variable(f"P{n}", value=n + 0.5) for n in range(7))


@pytest.mark.parametrize("limit", [3, 4])
@in_new_loop
async def test_poll_group_bigger_than_max_nodes_per_read(opcua_servers: ServerFarm, tmp_path: Path, limit: int) -> None:
    """7 tags; the server reads at most `limit` nodes per request and answers a bigger
    Read with BadTooManyOperations: every value still arrives Good, every cycle. With 3,
    even the driver's own reads at connect (4 server nodes) must respect the limit."""
    server = opcua_servers.start(ServerSpec(variables=LIMITED, max_nodes_per_read=limit))
    config = source(server.url, groups=[poll(*((f"p{n}", f"nsu={NS};s=Plant/Line1/P{n}") for n in range(7)))])
    complete = {f"p{n}": (GOOD, n + 0.5) for n in range(7)}

    def cycles(sink: Sink) -> list[dict[str, tuple[int, Any]]]:
        return [{r.tag: (r.quality, r.value) for r in batch} for _, batch in sink.batches]

    async with Running(config, tmp_path) as run:
        await until(run.sink, lambda s: cycles(s).count(complete) >= 4, "4 complete poll cycles")
    assert all(cycle == complete for cycle in cycles(run.sink)), cycles(run.sink)[0]
    assert (run.count("connects"), run.count("faults")) == (1, 0)


# -- 3. absolute deadband -----------------------------------------------------------------


@in_new_loop
async def test_absolute_deadband_reports_only_bigger_changes(plant: OpcUaServer, tmp_path: Path) -> None:
    """Level is written 10 -> 12 -> 13 -> 20 -> 21.5 by another client. Without a
    deadband every value arrives; with the group's 5, only 10 and 20; with a tag's own
    1 (same subscription as the 5), 10, 12, 20 and 21.5."""
    level = f"nsu={NS};s=Plant/Line1/Level"
    filtered = subscribe(deadband={"type": "absolute", "value": 5.0})
    filtered["tags"] = [
        {"name": "level.coarse", "node": level},
        {"name": "level.fine", "node": level, "deadband": {"type": "absolute", "value": 1.0}},
    ]
    config = source(plant.url, groups=[subscribe(("level.raw", level)), filtered])

    def last(sink: Sink, tag: str) -> Any:
        values = good_values(sink, tag)
        return values[-1] if values else None

    def at(value: float, *tags: str) -> Callable[[Sink], bool]:
        return lambda sink: all(last(sink, tag) == value for tag in tags)

    async with control(plant) as client:
        node = client.get_node(f"ns={await client.get_namespace_index(NS)};s=Plant/Line1/Level")
        await node.write_value(ua.Variant(10.0, ua.VariantType.Double))
        async with Running(config, tmp_path) as run:
            # each write awaits what must arrive, so that no value is merged with the next
            for value, tags in (
                (10.0, ("level.raw", "level.coarse", "level.fine")),
                (12.0, ("level.raw", "level.fine")),  # +2: beyond 1 only
                (13.0, ("level.raw",)),  # +1 from 12, +3 from 10: beyond neither
                (20.0, ("level.raw", "level.coarse", "level.fine")),
                (21.5, ("level.raw", "level.fine")),  # +1.5: beyond 1 only
            ):
                await node.write_value(ua.Variant(value, ua.VariantType.Double))
                await until(run.sink, at(value, *tags), f"{value} in {tags}")
    assert good_values(run.sink, "level.raw") == [10.0, 12.0, 13.0, 20.0, 21.5]
    assert good_values(run.sink, "level.fine") == [10.0, 12.0, 20.0, 21.5]
    assert good_values(run.sink, "level.coarse") == [10.0, 20.0]


# -- 4. nodes the server lacks or will not read ------------------------------------------


@in_new_loop
async def test_missing_and_unreadable_nodes_read_bad_beside_good_ones(plant: OpcUaServer, tmp_path: Path) -> None:
    ns = await index_of(plant, NS)
    faulty = [
        ("ghost", f"nsu={NS};s=Plant/Line1/NoSuchTag", BAD_NODE_ID_UNKNOWN),
        ("wrong-ns", f"ns={ns};i=7", BAD_NODE_ID_UNKNOWN),  # i=7 is in the other namespace
        ("elsewhere", f"nsu={ABSENT_NS};s=Plant/Line1/Temp", BAD_NODE_ID_UNKNOWN),
        ("secret", f"nsu={NS};s=Plant/Line1/Secret", BAD_NOT_READABLE),
    ]
    config = source(
        plant.url,
        groups=[
            subscribe(("sub.counter", COUNTER_NODE), *((f"sub.{tag}", node) for tag, node, _ in faulty)),
            poll(("poll.temp", TEMP_NODE), *((f"poll.{tag}", node) for tag, node, _ in faulty)),
        ],
    )
    cycle = {"poll.temp": (GOOD, 21.5)} | {f"poll.{tag}": (code, None) for tag, _, code in faulty}

    def polled(sink: Sink, since: int = 0) -> list[dict[str, tuple[int, Any]]]:
        batches = (batch for _, batch in sink.batches[since:] if any(r.tag == "poll.temp" for r in batch))
        return [{r.tag: (r.quality, r.value) for r in batch} for batch in batches]

    async with Running(config, tmp_path) as run:
        await until(run.sink, lambda s: all(of(s, f"sub.{tag}") for tag, _, _ in faulty), "a reading of each bad tag")
        after = len(run.sink.batches)
        # and then the same groups' good tags keep arriving
        await until(
            run.sink,
            lambda s: has("sub.counter", 5, since=after)(s) and polled(s, after).count(cycle) >= 3,
            "5 more counter readings and 3 more poll cycles",
        )
    for tag, _, code in faulty:
        assert [(r.quality, r.value) for r in of(run.sink, f"sub.{tag}")] == [(code, None)], tag
    assert all(polls == cycle for polls in polled(run.sink)), polled(run.sink)[0]
    assert {r.quality for r in of(run.sink, "sub.counter")} == {GOOD}
    assert (run.count("connects"), run.count("faults")) == (1, 0)


# -- 5. events --------------------------------------------------------------------------------


def message(reading: Reading) -> Any:
    return reading.value.get("Message") if isinstance(reading.value, dict) else None


async def until_subscribed(run: Running, client: Client, server: OpcUaServer) -> None:
    """Events fired before the driver's subscriptions exist reach nobody: fire probes
    (a "probe" test event; DoorOpen set inactive, which it is) until both groups have
    one."""
    for _ in range(50):
        await server.emit_event(client, "probe")
        await server.set_alarm(client, "DoorOpen", False)
        try:
            await run.sink.wait(lambda s: bool(of(s, "line1.events") and of(s, "line2.events")), timeout=0.2)
            return
        except TimeoutError:
            continue
    raise AssertionError(f"the event groups received no probe: {run.sink.latest()}")


@in_new_loop
async def test_events_with_custom_fields_filtered_by_type_and_source(plant: OpcUaServer, tmp_path: Path) -> None:
    """line1.events: the test event type only (not the alarms that fire meanwhile), with
    its custom fields; one reading per event, its ts the event's Time. line2.events:
    every type, but only from Plant/Line2 (DoorOpen's source), so neither the test
    events nor HighTemp, which come from Line1."""
    fields = ["Time", "Message", "Severity", "SourceName", f"{{{NS}}}BatchId", f"{{{NS}}}Quantity"]
    config = source(
        plant.url,
        events=[
            events("line1.events", event_type=f"nsu={NS};s={EVENT_TYPE}", fields=fields),
            events("line2.events", sources=[f"nsu={NS};s=Plant/Line2"]),
        ],
    )
    async with Running(config, tmp_path) as run, control(plant) as client:
        await until_subscribed(run, client, plant)
        await plant.emit_event(client, "batch done", severity=650, batch_id="B-17", quantity=12.5)
        await plant.set_alarm(client, "DoorOpen", True)
        await plant.set_alarm(client, "HighTemp", True)
        await plant.emit_event(client, "batch started", severity=100, batch_id="B-18", quantity=-0.5)
        await plant.set_alarm(client, "HighTemp", False)
        await plant.set_alarm(client, "DoorOpen", False)
        # a subscription delivers in order: once its last event is in, all before it are
        await until(
            run.sink,
            lambda s: any(message(r) == "batch started" for r in of(s, "line1.events")),
            "the second test event",
        )
        await until(
            run.sink,
            lambda s: [message(r) for r in of(s, "line2.events")][-2:] == ["DoorOpen active", "DoorOpen inactive"],
            "DoorOpen's two events",
        )

    line1 = [r for r in of(run.sink, "line1.events") if message(r) != "probe"]
    assert [r.value for r in line1] == [
        {
            "Time": line1[0].ts,
            "Message": "batch done",
            "Severity": 650,
            "SourceName": "Line1",
            f"{{{NS}}}BatchId": "B-17",
            f"{{{NS}}}Quantity": 12.5,
        },
        {
            "Time": line1[1].ts,
            "Message": "batch started",
            "Severity": 100,
            "SourceName": "Line1",
            f"{{{NS}}}BatchId": "B-18",
            f"{{{NS}}}Quantity": -0.5,
        },
    ]
    assert {r.quality for r in of(run.sink, "line1.events")} == {GOOD}
    assert line1[0].ts < line1[1].ts
    line2 = of(run.sink, "line2.events")
    assert {(r.value["SourceName"], r.value["EventType"]) for r in line2} == {("Line2", OFF_NORMAL_ALARM)}
    assert [message(r) for r in line2 if message(r) != "DoorOpen inactive"] == ["DoorOpen active"]
    assert set(line2[0].value) == {"EventType", "SourceName", "Time", "Severity", "Message"}
    assert all(r.quality == GOOD and r.ts == r.value["Time"] for r in line2)


@in_new_loop
async def test_an_event_type_the_server_lacks_reads_bad_not_silence(plant: OpcUaServer, tmp_path: Path) -> None:
    """A typo in event_type would otherwise wait for events that never come."""
    config = source(
        plant.url,
        events=[
            events("typo.events", event_type=f"nsu={NS};s=NoSuchEventType"),
            events("line1.events", event_type=f"nsu={NS};s={EVENT_TYPE}"),
        ],
    )
    async with Running(config, tmp_path) as run, control(plant) as client:
        await until(run.sink, has("typo.events", quality=Quality.BAD_NODE_ID_UNKNOWN), "the typo read Bad")
        for _ in range(50):  # until line1's subscription exists: events before it reach nobody
            await plant.emit_event(client, "still flowing")
            if of(run.sink, "line1.events"):
                break
            await asyncio.sleep(0.1)
        await until(run.sink, has("line1.events"), "the other group's event")
    assert [r.value for r in of(run.sink, "typo.events")] == [None]


# -- 6. alarms ---------------------------------------------------------------------------------


@in_new_loop
async def test_alarms_active_before_connect_then_changes(plant: OpcUaServer, tmp_path: Path) -> None:
    """HighTemp is raised before the driver starts: ConditionRefresh reports it at
    connect, with the time it was raised. Then it clears, and DoorOpen (an
    OffNormalAlarmType: a subtype of the configured AlarmConditionType) comes and goes."""
    config = source(plant.url, events=[events("alarms", event_type="i=2915", alarms=True)])
    async with control(plant) as client:
        await plant.set_alarm(client, "HighTemp", True)
        raised_by = time.time_ns()
        async with Running(config, tmp_path) as run:
            await until(run.sink, has("alarms"), "the active alarm at connect")
            await plant.set_alarm(client, "HighTemp", False)
            await plant.set_alarm(client, "DoorOpen", True)
            await plant.set_alarm(client, "DoorOpen", False)
            await until(run.sink, has("alarms", 4), "4 alarm readings")

    alarms = of(run.sink, "alarms")
    states = [(r.value["ConditionName"], r.value["ActiveState/Id"], r.value["Retain"]) for r in alarms]
    assert states == [
        ("HighTemp", True, True),
        ("HighTemp", False, False),
        ("DoorOpen", True, True),
        ("DoorOpen", False, False),
    ]
    first = alarms[0]
    assert first.value == {
        "EventType": ALARM_CONDITION,
        "SourceName": "Line1",
        "Time": first.ts,
        "Severity": 700,
        "Message": "HighTemp active",
        "ConditionName": "HighTemp",
        "ActiveState/Id": True,
        "AckedState/Id": False,
        "Retain": True,
    }
    assert first.ts <= raised_by, "the replayed alarm keeps the time it was raised"
    assert [r.value["EventType"] for r in alarms[2:]] == [OFF_NORMAL_ALARM] * 2
    assert all(r.quality == GOOD and r.ts == r.value["Time"] for r in alarms)


# -- 7. user and password -----------------------------------------------------------------------

PASSWORD_ENV = "EDGESEAL_TEST_PLC_PASSWORD"


@in_new_loop
async def test_user_and_password_from_the_environment(
    opcua_servers: ServerFarm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """No password, then a wrong one: every tag Bad_CommunicationError, each reason
    logged once, the driver trying on. Then the right one, read again at the next
    connect: data, without a restart."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    server = opcua_servers.start(ServerSpec(variables=(COUNTER,), users={"operator": "s3cret"}))
    config = source(
        server.url,
        auth={"username": "operator", "password_env": PASSWORD_ENV},
        groups=[subscribe(("counter", COUNTER_NODE)), poll(("counter.polled", COUNTER_NODE))],
    )
    tags = ("counter", "counter.polled")

    def bad_twice(since: int) -> Callable[[Sink], bool]:
        return every(*(has(tag, 2, BAD_COMMUNICATION_ERROR, since) for tag in tags))

    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    async with Running(config, tmp_path) as run:
        await until(run.sink, bad_twice(0), "two Bad rounds without a password")
        assert warnings(caplog) == [
            f"{server.url} unavailable: the password variable {PASSWORD_ENV} is not set in the agent's environment"
        ]
        monkeypatch.setenv(PASSWORD_ENV, "wrong")
        await until(run.sink, lambda s: len(warnings(caplog)) == 2, "a warning about the wrong password")
        await until(run.sink, bad_twice(len(run.sink.batches)), "two Bad rounds with the wrong password")
        assert warnings(caplog)[1:] == [
            f"{server.url} unavailable: the server refused the user: BadUserAccessDenied; "
            "check the user name and password"
        ]
        assert run.count("connects") == 0
        monkeypatch.setenv(PASSWORD_ENV, "s3cret")
        await until(run.sink, every(*(has(tag, 3) for tag in tags)), "3 Good readings of each tag")
    for tag in tags:
        readings = of(run.sink, tag)
        assert {r.quality for r in readings} == {GOOD, BAD_COMMUNICATION_ERROR}, tag
        assert all(r.value is None for r in readings if r.quality != GOOD), tag
    assert len(warnings(caplog)) == 2
    assert f"{server.url} available again" in caplog.messages
    assert run.count("connects") == 1


# -- 8. a secured channel to a server trusted while the driver runs --------------------------------


@in_new_loop
async def test_secure_channel_to_a_server_trusted_while_running(
    opcua_servers: ServerFarm, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Aes256_Sha256_RsaPss with SignAndEncrypt, the server's only endpoint. Unknown,
    the server is refused: every tag Bad, one warning naming the trust command. Once
    trusted (as that command does), the next attempt connects and data flows."""
    files = make_certificate(tmp_path)
    server = opcua_servers.start(
        ServerSpec(
            variables=(COUNTER,),
            security=("Aes256Sha256RsaPss_SignAndEncrypt",),
            certificate=str(files.certificate),
            private_key=str(files.private_key),
        )
    )
    server_thumbprint = thumbprint(x509.load_der_x509_certificate(files.certificate.read_bytes()))
    state = tmp_path / "state"
    config = source(
        server.url,
        security={"policy": "Aes256_Sha256_RsaPss", "mode": "SignAndEncrypt", "application_uri": "urn:test:gw"},
        groups=[subscribe(("counter", COUNTER_NODE)), poll(("counter.polled", COUNTER_NODE))],
    )
    tags = ("counter", "counter.polled")
    async with Running(config, state) as run:
        await until(
            run.sink,
            every(*(has(tag, 2, BAD_COMMUNICATION_ERROR) for tag in tags)),
            "two Bad rounds from the untrusted server",
            timeout=10,  # the client's key is made at the first attempt
        )
        (warning,) = warnings(caplog)
        assert warning.startswith(f"{server.url} unavailable: server certificate not trusted: CN=edgeseal test server")
        assert f"trust it with: edgeseal opcua trust --state-dir {state} {server_thumbprint}" in warning
        assert run.count("connects") == 0
        pki = Pki(state / "pki")
        assert [path.read_bytes() for path in pki.rejected_dir.glob(f"*{server_thumbprint}*")] == [
            files.certificate.read_bytes()
        ]

        pki.trust_thumbprint(server_thumbprint)  # what `edgeseal opcua trust` does
        await until(run.sink, every(*(has(tag, 3) for tag in tags)), "3 Good readings of each tag")
    assert run.count("connects") == 1
    assert len(warnings(caplog)) == 1, "the refusal is logged once, not at every attempt"


# -- 9. bad groups beside good ones; a prompt stop ---------------------------------------------------


@in_new_loop
async def test_bad_groups_do_not_stall_the_good_ones(
    plant: OpcUaServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Groups whose every tag the server refuses (unknown nodes and namespaces, an
    unreadable node, event groups with an unknown type, field or notifier) read Bad,
    are asked for again (every REPROBE_AFTER, shortened here) and read Bad again, while
    the good groups' data keeps coming on the same session."""
    monkeypatch.setattr(opcua_driver, "REPROBE_AFTER", 0.5)
    config = source(
        plant.url,
        groups=[
            subscribe(("counter", COUNTER_NODE)),
            poll(("temp", TEMP_NODE), interval="100ms"),
            subscribe(("sub.absent", f"nsu={ABSENT_NS};i=1"), ("sub.ghost", f"nsu={NS};s=NoSuchTag")),
            poll(("poll.absent", f"nsu={ABSENT_NS};i=1"), ("poll.ghost", f"nsu={NS};s=NoSuchTag"), interval="50ms"),
            subscribe(("sub.secret", f"nsu={NS};s=Plant/Line1/Secret")),
        ],
        events=[
            events("events.absent-type", event_type=f"nsu={ABSENT_NS};i=5000"),
            events("events.absent-field", fields=[f"{{{ABSENT_NS}}}Pressure"]),
            events("events.nowhere", notifier=f"nsu={NS};s=Plant/NoSuchObject", alarms=True),
        ],
    )
    bad = {
        "sub.absent": BAD_NODE_ID_UNKNOWN,
        "sub.ghost": BAD_NODE_ID_UNKNOWN,
        "poll.absent": BAD_NODE_ID_UNKNOWN,
        "poll.ghost": BAD_NODE_ID_UNKNOWN,
        "sub.secret": BAD_NOT_READABLE,
        "events.absent-type": BAD_NODE_ID_UNKNOWN,
        "events.absent-field": BAD_NODE_ID_UNKNOWN,
        "events.nowhere": ua.StatusCodes.BadServiceUnsupported,  # asyncua's answer for a node it lacks
    }
    loop = asyncio.get_running_loop()
    async with Running(config, tmp_path) as run:
        # twice each: refused at the start, and again when asked for again (sub.secret is
        # not refused: the server sends its Bad value, once, as for any unchanged value)
        refused = [tag for tag in bad if tag != "sub.secret"]
        await until(
            run.sink,
            lambda s: all(len(of(s, tag)) >= 2 for tag in refused) and bool(of(s, "sub.secret")),
            "2 readings of every refused tag",
        )
        since = loop.time()

        def good_since(sink: Sink, tag: str) -> int:
            return sum(r.tag == tag and r.quality == GOOD for at, batch in sink.batches if at >= since for r in batch)

        # about a second more of the counter (every 50 ms) and the temperature (every 100 ms)
        await until(run.sink, lambda s: good_since(s, "counter") >= 15 and good_since(s, "temp") >= 8, "good data")
    for tag, code in bad.items():
        assert {r.quality for r in of(run.sink, tag)} == {code}, tag
    assert {r.quality for tag in ("counter", "temp") for r in of(run.sink, tag)} == {GOOD}
    assert (run.count("connects"), run.count("faults")) == (1, 0)


@in_new_loop
async def test_stops_promptly_when_cancelled_while_a_server_does_not_answer(tmp_path: Path) -> None:
    """A TCP peer that accepts and never answers, as a hung PLC: every attempt reads
    Bad, and a cancel in the middle of one ends the driver at once, not after its
    timeouts."""
    held: list[asyncio.StreamWriter] = []
    second_attempt = asyncio.Event()

    async def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        if len(held) >= 2:
            second_attempt.set()

    mute = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = mute.sockets[0].getsockname()[1]
    config = source(f"opc.tcp://127.0.0.1:{port}/mute", timeout="1s", groups=[poll(("temp", TEMP_NODE))])
    loop = asyncio.get_running_loop()
    try:
        async with Running(config, tmp_path) as run:
            await until(run.sink, lambda s: bool(of(s, "temp")), "a Bad reading", timeout=5)
            await asyncio.wait_for(second_attempt.wait(), timeout=5)  # and now it waits for an answer
            cancelled_at = loop.time()
        assert loop.time() - cancelled_at < 0.5, "cancelled mid-connect, the driver took its time to stop"
        # DESIGN 3.1 and the driver's docstring: Bad_CommunicationError (or Bad_Timeout)
        assert {r.quality for r in of(run.sink, "temp")} <= {BAD_COMMUNICATION_ERROR, Quality.BAD_TIMEOUT}
    finally:
        for writer in held:
            writer.close()
        mute.close()
        await mute.wait_closed()
