"""MQTT benchmark: the whole agent (`agent.runtime.run_agent`: simulator source, sequencer,
buffer on disk, sealer with a software key, MQTT publisher) publishing to a local
Mosquitto broker started by the benchmark, counted by a subscriber on the same broker.

  end to end  1,000 simulated float tags sampled every 20 ms (50,000 readings/s; and every
              10 ms, 100,000/s, in the full run) with the agent's default seal settings.
              The subscriber decodes each batch message (CBOR {"seal", "salt_key",
              "readings"}), dedupes by the seal's `b` and counts len(readings): readings/s
              delivered in a fixed window. Baseline in the same run: the same agent with
              no `mqtt` section, readings/s sealed into the buffer. Agent CPU
              (getrusage RUSAGE_SELF) per reading, both ways: the difference is what
              publishing costs.
  drain       1,000 tags every 100 ms, sealed every 200 ms (2,000 readings a batch, 5
              batches/s), the broker down for the first D seconds of the run. Once it is
              back: the agent's wait to reconnect (its backoff), the backlog drained
              (batches sealed before the broker's return), how fast it drained (batches/s
              and readings/s received until caught up) while new batches keep being
              sealed, and the time from the broker's return to caught up (a batch received
              within 1 s of its seal). With the default drain_rate (20 batches/s) and
              1,000, which shows the publisher's raw speed.

The agent runs in a fresh process pinned to the first core; the broker and the subscriber
(this process) on the last. End-to-end configurations run in interleaved rounds; medians.

    python bench/mqtt.py [--rounds 2] [--warmup 1.5] [--window 4] [--outage 8]
    python bench/mqtt.py --quick

No target is set for MQTT publishing (the issue names none): the figures are reported
as measured, against the baselines.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import resource
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cbor2  # noqa: E402
import paho.mqtt.client as paho  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion  # noqa: E402

from agent.buffer.store import Buffer  # noqa: E402
from agent.config import load_config  # noqa: E402
from agent.runtime import run_agent  # noqa: E402
from agent.trust.payloads import open_seal  # noqa: E402
from bench.pipeline import in_fresh_process, rss_mb  # noqa: E402
from provisioning.devca import make_demo_identity  # noqa: E402
from tests.mqtt_broker import SEARCH_PATH, BrokerFarm, BrokerSpec  # noqa: E402

DEVICE_ID = "bench-gateway"
TAGS = 1000
TOPIC = f"edgeseal/v1/{DEVICE_ID}/batch"
LIVE_LAG = 1.0  # s: a batch received within this of its seal is at the live edge
DRAIN_INTERVAL, DRAIN_SEAL = 0.1, 0.2  # the drain runs' sampling and seal intervals


# -- the agent: one run per fresh process ------------------------------------------


def write_config(directory: Path, interval: float, seal: str, mqtt: str | None) -> Path:
    """A whole agent configuration (demo CA identity, as tests/agent_harness.py makes it)."""
    directory.mkdir(parents=True, exist_ok=True)
    make_demo_identity(directory, DEVICE_ID)
    path = directory / "edgeseal.yaml"
    text = f"""device:
  id: {DEVICE_ID}
identity:
  key: device-key.pem
  cert_chain: device-chain.pem
sources:
  - name: load
    type: simulator
    interval: {interval * 1000:g}ms
    generate: {{count: {TAGS}, prefix: "load.", pattern: random, max: 100}}
seal:
  {seal}
buffer:
  dir: state
"""
    path.write_text(text + (f"mqtt:\n  {mqtt}\n" if mqtt else ""))
    return path


@dataclass
class AgentRun:
    """The agent process's own figures."""

    seconds: float = 0.0  # the window (end to end)
    cpu: float = 0.0  # agent process user + system seconds in the window
    window_ns: tuple[int, int] = (0, 0)
    sealed_rate: float = 0.0  # readings/s sealed in the window (see span_rate)
    seals: list[tuple[int, int, int]] = field(default_factory=list)  # (b, t, n) of every seal of the run
    dropped: int = 0
    max_rss_mb: float = 0.0


def agent_process(config_path: str, warmup: float, window: float, control: str, core: int) -> AgentRun:
    """In a fresh process pinned to `core`: the agent for warmup + window seconds, or, with
    window 0, until the file `control`/stop appears (it touches `control`/started)."""
    os.sched_setaffinity(0, {core})
    logging.basicConfig(level=logging.ERROR)  # the outage's "cannot connect" warnings are expected
    config = load_config(config_path)
    run = asyncio.run(_agent(config, warmup, window, Path(control)))
    buffer = Buffer.open(config.buffer.dir, create=False)
    try:
        run.seals = [(s.b, s.t, s.n) for s in buffer.seals()]
    finally:
        buffer.close()
    run.sealed_rate = span_rate([(t, n) for _, t, n in run.seals], *run.window_ns)
    run.max_rss_mb = rss_mb()[0]
    return run


