"""`edgeseal watch`: check a device's sealed data live, as it arrives over MQTT.

The I/O around the pure checker (agent.trust.stream): one MQTT connection, one
subscription, and stdout. The subscription is PREFIX/+, one filter for the batch,
checkpoint and cert topics (status is ignored): messages then reach the checker in the
order the broker sent them, so the retained certificate comes before the batches after it.
Each event is printed as it happens, one line (or one JSON object) each, and flushed, so
the output can be piped into another program.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from cryptography import x509

from agent.errors import UsageError
from agent.publish.mqtt import MqttConnection, MqttSettings, Refused
from agent.trust.stream import StreamChecker
from agent.trust.stream_events import Event

Emit = Callable[[Event], None]


@dataclass(frozen=True)
class Broker:
    """Where to watch, as the command line gives it; the password is read from the
    environment variable named, never from the command line (where `ps` shows it)."""

    url: str
    tls_ca: str | None = None
    cert: str | None = None
    key: str | None = None
    username: str | None = None
    password_env: str | None = None

    def settings(self) -> MqttSettings:
        """Raises UsageError for a bad URL, TLS files without mqtts:// or that cannot be
        read, or a missing password: the connection would otherwise retry them forever."""
        for option, path in (("--tls-ca", self.tls_ca), ("--cert", self.cert), ("--key", self.key)):
            if path is not None and not os.access(path, os.R_OK):
                raise UsageError(f"{option}: {path}: cannot read")
        password = None
        if self.password_env is not None:
            password = os.environ.get(self.password_env)
            if password is None:
                raise UsageError(f"--password-env: the variable {self.password_env} is not set")
        try:
            return MqttSettings(
                url=self.url,
                client_id=f"edgeseal-watch-{secrets.token_hex(4)}",  # 23 characters: MQTT 3.1.1's limit
                clean_start=True,  # a watch keeps no session: the broker queues nothing for it after it ends
                ca_file=self.tls_ca,
                cert_file=self.cert,
                key_file=self.key,
                username=self.username,
                password=password,
            )
        except ValueError as exc:
            raise UsageError(f"--mqtt: {exc}") from None


def run_watch(
    roots: list[x509.Certificate],
    prefix: str,
    broker: Broker,
    *,
    as_json: bool = False,
    count: int | None = None,
    seconds: float | None = None,
    out: TextIO = sys.stdout,
) -> int:
    """Watches until `count` batch messages, `seconds`, or Ctrl-C (SIGINT) or SIGTERM;
    then prints the findings of the end and the summary. 0 all verified, 1 a finding."""
    _check_prefix(prefix)
    settings = broker.settings()
    checker = StreamChecker(roots)

    def emit(event: Event) -> None:
        print(json.dumps(event.as_dict()) if as_json else event.text(), file=out, flush=True)

    connected = asyncio.run(_watch(settings, prefix, checker, emit, count, seconds))
    if not connected:
        raise UsageError(f"--mqtt: never connected to {settings.url} (the log above says why)")
    for event in checker.finish():
        emit(event)
    return 0 if checker.summary().valid else 1


def _check_prefix(prefix: str) -> None:
    if not prefix or prefix.endswith("/") or any(c in prefix for c in "+#\0"):
        raise UsageError(f"--topic: expected the agent's topic prefix without wildcards, found {prefix!r}")


async def _watch(
    settings: MqttSettings,
    prefix: str,
    checker: StreamChecker,
    emit: Emit,
    count: int | None,
    seconds: float | None,
) -> bool:
    """Runs until the first of: `count` batch messages, `seconds`, a stop signal. Returns
    whether the broker ever accepted the connection."""
    ever_connected = asyncio.Event()
    connection = MqttConnection(settings, on_connect=lambda _session_present: ever_connected.set())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    tasks = [
        asyncio.create_task(_consume(connection, prefix, checker, emit, count)),
        asyncio.create_task(stop.wait()),
        asyncio.create_task(connection.run()),
    ]
    try:
        done, _ = await asyncio.wait(tasks, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()  # the subscription refused, raised from the consumer
    except Refused as exc:
        raise UsageError(f"--topic: {exc}") from None
    finally:
        for task in tasks:
            task.cancel()
        # what the tasks raised, if anything, was raised above from `done`
        await asyncio.gather(*tasks, return_exceptions=True)
    return ever_connected.is_set()


async def _consume(
    connection: MqttConnection, prefix: str, checker: StreamChecker, emit: Emit, count: int | None
) -> None:
    feeds = {"batch": checker.feed_batch, "checkpoint": checker.feed_checkpoint, "cert": checker.feed_cert}
    batches = 0
    async for message in connection.subscribe(f"{prefix}/+"):
        topic = message.topic.removeprefix(f"{prefix}/")
        feed = feeds.get(topic)
        if feed is None:
            continue  # status, or a topic newer than this watch
        for event in feed(message.payload):
            emit(event)
        if topic == "batch":
            batches += 1
            if batches == count:
                return
