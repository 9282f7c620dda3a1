"""The publisher: sealed batches, checkpoints, the certificate chain and the gateway's
status go to the MQTT broker, and a batch is marked delivered only when the broker has
acknowledged it (QoS 1).

    each connection   PREFIX/cert (retained: the certificate chain) and PREFIX/status
                      (retained JSON, "online"); then every undelivered batch, oldest
                      first, in `b` order, with at most max_in_flight awaiting their PUBACK;
                      each acknowledged one is marked delivered in the buffer
    backlog           while more batches wait than one window holds, at most drain_rate
                      batches a second, so catching up after an outage leaves the broker
                      and the network room for what else flows (the live mirror, others)
    connection lost   the publishes in flight fail and nothing is marked: the next
                      connection starts again from the oldest undelivered batch. At least
                      once, then: a batch whose PUBACK was lost arrives twice, same `b`
    checkpoints       published after the batches, marked delivered likewise

The broker learns "offline" from the last will (retained) when the gateway goes away.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass

from agent.buffer.store import Buffer, BufferWriteError, OutgoingBatch
from agent.crashpoints import crash_point
from agent.publish.mqtt import MqttConnection, NotDelivered, Refused
from agent.trust import cbor

log = logging.getLogger(__name__)

POLL_EVERY = 0.1  # seconds between looks at the buffer for new seals while idle
RETRY_FIRST, RETRY_MAX = 0.1, 30.0  # seconds before a new session after one that failed
STATUS_EVERY = 60.0  # seconds between status updates


@dataclass(frozen=True)
class Topics:
    prefix: str

    @classmethod
    def for_device(cls, template: str, device_id: str) -> Topics:
        return cls(template.replace("{device}", device_id).rstrip("/"))

    @property
    def batch(self) -> str:
        return f"{self.prefix}/batch"

    @property
    def checkpoint(self) -> str:
        return f"{self.prefix}/checkpoint"

    @property
    def cert(self) -> str:
        return f"{self.prefix}/cert"

    @property
    def status(self) -> str:
        return f"{self.prefix}/status"

    def live(self, tag: str) -> str:
        return f"{self.prefix}/live/{tag}"


@dataclass(frozen=True)
class Identity:
    """What the status and cert topics say about this gateway."""

    device_id: str
    version: str
    boot: int
    chain_der: list[bytes]

    def status(self, state: str, buffer: Buffer | None = None) -> bytes:
        body: dict[str, object] = {"state": state, "device": self.device_id, "version": self.version, "boot": self.boot}
        if buffer is not None:
            last, backlog = buffer.last_seal(), buffer.backlog()
            body["last_seal"] = {"b": last.b, "t": last.t} if last else None
            body["backlog"] = {"batches": backlog.batches, "readings": backlog.readings, "oldest_t": backlog.oldest_t}
            body["dropped_batches"] = backlog.dropped_batches
            body["t"] = time.time_ns()
        return json.dumps(body, separators=(",", ":")).encode()


def batch_message(batch: OutgoingBatch) -> bytes:
    """DESIGN 3.3: the seal, the salt key and the exact reading leaves."""
    return cbor.encode({"seal": batch.cose, "salt_key": batch.salt_key, "readings": batch.readings})


class Publisher:
    def __init__(
        self,
        buffer: Buffer,
        connection: MqttConnection,
        topics: Topics,
        identity: Identity,
        *,
        max_in_flight: int,
        drain_rate: float,
    ) -> None:
        self._buffer, self._connection, self._topics, self._identity = buffer, connection, topics, identity
        self._max_in_flight, self._drain_pause = max_in_flight, 1.0 / drain_rate
        self.published = 0  # acknowledged batches, this run

    async def run(self) -> None:
        delay = RETRY_FIRST
        while True:
            await self._connection.connected.wait()
            published = self.published
            try:
                await self._session()
            except* Refused as refused:  # the broker is up but will not take it: say so, then back off
                log.warning("the broker refuses what is published: %s; trying again later", refused.exceptions[0])
            except* NotDelivered:
                pass  # the connection reports why; the next session starts from the oldest again
            delay = RETRY_FIRST if self.published > published else min(delay * 2, RETRY_MAX)
            await asyncio.sleep(delay)

    async def say_offline(self) -> None:
        """At a clean stop, which leaves the broker no reason to send the last will."""
        await self._connection.publish(self._topics.status, self._identity.status("offline"), retain=True)

    async def _session(self) -> None:
        """Until the connection fails: raises NotDelivered (in a group)."""
        await self._connection.publish(self._topics.cert, cbor.encode(self._identity.chain_der), retain=True)
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._status())
            tasks.create_task(self._batches())

    async def _status(self) -> None:
        while True:
            status = self._identity.status("online", self._buffer)
            await self._connection.publish(self._topics.status, status, retain=True)
            await asyncio.sleep(STATUS_EVERY)

    async def _batches(self) -> None:
        slots = asyncio.Semaphore(self._max_in_flight)
        after = 0  # the last batch handed to the connection, this session
        async with asyncio.TaskGroup() as in_flight:
            while True:
                waiting = self._buffer.undelivered(after, self._max_in_flight + 1)
                draining = len(waiting) > self._max_in_flight
                for batch in waiting[: self._max_in_flight]:
                    await slots.acquire()
                    in_flight.create_task(self._send(batch, slots))
                    after = batch.b
                    if draining:
                        await asyncio.sleep(self._drain_pause)
                await self._checkpoints()
                if not waiting:
                    await asyncio.sleep(POLL_EVERY)

    async def _send(self, batch: OutgoingBatch, slots: asyncio.Semaphore) -> None:
        try:
            await self._connection.publish(self._topics.batch, batch_message(batch))
        finally:
            slots.release()
        self.published += 1
        crash_point("batch.acknowledged")
        try:
            self._buffer.mark_delivered(batch.b, time.time_ns())
        except BufferWriteError as exc:  # a full disk: unmarked, the batch goes again (a duplicate)
            log.warning("batch %d was delivered but cannot be marked so: %s", batch.b, exc)

    async def _checkpoints(self) -> None:
        for size, cose_bytes in self._buffer.undelivered_checkpoints():
            await self._connection.publish(self._topics.checkpoint, cose_bytes)
            crash_point("checkpoint.acknowledged")
            self._buffer.mark_checkpoint_delivered(size, time.time_ns())
