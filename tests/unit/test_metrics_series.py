"""The metrics module on its own: quality classes, the listen address, the counting sink,
and the Grafana dashboard, which may use only series the agent has."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path

import pytest
from pydantic import ValidationError

from agent.config.model import MetricsConfig
from agent.metrics import Metrics, quality_class, split_listen
from drivers.api import DriverContext, Quality, Reading

DASHBOARD = Path(__file__).parents[2] / "docs" / "grafana-dashboard.json"


def _series(metrics: Metrics) -> set[str]:
    return {sample.name for family in metrics.registry.collect() for sample in family.samples}


def _every_series() -> set[str]:
    """Every name the agent can expose, labelled series included."""
    metrics = Metrics("1.0", 1, anchoring=True)
    metrics.counting("s", _Sink())
    metrics.read_observer("s")(0.01, True)
    return _series(metrics)


class _Sink:
    def __init__(self) -> None:
        self.got: list[Reading] = []

    async def submit(self, readings: Sequence[Reading]) -> None:
        self.got += readings


@pytest.mark.parametrize(
    ("quality", "expected"),
    [
        (Quality.GOOD, "good"),
        (0x00960000, "good"),  # Good_SubNormal: a Good code with a sub-code
        (Quality.UNCERTAIN_LAST_USABLE_VALUE, "uncertain"),
        (Quality.BAD_TIMEOUT, "bad"),
        (0xC0000000, "bad"),  # severity 11 is reserved and treated as Bad
    ],
)
def test_quality_class_is_the_status_code_severity(quality: int, expected: str) -> None:
    assert quality_class(quality) == expected


@pytest.mark.parametrize(
    ("listen", "expected"),
    [("127.0.0.1:9108", ("127.0.0.1", 9108)), ("[::1]:9108", ("::1", 9108)), ("gw.local:80", ("gw.local", 80))],
)
def test_listen_addresses(listen: str, expected: tuple[str, int]) -> None:
    assert MetricsConfig(listen=listen).listen == listen
    assert split_listen(listen) == expected


@pytest.mark.parametrize("listen", ["9108", "localhost", "127.0.0.1:0", "127.0.0.1:65536", "http://gw:9108"])
def test_bad_listen_addresses_are_refused(listen: str) -> None:
    with pytest.raises(ValidationError, match="an address to listen on"):
        MetricsConfig(listen=listen)


def test_the_counting_sink_counts_by_source_and_quality_and_passes_everything_on() -> None:
    metrics, sink = Metrics("1.0", 1), _Sink()
    readings = [Reading("a", 1, 1.0), Reading("b", 1, None, Quality.BAD_TIMEOUT), Reading("c", 1, 2.0)]

    asyncio.run(metrics.counting("plc", sink).submit(readings))

    assert sink.got == readings
    assert metrics.registry.get_sample_value("edgeseal_readings_total", {"source": "plc", "quality": "good"}) == 2
    assert metrics.registry.get_sample_value("edgeseal_readings_total", {"source": "plc", "quality": "bad"}) == 1


def test_a_timed_read_that_raises_is_an_error_and_its_exception_goes_on() -> None:
    metrics = Metrics("1.0", 1)
    context = DriverContext("plc", logging.getLogger("test"), observe_read=metrics.read_observer("plc"))
    with context.timing_read():
        pass
    with pytest.raises(TimeoutError), context.timing_read():
        raise TimeoutError
    assert metrics.registry.get_sample_value("edgeseal_source_read_seconds_count", {"source": "plc"}) == 1
    assert metrics.registry.get_sample_value("edgeseal_source_read_errors_total", {"source": "plc"}) == 1


def test_anchoring_series_only_with_anchoring() -> None:
    assert not any(name.startswith("edgeseal_anchor") for name in _series(Metrics("1.0", 1)))
    assert "edgeseal_anchor_lag_seals" in _series(Metrics("1.0", 1, anchoring=True))


def test_the_dashboard_uses_only_series_the_agent_has() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["schemaVersion"] >= 39
    assert any(v["type"] == "datasource" and v["query"] == "prometheus" for v in dashboard["templating"]["list"])
    expressions = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = {name for expr in expressions for name in re.findall(r"\bedgeseal_\w+", expr)}
    assert used - _every_series() == set()
    # and every metric is on the dashboard, by one of its samples
    assert {_metric(name) for name in _every_series()} - {_metric(name) for name in used} == set()


def _metric(sample: str) -> str:
    return re.sub(r"_(bucket|count|sum|created|total)$", "", sample)
