import asyncio
import logging
import math

import pytest

from drivers.api import DriverContext, Reading, is_good
from drivers.simulator.config import SourceConfig
from drivers.simulator.driver import SimulatorDriver, create
from drivers.simulator.patterns import converter, make_pattern


class Collect:
    def __init__(self) -> None:
        self.batches: list[list[Reading]] = []

    async def submit(self, readings: list[Reading]) -> None:
        self.batches.append(list(readings))


def _driver(source: dict, sink: Collect) -> tuple[SimulatorDriver, DriverContext]:
    context = DriverContext("sim", logging.getLogger("test"))
    return create(SourceConfig.model_validate({"name": "sim", "type": "simulator", **source}), sink, context), context


@pytest.mark.parametrize(
    ("kind", "t", "expected"),
    [
        ("sine", 0.0, 50.0),
        ("sine", 15.0, 100.0),
        ("ramp", 30.0, 50.0),
        ("step", 10.0, 0.0),
        ("step", 40.0, 100.0),
        ("constant", 7.0, 0.0),
    ],
)
def test_patterns_follow_their_waveform(kind: str, t: float, expected: float) -> None:
    assert math.isclose(make_pattern(kind, 0, 100, 60, "x")(t, 0), expected, abs_tol=1e-9)


def test_random_patterns_are_reproducible_per_tag_name() -> None:
    a, b = make_pattern("random", 0, 1, 1, "tag"), make_pattern("random", 0, 1, 1, "tag")
    assert [a(0, 0) for _ in range(5)] == [b(0, 0) for _ in range(5)]


def test_converters_give_each_configured_type() -> None:
    assert [type(converter(t)(0.7)) for t in ("float", "int", "bool", "text", "bytes")] == [
        float,
        int,
        bool,
        str,
        bytes,
    ]


def test_a_faulting_tag_reads_bad_with_no_value_and_others_are_unaffected() -> None:
    sink = Collect()
    driver, _ = _driver(
        {"tags": [{"name": "ok"}, {"name": "bad", "fault": {"every": "1s", "duration": "999ms"}}]}, sink
    )
    readings = driver._sample()
    ok, bad = readings
    assert ok.tag == "ok" and is_good(ok.quality) and isinstance(ok.value, float)
    assert bad.tag == "bad" and bad.quality == 0x80050000 and bad.value is None


def test_generate_names_match_the_config_model() -> None:
    sink = Collect()
    source = {"generate": {"count": 12, "prefix": "m."}}
    driver, _ = _driver(source, sink)
    names = [r.tag for r in driver._sample()]
    assert names == SourceConfig.model_validate({"name": "s", "type": "simulator", **source}).generate.names()


def test_an_overrunning_scan_is_skipped_and_counted_never_overlapped() -> None:
    class SlowSink(Collect):
        async def submit(self, readings: list[Reading]) -> None:
            await super().submit(readings)
            await asyncio.sleep(0.05)  # a scan takes 50 ms, its period is 10 ms

    sink = SlowSink()
    driver, context = _driver({"interval": "10ms", "tags": [{"name": "x"}]}, sink)

    async def run() -> None:
        task = asyncio.create_task(driver.run())
        await asyncio.sleep(0.5)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(run())
    assert 5 <= len(sink.batches) <= 11
    assert context.counters["scan_overruns"] >= 20
