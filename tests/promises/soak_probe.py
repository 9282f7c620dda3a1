"""What a soak watches of a running process, read from /proc (Linux) without disturbing
it: resident memory, open file descriptors, threads and CPU time; and the figures the
soak's verdicts rest on, computed over spans of those samples.

Memory is judged by the anonymous part of the resident set (RssAnon: heap, stacks),
which is what a leak grows. The rest of VmRSS is file pages, the code of the interpreter
and its libraries, which come and go with the page cache: when the machine's page cache
was emptied under a running soak, VmRSS fell by 26 MB at once, then crept back as the
pages were read again, a rise a slope over VmRSS would have taken for a leak."""

from __future__ import annotations

import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Sample:
    t: float  # seconds since the soak started
    rss_mb: float  # VmRSS, for the record
    anon_mb: float  # RssAnon, for the verdicts
    fds: int
    threads: int
    cpu_s: float  # user + system time of the process so far
    readings: int  # readings sealed so far


def sample(pid: int, t: float, readings: int) -> Sample:
    proc = Path(f"/proc/{pid}")
    status = dict(line.split(":", 1) for line in (proc / "status").read_text().splitlines())
    # stat fields 14 and 15 (utime, stime) counted after the command name, which may hold spaces
    fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
    return Sample(
        t=t,
        rss_mb=int(status["VmRSS"].split()[0]) / 1024,
        anon_mb=int(status["RssAnon"].split()[0]) / 1024,
        fds=len(os.listdir(proc / "fd")),
        threads=int(status["Threads"]),
        cpu_s=(int(fields[11]) + int(fields[12])) / CLOCK_TICKS,
        readings=readings,
    )


def slope_per_hour(samples: Sequence[Sample]) -> float:
    """Least-squares slope of the anonymous resident memory over time, in MB per hour."""
    return statistics.linear_regression([s.t for s in samples], [s.anon_mb for s in samples]).slope * 3600


def thirds(samples: Sequence[Sample]) -> tuple[Sequence[Sample], Sequence[Sample], Sequence[Sample]]:
    """First, middle and last third; neighbours share their boundary sample, so the
    spans between samples are all covered."""
    n = len(samples) // 3
    return samples[: n + 1], samples[n : 2 * n + 1], samples[2 * n :]


def cpu_per_reading_us(span: Sequence[Sample]) -> float:
    first, last = span[0], span[-1]
    return (last.cpu_s - first.cpu_s) / (last.readings - first.readings) * 1e6


def write_csv(samples: Sequence[Sample], path: Path) -> None:
    """Every sample, for a look at how a figure moved."""
    lines = ["t,rss_mb,anon_mb,fds,threads,cpu_s,readings"]
    lines += [
        f"{s.t:.1f},{s.rss_mb:.2f},{s.anon_mb:.2f},{s.fds},{s.threads},{s.cpu_s:.2f},{s.readings}" for s in samples
    ]
    path.write_text("\n".join(lines) + "\n")
