"""The supervisor: builds the pipeline from a configuration and runs it until stopped.

drivers -> sequencer -> buffer <- sealer, with the publisher and the anchoring worker
reading the buffer, all on one event loop. A driver or a service (MQTT, publisher,
anchoring, retention, metrics, watchdog) that fails or ends (a bug: device, network and
chain faults are handled inside each) is logged and restarted with backoff; it never
takes the others down. The sequencer and the sealer are not restarted in-process: their
state is the buffer's, so a failure there ends the process for systemd to restart,
which reloads that state from disk. Stopping is orderly: drivers first, then whatever
was read is committed, sealed and checkpointed before the buffer closes.
SIGHUP replaces the sources (agent.reload).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import drivers
from agent import __version__
from agent.buffer.store import Buffer
from agent.errors import KeyError_
from agent.health import FILE as HEALTH_FILE
from agent.health import Health
from agent.keys import open_signer
from agent.keys.signer import Signer
from agent.metrics import Metrics
from agent.notify import Notifier
from agent.publish.publisher import Identity
from agent.publish.service import start_publishing
from agent.reload import Reload
from agent.retention import Retention
from agent.sealer import Sealer
from agent.sequencer import Sequencer
from agent.trust.certs import device_id_of
from drivers.api import DriverContext, ReadingSink

SecretReader = Callable[[str], Awaitable[str]]
log = logging.getLogger(__name__)

RESTART_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)
EXIT_INTERRUPTED = 130
HEALTHY_AFTER = 60.0  # seconds a source must run before its backoff starts over
# seconds a stop waits for the last seal (a full disk, a TPM that stopped answering): below
# systemd's TimeoutStopSec=30, so the buffer is closed by the agent, not killed with it
STOP_WITHIN = 20.0


@dataclass
class RunStats:
    boot: int = 0
    seals: int = 0
    log_size: int = 0
    dropped: int = 0
    driver_restarts: dict[str, int] = field(default_factory=dict)  # by source name
    service_restarts: dict[str, int] = field(default_factory=dict)  # by service name


async def run_agent(
    config: Any, stop: asyncio.Event, signer: Signer | None = None, reload: Reload | None = None
) -> RunStats:
    """Run until `stop` is set, replacing the sources whenever `reload` is requested;
    returns what this run did."""
    signer = signer or await open_signer(config.identity)
    try:
        _check_identity(signer, config.device.id)
        buffer = Buffer.open(config.buffer.dir)
        try:
            return await _run_with(config, buffer, signer, stop, reload)
        finally:
            buffer.close()
    finally:
        await signer.close()


async def _run_with(
    config: Any, buffer: Buffer, signer: Signer, stop: asyncio.Event, reload: Reload | None
) -> RunStats:
    with buffer.reading():  # the state the pipeline resumes from
        stats = RunStats(boot=buffer.start_boot(time.time_ns()))
        metrics = _metrics(config, stats.boot)
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
            observer=metrics,
        )
        log.info("edgeseal started: device %s, boot %d, next seq %d", config.device.id, stats.boot, buffer.next_seq())
    with metrics.serving(config.metrics.listen) if metrics else contextlib.nullcontext():
        secret = _secret_reader(config.identity, signer)
        await _run_pipeline(config, buffer, sequencer, sealer, stop, stats, secret, metrics, reload)
    stats.seals, stats.log_size, stats.dropped = sealer.seals_made, sealer.log_size, sequencer.dropped
    log.info(
        "edgeseal stopped: %d seals this run, device log size %d, sealed through seq %d, %d readings dropped",
        stats.seals,
        stats.log_size,
        buffer.sealed_through(),
        stats.dropped,
    )
    return stats


async def _run_pipeline(
    config: Any,
    buffer: Buffer,
    sequencer: Sequencer,
    sealer: Sealer,
    stop: asyncio.Event,
    stats: RunStats,
    secret: SecretReader | None = None,
    metrics: Metrics | None = None,
    reload: Reload | None = None,
) -> None:
    sink: ReadingSink = sequencer
    publishing = None
    if config.mqtt is not None:  # first: a password that cannot be had stops the start here
        identity = Identity(config.device.id, __version__, stats.boot, sealer.chain_der)
        publishing = await start_publishing(config.mqtt, buffer, identity, secret)
        sink = publishing.sink(sequencer)
    chain = None
    if config.anchor is not None:  # before any task: a keystore that cannot be opened stops the start here
        # imported only when anchoring is configured: web3 takes most of a second to import
        from agent.anchor.service import start_anchoring

        anchorer, chain = await start_anchoring(config.anchor, buffer, secret)
    flusher = asyncio.create_task(sequencer.run(), name="sequencer")
    sealing = asyncio.create_task(sealer.run(stop), name="sealer")
    health = Health(Path(config.buffer.dir) / HEALTH_FILE)
    running: list[tuple[str, Callable[[], Awaitable[None]]]] = [
        ("retention", _retention(config, buffer).run),
        ("health", health.write_periodically),
    ]
    running += publishing.services() if publishing else []
    if chain is not None:
        running.append(("anchoring", anchorer.run))
    if metrics is not None:
        connected = publishing.connection.connected.is_set if publishing else None
        running.append(("metrics", lambda: metrics.refresh(buffer, connected)))
    notifier = Notifier()
    if notifier.watchdog_interval is not None:
        # healthy while the sealer completes rounds: a round lasts up to seal.interval
        late = notifier.watchdog_interval + config.seal.interval
        running.append(("watchdog", lambda: notifier.keep_alive(lambda: time.monotonic() - sealer.last_round < late)))
    services = [
        asyncio.create_task(_restarting(f"the {name} service", run, stats.service_restarts, name), name=name)
        for name, run in running
    ]

    def start_sources(configured: list[Any]) -> list[asyncio.Task[None]]:
        health.keep_only({source.name for source in configured})
        return [
            asyncio.create_task(
                _supervise(source, health.watching(source.name, sink), config.buffer.dir, stats, secret, metrics),
                name=f"source:{source.name}",
            )
            for source in configured
        ]

    sources = start_sources(config.sources)
    stopping = asyncio.create_task(stop.wait(), name="stop")
    notifier.send("READY=1", f"STATUS=sealing as {config.device.id}, boot {stats.boot}")
    try:
        while True:
            reloading = asyncio.create_task(reload.requested.wait(), name="reload") if reload else None
            # The sealer or the flusher ending on its own is a fault: stop and let it raise.
            watched = {stopping, sealing, flusher, *([reloading] if reloading else [])}
            done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
            if reloading is not None and done == {reloading}:
                notifier.send("RELOADING=1")
                configured = reload.sources(config)  # type: ignore[union-attr]
                if configured is not None:
                    for task in sources:
                        task.cancel()
                    await asyncio.gather(*sources, return_exceptions=True)
                    sources = start_sources(configured)
                notifier.send("READY=1")
                continue
            if reloading is not None:
                reloading.cancel()
            break
    finally:
        notifier.send("STOPPING=1", "STATUS=stopping: sealing what was read")
        stopping.cancel()
        for task in sources:
            task.cancel()
        await asyncio.gather(*sources, return_exceptions=True)
        stop.set()
        try:
            await _finish(sealing)  # final flush, seal and checkpoint, within STOP_WITHIN
        finally:
            if publishing is not None:
                await publishing.close()
            # one at a time, the last started first: the publisher stops while its connection
            # is still up, so no publish of its fails in the middle of its cancellation
            for task in (*reversed(services), flusher):
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            if chain is not None:
                await chain.close()
    if not flusher.cancelled() and flusher.exception() is not None:
        raise flusher.exception()  # type: ignore[misc]


def _metrics(config: Any, boot: int) -> Metrics | None:
    """None without a `metrics` section: nothing is counted then."""
    return Metrics(__version__, boot, anchoring=config.anchor is not None) if config.metrics else None


def _retention(config: Any, buffer: Buffer) -> Retention:
    budget = config.buffer
    return Retention(buffer, max_bytes=budget.max_bytes, keep_delivered=budget.keep_delivered, warn_at=budget.warn_at)


async def _finish(sealing: asyncio.Task[None]) -> None:
    """The sealer's last round, given STOP_WITHIN seconds. Cut short, it loses nothing: a
    seal is committed whole or not at all, and what was read but not sealed is sealed at
    the next start."""
    try:
        await asyncio.wait_for(asyncio.shield(sealing), STOP_WITHIN)
    except TimeoutError:
        sealing.cancel()
        await asyncio.gather(sealing, return_exceptions=True)
        log.warning(
            "the last seal did not finish within %gs; what is unsealed is sealed at the next start", STOP_WITHIN
        )


async def _supervise(
    source: Any,
    sink: ReadingSink,
    state_dir: str,
    stats: RunStats,
    secret: SecretReader | None = None,
    metrics: Metrics | None = None,
) -> None:
    """Run one source (device faults are readings, inside the driver); a crash is a bug,
    and restarts it."""
    logger = logging.getLogger(f"edgeseal.source.{source.name}")
    observe = metrics.read_observer(source.name) if metrics else None
    sink = metrics.counting(source.name, sink) if metrics else sink
    context = DriverContext(source.name, logger, state_dir, secret=secret, observe_read=observe)

    async def run() -> None:
        await drivers.driver_module(source.type).create(source, sink, context).run()

    await _restarting(f"source {source.name}", run, stats.driver_restarts, source.name)


async def _restarting(what: str, run: Callable[[], Awaitable[None]], restarts: dict[str, int], key: str) -> None:
    """Runs `run` until cancelled: when it fails or returns (a bug either way), logs it,
    counts it in `restarts[key]` and runs it again with backoff, which starts over once it
    has run well for HEALTHY_AFTER seconds. A failing source or service never takes the
    others, or the agent, down."""
    failures = 0
    while True:
        started = time.monotonic()
        try:
            await run()
            log.error("%s stopped by itself; restarting it", what)
        except asyncio.CancelledError:
            raise
        except Exception:  # the one broad catch: a bug in one part must not stop the agent
            log.exception("%s failed; restarting it", what)
        failures = 0 if time.monotonic() - started >= HEALTHY_AFTER else failures + 1
        restarts[key] = restarts.get(key, 0) + 1
        await asyncio.sleep(RESTART_DELAYS[min(failures, len(RESTART_DELAYS) - 1)])


def _secret_reader(identity: Any, signer: Signer) -> SecretReader | None:
    """How drivers read TPM-sealed secrets (e.g. an OPC UA password): through the
    signer's TPM thread, from identity.tpm.secrets_dir. None without a TPM."""
    unseal = getattr(signer, "unseal", None)
    if identity.signer != "tpm" or unseal is None:
        return None
    directory = identity.tpm_settings.secrets_dir

    async def read(name: str) -> str:
        return (await unseal(directory, name)).decode("utf-8")

    return read


def _check_identity(signer: Signer, device_id: str) -> None:
    """Seals name the device as configured; the certificate must name the same device,
    or every verifier would reject what this agent signs."""
    certified = device_id_of(signer.certificate_chain[0]) if signer.certificate_chain else None
    if certified != device_id:
        raise KeyError_(
            f"device.id is {device_id!r} but the device certificate is for {certified!r};"
            " fix device.id or install this device's certificate"
        )


def install_signal_handlers(stop: asyncio.Event) -> None:
    """The first SIGTERM/SIGINT stops in order; a second one, while the last seal waits
    (a full disk, a failing signer), exits at once: the buffer is crash-safe, and what was
    read but not sealed is sealed at the next start."""
    loop = asyncio.get_running_loop()

    def request_stop() -> None:
        if stop.is_set():
            log.warning("second stop request: exiting now; unsealed readings are sealed at the next start")
            os._exit(EXIT_INTERRUPTED)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, request_stop)
