"""What a crash or a power cut must leave intact, read straight from a buffer file: the
shared checks of the crash and power-cut suites (DESIGN 5, first promise)."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from powercut_fs import PowerCutFs

from agent.crashpoints import ENV, POINTS
from agent.trust.payloads import open_seal

# How many arrivals at each point a trial may run to before its kill: within a few
# seconds of the start at this load (10 seals and 2 checkpoints a second, an anchor a second).
ARRIVALS = {
    "readings.written": 300,
    "seal.signed": 30,
    "seal.written": 30,
    "checkpoint.signed": 6,
    "checkpoint.written": 6,
    "batch.acknowledged": 30,
    "checkpoint.acknowledged": 6,
    "anchor.journaled": 2,
    "anchor.sent": 2,
    "anchor.final": 2,
}
NOT_REACHED_WITHIN = 20.0  # seconds; a point not reached by then is reported, and the trial ends with a kill


@dataclass(frozen=True)
class Sealed:
    """What a seal must keep for ever: its bytes, and the digest of its readings."""

    cose: bytes
    s0: int
    n: int
    first: int  # the first seq it accounts for (a gap's first, else s0)
    boot: int
    readings: bytes


@dataclass
class Snapshot:
    seals: dict[int, Sealed]
    checkpoints: dict[int, bytes]
    anchors: dict[int, bytes]
    boots: int


def snapshot(db: Path) -> Snapshot:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        seals = {}
        for b, s0, n, cose in conn.execute("SELECT b, s0, n, cose FROM seals ORDER BY b"):
            leaves = conn.execute(
                "SELECT leaf FROM readings WHERE seq BETWEEN ? AND ? ORDER BY seq", (s0, s0 + n - 1)
            ).fetchall()
            assert len(leaves) == n, f"batch {b} lost readings"
            payload = open_seal(cose)[1]
            first = payload.gap.first if payload.gap else s0
            digest = hashlib.sha256(b"".join(leaf for (leaf,) in leaves)).digest()
            seals[b] = Sealed(cose, s0, n, first, payload.boot, digest)
        checkpoints = dict(conn.execute("SELECT size, cose FROM checkpoints"))
        anchors = dict(_rows(conn, "SELECT size, record FROM anchors"))
        (boots,) = conn.execute("SELECT count(*) FROM boots").fetchone()
        return Snapshot(seals, checkpoints, anchors, boots)
    finally:
        conn.close()


def _rows(conn: sqlite3.Connection, sql: str) -> list[tuple[int, bytes]]:
    try:
        return conn.execute(sql).fetchall()
    except sqlite3.OperationalError:  # killed before the anchoring tables were made
        return []


def assert_kept(before: Snapshot, now: Snapshot, trial: str) -> None:
    """Nothing committed before the kill changed or vanished; counters continue."""
    for b, seal in before.seals.items():
        assert now.seals.get(b) == seal, f"{trial}: sealed batch {b} changed or vanished"
    for size, cose in before.checkpoints.items():
        assert now.checkpoints.get(size) == cose, f"{trial}: checkpoint {size} changed or vanished"
    for size, record in before.anchors.items():
        assert now.anchors.get(size) == record, f"{trial}: anchor record {size} changed or vanished"
    bs = sorted(now.seals)
    assert bs == list(range(1, len(bs) + 1)), f"{trial}: batch numbers have holes"
    for b in bs[1:]:
        prev, seal = now.seals[b - 1], now.seals[b]
        assert seal.first == prev.s0 + prev.n, f"{trial}: seq does not continue at batch {b}"
        assert seal.boot >= prev.boot, f"{trial}: boot went back at batch {b}"
    assert not bs or now.seals[bs[-1]].boot <= now.boots, f"{trial}: a seal names a start never counted"


@dataclass
class Tally:
    """The suite's figures: kills per crash point, and points a trial did not reach."""

    kills: Counter[str] = field(default_factory=Counter)
    not_reached: Counter[str] = field(default_factory=Counter)

    def line(self) -> str:
        kills = ", ".join(f"{point} {self.kills[point]}" for point in [*POINTS, "random"] if self.kills[point])
        missed = f"; not reached in time: {dict(self.not_reached)}" if self.not_reached else ""
        return f"{sum(self.kills.values())} kills ({kills}){missed}"


class Trials:
    """Starts the agent again and again, each time killed at the trial's point. With
    `power`, the state directory lives on a power-cut file system, and each kill is a
    power cut: what the agent wrote but never synced is lost with it."""

    def __init__(self, config: Path, seed: int, power: PowerCutFs | None = None) -> None:
        self.config, self.power = config, power
        state = power.backing if power else config.parent / "state"
        self.db = state / "buffer.db"
        self.log = config.parent / "agent.log"
        self.rng = random.Random(seed)
        self.tally = Tally()
        self.state = Snapshot({}, {}, {}, 0)

    def start(self, crash_at: str | None = None) -> subprocess.Popen[bytes]:
        if self.power:
            self.power.mount()
        env = {k: v for k, v in os.environ.items() if k != ENV} | ({ENV: crash_at} if crash_at else {})
        with self.log.open("ab") as log:
            command = [sys.executable, "-m", "agent.cli", "run", "--config", str(self.config)]
            return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)

    def stop(self, agent: subprocess.Popen[bytes]) -> int:
        """An orderly stop (SIGTERM); then the power may go, as after a shutdown."""
        agent.send_signal(signal.SIGTERM)
        code = agent.wait(timeout=30)
        if self.power:
            self.power.cut()
        return code

    def kill(self, trial: int, point: str | None) -> Snapshot:
        """One trial; returns what survived it, once checked against what survived before."""
        if point is None:
            agent = self.start()
            time.sleep(self.rng.uniform(0.8, 4.0))  # interpreter start-up is ~0.6 s of it
            self._cut(agent)
            self.tally.kills["random"] += 1
        else:
            agent = self.start(f"{point}:{self.rng.randint(1, ARRIVALS[point])}")
            try:
                code = agent.wait(timeout=NOT_REACHED_WITHIN)
            except subprocess.TimeoutExpired:
                self._cut(agent)
                self.tally.not_reached[point] += 1
            else:
                assert code == -signal.SIGKILL, f"trial {trial}: the agent ended with {code}, see {self.log}"
                self._cut(agent)
                self.tally.kills[point] += 1
        now = snapshot(self.db)
        assert_kept(self.state, now, f"trial {trial} ({point or 'random moment'})")
        self.state = now
        return now

    def _cut(self, agent: subprocess.Popen[bytes]) -> None:
        """SIGKILL; under a power cut, the file system goes first, so nothing more is written."""
        if self.power:
            self.power.cut(agent)
        agent.kill()
        agent.wait(timeout=10)

    def run(self, trials: int, points: tuple[str, ...], after: Callable[[Snapshot], None] = lambda _: None) -> None:
        """`after` checks what survived each trial against the world outside (a broker, a chain)."""
        slots: list[str | None] = [*points, None]
        for trial in range(trials):
            after(self.kill(trial, slots[trial % len(slots)]))
