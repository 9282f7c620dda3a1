"""Runs the Modbus driver against the test servers (tests/modbus_servers.py) and
collects what it submits."""

from __future__ import annotations

from typing import Any

import driver_harness

from drivers.modbus.config import SourceConfig
from drivers.modbus.driver import create

FAST = {"timeout": "200ms", "retries": 0, "reconnect_delay": "100ms", "reconnect_delay_max": "400ms"}


def source(url: str, devices: list[dict[str, Any]], **options: Any) -> SourceConfig:
    """A validated source; fast timeouts and reconnects unless `options` say otherwise."""
    fields = {"name": "plc", "type": "modbus", "url": url, "interval": "50ms", **FAST, **options}
    return SourceConfig.model_validate({**fields, "devices": devices})


class Running(driver_harness.Running):
    """The Modbus driver running in the current loop: `async with Running(config) as run:`."""

    def __init__(self, config: SourceConfig) -> None:
        super().__init__(create, config)