async def _agent(config: object, warmup: float, window: float, control: Path) -> AgentRun:
    stop, run = asyncio.Event(), AgentRun()
    agent = asyncio.create_task(run_agent(config, stop))
    (control / "started").touch()

    def snapshot() -> tuple[int, float, float]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return time.time_ns(), time.perf_counter(), usage.ru_utime + usage.ru_stime

    await asyncio.sleep(warmup)
    t0, wall0, cpu0 = snapshot()
    if window:
        await asyncio.sleep(window)
    else:
        while not (control / "stop").exists() and not agent.done():
            await asyncio.sleep(0.05)
    t1, wall1, cpu1 = snapshot()
    stop.set()
    stats = await agent
    run.window_ns, run.seconds, run.cpu, run.dropped = (t0, t1), wall1 - wall0, cpu1 - cpu0, stats.dropped
    return run


def span_rate(events: list[tuple[int, int]], start: int, end: int) -> float:
    """Readings/s of the (ns, readings) events inside [start, end): those after the first,
    over the span from the first to the last. A batch holds up to 10,000 readings, so a
    count over the fixed window would move by a whole batch with its edges."""
    inside = sorted(e for e in events if start <= e[0] < end)
    if len(inside) < 2:
        return 0.0
    return sum(n for _, n in inside[1:]) / ((inside[-1][0] - inside[0][0]) / 1e9)


# -- the subscriber: this process, paho's own thread ---------------------------------


class Subscriber:
    """Counts the batches on TOPIC: (arrival ns, b, seal t, readings), first arrival of each b."""

    def __init__(self, host: str, port: int) -> None:
        self.arrivals: list[tuple[int, int, int, int]] = []
        self.duplicates = 0
        self._seen: set[int] = set()
        self._subscribed = threading.Event()
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id="", protocol=MQTTProtocolVersion.MQTTv5)
        self._client.on_connect = lambda client, *_: client.subscribe(TOPIC, qos=1)
        self._client.on_subscribe = lambda *_: self._subscribed.set()
        self._client.on_message = self._message
        self._client.connect(host, port)
        self._client.loop_start()
        if not self._subscribed.wait(10):
            raise TimeoutError("the subscriber got no SUBACK")

    def _message(self, _client: paho.Client, _userdata: object, message: paho.MQTTMessage) -> None:
        now = time.time_ns()
        body = cbor2.loads(message.payload)
        seal = open_seal(body["seal"])[1]
        if seal.b in self._seen:
            self.duplicates += 1
            return
        self._seen.add(seal.b)
        self.arrivals.append((now, seal.b, seal.t, len(body["readings"])))

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


# -- figure 1: end to end against sealed only ------------------------------------


@dataclass
class EndToEnd:
    agent: AgentRun
    delivered_rate: float  # readings/s received in the window (see span_rate; 0 without mqtt)
    batches: int  # batches received, the whole run
    duplicates: int
    missing: int  # batches sealed up to LIVE_LAG before the window's end, not received


def end_to_end(farm_dir: Path, url: str | None, interval: float, args: argparse.Namespace, core: int) -> EndToEnd:
    with tempfile.TemporaryDirectory(dir=farm_dir) as directory:
        mqtt = f"url: {url}" if url else None
        path = write_config(Path(directory), interval, "interval: 1s", mqtt)
        subscriber = Subscriber(*_host_port(url)) if url else None
        try:
            run = in_fresh_process(agent_process, str(path), args.warmup, args.window, directory, core)
            time.sleep(0.2)  # the last acknowledged batches reach the subscriber
        finally:
            if subscriber:
                subscriber.close()
    if subscriber is None:
        return EndToEnd(run, 0.0, 0, 0, 0)
    delivered = span_rate([(at, n) for at, _, _, n in subscriber.arrivals], *run.window_ns)
    received = {b for _, b, _, _ in subscriber.arrivals}
    settled = run.window_ns[1] - int(LIVE_LAG * 1e9)  # sealed since may still be on its way at the stop
    missing = sum(1 for b, t, _ in run.seals if t < settled and b not in received)
    return EndToEnd(run, delivered, len(received), subscriber.duplicates, missing)


def cpu_per_delivered(r: EndToEnd) -> float:
    """µs of agent CPU per reading delivered: its share of the core over the delivered rate."""
    return r.agent.cpu / r.agent.seconds / r.delivered_rate * 1e6 if r.delivered_rate else float("inf")


