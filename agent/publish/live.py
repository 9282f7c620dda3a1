"""The live mirror: the latest value of each tag as plain JSON on PREFIX/live/TAG, for
dashboards. Unsigned and best effort (QoS 0): what is proven is on PREFIX/batch. It keeps
one reading per tag, however fast readings come, and publishes what changed once a second.

    {"value": 21.5, "ts": 1732590000123000000, "quality": 0}

Bytes are written as base64 text; a float that JSON cannot hold (NaN, infinities) as null.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
from collections.abc import Sequence
from typing import Any

from agent.publish.mqtt import MqttConnection, NotDelivered
from agent.publish.publisher import Topics
from drivers.api import Reading, ReadingSink

PUBLISH_EVERY = 1.0  # seconds


class LiveMirror:
    def __init__(self, connection: MqttConnection, topics: Topics) -> None:
        self._connection, self._topics = connection, topics
        self._latest: dict[str, Reading] = {}

    def offer(self, readings: Sequence[Reading]) -> None:
        for reading in readings:
            self._latest[reading.tag] = reading

    async def run(self) -> None:
        while True:
            await asyncio.sleep(PUBLISH_EVERY)
            if not self._connection.connected.is_set():
                continue
            latest, self._latest = self._latest, {}
            try:
                for tag, reading in latest.items():
                    await self._connection.publish(self._topics.live(tag), live_json(reading), qos=0)
            except NotDelivered:
                continue  # unsigned and best effort: the next second brings fresh values


def live_json(reading: Reading) -> bytes:
    body = {"value": _plain(reading.value), "ts": reading.ts, "quality": reading.quality}
    return json.dumps(body, separators=(",", ":"), allow_nan=False).encode()


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


class TeeSink:
    """The agent's sink, with a copy of every reading offered to the live mirror."""

    def __init__(self, sink: ReadingSink, mirror: LiveMirror) -> None:
        self._sink, self._mirror = sink, mirror

    async def submit(self, readings: Sequence[Reading]) -> None:
        self._mirror.offer(readings)
        await self._sink.submit(readings)
