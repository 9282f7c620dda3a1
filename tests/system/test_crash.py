"""kill -9 at random moments: the buffer opens clean, no sealed reading is lost, seq and
b continue, and the seal chain verifies (DESIGN 5, first promise)."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from agent_harness import export_and_verify, write_config

from agent.trust.payloads import open_seal

TRIALS = int(os.environ.get("EDGESEAL_CRASH_TRIALS", "20"))
STEADY = """  - name: load
    type: simulator
    interval: 10ms
    generate: {count: 200, prefix: "p.", pattern: random}"""
# More than one core can store: the memory queue overflows, readings are dropped, and
# kills land between a drop and the seal that would have signed its gap.
OVERLOADED = """  - name: flood
    type: simulator
    interval: 10ms
    generate: {count: 4000, prefix: "f.", pattern: random}
buffer:
  max_pending: 1000"""


def _start(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


Snapshot = dict[int, tuple[bytes, int, int, int, bytes]]


def _snapshot(db: Path) -> Snapshot:
    """b -> (seal bytes, s0, n, first seq the seal accounts for, digest of its readings)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        out = {}
        for b, s0, n, cose in conn.execute("SELECT b, s0, n, cose FROM seals ORDER BY b"):
            leaves = conn.execute(
                "SELECT leaf FROM readings WHERE seq BETWEEN ? AND ? ORDER BY seq", (s0, s0 + n - 1)
            ).fetchall()
            assert len(leaves) == n, f"batch {b} lost readings"
            gap = open_seal(cose)[1].gap
            first = gap.first if gap else s0
            out[b] = (cose, s0, n, first, hashlib.sha256(b"".join(leaf for (leaf,) in leaves)).digest())
        return out
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("load", "trials"), [(STEADY, TRIALS), (OVERLOADED, max(1, TRIALS // 2))], ids=["steady", "overloaded"]
)
def test_kill_9_at_random_moments_loses_no_sealed_reading(tmp_path: Path, load: str, trials: int) -> None:
    sources, _, buffer = load.partition("buffer:\n")
    config = write_config(tmp_path, sources=sources.rstrip("\n"), seal="interval: 100ms\n  checkpoint_every: 5")
    if buffer:
        config.write_text(config.read_text().replace("buffer:\n", "buffer:\n" + buffer + "\n"))
    db = tmp_path / "state" / "buffer.db"
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    sealed: Snapshot = {}
    for trial in range(trials):
        agent = _start(config)
        time.sleep(rng.uniform(0.8, 2.5))  # interpreter start-up is ~0.6 s of it
        agent.send_signal(signal.SIGKILL)
        agent.wait(timeout=10)
        now = _snapshot(db)
        for b, seal in sealed.items():
            assert now.get(b) == seal, f"trial {trial}: sealed batch {b} changed or vanished"
        bs = sorted(now)
        assert bs == list(range(1, len(bs) + 1)), f"trial {trial}: batch numbers have holes"
        for b in bs[1:]:
            _, p0, pn, _, _ = now[b - 1]
            assert now[b][3] == p0 + pn, f"trial {trial}: seq does not continue at batch {b}"
        sealed = now
    assert len(sealed) > trials, "the agent sealed almost nothing: kills came too early to mean anything"

    agent = _start(config)  # a last, orderly run checkpoints everything
    time.sleep(2.0)
    agent.send_signal(signal.SIGTERM)
    _, stderr = agent.communicate(timeout=30)
    assert agent.returncode == 0, stderr.decode()
    report, _ = export_and_verify(config)
    assert report.valid, report.findings
    # every start counted; a start killed before its first seal leaves no seal of that boot
    assert set(report.boots) <= set(range(1, trials + 2)) and report.boots[-1] == trials + 1
    assert all(gap.signed for gap in report.gaps), report.gaps
    pieces = sorted([*report.complete, *((g.first, g.last) for g in report.gaps)])
    assert pieces[0][0] == 1 and all(a[1] + 1 == b[0] for a, b in zip(pieces, pieces[1:])), (
        "every seq from 1 on is either a verified reading or inside a signed gap"
    )
    if load is STEADY:
        assert len(report.complete) == 1 and not report.gaps
    else:
        assert report.gaps, "the overload dropped nothing: the test did not test drops"
