"""The agent's log: one event per line with its level, journal priorities under systemd,
and no secret in it, even at debug level: not the MQTT password, not the chain
keystore's passphrase."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from agent_harness import SIMULATED, write_config
from anchor_harness import PASSPHRASE, ChainAccount, anchor_section, deploy_registry, fund, wait_for
from anvil_chain import Anvil
from mqtt_broker import BrokerFarm, BrokerSpec

from agent.logs import JournalFormatter, OneLineFormatter

MQTT_PASSWORD = "correct-horse-battery-staple-7"
LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: ")
JOURNAL_LINE = re.compile(r"<[2-7]>(DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: ")


def record(level: int, message: str, exc_info: object = None) -> logging.LogRecord:
    return logging.LogRecord("agent.x", level, __file__, 1, message, None, exc_info)  # type: ignore[arg-type]


def test_a_traceback_stays_one_line_and_the_journal_gets_priorities() -> None:
    try:
        raise RuntimeError("bug")
    except RuntimeError:
        failure = record(logging.ERROR, "it failed\nbadly", sys.exc_info())
    line = OneLineFormatter("%(levelname)s %(name)s: %(message)s").format(failure)
    assert "\n" not in line and line.startswith("ERROR agent.x: it failed\\nbadly\\nTraceback")
    journal = JournalFormatter("%(levelname)s %(name)s: %(message)s")
    assert journal.format(record(logging.WARNING, "w")) == "<4>WARNING agent.x: w"
    assert journal.format(record(logging.DEBUG, "d")) == "<7>DEBUG agent.x: d"


def run_agent(config: Path, log: Path, environ: dict[str, str], until: Callable[[], bool]) -> str:
    with log.open("wb") as out:
        if environ.get("JOURNAL_STREAM") == "":  # "": this log file's own, as systemd would set it
            info = os.fstat(out.fileno())
            environ = environ | {"JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}"}
        command = [sys.executable, "-m", "agent.cli", "--verbose", "run", "--config", str(config)]
        agent = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=os.environ | environ)
    try:
        wait_for(until, "the agent to log in to the broker and anchor")
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=30) == 0
    finally:
        agent.kill()
        agent.wait()
    return log.read_text()


def test_no_secret_is_logged_and_every_event_is_one_line(
    tmp_path: Path, mqtt_brokers: BrokerFarm, anvil: Anvil, chain_keystore: ChainAccount
) -> None:
    broker = mqtt_brokers.start(BrokerSpec(allow_anonymous=False, users={"edge": MQTT_PASSWORD}))
    contract = deploy_registry(anvil)
    fund(anvil, chain_keystore.address)
    config = write_config(tmp_path, sources=SIMULATED)
    mqtt = f"mqtt:\n  url: {broker.url}\n  username: edge\n  password_env: TEST_MQTT_PASSWORD\n"
    config.write_text(config.read_text() + mqtt + anchor_section(anvil.url, anvil.chain_id, contract, chain_keystore))
    environ = {"TEST_MQTT_PASSWORD": MQTT_PASSWORD}

    def logged_in_and_anchored(log: Path) -> Callable[[], bool]:
        return lambda: all(done in log.read_text() for done in (f"connected to {broker.url}", "anchored checkpoint"))

    plain, journal = (
        run_agent(config, tmp_path / name, environ | extra, logged_in_and_anchored(tmp_path / name))
        for name, extra in (("plain.log", {}), ("journal.log", {"JOURNAL_STREAM": ""}))
    )

    for text, pattern in ((plain, LINE), (journal, JOURNAL_LINE)):
        lines = text.splitlines()
        assert any("DEBUG" in line for line in lines)  # debug level really was on
        assert [line for line in lines if not pattern.match(line)] == []
        assert MQTT_PASSWORD not in text and PASSPHRASE.decode() not in text
