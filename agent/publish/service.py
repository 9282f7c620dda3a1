"""The `mqtt` section made into running parts: the connection (its password read from
the environment or the TPM), the publisher, and the live mirror when it is enabled."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from agent.buffer.store import Buffer
from agent.errors import UsageError
from agent.publish.live import LiveMirror, TeeSink
from agent.publish.mqtt import MqttConnection, MqttSettings, NotDelivered, Will
from agent.publish.publisher import Identity, Publisher, Topics
from drivers.api import ReadingSink

SecretReader = Callable[[str], Awaitable[str]]
CLOSE_WITHIN = 2.0  # seconds a stop waits for the broker to take the "offline" status


@dataclass
class Publishing:
    connection: MqttConnection
    publisher: Publisher
    live: LiveMirror | None

    def services(self) -> list[tuple[str, Callable[[], Awaitable[None]]]]:
        """Each service by name, as a function that runs it (again, after a failure)."""
        running: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            ("mqtt", self.connection.run),
            ("publisher", self.publisher.run),
        ]
        return running + ([("live", self.live.run)] if self.live else [])

    async def close(self) -> None:
        """Says "offline" (retained) if the broker is there to hear it, within CLOSE_WITHIN."""
        with contextlib.suppress(NotDelivered, TimeoutError):
            await asyncio.wait_for(self.publisher.say_offline(), CLOSE_WITHIN)

    def sink(self, sink: ReadingSink) -> ReadingSink:
        """What drivers submit to: the agent's sink, copied to the live mirror if enabled."""
        return TeeSink(sink, self.live) if self.live else sink


async def start_publishing(mqtt: Any, buffer: Buffer, identity: Identity, secret: SecretReader | None) -> Publishing:
    """Raises UsageError when the password cannot be had."""
    topics = Topics.for_device(mqtt.topic_prefix, identity.device_id)
    tls = mqtt.tls
    settings = MqttSettings(
        url=mqtt.url,
        client_id=mqtt.client_id or f"edgeseal-{identity.device_id}",
        protocol=mqtt.protocol,
        keepalive=max(1, round(mqtt.keepalive)),
        clean_start=mqtt.clean_start,
        ca_file=tls.ca_file if tls else None,
        cert_file=tls.cert_file if tls else None,
        key_file=tls.key_file if tls else None,
        username=mqtt.username,
        password=await _password(mqtt, secret),
        will=Will(topics.status, identity.status("offline")),
        reconnect_delay=mqtt.reconnect_delay,
        reconnect_delay_max=mqtt.reconnect_delay_max,
    )
    connection = MqttConnection(settings)
    publisher = Publisher(
        buffer, connection, topics, identity, max_in_flight=mqtt.max_in_flight, drain_rate=mqtt.drain_rate
    )
    return Publishing(connection, publisher, LiveMirror(connection, topics) if mqtt.live.enabled else None)


async def _password(mqtt: Any, secret: SecretReader | None) -> str | None:
    if mqtt.password_env is not None:
        if mqtt.password_env not in os.environ:
            raise UsageError(f"mqtt.password_env: {mqtt.password_env} is not set in the agent's environment")
        return os.environ[mqtt.password_env]
    if mqtt.password_secret is not None:
        if secret is None:
            raise UsageError(f"mqtt.password_secret {mqtt.password_secret!r} needs identity.signer: tpm")
        return await secret(mqtt.password_secret)
    return None
