"""The supervisor: builds the pipeline from a configuration and runs it until stopped.

drivers -> sequencer -> buffer <- sealer, all on one event loop. A driver that crashes
(a bug, not a device fault: those become Bad readings inside the driver) is logged and
restarted with backoff; it never takes the other drivers or the sealer down. Stopping
is orderly: drivers first, then whatever was read is committed, sealed and
checkpointed before the buffer closes.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from dataclasses import dataclass, field
from typing import Any

import drivers
from agent.buffer.store import Buffer
from agent.keys import open_signer
from agent.keys.signer import Signer
from agent.sealer import Sealer
from agent.sequencer import Sequencer
from drivers.api import DriverContext

log = logging.getLogger(__name__)

RESTART_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)


@dataclass
class RunStats:
    boot: int = 0
    seals: int = 0
    log_size: int = 0
    dropped: int = 0
    driver_restarts: dict[str, int] = field(default_factory=dict)


async def run_agent(config: Any, stop: asyncio.Event, signer: Signer | None = None) -> RunStats:
    """Run until `stop` is set; returns what this run did."""
    signer = signer or open_signer(config.identity)
    buffer = Buffer.open(config.buffer.dir)
    stats = RunStats()
    try:
        stats.boot = buffer.start_boot(time.time_ns())
        sequencer = Sequencer(
            buffer,
            max_pending=config.buffer.max_pending,
            flush_interval=config.buffer.flush_interval,
            max_batch=config.seal.max_readings,
        )
        sealer = Sealer(
            buffer,
            sequencer,
            signer,
            device_id=config.device.id,
            boot=stats.boot,
            interval=config.seal.interval,
            checkpoint_every=config.seal.checkpoint_every,
            checkpoint_interval=config.seal.checkpoint_interval,
        )
        log.info("edgeseal started: device %s, boot %d, next seq %d", config.device.id, stats.boot, buffer.next_seq())
        await _run_pipeline(config, sequencer, sealer, stop, stats)
        stats.seals, stats.log_size, stats.dropped = sealer.seals_made, sealer.log_size, sequencer.dropped
    finally:
        buffer.close()
        await signer.close()
    return stats


async def _run_pipeline(
    config: Any, sequencer: Sequencer, sealer: Sealer, stop: asyncio.Event, stats: RunStats
) -> None:
    flusher = asyncio.create_task(sequencer.run(), name="sequencer")
    sealing = asyncio.create_task(sealer.run(stop), name="sealer")
    sources = [
        asyncio.create_task(_supervise(source, sequencer, config.buffer.dir, stats), name=f"source:{source.name}")
        for source in config.sources
    ]
    stopping = asyncio.create_task(stop.wait(), name="stop")
    try:
        # The sealer or the flusher ending on its own is a fault: stop and let it raise.
        await asyncio.wait({stopping, sealing, flusher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        for task in sources:
            task.cancel()
        await asyncio.gather(*sources, return_exceptions=True)
        stop.set()
        try:
            await sealing  # finishes: final flush, seal and checkpoint
        finally:
            flusher.cancel()
            await asyncio.gather(flusher, return_exceptions=True)
    if not flusher.cancelled() and flusher.exception() is not None:
        raise flusher.exception()  # type: ignore[misc]


async def _supervise(source: Any, sequencer: Sequencer, state_dir: str, stats: RunStats) -> None:
    context = DriverContext(source.name, logging.getLogger(f"edgeseal.source.{source.name}"), state_dir)
    module = drivers.driver_module(source.type)
    restarts = 0
    while True:
        driver = module.create(source, sequencer, context)
        try:
            await driver.run()
            return
        except asyncio.CancelledError:
            raise
        except Exception:  # the one broad catch: a driver bug must not stop the agent
            delay = RESTART_DELAYS[min(restarts, len(RESTART_DELAYS) - 1)]
            log.exception("source %s crashed; restarting in %.0f s", source.name, delay)
            restarts += 1
            stats.driver_restarts[source.name] = restarts
            await asyncio.sleep(delay)


def install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
