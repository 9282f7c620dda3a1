"""The agent's Prometheus metrics, on a registry of its own, served over HTTP.

The only module that imports prometheus_client. Counters and histograms are updated where
things happen (readings through a counting sink, reads through the driver context's
observer, seals through the sealer's observer); what lives in the buffer (bytes, backlog,
anchoring) is read by `refresh`, a task on the event loop: the buffer's SQLite connection
belongs to that loop, and the HTTP server answers from its own thread with what was last
set. The series are listed in docs/operations.md.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter as Tally
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, start_http_server

from agent.buffer.store import Buffer
from agent.errors import UsageError
from drivers.api import Reading, ReadingSink, is_bad, is_good

REFRESH_EVERY = 2.0  # seconds between two reads of the buffer's figures
READ_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
SIGN_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)


def quality_class(quality: int) -> str:
    """good, uncertain or bad, from an OPC UA StatusCode's severity bits."""
    return "good" if is_good(quality) else "bad" if is_bad(quality) else "uncertain"


class Metrics:
    """Every series of one agent. Implements the sealer's observer (`signed`, `sealed`)."""

    def __init__(self, version: str, boot: int, *, anchoring: bool = False) -> None:
        self.registry = r = CollectorRegistry()
        self.readings = Counter(
            "edgeseal_readings", "Readings received from sources.", ["source", "quality"], registry=r
        )
        self.read_seconds = Histogram(
            "edgeseal_source_read_seconds", "Answered reads of a device.", ["source"], buckets=READ_BUCKETS, registry=r
        )
        self.read_errors = Counter("edgeseal_source_read_errors", "Failed reads of a device.", ["source"], registry=r)
        self.seal_seconds = Histogram(
            "edgeseal_seal_seconds", "From a batch taken to its seal committed.", buckets=SIGN_BUCKETS, registry=r
        )
        self.sign_seconds = Histogram(
            "edgeseal_sign_seconds", "One signature by the device key.", buckets=SIGN_BUCKETS, registry=r
        )
        self.seals = Counter("edgeseal_seals", "Seals committed by this run.", registry=r)
        self.log_size = Gauge("edgeseal_log_size", "Seals in the device seal log.", registry=r)
        self.buffer_bytes = Gauge("edgeseal_buffer_bytes", "Bytes of the buffer database in use.", registry=r)
        self.undelivered = Gauge("edgeseal_undelivered_batches", "Sealed batches not yet acknowledged.", registry=r)
        self.undelivered_readings = Gauge(
            "edgeseal_undelivered_readings", "Readings of the batches not yet acknowledged.", registry=r
        )
        self.dropped = Gauge(
            "edgeseal_dropped_batches", "Undelivered batches the disk budget dropped, ever.", registry=r
        )
        self.mqtt_connected = Gauge("edgeseal_mqtt_connected", "1 while the MQTT broker has accepted us.", registry=r)
        self.boot = Gauge("edgeseal_boot", "Agent starts on this state directory.", registry=r)
        Info("edgeseal_build", "The agent's version.", registry=r).info({"version": version})
        self.boot.set(boot)
        self._anchoring = _AnchorGauges.on(r) if anchoring else None  # only with an `anchor` section

    # -- sources ----------------------------------------------------------------------

    def counting(self, source: str, sink: ReadingSink) -> ReadingSink:
        return _CountingSink(sink, source, self.readings)

    def read_observer(self, source: str) -> Callable[[float, bool], None]:
        """For DriverContext.observe_read: latency of answered reads, count of failed ones."""
        latency, errors = self.read_seconds.labels(source), self.read_errors.labels(source)
        errors.inc(0)  # the series exists before the first failure

        def observe(seconds: float, ok: bool) -> None:
            if ok:
                latency.observe(seconds)
            else:
                errors.inc()

        return observe

    # -- the sealer's observer ---------------------------------------------------------

    def signed(self, seconds: float) -> None:
        self.sign_seconds.observe(seconds)

    def sealed(self, seconds: float, log_size: int) -> None:
        self.seal_seconds.observe(seconds)
        self.seals.inc()
        self.log_size.set(log_size)

    # -- figures read from the buffer ------------------------------------------------

    async def refresh(self, buffer: Buffer, connected: Callable[[], bool] | None) -> None:
        """Every REFRESH_EVERY seconds, until cancelled."""
        while True:
            self._update(buffer, connected)
            await asyncio.sleep(REFRESH_EVERY)

    def _update(self, buffer: Buffer, connected: Callable[[], bool] | None) -> None:
        backlog = buffer.backlog()
        self.buffer_bytes.set(backlog.used_bytes)
        self.undelivered.set(backlog.batches)
        self.undelivered_readings.set(backlog.readings)
        self.dropped.set(backlog.dropped_batches)
        self.mqtt_connected.set(1 if connected is not None and connected() else 0)
        last = buffer.last_seal()
        self.log_size.set(last.b if last else 0)
        if self._anchoring is not None:
            self._anchoring.update(buffer, last.b if last else 0)

    # -- the endpoint ----------------------------------------------------------------

    @contextlib.contextmanager
    def serving(self, listen: str) -> Iterator[None]:
        """GET /metrics on `listen` (HOST:PORT) while inside; the server thread is joined at exit."""
        host, port = split_listen(listen)
        try:
            server, thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise UsageError(f"metrics.listen {listen}: cannot listen there: {exc.strerror or exc}") from None
        try:
            yield
        finally:
            server.shutdown()
            server.server_close()
            thread.join()


class _AnchorGauges(NamedTuple):
    lag: Gauge
    confirmed: Gauge
    alarms: Gauge
    pending: Gauge

    @classmethod
    def on(cls, r: CollectorRegistry) -> _AnchorGauges:
        return cls(
            Gauge("edgeseal_anchor_lag_seals", "Seals not yet covered by a final anchor.", registry=r),
            Gauge("edgeseal_anchor_last_confirmed_timestamp_seconds", "When the latest anchor was final.", registry=r),
            Gauge("edgeseal_anchor_alarms", "Anchoring alarms raised, ever (any is serious).", registry=r),
            Gauge("edgeseal_anchor_pending_transactions", "Anchor transactions sent, not yet final.", registry=r),
        )

    def update(self, buffer: Buffer, log_size: int) -> None:
        journal = buffer.anchors
        latest = journal.latest_anchored()
        self.lag.set(log_size - (latest.size if latest else 0))
        if latest is not None:
            self.confirmed.set(latest.t / 1e9)
        self.alarms.set(len(journal.alarms()))
        self.pending.set(len(journal.open_transactions()))


def split_listen(listen: str) -> tuple[str, int]:
    """HOST:PORT or [IPv6]:PORT (checked by the configuration) -> (host, port)."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


class _CountingSink:
    """Counts a source's readings by quality on their way to the agent's sink."""

    def __init__(self, sink: ReadingSink, source: str, readings: Counter) -> None:
        self._sink = sink
        self._counters = {q: readings.labels(source, q) for q in ("good", "uncertain", "bad")}

    async def submit(self, readings: Sequence[Reading]) -> None:
        for quality, n in Tally(quality_class(reading.quality) for reading in readings).items():
            self._counters[quality].inc(n)
        await self._sink.submit(readings)
