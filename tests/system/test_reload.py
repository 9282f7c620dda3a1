"""SIGHUP reloads the sources of a running `edgeseal run`: new tags are read at once, and
`seq`, `b` and `boot` carry on (one boot, no gap); a file that does not load changes
nothing and the log says where it is wrong."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from agent_harness import SIMULATED, export_and_verify, write_config
from anchor_harness import wait_for

from agent.buffer.store import Buffer
from agent.trust.leaf import decode_leaf

ADDED = """  - name: added
    type: simulator
    interval: 50ms
    tags:
      - {name: added.level, type: float, pattern: sine, min: 0, max: 10, period: 1s}"""


def tags_read(state: Path) -> set[str]:
    if not (state / "buffer.db").exists():
        return set()
    buffer = Buffer.open(state, create=False)
    try:
        first, last = 1, buffer.next_seq() - 1
        return {decode_leaf(leaf).tag for chunk in buffer.iter_readings(first, last) for _, leaf in chunk}
    finally:
        buffer.close()


def test_sighup_adds_sources_without_a_new_boot(tmp_path: Path) -> None:
    config = write_config(tmp_path, sources=SIMULATED)
    log = (tmp_path / "agent.log").open("wb")
    with log:
        agent = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "run", "--config", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
    try:
        wait_for(lambda: "temp" in tags_read(tmp_path / "state"), "the first readings")
        good = config.read_text()
        config.write_text(good.replace("sources:\n", "sources:\n  - name: broken\n    type: nonsense\n", 1))
        agent.send_signal(signal.SIGHUP)
        wait_for(lambda: "reload refused" in (tmp_path / "agent.log").read_text(), "the refusal")
        config.write_text(good.replace(SIMULATED, SIMULATED + "\n" + ADDED))
        agent.send_signal(signal.SIGHUP)
        wait_for(lambda: "added.level" in tags_read(tmp_path / "state"), "readings of the added source")
        time.sleep(0.5)
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=30) == 0
    finally:
        agent.kill()
        agent.wait()

    text = (tmp_path / "agent.log").read_text()
    assert "edgeseal.yaml:" in text.split("reload refused", 1)[1].splitlines()[0]  # where it is wrong
    assert "reloaded: 3 sources (line, meters, added)" in text
    report, _ = export_and_verify(config)
    assert report.valid, report.findings
    assert report.boots == [1] and len(report.complete) == 1 and not report.gaps  # seq carried on
