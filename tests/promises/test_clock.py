"""The fault suite's clock case, the system clock stepping backwards: DESIGN 5's promises (nothing
accepted is lost; `seq` and `b` continue) hold whatever the wall clock does, because order
is by `seq` and `b` and scheduling by the monotonic clock, never by the time of day.

The real agent (`edgeseal run`) runs under libfaketime, which reads the clock's offset from
a file the test rewrites while the agent runs, as NTP or an operator stepping the clock
would. What must be seen:
- stepped back an hour mid-run, then forward again: seals keep coming at the seal interval
  (timed by the test's own clock), `b` and `seq` have no hole, the seals keep the clock's
  times (an hour earlier after the step: kept, not made up), one warning per backward
  step, and the export verifies, complete;
- stepped back 20 years, before the device certificate's validity: every reading is still
  sealed and exported; verify rejects what was signed at a time the certificate was not
  yet valid (docs/operations.md, "Times" in docs/verification.md);
- restarted with the clock behind the last seal: the agent starts, `boot` counts the start,
  `b` and `seq` continue; behind the certificate's validity too, it logs one error line
  and keeps sealing.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from agent_harness import export_and_verify, write_config
from anchor_harness import wait_for

from agent.buffer.store import Buffer
from agent.trust.bundle import Batch, decode_bundle
from agent.trust.payloads import SealPayload, open_seal
from agent.trust.verify import Report

SOURCES = """  - name: line
    type: simulator
    interval: 20ms
    tags:
      - {name: temp, type: float, pattern: sine, min: 20, max: 80, period: 2s}
      - {name: strokes, type: int, pattern: counter}"""
INTERVAL = 0.2  # seconds, the seal interval below
SEALING = "interval: 200ms\n  checkpoint_every: 5"
# The longest wait for the next seal, on the test's clock: ten seal intervals, for a busy
# machine. A sealer that waited on the wall clock would wait as long as the step.
MAX_PAUSE = 2.0
STEP_FOR = 3.0  # seconds each clock setting lasts: longer than MAX_PAUSE, so a stall shows
RESTART_WITHIN = 30.0  # seconds between the last seal of one start and the first of the next
HOUR = 3600
TWENTY_YEARS = 20 * 365 * 86400
# The demo CA issues certificates valid from the moment it makes them. The agent's clock
# runs two hours ahead of that, so an hour back stays inside the validity, as it does on a
# gateway provisioned long before.
AHEAD = 2 * HOUR
WENT_BACK = re.compile(r"the system clock went back ([\d.]+) s before seal b=(\d+)")
BEFORE_CERTIFICATE = "the system clock is before the device certificate's validity"


def libfaketime() -> Path:
    """libfaketime, where Debian's `faketime` package (scripts/setup.sh test) or another
    distribution's puts it."""
    found = [
        lib
        for where in ("lib/*", "lib", "lib64")
        for lib in sorted(Path("/usr").glob(f"{where}/faketime/libfaketime.so.1"))
    ]
    assert found, "libfaketime not found: install the faketime package (bash scripts/setup.sh test)"
    return found[0]


class FakeClock:
    """The wall clock of the agents started with `environ()`: the real one plus an offset
    in seconds, which `set` changes at once for agents already running."""

    def __init__(self, directory: Path) -> None:
        self.file = directory / "faketime"
        self.set(0)

    def set(self, offset: int) -> None:
        staged = self.file.with_suffix(".new")
        staged.write_text(f"{offset:+d}\n")
        staged.replace(self.file)  # whole: a clock read never finds the file half-written

    def environ(self) -> dict[str, str]:
        return os.environ | {
            "LD_PRELOAD": str(libfaketime()),
            "FAKETIME_TIMESTAMP_FILE": str(self.file),
            # read the file at every clock read, so a step takes effect at once (about
            # 4 µs a read: nothing at this load)
            "FAKETIME_NO_CACHE": "1",
            # A kernel never steps CLOCK_MONOTONIC; faking it would test what cannot happen.
            # With this setting libfaketime 0.9.10 (Debian 12) mishandles
            # clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME), which Python >= 3.11's
            # time.sleep uses: EINVAL (libfaketime issue 426). The agent waits only in its
            # event loop (epoll, relative timeouts), so it is unaffected; a time.sleep added
            # to it would fail here with OSError, in its log.
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        }


@dataclass(frozen=True)
class Run:
    """One start of the agent: its log, and when (on the test's monotonic clock) each of
    its seals appeared and its last clock setting was up."""

    log: str
    seen: list[float]
    ended: float

    def longest_pause(self) -> float:
        times = [*self.seen, self.ended]
        return max(later - earlier for earlier, later in zip(times, times[1:]))

    def mean_pause(self) -> float:
        return (self.seen[-1] - self.seen[0]) / (len(self.seen) - 1)


