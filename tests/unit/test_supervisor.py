"""A source whose driver crashes, or a service that fails (a bug), is restarted; the
others carry on."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from agent_harness import SIMULATED, run_for, write_config

from agent import runtime
from agent.buffer.store import Buffer
from agent.config import load_config
from agent.keys.software import SoftwareSigner
from agent.retention import Retention
from agent.sequencer import Sequencer
from drivers.api import Reading


class Crashy:
    """create() fails once, then run() fails once, then the driver works."""

    def __init__(self) -> None:
        self.creates = 0
        self.readings = 0

    def create(self, source: Any, sink: Sequencer, context: Any) -> Any:
        self.creates += 1
        if self.creates == 1:
            raise RuntimeError("bug in the driver's constructor")
        return SimpleNamespace(run=lambda: self._run(sink))

    async def _run(self, sink: Sequencer) -> None:
        if self.creates == 2:
            raise RuntimeError("bug in the driver's loop")
        while True:
            await sink.submit([Reading("x", 1, 1, 0)])
            self.readings += 1
            await asyncio.sleep(0.01)


def test_a_crashing_driver_is_restarted_with_backoff(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    crashy = Crashy()
    monkeypatch.setattr(runtime.drivers, "driver_module", lambda source_type: crashy)
    monkeypatch.setattr(runtime, "RESTART_DELAYS", (0.05, 0.1))
    buffer = Buffer.open(tmp_path)
    sequencer = Sequencer(buffer, max_pending=1000, flush_interval=0.01, max_batch=100)
    stats = runtime.RunStats()

    async def scenario() -> None:
        task = asyncio.create_task(runtime._supervise(SimpleNamespace(name="crashy", type="x"), sequencer, "", stats))
        await asyncio.sleep(0.6)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())
    buffer.close()
    assert crashy.creates == 3 and stats.driver_restarts == {"crashy": 2}
    assert crashy.readings > 10, "the third driver ran"


def test_a_failing_service_is_restarted_and_the_agent_runs_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real_run = Retention.run

    async def fails_once(self: Retention) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("bug in the retention service")
        await real_run(self)

    monkeypatch.setattr(Retention, "run", fails_once)
    monkeypatch.setattr(runtime, "RESTART_DELAYS", (0.05, 0.1))
    config = load_config(write_config(tmp_path, sources=SIMULATED))

    stats = run_for(config, 1.5)

    assert stats.service_restarts == {"retention": 1} and len(calls) == 2
    assert stats.seals > 3  # sealing never stopped


class HangingSigner(SoftwareSigner):
    """Signs until told to hang, then never answers: a TPM that stopped answering."""

    hang = False

    async def sign_digest(self, digest: bytes) -> bytes:
        if self.hang:
            await asyncio.Event().wait()
        return await super().sign_digest(digest)


def test_a_stop_is_bounded_when_the_last_seal_cannot_be_made(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "STOP_WITHIN", 0.5)
    config = load_config(write_config(tmp_path, sources=SIMULATED))
    signer = HangingSigner.from_files(tmp_path / "device-key.pem", tmp_path / "device-chain.pem")

    async def scenario() -> float:
        stop = asyncio.Event()
        running = asyncio.create_task(runtime.run_agent(config, stop, signer))
        await asyncio.sleep(1.0)
        signer.hang = True
        await asyncio.sleep(0.3)
        stop.set()
        began = asyncio.get_running_loop().time()
        await running
        return asyncio.get_running_loop().time() - began

    assert asyncio.run(scenario()) < 2.0
    buffer = Buffer.open(tmp_path / "state")  # closed cleanly: it opens, and its seals chain
    try:
        last = buffer.last_seal()
        assert last is not None and last.b >= 2
    finally:
        buffer.close()
