"""Metrics benchmark: what the Prometheus endpoint costs the agent per reading.

The whole agent (`agent.runtime.run_agent`: simulator source of 1,000 float tags every
20 ms, 50,000 readings/s; sequencer, buffer on disk, sealer with a software key) runs in a
fresh process pinned to the first core, with a `metrics` section (every reading counted
by source and quality, seal and signing latencies observed, the buffer's gauges refreshed
every 2 s) and, as the baseline in the same run, without one. A scraper in this process
reads /metrics once a second, as Prometheus would. The two configurations run in
interleaved rounds; medians of agent CPU (getrusage RUSAGE_SELF) per reading sealed.

    python bench/metrics.py [--rounds 3] [--warmup 1.5] [--window 4]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.mqtt import AgentRun, agent_process, write_config  # noqa: E402
from bench.pipeline import in_fresh_process  # noqa: E402
from tests.modbus_servers import free_port  # noqa: E402

INTERVAL = 0.02  # 1,000 tags every 20 ms


def one_run(metrics_port: int | None, args: argparse.Namespace) -> tuple[AgentRun, int]:
    """The agent's run, and how many scrapes answered during it."""
    with tempfile.TemporaryDirectory() as directory:
        path = write_config(Path(directory), INTERVAL, "interval: 1s", None)
        if metrics_port is not None:
            path.write_text(path.read_text() + f"metrics:\n  listen: 127.0.0.1:{metrics_port}\n")
        done, scrapes = threading.Event(), [0]
        scraper = threading.Thread(target=_scrape, args=(metrics_port, done, scrapes)) if metrics_port else None
        if scraper:
            scraper.start()
        try:
            run = in_fresh_process(agent_process, str(path), args.warmup, args.window, directory, 0)
        finally:
            done.set()
            if scraper:
                scraper.join()
    return run, scrapes[0]


def _scrape(port: int, done: threading.Event, scrapes: list[int]) -> None:
    while not done.wait(1.0):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
                response.read()
            scrapes[0] += 1
        except OSError:
            pass  # the agent is not listening yet, or no longer


def cpu_per_reading(run: AgentRun) -> float:
    """µs of agent CPU per reading sealed."""
    return run.cpu / run.seconds / run.sealed_rate * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=float, default=1.5)
    parser.add_argument("--window", type=float, default=4.0)
    args = parser.parse_args()
    with_metrics: list[tuple[AgentRun, int]] = []
    without: list[AgentRun] = []
    for _ in range(args.rounds):
        without.append(one_run(None, args)[0])
        with_metrics.append(one_run(free_port(), args))
    base = statistics.median(cpu_per_reading(r) for r in without)
    measured = statistics.median(cpu_per_reading(r) for r, _ in with_metrics)
    print(f"edgeseal metrics: 1,000 tags every {INTERVAL * 1000:g} ms, {args.rounds} interleaved rounds, medians")
    print("| | without metrics (baseline) | with metrics, scraped every second |")
    print("|---|---|---|")
    runs = [without, [r for r, _ in with_metrics]]
    rate = [statistics.median(r.sealed_rate for r in side) for side in runs]
    rss = [statistics.median(r.max_rss_mb for r in side) for side in runs]
    extra = f"{measured - base:+.2f} µs, {measured / base:.2f}×"
    print(f"| readings/s sealed | {rate[0]:,.0f} | {rate[1]:,.0f} |")
    print(f"| agent CPU per reading | {base:.2f} µs | {measured:.2f} µs ({extra}) |")
    print(f"| scrapes answered per run | | {statistics.median(s for _, s in with_metrics):.0f} |")
    print(f"| agent max RSS | {rss[0]:.0f} MB | {rss[1]:.0f} MB |")


if __name__ == "__main__":
    main()
