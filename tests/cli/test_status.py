"""`edgeseal status`: sealing and delivery as an operator reads them, from the state
directory, while nothing (or an agent) runs."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from cli_runner import in_process
from fixtures import open_pipeline

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