class Agent:
    """`edgeseal run` on the simulator, under a FakeClock."""

    def __init__(self, directory: Path) -> None:
        self.config = write_config(directory, sources=SOURCES, seal=SEALING)
        self.state = directory / "state"
        self.clock = FakeClock(directory)
        self.starts = 0

    def run(self, offsets: Sequence[int]) -> Run:
        """Start with the clock at the first offset; from the first seal on, set each offset
        in turn for STEP_FOR seconds; then stop in order (SIGTERM)."""
        self.clock.set(offsets[0])
        self.starts += 1
        log = self.config.parent / f"agent-{self.starts}.log"
        with log.open("wb") as out:
            command = [sys.executable, "-m", "agent.cli", "run", "--config", str(self.config)]
            agent = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=self.clock.environ())
        try:
            wait_for(lambda: agent.poll() is not None or "edgeseal started" in log.read_text(), "the agent to start")
            assert agent.poll() is None, log.read_text()[-3000:]
            seen = self._watch(offsets)
            ended = time.monotonic()
            agent.send_signal(signal.SIGTERM)
            code = agent.wait(timeout=30)
        finally:
            agent.kill()
            agent.wait()
        assert code == 0, log.read_text()[-3000:]
        return Run(log.read_text(), seen, ended)

    def _watch(self, offsets: Sequence[int]) -> list[float]:
        buffer = Buffer.open(self.state, create=False)
        try:
            before = last_b(buffer)
            wait_for(lambda: last_b(buffer) > before, "the first seal of this start")
            seen, known = [time.monotonic()], before + 1
            for offset in offsets:
                self.clock.set(offset)
                until = time.monotonic() + STEP_FOR
                while time.monotonic() < until:
                    time.sleep(0.05)
                    now = last_b(buffer)
                    seen += [time.monotonic()] * (now - known)
                    known = now
            return seen
        finally:
            buffer.close()


def last_b(buffer: Buffer) -> int:
    with buffer.snapshot():
        last = buffer.last_seal()
    return last.b if last else 0


def sealed(state: Path) -> list[SealPayload]:
    """Every seal's payload, once checked that each keeps all its readings and that `b`
    and `seq` run on from 1 with no hole."""
    buffer = Buffer.open(state, create=False)
    try:
        with buffer.snapshot():
            rows = list(buffer.seals())
            for row in rows:
                assert len(buffer.readings(row.s0, row.s0 + row.n - 1)) == row.n, f"batch {row.b} lost readings"
    finally:
        buffer.close()
    seals = [open_seal(row.cose)[1] for row in rows]
    assert [s.b for s in seals] == list(range(1, len(seals) + 1)), "b has a hole"
    assert seals[0].s0 == 1 and all(s.s0 == p.s0 + p.n for p, s in zip(seals, seals[1:])), "seq has a hole"
    assert all(s.n > 0 and s.gap is None for s in seals), "readings were dropped"
    return seals


def clock_steps(seals: list[SealPayload], expected: Sequence[int], within: float) -> list[tuple[int, float]]:
    """(b, seconds) wherever the seal time moved other than forward by less than
    MAX_PAUSE, checked to be the `expected` steps of the clock to within `within` s:
    the seals keep the clock's times."""
    steps = [(s.b, (s.t - p.t) / 1e9) for p, s in zip(seals, seals[1:]) if not 0 <= s.t - p.t <= MAX_PAUSE * 1e9]
    assert len(steps) == len(expected), f"seal times stepped {steps}, the clock {list(expected)}"
    for (b, moved), step in zip(steps, expected):
        assert abs(moved - step) <= within, f"seal b={b}: time moved {moved} s, the clock {step} s"
    return steps


def assert_warned_once_per_step_back(log: str, steps: list[tuple[int, float]]) -> None:
    warned = [(int(b), float(seconds)) for seconds, b in WENT_BACK.findall(log)]
    assert warned == [(b, pytest.approx(-moved, abs=1e-3)) for b, moved in steps if moved < 0], log[-3000:]


def assert_rejected_for_signing_time(report: Report, misdated: tuple[int, int] | None = None) -> None:
    """Only what the device signed with its clock before the certificate's validity fails;
    `misdated`: the seals (first b, last b) signed then, one finding for the run of them."""
    assert not report.valid
    for finding in report.findings:
        assert "not yet valid when data was signed" in finding.message, finding
    if misdated:
        runs = [f.message.split(":")[0] for f in report.findings if f.where.startswith("batches[")]
        assert runs == [f"b={misdated[0]}..{misdated[1]}"], report.findings


