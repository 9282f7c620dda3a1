"""Runs the OPC UA driver against the test servers (tests/opcua_servers.py) and collects
what it submits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import driver_harness

from drivers.opcua.config import SourceConfig
from drivers.opcua.driver import create

NS = "urn:edgeseal-test:plant"
# Faults noticed within about a second, reconnects within half a second.
FAST = {"timeout": "2s", "check_interval": "500ms", "reconnect_delay": "200ms", "reconnect_delay_max": "500ms"}


def source(url: str, **options: Any) -> SourceConfig:
    """A validated OPC UA source; fast fault detection unless `options` say otherwise."""
    return SourceConfig.model_validate({"name": "plc", "type": "opcua", "url": url, **FAST, **options})


def subscribe(*tags: tuple[str, str], **group: Any) -> dict[str, Any]:
    """A subscribe group of (name, node) tags, publishing every 100 ms unless told."""
    return {"mode": "subscribe", "publishing_interval": "100ms", **group, "tags": _tags(tags)}


def poll(*tags: tuple[str, str], **group: Any) -> dict[str, Any]:
    return {"mode": "poll", "interval": "100ms", **group, "tags": _tags(tags)}


def _tags(tags: tuple[tuple[str, str], ...]) -> list[dict[str, str]]:
    return [{"name": name, "node": node} for name, node in tags]


class Running(driver_harness.Running):
    """The OPC UA driver in the current loop, its PKI under `state_dir`."""

    def __init__(self, config: SourceConfig, state_dir: Path) -> None:
        super().__init__(create, config, str(state_dir))
