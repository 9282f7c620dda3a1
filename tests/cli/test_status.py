"""`edgeseal status`: sealing and delivery as an operator reads them, from the state
directory, while nothing (or an agent) runs; and whether the devices answer."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from agent_harness import run_for, write_config
from cli_runner import in_process
from fixtures import open_pipeline
from modbus_servers import free_port

from agent.config import load_config
from agent.keys.software import SoftwareSigner
from drivers.api import Reading
from provisioning.devca import make_demo_identity


def test_status_counts_what_waits_for_the_broker(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    identity = make_demo_identity(tmp_path, "status-gw")
    signer = SoftwareSigner.from_files(identity.key_path, identity.chain_path)

    async def three_batches() -> None:
        buffer, sequencer, sealer = open_pipeline(tmp_path / "state", signer, "status-gw")
        for n in (5, 6, 7):
            await sequencer.submit([Reading("t", time.time_ns(), float(i)) for i in range(n)])
            await sealer.seal_pending()
        await sealer.checkpoint()
        buffer.mark_delivered(1, time.time_ns())
        buffer.close()

    asyncio.run(three_batches())
    status = in_process(capsys, "status", "--state-dir", str(tmp_path / "state"))

    text = status()
    assert text.code == 0, text.err
    assert "sealed       3 batches" in text.out and "checkpointed 3 of them" in text.out
    assert "waiting      2 batches, 13 readings, the oldest sealed" in text.out
    assert "dropped      0 batches" in text.out
    figures = json.loads(status("--json").out)
    assert (figures["waiting_batches"], figures["waiting_readings"], figures["dropped_batches"]) == (2, 13, 0)


def test_status_of_a_missing_state_directory_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = in_process(capsys, "status")("--state-dir", str(tmp_path / "nowhere"))
    assert result.code == 2
    assert result.error().startswith("edgeseal: ")


def test_status_says_which_devices_answer_with_their_latest_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sources = f"""  - name: line
    type: simulator
    interval: 50ms
    tags:
      - {{name: speed, type: int, pattern: constant, value: 42}}
  - name: dead
    type: modbus
    url: tcp://127.0.0.1:{free_port()}
    interval: 100ms
    timeout: 200ms
    devices:
      - unit: 1
        tags:
          - {{name: dead.power, address: 400001, type: float32}}"""
    config = write_config(tmp_path, sources=sources)
    run_for(load_config(config), 1.5)

    status = in_process(capsys, "status", "--state-dir", str(tmp_path / "state"))
    text = status()
    assert text.code == 0, text.err
    assert "  line       answering, last good reading" in text.out and "speed=42" in text.out
    assert "  dead       NOT ANSWERING (last good reading never): dead.power quality 0x80" in text.out
    health = json.loads(status("--json").out)["health"]
    assert health["sources"]["line"]["tags"]["speed"]["value"] == 42
    assert health["sources"]["dead"]["last_good"] is None
