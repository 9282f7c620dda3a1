"""Are the devices answering? The latest reading of every tag, by source, as the agent
received it, written every few seconds to DIR/health.json for `edgeseal status`, which
runs as another process and must not disturb the agent.

Memory is one entry per configured tag; the file is replaced atomically (a reader sees
the previous version or the new one). It is a view for operators, not data: nothing in
it is signed, and losing it loses nothing.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drivers.api import Reading, ReadingSink, is_bad

FILE = "health.json"
WRITE_EVERY = 5.0  # seconds


@dataclass
class SourceHealth:
    latest: dict[str, Reading] = field(default_factory=dict)  # by tag
    last_good_ns: int | None = None  # when the last Good reading arrived (the gateway's clock)


class Health:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._sources: dict[str, SourceHealth] = {}

    def keep_only(self, sources: set[str]) -> None:
        """After a reload: sources no longer configured are no longer reported."""
        for name in set(self._sources) - sources:
            del self._sources[name]

    def watching(self, source: str, sink: ReadingSink) -> ReadingSink:
        """`sink`, noting what `source` delivers on the way."""
        health = self._sources.setdefault(source, SourceHealth())
        return _WatchingSink(sink, health)

    async def write_periodically(self) -> None:
        """Until cancelled, and once more then: the last view survives the agent."""
        try:
            while True:
                self.write()
                await asyncio.sleep(WRITE_EVERY)
        finally:
            self.write()

    def write(self) -> None:
        document = {"t": time.time_ns(), "sources": {name: _source(h) for name, h in self._sources.items()}}
        temporary = self._path.with_name(f".{self._path.name}.tmp")
        temporary.write_text(json.dumps(document, indent=1))
        os.replace(temporary, self._path)


class _WatchingSink:
    def __init__(self, sink: ReadingSink, health: SourceHealth) -> None:
        self._sink, self._health = sink, health

    async def submit(self, readings: Sequence[Reading]) -> None:
        latest = self._health.latest
        for reading in readings:
            latest[reading.tag] = reading
        if not all(is_bad(reading.quality) for reading in readings):
            self._health.last_good_ns = time.time_ns()
        await self._sink.submit(readings)


def _source(health: SourceHealth) -> dict[str, Any]:
    tags = {
        tag: {"ts": r.ts, "value": _json_value(r.value), "quality": r.quality}
        for tag, r in sorted(health.latest.items())
    }
    return {"last_good": health.last_good_ns, "tags": tags}


def _json_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):  # not JSON numbers
        return str(value)
    return value


def read_health(state_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """What the running (or last) agent wrote; None if it never wrote any."""
    try:
        return json.loads((Path(state_dir) / FILE).read_text())
    except (OSError, ValueError):
        return None
