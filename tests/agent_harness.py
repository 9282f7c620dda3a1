"""Builds real agents for tests: a demo CA identity, a YAML config on disk, and helpers to
run the agent in-process for a while."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from cryptography import x509

from agent.buffer.store import Buffer
from agent.config import Config, load_config
from agent.export import Selection, export_bundle
from agent.runtime import RunStats, run_agent
from agent.trust.verify import Report, verify_bundle
from provisioning.devca import make_demo_identity

DEVICE_ID = "test-gateway-1"


def write_config(
    directory: Path, *, sources: str, seal: str = "interval: 200ms\n  checkpoint_every: 3\n  checkpoint_interval: 1s"
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    make_demo_identity(directory, DEVICE_ID)
    path = directory / "edgeseal.yaml"
    path.write_text(
        f"""device:
  id: {DEVICE_ID}
identity:
  key: device-key.pem
  cert_chain: device-chain.pem
sources:
{sources}
seal:
  {seal}
buffer:
  dir: state
"""
    )
    return path


SIMULATED = """  - name: line
    type: simulator
    interval: 20ms
    tags:
      - {name: temp, type: float, pattern: sine, min: 20, max: 80, period: 2s}
      - {name: running, type: bool, pattern: step, period: 1s}
      - {name: strokes, type: int, pattern: counter}
      - name: flaky
        pattern: ramp
        fault: {every: 500ms, duration: 200ms, quality: 0x800A0000}
  - name: meters
    type: simulator
    interval: 100ms
    generate: {count: 20, prefix: "meter.", pattern: random, max: 400}"""


def run_for(config: Config, seconds: float, **kwargs: Any) -> RunStats:
    async def main() -> RunStats:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(seconds, stop.set)
        stats = await run_agent(config, stop, **kwargs)
        leftovers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert not leftovers, f"agent left tasks behind: {leftovers}"
        return stats

    return asyncio.run(main())


def export_and_verify(config_path: Path, selection: Selection = Selection()) -> tuple[Report, bytes]:
    config = load_config(config_path)
    buffer = Buffer.open(config.buffer.dir, create=False)
    try:
        data = export_bundle(buffer, selection)[0].encode()
    finally:
        buffer.close()
    roots = x509.load_pem_x509_certificates((config_path.parent / "ca.pem").read_bytes())
    return verify_bundle(data, roots), data