def _host_port(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("mqtt://").rsplit(":", 1)
    return host, int(port)


# -- figure 2: draining a backlog --------------------------------------------------


@dataclass
class Drain:
    drain_rate: float
    outage: float  # s from the agent's start to the broker's return
    wait: float = float("nan")  # s from the broker's return to the first batch received
    backlog: int = 0  # batches sealed before the broker's return
    backlog_readings: int = 0
    drained: int = 0  # batches received from the first until caught up
    drained_readings: int = 0
    drain_seconds: float = float("nan")  # first batch received to caught up
    to_caught_up: float = float("nan")  # broker's return to caught up
    sealed_meanwhile: int = 0  # batches sealed from the broker's return until caught up
    live_rate: float = 0.0  # batches sealed per second, the whole run
    missing: int = 0
    duplicates: int = 0
    caught_up: bool = False


def drain(farm: BrokerFarm, rate: float, outage: float, directory: Path, core: int) -> Drain:
    broker = farm.start(BrokerSpec())
    broker.kill()  # down from the agent's start; the port stays the broker's
    mqtt = f"url: {broker.url}\n  drain_rate: {rate:g}"
    path = write_config(directory, DRAIN_INTERVAL, f"interval: {DRAIN_SEAL * 1000:g}ms", mqtt)
    figures, subscriber = Drain(rate, outage), None
    spawn = get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=spawn) as pool:
        job = pool.submit(agent_process, str(path), 0.0, 0.0, str(directory), core)
        try:
            while not (directory / "started").exists():
                time.sleep(0.01)
            time.sleep(outage)
            broker.start()
            back = time.time_ns()
            subscriber = Subscriber(broker.host, broker.port)
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and not any(
                at - t <= LIVE_LAG * 1e9 for at, _, t, _ in subscriber.arrivals
            ):
                time.sleep(0.05)
            time.sleep(1.0)  # a little live flow after catching up
        finally:
            (directory / "stop").touch()
            run = job.result(timeout=120)
            if subscriber:
                subscriber.close()
            broker.kill()
    assert subscriber is not None
    arrivals = subscriber.arrivals
    figures.duplicates = subscriber.duplicates
    received = {b for _, b, _, _ in arrivals}
    settled = run.window_ns[1] - int(LIVE_LAG * 1e9)
    figures.missing = sum(1 for b, t, _ in run.seals if t < settled and b not in received)
    figures.backlog = sum(1 for _, t, _ in run.seals if t < back)
    figures.backlog_readings = sum(n for _, t, n in run.seals if t < back)
    span = (run.seals[-1][1] - run.seals[0][1]) / 1e9 if len(run.seals) > 1 else 0
    figures.live_rate = (len(run.seals) - 1) / span if span else 0
    caught = next((i for i, (at, _, t, _) in enumerate(arrivals) if at - t <= LIVE_LAG * 1e9), None)
    if arrivals:
        figures.wait = (arrivals[0][0] - back) / 1e9
    if caught is not None and caught > 0:
        first, last = arrivals[0][0], arrivals[caught][0]
        figures.caught_up = True
        figures.drained = caught  # intervals between the first and the caught-up arrival
        figures.drained_readings = sum(n for _, _, _, n in arrivals[1 : caught + 1])
        figures.drain_seconds = (last - first) / 1e9
        figures.to_caught_up = (last - back) / 1e9
        figures.sealed_meanwhile = sum(1 for _, t, _ in run.seals if back <= t < last)
    return figures


# -- the run --------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="interleaved end-to-end rounds; medians shown")
    parser.add_argument("--warmup", type=float, default=1.5, help="seconds before each end-to-end window")
    parser.add_argument("--window", type=float, default=4.0, help="measured seconds per end-to-end run")
    parser.add_argument("--outage", type=float, default=6.0, help="seconds the broker is down in the drain runs")
    parser.add_argument("--quick", action="store_true", help="1 round, 50,000/s only, 2 s windows, 4 s outages")
    args = parser.parse_args()
    intervals = [0.02, 0.01]
    if args.quick:
        args.rounds, args.warmup, args.window, args.outage, intervals = 1, 1.0, 2.0, 4.0, [0.02]
    mosquitto = shutil.which("mosquitto", path=SEARCH_PATH)
    passwd = shutil.which("mosquitto_passwd", path=SEARCH_PATH)
    if mosquitto is None or passwd is None:
        sys.exit("mosquitto is not installed: apt-get install -y mosquitto")
    cores = sorted(os.sched_getaffinity(0))
    agent_core, broker_core = cores[0], cores[-1]
    os.sched_setaffinity(0, {broker_core})  # this process (the subscriber) and the broker it starts
    with tempfile.TemporaryDirectory() as scratch:
        farm = BrokerFarm(Path(scratch), mosquitto, passwd)
        try:
            broker = farm.start(BrokerSpec())
            configs = [(i, url) for i in intervals for url in (None, broker.url)]
            results: dict[tuple[float, str | None], list[EndToEnd]] = {c: [] for c in configs}
            for _ in range(args.rounds):
                for interval, url in configs:
                    results[(interval, url)].append(end_to_end(Path(scratch), url, interval, args, agent_core))
            broker.kill()
            drains = [
                drain(farm, rate, args.outage, Path(scratch) / f"drain-{rate:g}", agent_core) for rate in (20, 1000)
            ]
        finally:
            farm.close()
    print_results(args, results, drains, agent_core, broker_core)