def exported_readings(data: bytes) -> int:
    return sum(len(batch.readings) for batch in decode_bundle(data).batches if isinstance(batch, Batch))


def test_a_clock_stepped_back_an_hour_and_forward_again_stalls_nothing(tmp_path: Path) -> None:
    agent = Agent(tmp_path)
    run = agent.run([AHEAD, AHEAD - HOUR, AHEAD])
    seals = sealed(agent.state)
    steps = clock_steps(seals, [-HOUR, HOUR], within=MAX_PAUSE)
    assert_warned_once_per_step_back(run.log, steps)
    assert run.longest_pause() <= MAX_PAUSE, f"sealing stalled for {run.longest_pause():.1f} s"

    report, _ = export_and_verify(agent.config)
    last = seals[-1].s0 + seals[-1].n - 1
    assert report.valid, report.findings
    assert report.complete == [(1, last)] and not report.gaps and report.readings == last
    print(
        f"reliability: fault: clock back 1 h, then forward 1 h, mid-run: {len(seals)} seals, {last} readings,"
        f" one every {run.mean_pause():.2f} s, longest pause {run.longest_pause():.2f} s (interval {INTERVAL} s),"
        f" {len(WENT_BACK.findall(run.log))} warning, verify valid, seq 1..{last} complete"
    )


def test_a_clock_stepped_back_before_the_certificate_loses_no_reading(tmp_path: Path) -> None:
    agent = Agent(tmp_path)
    run = agent.run([0, -TWENTY_YEARS, 0])
    seals = sealed(agent.state)
    steps = clock_steps(seals, [-TWENTY_YEARS, TWENTY_YEARS], within=MAX_PAUSE)
    assert_warned_once_per_step_back(run.log, steps)
    assert run.longest_pause() <= MAX_PAUSE, f"sealing stalled for {run.longest_pause():.1f} s"

    report, data = export_and_verify(agent.config)
    readings = seals[-1].s0 + seals[-1].n - 1
    assert exported_readings(data) == readings, "the export left readings out"
    assert_rejected_for_signing_time(report, (steps[0][0], steps[1][0] - 1))
    wrong = sum(1 for s in seals if steps[0][0] <= s.b < steps[1][0])
    print(
        f"reliability: fault: clock back 20 years (before the certificate), mid-run: {len(seals)} seals"
        f" ({wrong} dated 20 years back), {readings} readings sealed and exported, longest pause between seals"
        f" {run.longest_pause():.2f} s; verify finds exactly those: {report.findings[0]}"
    )


def test_a_restart_with_the_clock_behind_the_last_seal_continues(tmp_path: Path) -> None:
    agent = Agent(tmp_path)
    runs = [agent.run([AHEAD]), agent.run([AHEAD - HOUR])]
    seals = sealed(agent.state)
    steps = clock_steps(seals, [-HOUR], within=RESTART_WITHIN)
    assert_warned_once_per_step_back("".join(run.log for run in runs), steps)
    report, _ = export_and_verify(agent.config)
    assert report.valid, report.findings
    assert report.boots == [1, 2] and report.complete == [(1, seals[-1].s0 + seals[-1].n - 1)] and not report.gaps

    runs.append(agent.run([-TWENTY_YEARS]))  # behind the certificate's validity too
    seals = sealed(agent.state)
    steps = clock_steps(seals, [-HOUR, -TWENTY_YEARS - HOUR], within=RESTART_WITHIN)
    assert_warned_once_per_step_back("".join(run.log for run in runs), steps)
    assert [run.log.count(BEFORE_CERTIFICATE) for run in runs] == [0, 0, 1], runs[-1].log[-3000:]
    assert sorted({s.boot for s in seals}) == [1, 2, 3], "a start was not counted, or sealed nothing"
    assert all(run.longest_pause() <= MAX_PAUSE for run in runs), [run.longest_pause() for run in runs]
    assert all(p.boot <= s.boot for p, s in zip(seals, seals[1:]))
    assert_rejected_for_signing_time(export_and_verify(agent.config)[0])
    print(
        f"reliability: fault: restarts with the clock 1 h behind the last seal, then 20 years behind"
        f" (before the certificate): boots 1-3, {len(seals)} seals, seq 1..{seals[-1].s0 + seals[-1].n - 1}"
        f" without a hole; valid until the third start, which logged one error line and kept sealing"
    )