def print_results(
    args: argparse.Namespace,
    results: dict[tuple[float, str | None], list[EndToEnd]],
    drains: list[Drain],
    agent_core: int,
    broker_core: int,
) -> None:
    def median(runs: list[EndToEnd], value: Callable[[EndToEnd], float]) -> float:
        return statistics.median(value(r) for r in runs)

    print(
        f"edgeseal MQTT: the whole agent, {TAGS:,} simulated tags, a local Mosquitto; "
        f"{args.rounds} interleaved rounds of {args.warmup:g} s warm-up + {args.window:g} s window, medians; "
        f"agent on core {agent_core}, broker and subscriber on core {broker_core}"
    )
    print(
        "| configuration | nominal | readings/s sealed | readings/s delivered | delivered / sealed-only "
        "| agent CPU | agent CPU / reading | max RSS | batches missing / duplicated |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for interval in sorted({i for i, _ in results}, reverse=True):
        base = results[(interval, None)]
        base_rate = median(base, lambda r: r.agent.sealed_rate)
        base_cpu = median(base, lambda r: r.agent.cpu / r.agent.seconds / r.agent.sealed_rate * 1e6)
        for url in (None, *(u for i, u in results if i == interval and u)):
            runs = results[(interval, url)]
            sealed = median(runs, lambda r: r.agent.sealed_rate)
            share = median(runs, lambda r: r.agent.cpu / r.agent.seconds)
            rss = max(r.agent.max_rss_mb for r in runs)
            dropped = sum(r.agent.dropped for r in runs)
            note = f" ({dropped:,} dropped)" if dropped else ""
            if url is None:
                cells = [
                    "sealed only (no `mqtt`)" + note,
                    f"{sealed:,.0f}",
                    "",
                    "",
                    f"{share:.0%}",
                    f"{base_cpu:.2f} µs",
                ]
                cells += [f"{rss:.0f} MB", ""]
            else:
                rate = median(runs, lambda r: r.delivered_rate)
                cpu = median(runs, cpu_per_delivered)
                cells = ["published to MQTT" + note, f"{sealed:,.0f}", f"{rate:,.0f}", f"{rate / base_rate:.2f}"]
                cells += [f"{share:.0%}", f"{cpu:.2f} µs ({cpu - base_cpu:+.2f})", f"{rss:.0f} MB"]
                cells += [f"{sum(r.missing for r in runs)} / {sum(r.duplicates for r in runs)}"]
            print("| " + " | ".join([cells[0], f"{TAGS / interval:,.0f}/s", *cells[1:]]) + " |")
    print()
    print(
        f"drain: {TAGS:,} tags every {DRAIN_INTERVAL * 1000:g} ms sealed every {DRAIN_SEAL * 1000:g} ms; "
        f"the broker down for the first {args.outage:g} s; "
        f"caught up = a batch received within {LIVE_LAG:g} s of its seal"
    )
    print(
        "| drain_rate | backlog at return | reconnect wait | drained until caught up | drain batches/s "
        "| drain readings/s | sealed meanwhile | return to caught up | batches missing / duplicated |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for d in drains:
        if not d.caught_up:
            print(f"| {d.drain_rate:g} | {d.backlog} batches | {d.wait:.1f} s | NOT caught up | | | | | {d.missing} |")
            continue
        print(
            f"| {d.drain_rate:g}/s | {d.backlog} batches ({d.backlog_readings:,} readings) | {d.wait:.2f} s "
            f"| {d.drained} batches | {d.drained / d.drain_seconds:,.1f} | {d.drained_readings / d.drain_seconds:,.0f} "
            f"| {d.sealed_meanwhile} ({d.live_rate:.1f}/s) | {d.to_caught_up:.2f} s | {d.missing} / {d.duplicates} |"
        )
    worst = min(
        median(runs, lambda r: r.delivered_rate) / median(results[(i, None)], lambda r: r.agent.sealed_rate)
        for (i, u), runs in results.items()
        if u
    )
    print(f"goal: none set for MQTT publishing (the issue names no target); worst delivered / sealed-only: {worst:.2f}")
    for d in drains:
        if d.caught_up:
            print(
                f"drain_rate {d.drain_rate:g}: drained at {d.drained / d.drain_seconds:.1f} batches/s "
                f"= {d.drained / d.drain_seconds / d.drain_rate:.2f} x drain_rate"
            )


if __name__ == "__main__":
    main()
